"""Browser-like helpers for the web UI tests: a TestClient that accepts HTML, sign-in."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Env

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token of the first form in a page."""
    match = CSRF.search(html)
    assert match, "no CSRF token in the page"
    return match.group(1)


class Browser:
    """One cookie jar, like one browser."""

    def __init__(self, env: Env, base_url: str = "http://testserver") -> None:
        from eoffice.app import create_app

        self.env = env
        self.client = TestClient(create_app(), base_url=base_url)
        self.client.headers["accept"] = "text/html,application/xhtml+xml"

    def get(self, url: str, **kwargs: object):  # type: ignore[no-untyped-def]
        return self.client.get(url, **kwargs)  # type: ignore[arg-type]

    def post(self, url: str, **kwargs: object):  # type: ignore[no-untyped-def]
        return self.client.post(url, **kwargs)  # type: ignore[arg-type]

    def token(self, url: str = "/login") -> str:
        return csrf_of(self.get(url).text)

    def login(self, username: str, password: str | None = None, next: str = ""):  # type: ignore[no-untyped-def]
        token = self.token("/login")
        return self.post("/login", data={
            "username": username, "password": password or self.env.password(username),
            "csrf_token": token, "next": next})

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def browser_factory(env: Env) -> Iterator[object]:
    opened: list[Browser] = []

    def make(base_url: str = "http://testserver") -> Browser:
        browser = Browser(env, base_url)
        opened.append(browser)
        return browser

    yield make
    for browser in opened:
        browser.close()
