"""The web UI over the real services: sign-in, CSRF, isolation, the exchange flow, errors."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from sqlmodel import func, select

from eoffice.models import Document
from tests.conftest import Env
from tests.helpers import make_pdf
from tests.web.conftest import Browser, csrf_of

COMMUNE, DISTRICT, PROVINCE = "clerk.minhlang", "clerk.vuthu", "clerk.tinh"
OUTSIDER = "clerk.donghop"
Factory = Callable[..., Browser]


def _count_documents() -> int:
    from eoffice.db import new_session

    with new_session() as session:
        return int(session.exec(select(func.count()).select_from(Document)).one())


def _compose(browser: Browser, recipients: list[str], subject: str = "V/v thử nghiệm giao diện",
             **extra: object):  # type: ignore[no-untyped-def]
    token = csrf_of(browser.get("/compose").text)
    data = {"csrf_token": token, "type_name": "Công văn", "subject": subject, "priority": "1",
            "competence": "TM.", "position": "Chủ tịch", "full_name": "Nguyễn Văn An",
            "to_places": "Như trên;\nLưu: VT.", "recipients": recipients, "action": "send"}
    data.update(extra)  # type: ignore[arg-type]
    return browser.post("/compose", data=data,
                        files={"file": ("van-ban.pdf", make_pdf(), "application/pdf")})


def test_sign_in_shows_agency_and_role_in_vietnamese_then_english(
        browser_factory: Factory, env: Env) -> None:
    browser = browser_factory()
    first = browser.get("/")
    assert first.url.path == "/login"
    assert "Tên đăng nhập" in first.text and "Mật khẩu" in first.text
    assert first.text.count("<h1") == 1
    signed_in = browser.login(COMMUNE)
    assert signed_in.url.path == "/inbox"
    assert "Văn thư" in signed_in.text and "Minh Lãng" in signed_in.text
    cookie = signed_in.history[0].headers["set-cookie"]
    assert "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()
    assert "secure" not in cookie.lower()  # plain http in the test
    english = browser.get("/compose?lang=en")
    assert "Recipients" in english.text and ">Send<" in english.text
    assert "Subject" in english.text
    # remembered for the session
    assert ">Inbox<" in browser.get("/inbox").text
    assert "Clerk" in browser.get("/inbox").text


def test_cookie_is_secure_over_https(browser_factory: Factory) -> None:
    browser = browser_factory("https://testserver")
    response = browser.get("/login")
    assert "secure" in response.headers["set-cookie"].lower()


def test_wrong_password_then_lock_out(browser_factory: Factory, env: Env) -> None:
    browser = browser_factory()
    for _ in range(5):
        response = browser.login(COMMUNE, "wrong-password")
        assert response.status_code == 401
        assert "Sai tên đăng nhập hoặc mật khẩu" in response.text
    locked = browser.login(COMMUNE)  # even the right password is refused now
    assert locked.status_code == 429
    assert "tạm khóa" in locked.text
    assert browser.get("/inbox").url.path == "/login"


def test_csrf_is_refused_and_nothing_is_stored(browser_factory: Factory,
                                               env: Env) -> None:
    browser = browser_factory()
    browser.login(COMMUNE)
    before = _count_documents()
    district = env.user(DISTRICT)["agency_code"]
    for token in (None, "forged-token"):
        data = {"subject": "Giả mạo", "recipients": [district], "action": "send"}
        if token:
            data["csrf_token"] = token
        refused = browser.post("/compose", data=data,
                               files={"file": ("a.pdf", make_pdf(), "application/pdf")})
        assert refused.status_code == 403
        assert "Biểu mẫu đã hết hạn" in refused.text
        assert "Traceback" not in refused.text
    assert _count_documents() == before
    # sign-in and sign-out forms are protected too
    assert browser.post("/logout").status_code == 403
    other = browser_factory()
    assert other.post("/login", data={"username": COMMUNE,
                                      "password": env.password(COMMUNE)}
                      ).status_code == 403
    # an HTMX request may send the token as a header instead
    token = csrf_of(browser.get("/compose").text)
    ok = browser.post("/compose", headers={"X-CSRF-Token": token, "HX-Request": "true"},
                      data={"subject": "Qua HTMX", "recipients": [district],
                            "action": "send"},
                      files={"file": ("a.pdf", make_pdf(), "application/pdf")})
    assert ok.status_code == 200 and ok.headers["HX-Redirect"] == "/outbox"
    assert _count_documents() == before + 1


def test_exchange_through_the_pages(browser_factory: Factory, env: Env) -> None:
    sender, district, province, outsider = (browser_factory() for _ in range(4))
    sender.login(COMMUNE)
    district.login(DISTRICT)
    province.login(PROVINCE)
    outsider.login(OUTSIDER)
    codes = [env.user(u)["agency_code"] for u in (DISTRICT, PROVINCE)]

    sent = _compose(sender, codes)
    assert sent.url.path == "/outbox"
    assert "Đã gửi, số 01/UBND-VP" in sent.text
    document_id = int(re.search(r'data-document="(\d+)"', sent.text).group(1))

    inbox = district.get("/inbox")
    assert "V/v thử nghiệm giao diện" in inbox.text and "Chưa đọc" in inbox.text
    assert "Khẩn" in inbox.text  # urgency marker
    assert district.get("/inbox?q=01/UBND").text.count("data-delivery=") == 0  # number search
    assert district.get("/inbox?q=UBND-VP").text.count("data-delivery=") == 1
    assert district.get("/inbox?q=Minh").text.count("data-delivery=") == 1  # by sender name
    assert district.get("/inbox?status=03").text.count("data-delivery=") == 0
    assert district.get("/inbox?date_from=2000-01-01&date_to=2000-01-31"
                        ).text.count("data-delivery=") == 0

    page = district.get(f"/documents/{document_id}")
    assert page.status_code == 200
    assert "Tiếp nhận và vào sổ (03)" in page.text
    delivery_id = int(re.search(r'/deliveries/(\d+)/status', page.text).group(1))
    accepted = district.post(f"/deliveries/{delivery_id}/status",
                             data={"code": "03", "csrf_token": csrf_of(page.text)})
    assert "Đã tiếp nhận; số đến 1." in accepted.text
    assert "Chưa đọc" not in district.get("/inbox").text

    # the sender's live fragment shows 03 for the district and 01 for the province
    rows = sender.get("/outbox?rows=true", headers={"HX-Request": "true", "X-Poll": "1"})
    assert "set-cookie" not in rows.headers  # a poll does not extend the session
    assert re.search(rf'data-receiver="{re.escape(codes[0])}".*?st-03', rows.text, re.S)
    assert re.search(rf'data-receiver="{re.escape(codes[1])}".*?st-01', rows.text, re.S)

    # reject needs a reason; with one it works
    province_page = province.get(f"/documents/{document_id}")
    province_delivery = int(re.search(r'/deliveries/(\d+)/status', province_page.text).group(1))
    token = csrf_of(province_page.text)
    no_reason = province.post(f"/deliveries/{province_delivery}/status",
                              data={"code": "02", "csrf_token": token})
    assert no_reason.status_code == 422 and "Cần nêu lý do từ chối" in no_reason.text
    rejected = province.post(f"/deliveries/{province_delivery}/status",
                             data={"code": "02", "reason": "Sai thẩm quyền", "csrf_token": token})
    assert "Đã từ chối" in rejected.text

    # another agency's document page is not there for an outsider, file neither
    hidden = outsider.get(f"/documents/{document_id}")
    assert hidden.status_code == 404 and "Không tìm thấy văn bản" in hidden.text
    assert "Traceback" not in hidden.text
    assert outsider.get(f"/documents/{document_id}/file").status_code == 404

    # the sender's document page has the full history
    own = sender.get(f"/documents/{document_id}")
    assert "document.sent" in own.text and "Sai thẩm quyền" in own.text
    assert sender.get(f"/documents/{document_id}/file").content.startswith(b"%PDF-")

    # assign, process, complete, then forward and reply
    page = district.get(f"/documents/{document_id}")
    token = csrf_of(page.text)
    assigned = district.post(f"/deliveries/{delivery_id}/status",
                             data={"code": "04", "assignee": "officer.vuthu",
                                   "csrf_token": token})
    assert "Đã phân công." in assigned.text
    done = district.post(f"/deliveries/{delivery_id}/status",
                         data={"code": "06", "csrf_token": token})
    assert "Đã hoàn thành." in done.text
    forwarded = district.post(f"/deliveries/{delivery_id}/forward",
                              data={"recipients": ["all-communes"], "note": "Để biết",
                                    "csrf_token": token})
    assert "Đã chuyển tiếp." in forwarded.text
    reply = district.get(f"/compose?reply_to={document_id}")
    assert "Trả lời văn bản 01/UBND-VP" in reply.text
    assert re.search(r'value="{}"[^>]*selected'.format(re.escape(
        env.user(COMMUNE)["agency_code"])), reply.text)


def test_recall_and_answer(browser_factory: Factory, env: Env) -> None:
    sender, district = browser_factory(), browser_factory()
    sender.login(COMMUNE)
    district.login(DISTRICT)
    sent = _compose(sender, [env.user(DISTRICT)["agency_code"]])
    document_id = int(re.search(r'data-document="(\d+)"', sent.text).group(1))
    page = sender.get(f"/documents/{document_id}")
    recalled = sender.post(f"/documents/{document_id}/recall",
                           data={"reason": "Nhầm nơi nhận", "csrf_token": csrf_of(page.text)})
    assert "Đã gửi đề nghị thu hồi" in recalled.text
    page = district.get(f"/documents/{document_id}")
    assert "Nơi gửi đề nghị thu hồi văn bản này." in page.text and "Nhầm nơi nhận" in page.text
    delivery_id = int(re.search(r'/deliveries/(\d+)/status', page.text).group(1))
    agreed = district.post(f"/deliveries/{delivery_id}/status",
                           data={"code": "15", "csrf_token": csrf_of(page.text)})
    assert agreed.url.path == "/inbox" and "Đã đồng ý đề nghị." in agreed.text
    assert district.get(f"/documents/{document_id}").status_code == 404
    assert "st-15" in sender.get("/outbox?rows=true").text


def test_compose_errors_are_messages_in_the_page(browser_factory: Factory,
                                                 env: Env) -> None:
    browser = browser_factory()
    browser.login(COMMUNE)
    before = _count_documents()
    no_recipient = _compose(browser, [])
    assert no_recipient.status_code == 422 and "Cần chọn ít nhất một nơi nhận" in no_recipient.text
    token = csrf_of(browser.get("/compose").text)
    not_pdf = browser.post("/compose", data={"csrf_token": token, "subject": "X",
                                             "recipients": ["all-communes"]},
                           files={"file": ("x.pdf", b"hello", "application/pdf")})
    assert not_pdf.status_code == 415 and "không phải là PDF" in not_pdf.text
    htmx = browser.post("/compose", headers={"HX-Request": "true", "X-CSRF-Token": token},
                        data={"subject": "", "recipients": ["all-communes"]})
    assert htmx.status_code == 422 and htmx.headers["HX-Retarget"] == "#messages"
    assert 'class="alert alert-error"' in htmx.text and "<html" not in htmx.text
    english = browser.get("/compose?lang=en")
    assert english.status_code == 200
    bad_type = browser.post("/compose", data={"csrf_token": token, "subject": "X",
                                              "type_name": "Thư tình",
                                              "recipients": ["all-communes"]})
    assert bad_type.status_code == 422 and "Document type" in bad_type.text
    assert _count_documents() == before


def test_expired_session_goes_to_sign_in_and_back(browser_factory: Factory, env: Env,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from itsdangerous.timed import TimestampSigner

    browser = browser_factory()
    browser.login(COMMUNE)
    assert browser.get("/outbox").url.path == "/outbox"
    real = TimestampSigner.get_timestamp
    # 31 minutes later (the idle limit is 30)
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: real(self) + 31 * 60)
    expired = browser.get("/outbox?q=abc", follow_redirects=False)
    assert expired.status_code == 303
    assert expired.headers["location"] == "/login?next=/outbox%3Fq%3Dabc"
    htmx = browser.get("/outbox?rows=true", headers={"HX-Request": "true",
                                                     "HX-Current-URL": "http://testserver/outbox"},
                       follow_redirects=False)
    assert htmx.headers["HX-Redirect"] == "/login?next=/outbox"
    sign_in = browser.get(expired.headers["location"])
    assert "Phiên làm việc đã hết hạn" in sign_in.text
    back = browser.login(COMMUNE, next="/outbox?q=abc")
    assert back.url.path == "/outbox" and back.url.params["q"] == "abc"
    # never an open redirect
    assert browser.login(COMMUNE, next="//evil.example/x").url.path == "/inbox"


def test_paper_register_verify_audit_and_dashboard(browser_factory: Factory,
                                                   env: Env) -> None:
    clerk, auditor = browser_factory(), browser_factory()
    clerk.login(DISTRICT)
    page = clerk.get("/register-paper")
    # The metadata fields it shares with the compose form (templates/_fields.html).
    for field in ('select id="type_name"', 'select id="priority"', 'textarea id="subject"',
                  'input id="due_date"', "Khẩn"):
        assert field in page.text and field in clerk.get("/compose").text, field
    registered = clerk.post("/register-paper", data={
        "csrf_token": csrf_of(page.text), "direction": "incoming", "subject": "Công văn giấy",
        "counterpart_name": "Bưu điện tỉnh", "type_name": "Công văn"})
    assert "Đã vào sổ, số 01." in registered.text and "Bưu điện tỉnh" in registered.text

    auditor.login("auditor")
    assert auditor.get("/").url.path == "/verify"
    token = csrf_of(auditor.get("/verify").text)
    report = auditor.post("/verify", data={"csrf_token": token},
                          files={"file": ("plain.pdf", make_pdf(), "application/pdf")})
    assert report.status_code == 200 and "Không có chữ ký số" in report.text
    trail = auditor.get("/audit?action=register")
    assert "register.paper_incoming" in trail.text
    checked = auditor.post("/audit/check", data={"csrf_token": csrf_of(trail.text)})
    assert "Chuỗi nhật ký toàn vẹn" in checked.text
    assert clerk.get("/audit").status_code == 403
    dashboard = auditor.get("/dashboard?lang=en")
    assert dashboard.status_code == 200 and "Electronic exchange rate" in dashboard.text
    assert clerk.get("/dashboard/trend.svg").headers["content-type"].startswith("image/svg")
    assert clerk.get("/dashboard/exchange.csv").headers["content-type"].startswith("text/csv")


def test_unknown_page_and_api_errors_stay_apart(browser_factory: Factory) -> None:
    browser = browser_factory()
    browser.login(COMMUNE)
    missing = browser.get("/documents/999999")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")
    api = browser.client.get("/api/v1/inbox", headers={"accept": "application/json"})
    assert api.status_code == 401 and api.headers["content-type"].startswith(
        "application/problem+json")
    # A key no table can hold is bad input, not a crash (SQLite overflowed with a 500).
    huge = browser.get(f"/documents/{2**70}")
    assert huge.status_code == 422 and huge.headers["content-type"].startswith("text/html")
    # The first and last days a date can name filter nothing out of the audit page.
    auditor = browser_factory()
    auditor.login("auditor")
    audit = auditor.get("/audit", params={"date_from": "0001-01-01", "date_to": "9999-12-31"})
    assert audit.status_code == 200, audit.text[:300]
