"""Remote two-step signing and PKCS#11 (real SoftHSM2 token), both checked with pdfsig."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.serialization import pkcs12

from eoffice.signing import engine, errors
from eoffice.signing.engine import Level, SigningOptions
from eoffice.signing.keys import open_pkcs11_signer

from .conftest import Pki, pdfsig, require_tool

ROOT = Path(__file__).resolve().parents[2]


def _key_and_signer(pki: Pki, username: str):
    key, _, _ = pkcs12.load_key_and_certificates(
        (pki.dir / "users" / f"{username}.p12").read_bytes(),
        pki.passphrase("users", username).encode())
    return key, pki.signer("users", username)


@pytest.mark.parametrize("level", [Level.B_B, Level.B_T, Level.B_LTA])
def test_two_step_raw_signature(level: Level, pki: Pki, nssdb: Path, sample_pdf: Path,
                                tmp_path: Path) -> None:
    key, signer = _key_and_signer(pki, "leader.tinh")
    options = SigningOptions(level=level, tsa_url=pki.tsa_url, trust_roots=(pki.root,))
    prepared_pdf = tmp_path / "prepared.pdf"
    prepared = engine.prepare_external(sample_pdf, prepared_pdf, signer.signing_cert,
                                       list(signer.cert_registry), options=options)
    state = json.loads(prepared.state)
    assert "pass" not in prepared.state.decode().lower()
    assert state["level"] == level.value
    signature = key.sign(prepared.data_to_sign, padding.PKCS1v15(), hashes.SHA256())
    out = tmp_path / "signed.pdf"
    engine.complete_external(prepared_pdf, prepared.state, signature, out, options=options)
    sigs = pdfsig(out, nssdb)
    assert sigs[0].valid, sigs[0].raw
    if level is not Level.B_LTA:
        assert sigs[0].total
    else:
        assert len(sigs) == 2  # document timestamp after the DSS


def test_two_step_rejects_wrong_signature(pki: Pki, sample_pdf: Path, tmp_path: Path) -> None:
    _, signer = _key_and_signer(pki, "leader.tinh")
    other_key, _ = _key_and_signer(pki, "clerk.tinh")
    prepared_pdf = tmp_path / "prepared.pdf"
    prepared = engine.prepare_external(sample_pdf, prepared_pdf, signer.signing_cert,
                                       list(signer.cert_registry))
    bad = other_key.sign(prepared.data_to_sign, padding.PKCS1v15(), hashes.SHA256())
    out = tmp_path / "signed.pdf"
    with pytest.raises(errors.ExternalSignatureError):
        engine.complete_external(prepared_pdf, prepared.state, bad, out)
    assert not out.exists()
    # a prepared file altered after prepare() is refused before anything is embedded
    with open(prepared_pdf, "ab") as handle:
        handle.write(b"\n% tampered\n")
    with pytest.raises(errors.InvalidStateError):
        engine.complete_external(prepared_pdf, prepared.state, bad, out)


def test_two_step_accepts_full_cms(pki: Pki, nssdb: Path, sample_pdf: Path,
                                   tmp_path: Path) -> None:
    """A device tool that returns a whole CMS (built from our signed attributes)."""
    from asn1crypto import cms
    from pyhanko.sign.signers.pdf_cms import ExternalSigner

    key, signer = _key_and_signer(pki, "leader.tinh")
    prepared_pdf = tmp_path / "prepared.pdf"
    prepared = engine.prepare_external(sample_pdf, prepared_pdf, signer.signing_cert,
                                       list(signer.cert_registry))
    raw = key.sign(prepared.data_to_sign, padding.PKCS1v15(), hashes.SHA256())
    ext = ExternalSigner(signer.signing_cert, signer.cert_registry, signature_value=raw)
    import asyncio

    full = asyncio.run(ext.async_sign_prescribed_attributes(
        "sha256", signed_attrs=cms.CMSAttributes.load(prepared.data_to_sign)))
    out = tmp_path / "signed.pdf"
    engine.complete_external(prepared_pdf, prepared.state, full.dump(), out)
    assert pdfsig(out, nssdb)[0].valid


def test_example_script_runs(pki: Pki, nssdb: Path, sample_pdf: Path, tmp_path: Path) -> None:
    out = tmp_path / "example.pdf"
    subprocess.run([sys.executable, str(ROOT / "examples" / "two_step_sign.py"),
                    str(sample_pdf), str(pki.dir / "users" / "leader.tinh.p12"),
                    str(pki.dir / "users" / "leader.tinh.pass"), str(out)],
                   check=True, capture_output=True, timeout=120)
    sigs = pdfsig(out, nssdb)
    assert sigs[0].valid and sigs[0].total


@pytest.fixture(scope="module")
def softhsm_token(pki: Pki, tmp_path_factory: pytest.TempPathFactory):
    """A SoftHSM2 token (own SOFTHSM2_CONF in a temp dir) holding the province seal key."""
    require_tool("softhsm2-util")
    require_tool("pkcs11-tool")
    require_tool("openssl")
    from eoffice.agencies.demo import demo_agencies

    code = demo_agencies()[0].code
    work = tmp_path_factory.mktemp("hsm")
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "softhsm-init.sh"), str(work / "token"),
         str(pki.dir / "seals" / f"{code}.p12"), str(pki.dir / "seals" / f"{code}.pass"),
         "eoffice-test", "246810"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    env = dict(line.split("=", 1) for line in result.stdout.split())
    old = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = env["SOFTHSM2_CONF"]
    yield env
    if old is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = old
    shutil.rmtree(work, ignore_errors=True)


def test_pkcs11_softhsm_seal(softhsm_token: dict, pki: Pki, nssdb: Path, sample_pdf: Path,
                             tmp_path: Path) -> None:
    from pyhanko.keys import load_cert_from_pemder

    chain = [load_cert_from_pemder(str(pki.dir / "intermediate.pem")),
             load_cert_from_pemder(str(pki.root))]
    out = tmp_path / "hsm.pdf"
    with open_pkcs11_signer(softhsm_token["PKCS11_MODULE"], token_label="eoffice-test",
                            pin="246810", key_label="seal", chain=chain) as signer:
        engine.stamp_attachment(sample_pdf, out, signer, number_notation="16/QĐ-UBND",
                                options=SigningOptions(level=Level.B_T, tsa_url=pki.tsa_url))
    sigs = pdfsig(out, nssdb)
    assert sigs[0].valid and sigs[0].total, sigs[0].raw
    assert sigs[0].common_name == "Ủy ban nhân dân tỉnh Thái Bình"


def test_pkcs11_wrong_pin(softhsm_token: dict) -> None:
    with pytest.raises(errors.TokenError):
        with open_pkcs11_signer(softhsm_token["PKCS11_MODULE"], token_label="eoffice-test",
                                pin="000000", key_label="seal"):
            pass
