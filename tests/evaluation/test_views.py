"""Staff pages through the test client: sign-in, round set-up, edits, imports, lifecycle, language."""

import hashlib
import html
import io
import re

import pytest
from openpyxl import Workbook
from sqlalchemy import func, select

from evaluation.definitions import export_spec
from evaluation.models import Participation, Round

EXAMPLE = "examples/round.json"


def text(response) -> str:
    return response.get_data(as_text=True)


# --- sign in -------------------------------------------------------------------------------

def test_sign_in_with_wrong_password_is_refused(client, make_user, post):
    user, _password = make_user("organiser")
    response = post("/staff/sign-in", {"email": user.email, "password": "wrong password!"})
    assert response.status_code == 200
    assert "Wrong e-mail or password" in text(response) or "邮箱或密码错误" in text(response)
    assert client.get("/staff/rounds").status_code == 302


def test_sign_in_without_csrf_token_is_refused(client, make_user):
    user, password = make_user("organiser")
    response = client.post("/staff/sign-in", data={"email": user.email, "password": password})
    assert response.status_code == 400
    assert client.get("/staff/rounds").status_code == 302


def test_sign_in_sets_a_hardened_session_cookie(client, make_user, post):
    user, password = make_user("organiser")
    response = post("/staff/sign-in", {"email": user.email, "password": password})
    cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith("session="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # plain HTTP on 127.0.0.1 keeps working in development


def test_sign_in_is_rate_limited(client, make_user, post):
    user, password = make_user("organiser")
    statuses = [post("/staff/sign-in", {"email": user.email, "password": "wrong password!"}).status_code
                for _ in range(11)]
    assert statuses[:10] == [200] * 10 and statuses[10] == 429
    assert post("/staff/sign-in", {"email": user.email, "password": password}).status_code == 429


def test_open_redirect_after_sign_in_is_ignored(client, make_user, post):
    user, password = make_user("organiser")
    response = post("/staff/sign-in?next=//evil.example/x", {"email": user.email, "password": password})
    assert response.location == "/staff/rounds"


def test_sign_out_ends_the_session(client, sign_in, post):
    sign_in("organiser")
    post("/staff/sign-out")
    assert client.get("/staff/rounds").status_code == 302


def test_security_headers(client):
    response = client.get("/staff/sign-in")
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"


# --- the whole lifecycle in the browser's way ---------------------------------------------------

def test_example_round_from_upload_to_archive(client, sign_in, post, session):
    sign_in("organiser")
    with open(EXAMPLE, "rb") as fh:
        response = post("/staff/rounds/new", {"spec_file": (fh, "round.json")},
                        content_type="multipart/form-data")
    assert response.status_code == 302
    round_id = int(response.location.rsplit("/", 1)[1])
    response = post(f"/staff/rounds/{round_id}/open", follow_redirects=True)
    page = text(response)
    fingerprint = re.search(r'<code id="fingerprint"[^>]*>([0-9a-f]{64})</code>', page).group(1)
    frozen = client.get(f"/staff/rounds/{round_id}/frozen.json").data
    assert hashlib.sha256(frozen).hexdigest() == fingerprint
    for action, status in [("close", "closed"), ("publish", "published"), ("archive", "archived")]:
        assert post(f"/staff/rounds/{round_id}/{action}").status_code == 302
        assert session.get(Round, round_id).status == status
        session.expire_all()
    log = text(client.get(f"/staff/rounds/{round_id}"))
    for action in ("round.create", "round.open", "round.close", "round.publish", "round.archive"):
        assert action in log


def test_opening_and_closing_take_a_second_deliberate_click(client, sign_in, make_round):
    """The page's open and close buttons only unfold a warning with the real button (no
    JavaScript needed); the request itself is the same POST as before."""
    sign_in("organiser")
    for status, action, warning in (("draft", "open", "cannot be changed afterwards"),
                                    ("open", "close", "It cannot be undone.")):
        round_ = make_round(status)
        page = client.get(f"/staff/rounds/{round_.id}", headers={"Accept-Language": "en"}
                          ).get_data(as_text=True)
        block = re.search(r'<details class="confirm">(.*?)</details>', page, re.S).group(1)
        assert f'action="/staff/rounds/{round_.id}/{action}"' in block and warning in block
        assert f'<button type="submit" class="primary">Yes: ' in block


def test_illegal_transition_from_the_page_shows_a_message(client, sign_in, post, make_round, session):
    sign_in("organiser")
    round_ = make_round("draft")
    response = post(f"/staff/rounds/{round_.id}/publish", follow_redirects=True)
    assert "cannot publish a round that is draft" in text(response)
    session.expire_all()
    assert session.get(Round, round_.id).status == "draft"


def test_open_without_cadres_shows_why(client, sign_in, post, make_round):
    sign_in("organiser")
    round_ = make_round("draft", cadres=[])
    page = text(client.get(f"/staff/rounds/{round_.id}"))
    assert "cadres: a round needs at least one cadre" in page
    response = post(f"/staff/rounds/{round_.id}/open", follow_redirects=True)
    assert "the round cannot open" in text(response)


def test_new_round_with_defaults_and_with_a_template(client, sign_in, post, make_round, session):
    sign_in("organiser")
    template = make_round("open")
    blank = post("/staff/rounds/new", {"title": "Mid-year", "period": "2026H1", "template": "0"})
    copy = post("/staff/rounds/new", {"title": "Copy", "period": "2027", "template": str(template.id)})
    blank_round = session.get(Round, int(blank.location.rsplit("/", 1)[1]))
    copy_round = session.get(Round, int(copy.location.rsplit("/", 1)[1]))
    assert [g.key for g in blank_round.groups] == ["superior", "peer", "subordinate", "public"]
    assert len(blank_round.participations) == 0
    assert len(copy_round.participations) == 12 and copy_round.status == "draft"
    assert copy_round.title == "Copy"


def test_a_round_from_the_defaults_needs_a_title_and_a_period(client, sign_in, post, make_round,
                                                               session):
    from sqlalchemy import func, select
    sign_in("organiser")
    template = make_round("open")
    page = text(post("/staff/rounds/new", {"title": "  ", "period": "", "template": "0"},
                     headers={"Accept-Language": "en"}))
    assert "Give the round a title." in page and "Give the period, for example 2026." in page
    assert session.scalar(select(func.count()).select_from(Round)) == 1
    copy = post("/staff/rounds/new", {"title": "", "period": "", "template": str(template.id)})
    assert copy.status_code == 302  # a copy brings the title and period of its round
    assert session.get(Round, int(copy.location.rsplit("/", 1)[1])).title == template.title


def test_bad_spec_upload_lists_problems_and_creates_nothing(client, sign_in, post, session):
    sign_in("organiser")
    bad = b'{"title": "x", "period": "y", "rules": {"validity": "maybe"}}'
    response = post("/staff/rounds/new", {"spec_file": (io.BytesIO(bad), "r.json")},
                    content_type="multipart/form-data")
    assert response.status_code == 200
    assert "rules.validity: must be" in text(response)
    assert session.scalar(select(func.count(Round.id))) == 0


def test_spec_problems_show_in_the_page_s_language(client, sign_in, post, session, make_round):
    sign_in("organiser")
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "zh-CN"
    bad = (b'{"title": "x", "period": "y", "rules": {"validity": "maybe"},'
           b' "groups": [{"key": "a", "label": "A", "weight": 0.7}]}')
    page = html.unescape(text(post("/staff/rounds/new", {"spec_file": (io.BytesIO(bad), "r.json")},
                                   content_type="multipart/form-data")))
    assert "rules.validity: 须为 \"warn\" 或 \"invalidate\"，实际为 'maybe'" in page
    assert "groups[0].weight: 权重之和须为 1，目前为 0.7" in page
    empty = make_round("draft", cadres=[])
    page = html.unescape(text(client.get(f"/staff/rounds/{empty.id}")))
    assert "cadres: 一轮测评至少需要一名干部" in page


# --- editing a draft -------------------------------------------------------------------------

def settings_data(round_, **changes):
    spec = export_spec(round_)
    from evaluation.editing import settings_form_data
    data = settings_form_data(spec)
    data = {k: v for k, v in data.items() if v not in (False, None)}
    data.update(changes)
    return data


def test_settings_edit_saves_and_logs(client, sign_in, post, make_round, session):
    sign_in("organiser")
    round_ = make_round()
    data = settings_data(round_, threshold="1/4", bands="2:6:2", excellent_quota="25%")
    data.pop("strict")
    response = post(f"/staff/rounds/{round_.id}/settings", data)
    assert response.status_code == 302, text(response)
    session.expire_all()
    saved = session.get(Round, round_.id)
    assert (saved.threshold_num, saved.threshold_den, saved.strict) == (1, 4, False)
    assert saved.bands == [2, 6, 2] and saved.excellent_quota == 0.25
    assert "round.edit" in text(client.get(f"/staff/rounds/{round_.id}"))


@pytest.mark.parametrize("field, value, message", [
    ("trim_k", "٣", "rules.trim.k: must be a whole number"),
    ("threshold", "2/1", "rules.dissatisfaction.threshold: must be between 0 and 1"),
    ("kpi_weight", "1.5", "rules.kpi_weight: must be at most 1, got 1.5"),
    ("item_max", "0", "item_scale.max: must be at least 1, got 0"),
    ("bands", "3:x:2", "rules.bands[1]: must be a number"),
    ("title", "", "title: must be a non-empty string"),
])
def test_bad_settings_are_refused_and_change_nothing(client, sign_in, post, make_round, session,
                                                      example_spec, field, value, message):
    sign_in("organiser")
    round_ = make_round()
    response = post(f"/staff/rounds/{round_.id}/settings", settings_data(round_, **{field: value}))
    assert response.status_code == 200
    assert message in text(response)
    session.expire_all()
    assert export_spec(session.get(Round, round_.id)) == example_spec


def rows_payload(rows: list[dict], prefix="rows") -> dict:
    data = {}
    for i, row in enumerate(rows):
        for key, value in row.items():
            if value is True:
                data[f"{prefix}-{i}-{key}"] = "y"
            elif value not in (False, None):
                data[f"{prefix}-{i}-{key}"] = value
    return data


def test_group_edit_with_weights_not_adding_up_marks_the_row(client, sign_in, post, make_round, session,
                                                              example_spec):
    from evaluation.editing import rows_for
    sign_in("organiser")
    round_ = make_round()
    rows = rows_for("groups", example_spec)
    rows[3]["weight"] = "0.1"
    rows.append({"key": "", "label_zh": "", "label_en": "", "weight": "", "cadres": ""})  # blank
    response = post(f"/staff/rounds/{round_.id}/groups", rows_payload(rows))
    assert "#4 weight: weights must add up to 1, they add up to 0.9" in text(response)
    assert "<legend>4</legend>" in text(response)
    assert "Clear a row to remove it; fill a blank row to add one.</p>" in text(response)
    assert 'class="field has-error"' in text(response)
    session.expire_all()
    assert export_spec(session.get(Round, round_.id))["groups"] == example_spec["groups"]


def test_a_group_with_links_cannot_be_removed_and_the_page_says_why_in_its_language(
        client, sign_in, post, make_round, session, example_spec):
    from evaluation.editing import rows_for
    from evaluation.invitations import Keys, issue_links
    sign_in("organiser")
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "zh-CN"
    round_ = make_round()
    issue_links(session, round_, "public", 1, Keys.from_config(client.application.config["PINGYI"]),
                "test")
    rows = rows_for("groups", example_spec)
    rows[2]["weight"] = str(float(rows[2]["weight"]) + float(rows[3]["weight"]))
    page = html.unescape(text(post(f"/staff/rounds/{round_.id}/groups", rows_payload(rows[:3]))))
    assert "评价群体 'public' 已发放链接，不能删除" in page
    session.expire_all()
    assert export_spec(session.get(Round, round_.id))["groups"] == example_spec["groups"]


def test_cadre_rows_edit_removes_cleared_rows(client, sign_in, post, make_round, session, example_spec):
    from evaluation.editing import rows_for
    sign_in("organiser")
    round_ = make_round()
    rows = rows_for("cadres", example_spec)
    rows[11] = {"key": "", "name": "", "post": "", "unit": "", "kpi": ""}
    response = post(f"/staff/rounds/{round_.id}/cadres", rows_payload(rows))
    assert response.status_code == 302, text(response)
    session.expire_all()
    assert [c["key"] for c in export_spec(session.get(Round, round_.id))["cadres"]] == [
        f"c{i:02d}" for i in range(1, 12)]


def test_questionnaire_edit(client, sign_in, post, make_round, session):
    sign_in("organiser")
    round_ = make_round()
    data = rows_payload([{"key": "de", "label_zh": "德", "label_en": "Character", "weight": "0.4"},
                         {"key": "ji", "label_zh": "绩", "label_en": "Results", "weight": "0.6"}],
                        "dimensions")
    data |= rows_payload([{"key": "a", "label_zh": "甲", "label_en": "A", "dimension": "de"},
                          {"key": "b", "label_zh": "乙", "label_en": "B", "dimension": "ji"},
                          {"key": "c", "label_zh": "丙", "label_en": "C", "dimension": "nowhere"}],
                         "items")
    response = post(f"/staff/rounds/{round_.id}/questionnaire", data)
    assert "items[2].dimension: no dimension with key &#39;nowhere&#39;" in text(response)
    del data["items-2-key"], data["items-2-label_zh"], data["items-2-label_en"], data["items-2-dimension"]
    response = post(f"/staff/rounds/{round_.id}/questionnaire", data)
    assert response.status_code == 302, text(response)
    session.expire_all()
    dims = export_spec(session.get(Round, round_.id))["dimensions"]
    assert [(d["key"], d["weight"], [i["key"] for i in d["items"]]) for d in dims] == [
        ("de", 0.4, ["a"]), ("ji", 0.6, ["b"])]


def test_open_round_cannot_be_edited_from_the_pages(client, sign_in, post, make_round, session):
    sign_in("organiser")
    round_ = make_round("open")
    response = post(f"/staff/rounds/{round_.id}/settings", settings_data(round_, title="Changed"))
    assert response.status_code == 302
    assert "settings are frozen" in text(client.get(response.location))
    session.expire_all()
    assert session.get(Round, round_.id).title != "Changed"


# --- imports ---------------------------------------------------------------------------------

def xlsx(rows) -> bytes:
    book = Workbook()
    for row in rows:
        book.active.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def test_csv_import_adds_and_updates_by_key(client, sign_in, post, make_round, session):
    sign_in("organiser")
    round_ = make_round()
    csv = "编号,姓名,职务,单位,KPI\nc01,王建国,党委书记(新),综合办公室,95\nc13,新干部,主任,办公室,\n"
    response = post(f"/staff/rounds/{round_.id}/cadres/import",
                    {"file": (io.BytesIO(csv.encode("utf-8-sig")), "cadres.csv")},
                    content_type="multipart/form-data")
    assert response.status_code == 302, text(response)
    session.expire_all()
    cadres = export_spec(session.get(Round, round_.id))["cadres"]
    assert len(cadres) == 13
    assert cadres[0]["post"] == "党委书记(新)" and cadres[0]["kpi"] == 95
    assert cadres[12] == {"key": "c13", "name": "新干部", "post": "主任", "unit": "办公室", "kpi": None}


def test_xlsx_import_with_bad_rows_lists_them_and_imports_nothing(client, sign_in, post, make_round,
                                                                  session, example_spec):
    sign_in("organiser")
    round_ = make_round()
    data = xlsx([["key", "name", "kpi"], ["c20", "甲", 80], ["", "乙", 70], ["c21", "", 101],
                 ["c20", "丙", None]])
    response = post(f"/staff/rounds/{round_.id}/cadres/import", {"file": (io.BytesIO(data), "c.xlsx")},
                    content_type="multipart/form-data")
    assert response.status_code == 400
    page = text(response)
    for problem in ["row 3: key: required", "row 4: name: required",
                    "row 4: kpi: must be a number from 0 to 100, got &#39;101&#39;",
                    "row 5: key: &#39;c20&#39; repeats row 2"]:
        assert problem in page
    session.expire_all()
    assert export_spec(session.get(Round, round_.id)) == example_spec


def test_import_and_transition_refusals_show_in_the_page_s_language(client, sign_in, post,
                                                                    make_round, session):
    sign_in("organiser")
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "zh-CN"
    round_ = make_round()
    data = xlsx([["key", "name", "kpi"], ["c20", "甲", 80], ["", "乙", 70], ["c20", "丙", 101]])
    page = html.unescape(text(post(f"/staff/rounds/{round_.id}/cadres/import",
                                   {"file": (io.BytesIO(data), "c.xlsx")},
                                   content_type="multipart/form-data")))
    for problem in ["第 3 行：编号：必填", "第 4 行：编号：'c20' 与第 2 行重复",
                    "第 4 行：KPI：须为 0 到 100 之间的数字，实际为 '101'"]:
        assert problem in page
    page = html.unescape(text(post(f"/staff/rounds/{round_.id}/publish", follow_redirects=True)))
    assert "状态为“草稿”的测评不能执行此操作；只有状态为“已结束”的测评可以" in page
    empty = make_round("draft", cadres=[])
    page = html.unescape(text(post(f"/staff/rounds/{empty.id}/open", follow_redirects=True)))
    assert "测评还不能开始：cadres: 一轮测评至少需要一名干部" in page


@pytest.mark.parametrize("filename, payload, message", [
    ("c.csv", b"name,post\nx,y\n", "row 1: a &#39;key&#39; column is required"),
    ("c.csv", b"key,name,salary\n1,x,3\n", "row 1: unknown column &#39;salary&#39;"),
    ("c.xlsx", b"not a zip", "file: not a readable XLSX workbook"),
    ("c.csv", b"", "file: it is empty"),
    ("c.txt", b"key,name\n", "A .csv or .xlsx file"),
])
def test_unreadable_imports_are_refused(client, sign_in, post, make_round, session, filename,
                                        payload, message):
    sign_in("organiser")
    round_ = make_round()
    response = post(f"/staff/rounds/{round_.id}/cadres/import",
                    {"file": (io.BytesIO(payload), filename)}, content_type="multipart/form-data")
    assert response.status_code == 400
    assert message in text(response)
    assert session.scalar(select(func.count(Participation.id))) == 12


def test_oversized_upload_is_refused(client, sign_in, post, make_round):
    sign_in("organiser")
    round_ = make_round()
    big = b"key,name\n" + b"c1,x\n" * 1_000_000
    response = post(f"/staff/rounds/{round_.id}/cadres/import", {"file": (io.BytesIO(big), "c.csv")},
                    content_type="multipart/form-data")
    assert response.status_code == 413


# --- language ------------------------------------------------------------------------------

def test_language_follows_the_browser_and_the_switch(client, post):
    zh = text(client.get("/staff/sign-in", headers={"Accept-Language": "zh-CN,zh;q=0.9"}))
    en = text(client.get("/staff/sign-in", headers={"Accept-Language": "en-GB,en;q=0.8"}))
    assert "登录" in zh and 'lang="zh-CN"' in zh
    assert "Staff sign in" in en and 'lang="en"' in en
    post("/staff/language", {"lang": "en", "next": "/staff/sign-in"})
    switched = text(client.get("/staff/sign-in", headers={"Accept-Language": "zh-CN"}))
    assert "Staff sign in" in switched
