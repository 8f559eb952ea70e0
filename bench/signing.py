# Measured on the 2-core dev box (other engineers' tests running), three consecutive runs of
#   cd /work/main && .venv/bin/python bench/signing.py
# (signatures/second, same process, RSA-2048 PAdES B-B; ratio = ours / stock):
#   1 page     stock 10.3 / 10.6 / 10.4   ours 443.6 / 435.7 / 429.8   43.1x / 41.2x / 41.4x
#   100 pages  stock 10.3 /  9.5 /  9.9   ours 262.5 / 252.5 / 251.7   25.4x / 26.6x / 25.5x
#   200 MB     stock 0.99-1.01 s, 286 MB peak RSS; ours 0.59-0.61 s, 94-95 MB peak RSS
# Before the pre-encoded CMS (eoffice/signing/fast_cms.py) and single-parse input: 7.9x on
# 1 page (stock 10.5/s, ours 82.7/s), 6.9x on 100 pages, 95 MB RSS on 200 MB. Under heavier
# load (load average ~5) a run gave 52.5x / 18.6x: the ratio stays far above 10x / 3x.
"""Signing throughput: our engine vs pyHanko's stock path, same run, same key (RSA-2048, B-B).

    uv run python bench/signing.py [--seconds 3] [--big-mb 200]

Stock = SimpleSigner.load_pkcs12 once + signers.sign_pdf with default options (so it re-parses
the key per signature and makes a sizing signature). Ours = engine.sign_pdf_file with the
PKCS#12 loaded once into LoadedKeySigner (cached key, pre-encoded CMS parts, input parsed
once). Prints signatures/second, the ratio, and the peak RSS of signing the big file (measured
in a fresh child process so earlier runs do not count).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import signers

from eoffice.agencies.demo import demo_agencies, demo_users
from eoffice.signing.engine import sign_pdf_file
from eoffice.signing.keys import load_p12_signer
from eoffice.signing.pki import init_pki
from eoffice.signing.samples import write_sample_pdf


def _rate(fn, seconds: float) -> float:  # noqa: ANN001
    fn()  # warm-up (imports, font/caches)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or count < 3:
        fn()
        count += 1
    return count / (time.perf_counter() - start)


def _stock(p12: Path, passphrase: str):  # noqa: ANN202
    signer = signers.SimpleSigner.load_pkcs12(str(p12), passphrase=passphrase.encode())

    def run(src: Path, out: Path) -> None:
        with open(src, "rb") as inf, open(out, "wb") as outf:
            signers.sign_pdf(IncrementalPdfFileWriter(inf),
                             signers.PdfSignatureMetadata(field_name="Signature1"),
                             signer=signer, output=outf)
    return run


def _big_child(kind: str, src: Path, p12: Path, passfile: Path, out: Path) -> None:
    passphrase = passfile.read_text().strip()
    start = time.perf_counter()
    if kind == "ours":
        sign_pdf_file(src, out, load_p12_signer(p12, passphrase))
    else:
        _stock(p12, passphrase)(src, out)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{time.perf_counter() - start:.2f} {rss_mb:.0f}")


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--big-mb", type=int, default=200)
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *paths = args.child
        _big_child(kind, *map(Path, paths))
        return

    with tempfile.TemporaryDirectory() as work:
        w = Path(work)
        agency = demo_agencies()[:1]
        pki = init_pki(w / "pki", agencies=agency, with_images=False,
                       users=[u for u in demo_users() if u.agency_code == agency[0].code])
        p12, passfile = pki / "users" / "leader.tinh.p12", pki / "users" / "leader.tinh.pass"
        passphrase = passfile.read_text().strip()
        ours_signer = load_p12_signer(p12, passphrase)
        stock = _stock(p12, passphrase)
        print("RSA-2048, PAdES B-B, one process; signatures/second (higher is better)")
        print(f"{'input':<12}{'stock':>10}{'ours':>10}{'ratio':>8}")
        for label, pages in (("1 page", 1), ("100 pages", 100)):
            src = write_sample_pdf(w / f"{pages}.pdf", pages)
            out = w / "out.pdf"
            stock_rate = _rate(lambda s=src, o=out: stock(s, o), args.seconds)
            ours_rate = _rate(lambda s=src, o=out: sign_pdf_file(s, o, ours_signer),
                              args.seconds)
            print(f"{label:<12}{stock_rate:>10.1f}{ours_rate:>10.1f}"
                  f"{ours_rate / stock_rate:>7.1f}x")
        big = write_sample_pdf(w / "big.pdf", 10, padding_bytes=args.big_mb * 1024 * 1024)
        size_mb = os.path.getsize(big) / 1024 / 1024
        results = {}
        for kind in ("stock", "ours"):
            proc = subprocess.run(
                [sys.executable, __file__, "--child", kind, str(big), str(p12), str(passfile),
                 str(w / f"big-{kind}.pdf")], capture_output=True, text=True, check=True)
            seconds, rss = proc.stdout.split()
            results[kind] = (float(seconds), float(rss))
        print(f"{size_mb:.0f} MB PDF: stock {results['stock'][0]:.2f} s, peak RSS "
              f"{results['stock'][1]:.0f} MB; ours {results['ours'][0]:.2f} s, peak RSS "
              f"{results['ours'][1]:.0f} MB (target < 600 MB)")


if __name__ == "__main__":
    main()
