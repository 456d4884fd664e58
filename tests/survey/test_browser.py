"""A real browser (Debian's Chromium, driven by Playwright) at a phone's size: from a link to a
receipt, with the Excellent-quota warning on the way. A screenshot is kept in the test's folder."""

import os
import threading

import pytest
from playwright.sync_api import sync_playwright
from werkzeug.serving import make_server

CHROMIUM = os.environ.get("PINGYI_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def live_server(app):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def phone():
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: `make test` installs Debian's chromium"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        context = browser.new_context(viewport={"width": 360, "height": 740}, device_scale_factor=2,
                                      is_mobile=True, has_touch=True, locale="zh-CN")
        yield context.new_page()
        browser.close()


def test_phone_votes_from_link_to_receipt(live_server, phone, make_round, issue, session, tmp_path):
    from evaluation.models import Ballot
    round_ = make_round("open")
    link = issue(round_)[0]
    phone.goto(f"{live_server}/v/{link.token}")
    assert phone.url == f"{live_server}/ballot"  # the token is gone from the address bar
    assert phone.locator("#progress").inner_text() == "已评 0 / 12 人"
    # The page fits the phone: nothing wider than the viewport.
    assert phone.evaluate("document.documentElement.scrollWidth") <= 360
    cadres = [p.cadre.key for p in round_.participations]
    for n, key in enumerate(cadres):
        grade = "excellent" if n < 4 else "competent"
        phone.locator(f"input[name='grade-{key}'][value='{grade}']").check(force=True)
        for item in round_.items:
            phone.locator(f"input[name='item-{key}-{item.key}'][value='8']").check(force=True)
    assert phone.locator("#progress").inner_text() == "已评 12 / 12 人"
    assert phone.locator("#quota-warning").is_visible()  # 4 Excellent, quota 3
    phone.screenshot(path=str(tmp_path / "quota-warning.png"), full_page=False)
    phone.locator(f"input[name='grade-{cadres[3]}'][value='competent']").check(force=True)
    assert not phone.locator("#quota-warning").is_visible()
    phone.locator("form#ballot button[type=submit]").click()
    phone.wait_for_url(f"{live_server}/receipt")
    receipt = phone.locator("code#receipt").inner_text()
    phone.screenshot(path=str(tmp_path / "receipt.png"), full_page=True)
    assert (tmp_path / "receipt.png").stat().st_size > 10_000
    session.expire_all()
    from sqlalchemy import select
    assert session.scalar(select(Ballot.receipt)) == receipt
    again = phone.goto(f"{live_server}/v/{link.token}")
    assert again.status == 409


def test_ballot_works_with_javascript_off(live_server, make_round, issue, session):
    from evaluation.models import Ballot
    from sqlalchemy import func, select
    round_ = make_round("open")
    link = issue(round_)[0]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_context(java_script_enabled=False, viewport={"width": 360, "height": 740},
                                   locale="en").new_page()
        page.goto(f"{live_server}/v/{link.token}")
        for p_ in round_.participations:
            page.locator(f"input[name='grade-{p_.cadre.key}'][value='competent']").check(force=True)
            for item in round_.items:
                page.locator(f"input[name='item-{p_.cadre.key}-{item.key}'][value='6']").check(force=True)
        page.get_by_role("button", name="Submit my ballot").click()
        page.wait_for_url(f"{live_server}/receipt")
        assert page.locator("code#receipt").inner_text()
        browser.close()
    assert session.scalar(select(func.count()).select_from(Ballot)) == 1


def fill_ballot(page, round_):
    """Answer every cadre the public rates (Competent, 7 on every item) and cast."""
    for key in [p.cadre.key for p in round_.participations]:
        page.locator(f"input[name='grade-{key}'][value='competent']").check(force=True)
        for item in round_.items:
            page.locator(f"input[name='item-{key}-{item.key}'][value='7']").check(force=True)
    page.locator("form#ballot button[type=submit]").click()


