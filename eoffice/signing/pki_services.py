"""OCSP responder, CRL publisher and RFC 3161 TSA for the development PKI.

Built from certomancer's service building blocks (`TimeStamper`, `CRLBuilder`,
`SimpleOCSPResponder`) wrapped in a small Starlette app, so the FastAPI application can mount it
at ``/pki`` and ``eoffice pki serve`` can run it alone. CRLs and OCSP answers are produced on
request with the current time, so they never go stale while a long test run or a demo lasts.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

from asn1crypto import crl, keys, ocsp, pem, tsp, x509
from certomancer.services import (
    CRLBuilder,
    RevocationInfoInterface,
    SimpleOCSPResponder,
    TimeStamper,
    choose_signed_digest,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def _load_cert(path: Path) -> x509.Certificate:
    data = path.read_bytes()
    if pem.detect(data):
        _, _, data = pem.unarmor(data)
    return x509.Certificate.load(data)


def _load_key(path: Path) -> keys.PrivateKeyInfo:
    _, _, der = pem.unarmor(path.read_bytes())
    return keys.PrivateKeyInfo.load(der)


@dataclass
class _Revocations(RevocationInfoInterface):
    issuer: x509.Certificate
    issued: dict[int, dict]

    def get_issuer_cert(self) -> x509.Certificate:
        return self.issuer

    def check_revocation_status(
        self, cid: ocsp.CertId, at_time: dt.datetime
    ) -> tuple[ocsp.CertStatus, list[ocsp.SingleResponseExtension]]:
        entry = self.issued.get(cid["serial_number"].native)
        if entry is None:
            return ocsp.CertStatus(name="unknown", value=None), []
        revoked_at = entry.get("revoked_at")
        if revoked_at and dt.datetime.fromisoformat(revoked_at) <= at_time:
            info = ocsp.RevokedInfo({
                "revocation_time": dt.datetime.fromisoformat(revoked_at),
                "revocation_reason": "key_compromise",
            })
            return ocsp.CertStatus(name="revoked", value=info), []
        return ocsp.CertStatus(name="good", value=None), []


class PkiAuthority:
    """The dev PKI's online services, loaded from a `pki init` directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        index = json.loads((directory / "index.json").read_text(encoding="utf-8"))
        self.root = _load_cert(directory / "root.pem")
        self.intermediate = _load_cert(directory / "intermediate.pem")
        self.root_key = _load_key(directory / "private" / "root.key.pem")
        self.ca_key = _load_key(directory / "private" / "intermediate.key.pem")
        self.ocsp_cert = _load_cert(directory / "services" / "ocsp.pem")
        self.ocsp_key = _load_key(directory / "private" / "ocsp.key.pem")
        self.tsa_cert = _load_cert(directory / "services" / "tsa.pem")
        self.tsa_key = _load_key(directory / "private" / "tsa.key.pem")
        certs = index["certificates"]
        # Serials issued by the intermediate (everything except root and intermediate).
        self.by_ca = {c["serial"]: c for c in certs if c["kind"] not in ("root", "intermediate")}
        self.by_root = {c["serial"]: c for c in certs if c["kind"] == "intermediate"}
        self.timestamper = TimeStamper(
            tsa_cert=self.tsa_cert, tsa_key=self.tsa_key,
            certs_to_embed=[self.intermediate, self.root])

    @classmethod
    def load(cls, directory: Path) -> PkiAuthority:
        """Load certificates, keys and the issued-certificate index."""
        return cls(Path(directory))

    def crl_der(self, name: str, now: dt.datetime | None = None) -> bytes:
        """A freshly signed CRL for ``root`` or ``intermediate``."""
        now = now or dt.datetime.now(dt.UTC)
        if name == "root":
            issuer, key, issued = self.root, self.root_key, self.by_root
        elif name == "intermediate":
            issuer, key, issued = self.intermediate, self.ca_key, self.by_ca
        else:
            raise KeyError(name)
        builder = CRLBuilder(
            issuer_name=issuer.subject, issuer_key=key,
            signature_algo=choose_signed_digest("sha256", issuer.public_key),
            authority_key_identifier=issuer.key_identifier_value)
        revoked = [
            CRLBuilder.format_revoked_cert(
                serial, crl.CRLReason("key_compromise"),
                dt.datetime.fromisoformat(entry["revoked_at"]))
            for serial, entry in sorted(issued.items())
            if entry.get("revoked_at") and dt.datetime.fromisoformat(entry["revoked_at"]) <= now
        ]
        # Second resolution in the CRL number keeps it monotonic across restarts.
        this_update = now.replace(microsecond=0) - dt.timedelta(minutes=5)
        crl_obj = builder.build_crl(
            crl_number=int(now.timestamp()), this_update=this_update,
            next_update=this_update + dt.timedelta(days=7), revoked_certs=revoked)
        return crl_obj.dump()

    def ocsp_response_der(self, request_der: bytes) -> bytes:
        """Answer a DER OCSP request (certificates issued by the intermediate CA)."""
        try:
            request = ocsp.OCSPRequest.load(request_der)
            request.native  # noqa: B018 - force a full parse so garbage is rejected here
        except Exception:
            return SimpleOCSPResponder.build_error_response("malformed_request").dump()
        responder = SimpleOCSPResponder(
            responder_cert=self.ocsp_cert, responder_key=self.ocsp_key,
            signature_algo=choose_signed_digest("sha256", self.ocsp_cert.public_key),
            at_time=dt.datetime.now(dt.UTC).replace(microsecond=0),
            revinfo_interface=_Revocations(self.intermediate, self.by_ca),
            validity=dt.timedelta(hours=1))
        return responder.build_ocsp_response(request).dump()

    def tsa_response_der(self, request_der: bytes) -> bytes:
        """Answer a DER RFC 3161 TimeStampReq."""
        try:
            request = tsp.TimeStampReq.load(request_der)
            request.native  # noqa: B018 - see above
        except Exception:
            return tsp.TimeStampResp({"status": {"status": "rejection"}}).dump()
        return self.timestamper.request_tsa_response(request).dump()


