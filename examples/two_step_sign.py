"""Two-step (remote) signing: the server prepares, the signer's device signs, the server embeds.

    python examples/two_step_sign.py IN.pdf KEY.p12 PASSFILE OUT.pdf [--level B-T --tsa URL]

Here the "device" is a local PKCS#12 file so the example runs anywhere; on a real USB token the
desktop tool would sign ``prepared.data_to_sign`` (CKM_SHA256_RSA_PKCS) or ``prepared.digest``
and send back the raw signature (or a full CMS). Only the certificate goes to the server.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.serialization import pkcs12

from eoffice.signing.engine import Level, SigningOptions, complete_external, prepare_external


def main() -> None:
    """Run prepare → device signature → complete."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path)
    parser.add_argument("key", type=Path)
    parser.add_argument("passphrase_file", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--level", default="B-B", choices=[lv.value for lv in Level])
    parser.add_argument("--tsa", default=None, help="TSA URL for B-T and above")
    args = parser.parse_args()

    # --- on the signer's machine: the token gives out its certificate, never its key --------
    key, cert, chain = pkcs12.load_key_and_certificates(
        args.key.read_bytes(), args.passphrase_file.read_text().strip().encode())
    assert key is not None and cert is not None
    der = serialization.Encoding.DER

    def as_asn1(c):  # noqa: ANN001, ANN202
        return asn1_x509.Certificate.load(c.public_bytes(der))

    # --- server, step 1: reserve the field, compute what must be signed -----------------------
    options = SigningOptions(level=Level(args.level), tsa_url=args.tsa)
    with tempfile.TemporaryDirectory() as work:
        prepared_pdf = Path(work) / "prepared.pdf"
        prepared = prepare_external(args.input, prepared_pdf, as_asn1(cert),
                                    [as_asn1(c) for c in chain], options=options)
        print(f"digest to sign (SHA-256 of signed attributes): {prepared.digest.hex()}")
        # prepared.state is JSON without secrets: a server stores it with the prepared file.

        # --- device: sign the signed attributes (PKCS#1 v1.5, SHA-256) -----------------------
        signature = key.sign(prepared.data_to_sign, padding.PKCS1v15(), hashes.SHA256())

        # --- server, step 2: embed, verify it is intact and made by the expected cert ---------
        result = complete_external(prepared_pdf, prepared.state, signature, args.output,
                                   options=options)
    print(f"signed {result.output} ({result.level}, field {result.field_name})")


if __name__ == "__main__":
    main()