def test_printed_slips_are_scanned_or_typed_on_a_phone_to_a_receipt(
        app, live_server, phone, make_round, make_user, session, tmp_path):
    """The organiser prints a sheet of slips; a phone scans one slip's QR code off the sheet (as
    decoded from a screenshot of it) and votes; another voter types the short code of another
    slip. Both get a receipt, and each slip votes once."""
    import zxingcpp
    from PIL import Image
    from sqlalchemy import func, select

    from evaluation.models import Ballot
    app.config["PINGYI"] = app.config["PINGYI"].replace(base_url=live_server)
    round_ = make_round("open")
    user, password = make_user("organiser")
    desktop = phone.context.browser.new_context(viewport={"width": 1000, "height": 1400},
                                                locale="en")
    desk = desktop.new_page()  # the organiser's browser
    desk.goto(f"{live_server}/staff/sign-in")
    desk.fill("input[name=email]", user.email)
    desk.fill("input[name=password]", password)
    desk.locator("form.narrow [type=submit]").click()
    desk.goto(f"{live_server}/staff/rounds/{round_.id}")
    desk.select_option("form.slips select[name=group]", "public")
    desk.fill("form.slips input[name=count]", "4")
    desk.locator("form.slips button[type=submit]").click()
    desk.wait_for_load_state()
    codes = [c.strip() for c in desk.locator(".slip .code").all_inner_texts()]
    desk.locator(".slip").first.screenshot(path=str(tmp_path / "slip.png"))
    desk.screenshot(path=str(tmp_path / "slips.png"), full_page=True)
    desktop.close()
    assert len(codes) == 4
    scanned = [r.text for r in zxingcpp.read_barcodes(Image.open(tmp_path / "slips.png"))]
    assert len(scanned) == 4 and all(url.startswith(f"{live_server}/v/") for url in scanned)
    [first] = [r.text for r in zxingcpp.read_barcodes(Image.open(tmp_path / "slip.png"))]

    def type_code(code):
        phone.context.clear_cookies()  # the next voter on this phone
        phone.goto(f"{live_server}/code")
        phone.fill("input[name=code]", code)
        with phone.expect_navigation() as navigation:
            phone.locator("form#code-form [type=submit]").click()
        return navigation.value

    phone.goto(first)  # scanned off the first slip
    fill_ballot(phone, round_)
    phone.wait_for_url(f"{live_server}/receipt")
    assert phone.locator("code#receipt").inner_text()
    assert phone.goto(first).status == 409
    assert type_code(codes[0]).status == 409  # the code printed beside that QR code: same slip

    type_code(codes[1].lower().replace("-", ""))  # typed, as people type
    assert phone.url == f"{live_server}/ballot"
    fill_ballot(phone, round_)
    phone.wait_for_url(f"{live_server}/receipt")
    assert type_code(codes[1]).status == 409
    session.expire_all()
    assert session.scalar(select(func.count()).select_from(Ballot)) == 2


def test_progress_and_quota_follow_answers_the_browser_restores(live_server, phone, make_round,
                                                                 issue):
    """Grade four cadres, read the "what is stored" page, come back: the browser puts the
    answers back, and the progress and the quota warning count them."""
    round_ = make_round("open")
    phone.goto(f"{live_server}/v/{issue(round_)[0].token}")
    for p in round_.participations[:4]:
        phone.locator(f"input[name='grade-{p.cadre.key}'][value='excellent']").check(force=True)
    assert phone.locator("#progress").inner_text() == "已评 4 / 12 人"
    phone.goto(f"{live_server}/about")
    phone.go_back()
    phone.wait_for_load_state("load")
    key = round_.participations[0].cadre.key
    assert phone.locator(f"input[name='grade-{key}'][value='excellent']").is_checked()
    assert phone.locator("#progress").inner_text() == "已评 4 / 12 人"
    assert phone.locator("#quota-warning").is_visible()


def test_switching_language_halfway_keeps_the_answers(live_server, phone, make_round, issue):
    round_ = make_round("open")
    phone.goto(f"{live_server}/v/{issue(round_)[0].token}")
    for p in round_.participations[:3]:
        phone.locator(f"input[name='grade-{p.cadre.key}'][value='competent']").check(force=True)
    phone.locator("header button[value='en']").click()
    phone.wait_for_url(f"{live_server}/ballot/language")
    assert phone.locator("html").get_attribute("lang") == "en"
    assert phone.locator("#progress").inner_text() == "3 of 12 rated"
