"""Decree 30 signature appearances: leader block, red seal, attachment and copy stamps.

The stamps are custom pyHanko stamp styles so every glyph goes through one embedded, subset
OpenType font (TeX Gyre Termes, Times metrics, full Vietnamese coverage). Liberation Serif is
avoided on purpose: pyHanko 0.38 mis-scales 2048-upem TrueType widths (see DESIGN pitfalls).
The signature and seal images are generated with Pillow (deterministic for a given name).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import os
import random
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo

from PIL import Image, ImageDraw, ImageFilter, ImageFont
from pyhanko.pdf_utils import layout
from pyhanko.pdf_utils.content import ResourceType
from pyhanko.pdf_utils.font.opentype import GlyphAccumulatorFactory
from pyhanko.pdf_utils.generic import pdf_name
from pyhanko.pdf_utils.images import PdfImage
from pyhanko.pdf_utils.writer import BasePdfFileWriter
from pyhanko.stamp.base import BaseStamp, BaseStampStyle

VN_TZ = ZoneInfo("Asia/Ho_Chi_Minh")
MM = 72 / 25.4  # PDF points per millimetre
SEAL_DIAMETER_MM = 38.0  # Decree 30 seals are 35-40 mm; drawn at real size
_FONT_DIRS = (
    "/usr/share/texmf/fonts/opentype/public/tex-gyre",
    "/usr/share/fonts/opentype/texgyre",
    "/usr/share/fonts/texgyre",
)


class FontNotFoundError(RuntimeError):
    """TeX Gyre fonts are missing (install the Debian package fonts-texgyre)."""


def font_path(style: str = "regular", family: str = "termes") -> Path:
    """Path of a TeX Gyre OpenType font ($EOFFICE_FONT_DIR first, then Debian locations)."""
    name = f"texgyre{family}-{style}.otf"
    dirs = [os.environ["EOFFICE_FONT_DIR"]] if os.environ.get("EOFFICE_FONT_DIR") else []
    for folder in [*dirs, *_FONT_DIRS]:
        candidate = Path(folder) / name
        if candidate.is_file():
            return candidate
    raise FontNotFoundError(f"{name} not found; apt-get install fonts-texgyre")


def vn_now() -> dt.datetime:
    """Current time in Vietnam (+07:00), second precision, as Decree 30 stamps show it."""
    return dt.datetime.now(VN_TZ).replace(microsecond=0)


def iso_vn(moment: dt.datetime) -> str:
    """ISO 8601 with the +07:00 offset, e.g. 2026-11-03T09:15:22+07:00."""
    return moment.astimezone(VN_TZ).replace(microsecond=0).isoformat()


# --------------------------------------------------------------------------------------------
# Images (Pillow)
# --------------------------------------------------------------------------------------------
def render_signature_png(full_name: str, out: Path | None = None) -> Image.Image:
    """A plausible handwritten blue signature for ``full_name`` (transparent RGBA PNG)."""
    rng = random.Random(hashlib.sha256(full_name.encode()).digest())
    width, height = 720, 300
    img = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    ink = (18, 48, 170, 255)
    # The given name in a calligraphic face, then a flourish under it: what Vietnamese
    # officials' signatures usually look like.
    given = full_name.split()[-1]
    font = ImageFont.truetype(str(font_path("mediumitalic", "chorus")), 150)
    text_w = draw.textlength(given, font=font)
    x0 = max(20, (width - text_w) / 2 - 30)
    draw.text((x0, 40), given, font=font, fill=ink)
    # Flourish: a smooth random curve drawn as a polyline with varying width.
    points = []
    amp = rng.uniform(18, 35)
    phase = rng.uniform(0, math.pi)
    freq = rng.uniform(4.5, 6.0)
    for i in range(80):
        t = i / 79
        x = 40 + t * (width - 90)
        y = 215 + amp * math.sin(phase + t * freq) * (1 - 0.6 * t) - 40 * t
        points.append((x, y))
    for i in range(len(points) - 1):
        draw.line([points[i], points[i + 1]], fill=ink, width=max(3, int(8 - 5 * i / 80)))
    img = img.filter(ImageFilter.SMOOTH)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        img.save(out, "PNG")
    return img


def _ring_text(img: Image.Image, text: str, center: float, radius: float,
               font: ImageFont.FreeTypeFont, colour: tuple[int, int, int, int]) -> None:
    """Lay ``text`` clockwise along the upper arc of a circle (characters upright)."""
    widths = [font.getlength(ch) for ch in text]
    total = sum(widths)
    # Spread over at most 300 degrees starting from the left, centred on the top.
    span = min(300.0, math.degrees(total / radius) * 1.15)
    scale = span / math.degrees(total / radius)
    angle = -90 - span / 2  # degrees; -90 is the top in image coordinates
    for ch, w in zip(text, widths, strict=True):
        step = math.degrees(w / radius) * scale
        mid = math.radians(angle + step / 2)
        size = int(font.size * 1.6)
        glyph = Image.new("RGBA", (size, size), (0, 0, 0, 0))
        ImageDraw.Draw(glyph).text((size / 2, size / 2), ch, font=font, fill=colour, anchor="mm")
        glyph = glyph.rotate(-(math.degrees(mid) + 90), resample=Image.Resampling.BICUBIC)
        x = center + radius * math.cos(mid) - size / 2
        y = center + radius * math.sin(mid) - size / 2
        img.alpha_composite(glyph, (int(round(x)), int(round(y))))
        angle += step


def render_seal_png(agency_name: str, out: Path | None = None, dpi: int = 300) -> Image.Image:
    """The agency's round red seal, agency name around the ring (transparent RGBA PNG)."""
    size = int(round(SEAL_DIAMETER_MM / 25.4 * dpi))
    scale = 4  # draw large, downsample: smooth edges
    big = size * scale
    img = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    red = (200, 16, 32, 235)
    c = big / 2
    outer = big / 2 - 6 * scale
    draw.ellipse([c - outer, c - outer, c + outer, c + outer], outline=red, width=7 * scale)
    inner = outer * 0.68
    draw.ellipse([c - inner, c - inner, c + inner, c + inner], outline=red, width=3 * scale)
    font = ImageFont.truetype(str(font_path("bold")), int(big * 0.085))
    _ring_text(img, agency_name.upper(), c, (outer + inner) / 2 - big * 0.012, font, red)
    # Five-pointed star in the centre, as on the seals of People's Committees.
    star_r, star_in = inner * 0.55, inner * 0.22
    pts = []
    for k in range(10):
        r = star_r if k % 2 == 0 else star_in
        a = math.radians(-90 + k * 36)
        pts.append((c + r * math.cos(a), c + r * math.sin(a)))
    draw.polygon(pts, fill=red)
    img = img.resize((size, size), Image.Resampling.LANCZOS)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        img.save(out, "PNG", dpi=(dpi, dpi))
    return img


