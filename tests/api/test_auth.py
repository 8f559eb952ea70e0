"""Sign-in, tokens, API keys, roles and who sees what."""

from __future__ import annotations

from datetime import timedelta

import jwt
import pytest

from tests.conftest import Clients, Env
from tests.helpers import assert_problem, create_document, override_settings, send


def test_login_me_and_wrong_password(env: Env, as_user: Clients) -> None:
    client = as_user.client
    me = client.get("/api/v1/me", headers=as_user.headers("leader.vuthu")).json()
    assert me["role"] == "leader" and me["agency_code"] == "000.00.12.H58"
    assert me["agency_level"] == "district"
    bad = client.post("/api/v1/auth/token", data={"username": "clerk.tinh", "password": "nope"})
    assert_problem(bad, 401)
    assert_problem(client.post("/api/v1/auth/token", data={"username": "clerk.tinh"}), 422,
                   "password")


def test_passwords_are_hashed_with_argon2(env: Env) -> None:
    from sqlmodel import select

    from eoffice.db import new_session
    from eoffice.models import User

    with new_session() as session:
        user = session.exec(select(User).where(User.username == "clerk.tinh")).one()
    assert user.password_hash.startswith("$argon2id$")
    assert env.password("clerk.tinh") not in user.password_hash


def test_login_is_rate_limited_per_username(env: Env, as_user: Clients,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    override_settings(monkeypatch, login_max_failures=3)
    client = as_user.client
    for _ in range(3):
        assert client.post("/api/v1/auth/token",
                           data={"username": "clerk.stc", "password": "x"}).status_code == 401
    locked = client.post("/api/v1/auth/token",
                         data={"username": "clerk.stc", "password": env.password("clerk.stc")})
    assert_problem(locked, 429)
    # other accounts are unaffected
    ok = client.post("/api/v1/auth/token",
                     data={"username": "clerk.stp", "password": env.password("clerk.stp")})
    assert ok.status_code == 200


def test_expired_and_forged_tokens_are_refused(env: Env, as_user: Clients) -> None:
    from eoffice.models import utcnow
    from eoffice.settings import get_settings

    secret = get_settings().signing_secret()
    expired = jwt.encode({"sub": "1", "ver": 0, "exp": int((utcnow() - timedelta(minutes=1))
                                                          .timestamp())}, secret, "HS256")
    forged = jwt.encode({"sub": "1", "ver": 0, "exp": int((utcnow() + timedelta(minutes=5))
                                                         .timestamp())}, "other", "HS256")
    # /me resolves the caller as a dependency, /inbox in its unit of work (deps.UnitOfWork).
    for path in ("/api/v1/me", "/api/v1/inbox"):
        for token in (expired, forged, "garbage"):
            response = as_user.client.get(path, headers={"Authorization": f"Bearer {token}"})
            assert_problem(response, 401)
            assert response.headers["www-authenticate"] == "Bearer"
        assert_problem(as_user.client.get(path), 401)


def test_a_token_checked_once_still_expires_and_a_tampered_copy_is_refused(
        env: Env, as_user: Clients) -> None:
    """The API remembers tokens whose signature it has checked (users.service): the
    memory must never outlive the expiry, nor vouch for a token that differs by a byte."""
    import time

    from eoffice.settings import get_settings

    issued = as_user.client.post("/api/v1/auth/token", data={
        "username": "clerk.tinh", "password": env.password("clerk.tinh")}).json()["access_token"]
    # The same claims, valid for four more seconds (ample for the two calls before expiry).
    claims = {**jwt.decode(issued, options={"verify_signature": False}),
              "exp": int(time.time()) + 4}
    token = jwt.encode(claims, get_settings().signing_secret(), "HS256")
    headers = {"Authorization": f"Bearer {token}"}
    for path in ("/api/v1/me", "/api/v1/inbox"):
        assert as_user.client.get(path, headers=headers).status_code == 200  # remembered
    header, body, signature = token.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    for tampered in (f"{header}.{body}.{flipped}", f"{header}.{body}x.{signature}"):
        assert_problem(as_user.client.get(
            "/api/v1/me", headers={"Authorization": f"Bearer {tampered}"}), 401)
    time.sleep(max(0.0, claims["exp"] - time.time()) + 0.05)
    for path in ("/api/v1/me", "/api/v1/inbox"):
        assert_problem(as_user.client.get(path, headers=headers), 401)


def test_tokens_are_short_lived(env: Env, as_user: Clients) -> None:
    response = as_user.client.post("/api/v1/auth/token", data={
        "username": "clerk.tinh", "password": env.password("clerk.tinh")}).json()
    assert response["token_type"] == "bearer" and response["expires_in"] <= 3600


def test_api_key_for_an_agency_system(env: Env, as_user: Clients) -> None:
    client = as_user.client
    created = client.post("/api/v1/api-keys", headers=as_user.headers("clerk.vuthu"),
                          json={"name": "Hệ thống QLVB huyện"})
    assert created.status_code == 201
    key = created.json()["key"]
    system = {"X-API-Key": key}
    assert client.get("/api/v1/me", headers=system).json()["agency_code"] == "000.00.12.H58"
    document = create_document(client, system)
    assert send(client, system, document["id"], ["000.00.00.H58"]).status_code == 202
    assert client.get("/api/v1/inbox", headers={"Authorization": f"Bearer {key}"}
                      ).status_code == 200
    assert_problem(client.get("/api/v1/me", headers={"X-API-Key": key[:-2] + "xx"}), 401)
    assert_problem(client.post("/api/v1/api-keys", headers=as_user.headers("officer.vuthu"),
                               json={"name": "x"}), 403)


def test_visibility_by_role_and_scope(env: Env, as_user: Clients) -> None:
    client = as_user.client
    commune = as_user.headers("clerk.minhlang")
    document = create_document(client, commune)
    send(client, commune, document["id"], ["000.00.12.H58"])
    url = f"/api/v1/documents/{document['id']}"
    # the sender's and receiver's staff see it
    for username in ("officer.minhlang", "leader.vuthu", "clerk.vuthu"):
        assert client.get(url, headers=as_user.headers(username)).status_code == 200
    # the province auditor (scope: the whole province) reads across agencies
    audited = client.get(url, headers=as_user.headers("auditor"))
    assert audited.status_code == 200 and len(audited.json()["deliveries"]) == 1
    # nobody else: other agencies, the province itself, the administrator
    for username in ("clerk.tinh", "clerk.donghop", "leader.snv", "admin"):
        assert client.get(url, headers=as_user.headers(username)).status_code == 404
    assert client.get(url).status_code == 401


def test_auditor_scope_is_a_subtree(env: Env, as_user: Clients) -> None:
    from sqlmodel import select

    from eoffice.db import new_session
    from eoffice.models import Agency, User

    client = as_user.client
    headers = as_user.headers("clerk.donghop")
    document = create_document(client, headers)
    send(client, headers, document["id"], ["000.00.13.H58"])
    with new_session() as session:
        vuthu = session.exec(select(Agency).where(Agency.code == "000.00.12.H58")).one()
        auditor = session.exec(select(User).where(User.username == "auditor")).one()
        auditor.scope_agency_id = vuthu.id
        session.add(auditor)
        session.commit()
    url = f"/api/v1/documents/{document['id']}"
    assert client.get(url, headers=as_user.headers("auditor")).status_code == 404