def create_pki_app(pki_dir: Path) -> Starlette:
    """ASGI app exposing POST /ocsp, GET /crl/<name>.crl, POST /tsa, GET /certs/<name>.cer."""
    authority = PkiAuthority.load(Path(pki_dir))

    async def ocsp_endpoint(request: Request) -> Response:
        body = await request.body()
        return Response(authority.ocsp_response_der(body),
                        media_type="application/ocsp-response")

    async def crl_endpoint(request: Request) -> Response:
        name = request.path_params["name"]
        try:
            data = authority.crl_der(name)
        except KeyError:
            return Response(b"unknown CRL", status_code=404)
        return Response(data, media_type="application/pkix-crl")

    async def tsa_endpoint(request: Request) -> Response:
        body = await request.body()
        return Response(authority.tsa_response_der(body),
                        media_type="application/timestamp-reply")

    async def cert_endpoint(request: Request) -> Response:
        name = request.path_params["name"]
        certs = {"root": authority.root, "intermediate": authority.intermediate}
        if name not in certs:
            return Response(b"unknown certificate", status_code=404)
        return Response(certs[name].dump(), media_type="application/pkix-cert")

    return Starlette(routes=[
        Route("/ocsp", ocsp_endpoint, methods=["POST"]),
        Route("/crl/{name}.crl", crl_endpoint, methods=["GET"]),
        Route("/tsa", tsa_endpoint, methods=["POST"]),
        Route("/certs/{name}.cer", cert_endpoint, methods=["GET"]),
    ])


def create_standalone_app(pki_dir: Path, prefix: str = "/pki") -> Starlette:
    """The PKI app mounted under ``prefix`` (what `eoffice pki serve` runs)."""
    from starlette.routing import Mount

    return Starlette(routes=[Mount(prefix, app=create_pki_app(pki_dir))])
