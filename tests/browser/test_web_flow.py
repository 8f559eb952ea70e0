"""The web UI in a real browser against a real server (`eoffice serve`: app, Celery worker and
the embedded SQLite broker): compose and send, receive and accept, the sender's live status,
the leader's signature, an auditor catching a tampered PDF. Screenshots of every step go to
test-artifacts/screenshots/ (EOFFICE_SCREENSHOT_DIR overrides); accessibility basics (labels,
one h1, keyboard reach) are checked on each page.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = Path(os.environ.get("EOFFICE_SCREENSHOT_DIR", ROOT / "test-artifacts" / "screenshots"))
IN_CI = os.environ.get("CI", "").lower() == "true"


def _missing(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"browser tests cannot run in CI: {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"eoffice serve exited:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"eoffice serve not ready in {seconds}s:\n{log.read_text()[-4000:]}")


class Server:
    def __init__(self, url: str, data_dir: Path) -> None:
        self.url = url
        self.data_dir = data_dir
        from eoffice.agencies.demo import read_demo_users

        self.users = {u["username"]: u for u in read_demo_users(data_dir)}

    def password(self, username: str) -> str:
        return str(self.users[username]["password"])

    def code(self, username: str) -> str:
        return str(self.users[username]["agency_code"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if not Path(CHROMIUM).exists():
        _missing(f"{CHROMIUM} is not installed (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing("playwright is not installed")
    data_dir = tmp_path_factory.mktemp("browser-data")
    port = _free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("EOFFICE_") or k in ("EOFFICE_TEST_DATABASE_URL",)}
    env.update({"EOFFICE_ENVIRONMENT": "test", "EOFFICE_DATA_DIR": str(data_dir),
                "EOFFICE_BROKER_POLLING_INTERVAL": "0.1", "EOFFICE_OUTBOX_RELAY_SECONDS": "1",
                "PYTHONUNBUFFERED": "1"})
    env.pop("EOFFICE_TEST_DATABASE_URL", None)
    log = data_dir / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "eoffice.cli", "serve", "--port", str(port),
             "--data-dir", str(data_dir)], cwd=ROOT, env=env, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process, log, 120)
        yield Server(url, data_dir)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        finally:
            # Whatever of the group outlived a clean stop (worker pool, verifiers) goes too:
            # a stray worker would consume later tests' tasks.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def browser(server: Server) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=False)


A11Y_SCRIPT = """() => {
  const problems = [];
  const h1 = document.querySelectorAll('h1').length;
  if (h1 !== 1) problems.push('h1 count ' + h1);
  for (const el of document.querySelectorAll('input, select, textarea')) {
    if (el.type === 'hidden') continue;
    const named = (el.labels && el.labels.length) || el.getAttribute('aria-label')
      || el.getAttribute('aria-labelledby');
    if (!named) problems.push('unlabelled ' + el.tagName + '#' + el.id + '[' + el.name + ']');
  }
  return problems;
}"""

MARK_SCRIPT = """() => {
  const items = Array.from(document.querySelectorAll(
    'a[href], button, input:not([type=hidden]), select, textarea, [tabindex]:not([tabindex="-1"])'))
    .filter(el => !el.disabled && el.offsetParent !== null
      && !el.closest('details:not([open]) > :not(summary)'));
  items.forEach((el, i) => el.setAttribute('data-kb', String(i)));
  return items.length;
}"""


def check_accessibility(page: Any) -> None:
    """Labels on every control, one h1, and Tab reaches every visible action."""
    problems = page.evaluate(A11Y_SCRIPT)
    assert not problems, f"{page.url}: {problems}"
    total = page.evaluate(MARK_SCRIPT)
    page.evaluate("() => { document.activeElement && document.activeElement.blur(); "
                  "window.scrollTo(0, 0); }")
    page.focus("body")
    reached: set[str] = set()
    for _ in range(total + 10):
        page.keyboard.press("Tab")
        index = page.evaluate("() => document.activeElement && "
                              "document.activeElement.getAttribute('data-kb')")
        if index is not None:
            reached.add(index)
        if len(reached) == total:
            break
    missing = sorted(set(map(str, range(total))) - reached, key=int)
    assert not missing, f"{page.url}: keyboard cannot reach {missing[:5]} of {total}"


def sign_in(context: Any, server: Server, username: str, lang: str = "en") -> Any:
    page = context.new_page()
    page.goto(f"{server.url}/?lang={lang}")
    if lang == "en":
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(server.password(username))
        page.get_by_role("button", name="Sign in").click()
    else:
        page.get_by_label("Tên đăng nhập").fill(username)
        page.get_by_label("Mật khẩu").fill(server.password(username))
        page.get_by_role("button", name="Đăng nhập").click()
    page.wait_for_load_state("load")
    return page


def make_pdf() -> bytes:
    from tests.helpers import make_pdf as helper

    return helper("Van ban thu nghiem")


def test_exchange_sign_and_verify_in_the_browser(server: Server, browser: Any,
                                                 tmp_path: Path) -> None:
    from playwright.sync_api import expect

    pdf = tmp_path / "cong-van.pdf"
    pdf.write_bytes(make_pdf())
    district_code, province_code = server.code("clerk.vuthu"), server.code("clerk.tinh")

    # 1. the commune clerk signs in (Vietnamese labels by default) and composes
    sender_ctx = browser.new_context(viewport={"width": 1200, "height": 900})
    login = sender_ctx.new_page()
    login.goto(server.url + "/")
    expect(login.get_by_label("Tên đăng nhập")).to_be_visible()
    check_accessibility(login)
    shot(login, "01-sign-in")
    login.close()
    sender = sign_in(sender_ctx, server, "clerk.minhlang")
    expect(sender.locator(".who-agency")).to_contain_text("Minh Lãng")
    expect(sender.locator(".who-role")).to_have_text("Clerk")
    check_accessibility(sender)  # the inbox
    sender.get_by_role("link", name="Compose").click()
    sender.get_by_label("Subject").fill("V/v báo cáo chuyển đổi số quý I")
    sender.get_by_label("PDF file").set_input_files(str(pdf))
    sender.get_by_label("Find a recipient by name or code").fill("vu thu")
    expect(sender.locator(f'#recipients option[value="{district_code}"]')).not_to_be_hidden()
    sender.get_by_label("Recipients").select_option([district_code, province_code])
    check_accessibility(sender)
    shot(sender, "02-compose")
    sender.get_by_role("button", name="Send", exact=True).click()
    sender.wait_for_url("**/outbox")
    card = sender.locator(".card").filter(has_text="chuyển đổi số quý I")
    expect(card.locator(f'[data-receiver="{district_code}"] .st')).to_have_text(
        "01", timeout=20_000)
    check_accessibility(sender)

    # 2. the district clerk finds it in the inbox and accepts it
    district_ctx = browser.new_context(viewport={"width": 390, "height": 844})  # a phone
    district = sign_in(district_ctx, server, "clerk.vuthu", lang="vi")
    expect(district.get_by_role("heading", level=1)).to_have_text("Văn bản đến")
    row = district.locator("tr").filter(has_text="chuyển đổi số quý I")
    expect(row.locator(".mark-unread")).to_be_visible()
    check_accessibility(district)
    shot(district, "03-district-inbox-phone")
    row.get_by_role("link").click()
    district.get_by_role("button", name="Tiếp nhận và vào sổ (03)").click()
    expect(district.locator("#messages")).to_contain_text("số đến 1")

    # 3. the sender sees 03 appear without reloading
    expect(card.locator(f'[data-receiver="{district_code}"] .st')).to_have_text(
        "03", timeout=15_000)
    shot(sender, "04-outbox-live-03")

    # 4. a draft for signature; the leader signs it with the server-held key
    sender.goto(server.url + "/compose")
    sender.get_by_label("Subject").fill("Quyết định phê duyệt kế hoạch")
    sender.get_by_label("PDF file").set_input_files(str(pdf))
    sender.get_by_role("button", name="Save as draft").click()
    sender.wait_for_url("**/documents/*")
    document_url = sender.url
    leader_ctx = browser.new_context(viewport={"width": 1200, "height": 900})
    leader = sign_in(leader_ctx, server, "leader.minhlang")
    leader.get_by_role("link", name="Awaiting signature").click()
    leader.get_by_role("link", name="Quyết định phê duyệt kế hoạch").click()
    passphrase = (server.data_dir / "pki" / "users" / "leader.minhlang.pass").read_text().strip()
    leader.get_by_label("Passphrase of your signing key").fill(passphrase)
    check_accessibility(leader)
    leader.get_by_role("button", name="Sign", exact=True).click()
    leader.wait_for_url("**/jobs/*")
    expect(leader.locator("#job-state")).to_have_text("succeeded", timeout=60_000)
    leader.reload()  # progress is read from the jobs table
    expect(leader.locator("#job-state")).to_have_text("succeeded")
    shot(leader, "05-leader-signed")
    signed = leader.request.get(document_url + "/file").body()
    assert signed.startswith(b"%PDF-") and b"/ByteRange" in signed

    # 5. an auditor uploads a tampered copy and sees it failed
    tampered = tmp_path / "tampered.pdf"
    target = b"Van ban thu nghiem 1"
    assert signed.count(target) == 1
    tampered.write_bytes(signed.replace(target, b"Van ban thu nghiem 9"))
    auditor_ctx = browser.new_context(viewport={"width": 1200, "height": 900})
    auditor = sign_in(auditor_ctx, server, "auditor")
    expect(auditor.get_by_role("heading", level=1)).to_have_text(
        "Verify the signatures of a PDF")
    auditor.get_by_label("PDF file to verify").set_input_files(str(tampered))
    auditor.get_by_role("button", name="Verify", exact=True).click()
    expect(auditor.locator("#overall-verdict")).to_have_text("Invalid", timeout=60_000)
    expect(auditor.locator("#overall-verdict")).to_have_class("verdict verdict-TOTAL_FAILED")
    check_accessibility(auditor)
    shot(auditor, "06-auditor-tampered")

    for context in (sender_ctx, district_ctx, leader_ctx, auditor_ctx):
        context.close()
    # the server log beside the screenshots, for whoever reads the artifacts
    shutil.copy(server.data_dir / "serve.log", SHOTS / "serve.log")