@lru_cache(maxsize=256)
def _cached_png(path: str, mtime: float) -> Image.Image:
    with Image.open(path) as img:
        return img.convert("RGBA")


def load_image(source: Path | Image.Image) -> Image.Image:
    """Open an image once (cached by path and mtime) as RGBA."""
    if isinstance(source, Image.Image):
        return source
    return _cached_png(str(source), source.stat().st_mtime)


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------
Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in page coordinates

LEADER_BOX_SIZE = (200.0, 125.0)
_POSITION_SIZE, _NAME_SIZE = 12, 13
_LINE_GAP = 4.0


def leader_image_rect(field_box: Box) -> Box:
    """Where the signature image sits inside a leader field (page coordinates)."""
    x1, y1, x2, y2 = field_box
    # Two title lines are always reserved (competence, e.g. "TM. ỦY BAN NHÂN DÂN", and
    # position), so the seal can be placed from the field rectangle alone.
    top = y2 - 2 * (_POSITION_SIZE + 2) - _LINE_GAP
    bottom = y1 + _NAME_SIZE + _LINE_GAP * 1.5
    width = x2 - x1
    img_h = top - bottom
    img_w = min(width * 0.9, img_h * 720 / 300)
    cx = (x1 + x2) / 2
    return (cx - img_w / 2, bottom, cx + img_w / 2, top)


def default_leader_box(page_width: float, page_height: float) -> Box:
    """Bottom-right of the page, inside a 2 cm margin (Decree 30 signature block position)."""
    w, h = LEADER_BOX_SIZE
    margin = 20 * MM
    return (page_width - margin - w, margin, page_width - margin, margin + h)


def seal_box_over(leader_field: Box) -> Box:
    """Seal field that covers about the left third of the leader's signature image."""
    ix1, iy1, ix2, iy2 = leader_image_rect(leader_field)
    d = SEAL_DIAMETER_MM * MM
    right = ix1 + (ix2 - ix1) / 3
    cy = (iy1 + iy2) / 2
    return (right - d, cy - d / 2, right, cy + d / 2)


def top_right_box(page_width: float, page_height: float, lines: int, width: float = 200) -> Box:
    """Box for a text-only organisation stamp at the top-right of page 1."""
    margin = 10 * MM
    height = lines * 12 + 6
    return (page_width - margin - width, page_height - margin - height,
            page_width - margin, page_height - margin)


# --------------------------------------------------------------------------------------------
# Stamp styles
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TextLine:
    """One centred/left-aligned line of text in a stamp."""

    text: str
    size: int = 10
    bold: bool = False
    align: str = "left"  # left | center


@dataclass(frozen=True)
class DecreeStampStyle(BaseStampStyle):
    """A stamp made of text lines (top to bottom) and an optional centred image.

    ``image_rect`` is relative to the stamp box (x1, y1, x2, y2); lines listed in
    ``top_lines`` start at the top edge, ``bottom_lines`` end at the bottom edge.
    """

    top_lines: tuple[TextLine, ...] = ()
    bottom_lines: tuple[TextLine, ...] = ()
    image: Image.Image | None = None
    image_rect: Box | None = None
    border_width: int = 0
    colour: tuple[float, float, float] = (0.0, 0.0, 0.0)
    padding: float = 3.0
    extra: dict = field(default_factory=dict)

    def create_stamp(self, writer: BasePdfFileWriter, box: layout.BoxConstraints,
                     text_params: dict) -> DecreeStamp:
        """Create the stamp for one signature field."""
        return DecreeStamp(writer=writer, style=self, box=box)


