"""Generate sample PDFs (for tests, the bench and demos) without holding them in memory."""

from __future__ import annotations

from pathlib import Path

_A4 = (595.28, 841.89)


def write_sample_pdf(path: Path, pages: int = 1, *, padding_bytes: int = 0,
                     title: str = "Van ban mau") -> Path:
    """Write a simple A4 PDF with ``pages`` pages of Helvetica text.

    ``padding_bytes`` adds an unreferenced-by-pages but valid stream object of that size
    (written in chunks), to build large files such as the 200 MB bench input.
    """
    path = Path(path)
    offsets: list[int] = []
    with open(path, "wb") as out:
        def obj(num: int, body: bytes) -> None:
            offsets.append(out.tell())
            out.write(b"%d 0 obj\n" % num + body + b"\nendobj\n")

        out.write(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
        # 1 catalog, 2 pages, 3 font, 4 padding stream, then (page, content) pairs
        kids = b" ".join(b"%d 0 R" % (5 + 2 * i) for i in range(pages))
        obj(1, b"<< /Type /Catalog /Pages 2 0 R >>")
        obj(2, b"<< /Type /Pages /Count %d /Kids [%s] >>" % (pages, kids))
        obj(3, b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
        offsets.append(out.tell())
        out.write(b"4 0 obj\n<< /Length %d >>\nstream\n" % padding_bytes)
        chunk = (b"% padding line for a large sample document ....................\n" * 1024)
        remaining = padding_bytes
        while remaining > 0:
            piece = chunk[:remaining]
            out.write(piece)
            remaining -= len(piece)
        out.write(b"\nendstream\nendobj\n")
        for i in range(pages):
            text = b"BT /F1 14 Tf 72 760 Td (%s - trang %d/%d) Tj ET" % (
                title.encode("latin-1", "replace"), i + 1, pages)
            lines = b" ".join(b"BT /F1 11 Tf 72 %d Td (Noi dung dong %d.) Tj ET" % (720 - 16 * k, k)
                              for k in range(30))
            content = text + b"\n" + lines
            obj(5 + 2 * i, b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %g %g] "
                b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>"
                % (_A4[0], _A4[1], 6 + 2 * i))
            obj(6 + 2 * i, b"<< /Length %d >>\nstream\n" % len(content) + content
                + b"\nendstream")
        xref_at = out.tell()
        count = 5 + 2 * pages
        out.write(b"xref\n0 %d\n0000000000 65535 f \n" % count)
        for off in offsets:
            out.write(b"%010d 00000 n \n" % off)
        out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n"
                  % (count, xref_at))
    return path
