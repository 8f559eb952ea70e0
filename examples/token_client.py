"""A signer's desktop client for two-step signing against the eoffice API.

    python examples/token_client.py --url http://127.0.0.1:8000 --user leader.tinh \
        --password-file pw.txt --document 42 --key leader.tinh.p12 --passphrase-file p.pass

It plays the USB token with a local PKCS#12 file so it runs anywhere: only the certificate
goes to the server; the key signs ``data_to_sign`` here (PKCS#1 v1.5 with SHA-256, what
CKM_SHA256_RSA_PKCS does on a token; ECDSA keys work too) and the raw signature goes back.
See docs/two-step-signing.md.
"""

from __future__ import annotations

import argparse
import base64
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs12


def wait_for(client: httpx.Client, job_id: str, statuses: set[str],
             timeout: float = 120.0) -> dict[str, Any]:
    """Poll GET /jobs/{id} until the job reaches one of ``statuses`` (or fails)."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/api/v1/jobs/{job_id}").raise_for_status().json()
        if job["status"] in statuses or job["status"] == "failed":
            return dict(job)
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {job['status']}")
        time.sleep(0.5)


def sign_on_device(key: Any, data_to_sign: bytes) -> bytes:
    """What the token does: sign the DER signed attributes with SHA-256."""
    if isinstance(key, rsa.RSAPrivateKey):
        return bytes(key.sign(data_to_sign, padding.PKCS1v15(), hashes.SHA256()))
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return bytes(key.sign(data_to_sign, ec.ECDSA(hashes.SHA256())))
    raise SystemExit(f"unsupported key type {type(key).__name__}")


def main() -> int:
    """Prepare on the server, sign locally, complete on the server."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--user", required=True)
    parser.add_argument("--password-file", type=Path, required=True)
    parser.add_argument("--document", type=int, required=True)
    parser.add_argument("--key", type=Path, required=True, help="PKCS#12 playing the token")
    parser.add_argument("--passphrase-file", type=Path, required=True)
    parser.add_argument("--level", default=None, help="B-B, B-T, B-LT or B-LTA "
                        "(default: the agency's level)")
    args = parser.parse_args()

    key, cert, chain = pkcs12.load_key_and_certificates(
        args.key.read_bytes(), args.passphrase_file.read_text().strip().encode())
    if key is None or cert is None:
        raise SystemExit(f"{args.key} holds no key and certificate")
    pem = serialization.Encoding.PEM

    with httpx.Client(base_url=args.url, timeout=60) as client:
        token = client.post("/api/v1/auth/token", data={
            "username": args.user, "password": args.password_file.read_text().strip(),
        }).raise_for_status().json()["access_token"]
        client.headers["Authorization"] = f"Bearer {token}"

        body: dict[str, Any] = {"certificate": cert.public_bytes(pem).decode(),
                                "chain": [c.public_bytes(pem).decode() for c in chain]}
        if args.level:
            body["level"] = args.level
        started = client.post(f"/api/v1/documents/{args.document}/sign/prepare", json=body)
        if started.status_code != 202:
            print(started.text, file=sys.stderr)
            return 1
        job = wait_for(client, started.json()["job_id"], {"awaiting_signature"})
        if job["status"] != "awaiting_signature":
            print(f"prepare failed: {job['error']}", file=sys.stderr)
            return 1
        print(f"job {job['id']}: digest {job['digest_hex']} ({job['digest_algorithm']})")

        signature = sign_on_device(key, base64.b64decode(job["data_to_sign"]))
        client.post(f"/api/v1/jobs/{job['id']}/complete", json={
            "signature": base64.b64encode(signature).decode()}).raise_for_status()
        job = wait_for(client, job["id"], {"succeeded"})
    if job["status"] != "succeeded":
        print(f"signing failed: {job['error']} / {job.get('error_vi')}", file=sys.stderr)
        return 1
    print(f"signed: document {job['document_id']} revision {job['result']['revision']} "
          f"sha256 {job['result']['sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