class DecreeStamp(BaseStamp):
    """Renders a :class:`DecreeStampStyle`."""

    style: DecreeStampStyle

    def _font(self, line: TextLine) -> tuple[str, object]:
        key = (line.bold, line.size)
        fonts = self.__dict__.setdefault("_fonts", {})
        if key not in fonts:
            factory = GlyphAccumulatorFactory(
                str(font_path("bold" if line.bold else "regular")), font_size=line.size)
            if self.writer is None:
                raise ValueError("the stamp has no PDF writer to embed fonts into")
            engine = factory.create_font_engine(self.writer, obj_stream=None)
            name = f"/F{'B' if line.bold else 'R'}{line.size}"
            self.set_resource(category=ResourceType.FONT, name=pdf_name(name),
                              value=engine.as_resource())
            fonts[key] = (name, engine)
        return fonts[key]

    def _line_ops(self, line: TextLine, baseline: float) -> bytes:
        name, engine = self._font(line)
        shaped = engine.shape(line.text)  # type: ignore[attr-defined]
        width = shaped.x_advance * line.size
        if line.align == "center":
            x = (self.box.width - width) / 2
        else:
            x = self.style.padding
        r, g, b = self.style.colour
        return b"BT %g %g %g rg %s %d Tf %g %g Td %s ET" % (
            r, g, b, name.encode(), line.size, x, baseline, shaped.graphics_ops)

    def _render_inner_content(self) -> list[bytes]:
        style = self.style
        ops: list[bytes] = []
        if style.image is not None and style.image_rect is not None:
            x1, y1, x2, y2 = style.image_rect
            iw, ih = style.image.size
            # keep the aspect ratio, centred in the rect
            scale = min((x2 - x1) / iw, (y2 - y1) / ih)
            w, h = iw * scale, ih * scale
            pdf_img = PdfImage(style.image, writer=self.writer,
                               box=layout.BoxConstraints(width=w, height=h))
            img_ops = pdf_img.render()
            self.import_resources(pdf_img.resources)
            ops.append(b"q 1 0 0 1 %g %g cm %s Q" % (
                x1 + ((x2 - x1) - w) / 2, y1 + ((y2 - y1) - h) / 2, img_ops))
        y = self.box.height - style.padding
        for line in style.top_lines:
            y -= line.size
            ops.append(self._line_ops(line, y + line.size * 0.22))
            y -= 2
        y = style.padding
        for line in reversed(style.bottom_lines):
            ops.append(self._line_ops(line, y + line.size * 0.22))
            y += line.size + 2
        return ops


def leader_style(position: str, full_name: str, signature_image: Image.Image | Path,
                 field_box: Box, competence: str | None = None) -> DecreeStampStyle:
    """Leader's visible signature: position line, blue signature image, full name."""
    x1, y1, _, _ = field_box
    ix1, iy1, ix2, iy2 = leader_image_rect(field_box)
    titles = [competence, position] if competence else [position]
    return DecreeStampStyle(
        top_lines=tuple(TextLine(t.upper(), _POSITION_SIZE, True, "center") for t in titles),
        bottom_lines=(TextLine(full_name, _NAME_SIZE, True, "center"),),
        image=load_image(signature_image),
        image_rect=(ix1 - x1, iy1 - y1, ix2 - x1, iy2 - y1),
        padding=0,
    )


def seal_style(seal_image: Image.Image | Path) -> DecreeStampStyle:
    """Organisation signature on the main document: the red seal only, at real size."""
    d = SEAL_DIAMETER_MM * MM
    return DecreeStampStyle(image=load_image(seal_image), image_rect=(0, 0, d, d))


def attachment_style(number_notation: str, moment: dt.datetime) -> DecreeStampStyle:
    """Attachment stamp: number/notation and ISO 8601 time (+07:00), Times 10 pt, black."""
    return DecreeStampStyle(top_lines=(TextLine(number_notation), TextLine(iso_vn(moment))))


COPY_TYPES = {"SAO Y": "SY", "SAO LỤC": "SL", "TRÍCH SAO": "TrS"}


def copy_style(copy_type: str, agency_name: str, moment: dt.datetime,
               number_notation: str | None = None) -> DecreeStampStyle:
    """Electronic copy stamp: copy type, copying agency, time."""
    lines = [TextLine(copy_type.upper(), 10, True), TextLine(agency_name)]
    if number_notation:
        lines.append(TextLine(number_notation))
    lines.append(TextLine(iso_vn(moment)))
    return DecreeStampStyle(top_lines=tuple(lines))
