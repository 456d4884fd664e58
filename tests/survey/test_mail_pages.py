"""E-mail invitations and reminders from the round page, through a real SMTP server on loopback."""

import email
import email.policy
import html
import re

from sqlalchemy import func, select

from evaluation.models import Invitation
from tests.conftest import csrf_token
from tests.survey.conftest import REFUSED, free_port, full_ballot


def text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def invited(session) -> int:
    return session.scalar(select(func.count()).select_from(Invitation))


def upload(post, round_, path, group="subordinate", name=None):
    """Post the invite form with a file, as a browser would, and follow to the round page."""
    with path.open("rb") as file:
        return post(f"/staff/rounds/{round_.id}/invite", {"group": group, "file": (file, name or path.name)},
                    content_type="multipart/form-data", follow_redirects=True)


def remind(post, round_):
    return post(f"/staff/rounds/{round_.id}/remind", follow_redirects=True)


def test_round_page_offers_the_invite_form_and_the_reminder_button(client, sign_in, make_round):
    sign_in()
    round_ = make_round("open")
    page = client.get(f"/staff/rounds/{round_.id}").get_data(as_text=True)
    form = re.search(rf'<form method="post" action="/staff/rounds/{round_.id}/invite"[^>]*>', page)
    assert form and 'enctype="multipart/form-data"' in form.group(0)
    assert 'accept=".csv,.xlsx"' in page and "Send invitations" in page
    assert f'action="/staff/rounds/{round_.id}/remind"' in page
    assert "flask --app wsgi invite" not in page
    title = re.search(r"<title>(.*?)</title>", page, re.S).group(1)
    assert "<script" not in title and page.count("/static/turnout.js") == 1


def test_draft_round_page_has_the_invite_form_but_no_reminder_button(client, sign_in, make_round):
    sign_in()
    round_ = make_round("draft")
    page = client.get(f"/staff/rounds/{round_.id}").get_data(as_text=True)
    assert f'action="/staff/rounds/{round_.id}/invite"' in page
    assert f'action="/staff/rounds/{round_.id}/remind"' not in page


def test_upload_mails_each_good_address_its_own_link_and_reports_the_others(
        app, client, sign_in, post, make_round, session, inbox, addresses):
    sign_in()
    round_ = make_round("open")
    page = text(upload(post, round_, addresses))
    assert sorted(m["To"] for m in inbox.messages) == ["a@example.org", "b@example.org"]
    link_a, link_b = inbox.links_for("a@example.org")[0], inbox.links_for("b@example.org")[0]
    assert link_a != link_b
    assert "Sent 2, skipped 0 (sent before), failed 2." in page
    assert "Not sent: not-an-address: row 4: not an e-mail address" in page
    assert f"Not sent: {REFUSED}:" in page
    assert "No mail server is configured" not in page
    assert invited(session) == 3  # a, b and the refused one, whose link was never mailed
    assert all(app.test_client().get(link).status_code == 302 for link in (link_a, link_b))


def test_uploading_again_sends_nobody_a_second_link(client, sign_in, post, make_round, session, inbox,
                                                    addresses):
    sign_in()
    round_ = make_round("open")
    upload(post, round_, addresses)
    count = invited(session)
    page = text(upload(post, round_, addresses))
    assert "Sent 0, skipped 2 (sent before)" in page
    assert len(inbox.messages) == 2
    assert invited(session) == count


def test_analyst_cannot_send_invitations_or_reminders(client, sign_in, post, make_round, session,
                                                      inbox, addresses):
    sign_in("analyst")
    round_ = make_round("open")
    with addresses.open("rb") as file:
        response = post(f"/staff/rounds/{round_.id}/invite",
                        {"group": "subordinate", "file": (file, "people.csv")},
                        content_type="multipart/form-data")
    assert response.status_code == 403
    assert post(f"/staff/rounds/{round_.id}/remind").status_code == 403
    assert inbox.messages == [] and invited(session) == 0
    assert "Send invitations" not in client.get(f"/staff/rounds/{round_.id}").get_data(as_text=True)


def test_wrong_file_type_is_a_form_error_and_sends_nothing(client, sign_in, post, make_round,
                                                          session, inbox, tmp_path):
    sign_in()
    round_ = make_round("open")
    path = tmp_path / "people.txt"
    path.write_text("email\na@example.org\n")
    page = text(upload(post, round_, path))
    assert "Addresses (CSV or XLSX): A .csv or .xlsx file" in page
    assert inbox.messages == [] and invited(session) == 0


def test_file_without_an_email_column_is_refused(client, sign_in, post, make_round, session, inbox,
                                                 tmp_path):
    sign_in()
    round_ = make_round("open")
    path = tmp_path / "people.csv"
    path.write_text("name\nx\n")
    assert "Row 1: an “email” column is required." in text(upload(post, round_, path))
    assert inbox.messages == [] and invited(session) == 0


def test_without_a_mail_server_the_messages_land_in_the_outbox(app, client, sign_in, post,
                                                              make_round, tmp_path):
    sign_in()
    round_ = make_round("draft")
    path = tmp_path / "one.csv"
    path.write_text("email\nx@example.org\n")
    page = text(upload(post, round_, path, group="peer"))
    outbox = app.config["PINGYI"].instance_path / "outbox"
    assert "Sent 1, skipped 0 (sent before), failed 0." in page
    assert f"No mail server is configured: the messages were written to {outbox}" in page
    files = list(outbox.glob("*.eml"))
    assert len(files) == 1
    message = email.message_from_bytes(files[0].read_bytes(), policy=email.policy.default)
    assert message["To"] == "x@example.org" and "/v/" in message.get_content()


def test_an_unreachable_mail_server_sends_nothing_and_still_reports_the_bad_rows(
        app, client, sign_in, post, make_round, session, addresses):
    app.config["PINGYI"] = app.config["PINGYI"].replace(mail_server="127.0.0.1", mail_port=free_port())
    sign_in()
    round_ = make_round("open")
    page = text(upload(post, round_, addresses))
    assert "Could not send through the mail server:" in page
    assert "Not sent: not-an-address: row 4: not an e-mail address" in page  # fix the file meanwhile
    assert "Sent 0," in page and f"Not sent: {REFUSED}" not in page
    assert invited(session) == 0
    assert "Could not send through the mail server:" in text(remind(post, round_))


def test_a_long_list_of_failures_is_cut_at_twenty_lines(client, sign_in, post, make_round, session,
                                                        tmp_path):
    sign_in()
    round_ = make_round("open")
    path = tmp_path / "people.csv"
    path.write_text("email\n" + "".join(f"bad-{n}\n" for n in range(25)) + "ok@example.org\n")
    page = text(upload(post, round_, path))
    assert "Sent 1, skipped 0 (sent before), failed 25." in page
    assert page.count("Not sent: bad-") == 20
    assert "and 5 more addresses not sent." in page
    assert invited(session) == 1


def test_reminders_mail_a_fresh_link_only_to_those_who_have_not_voted(
        app, client, sign_in, post, make_round, session, inbox, addresses):
    sign_in()
    round_ = make_round("open")
    upload(post, round_, addresses)
    old_a, old_b = inbox.links_for("a@example.org")[0], inbox.links_for("b@example.org")[0]
    voter = app.test_client()
    assert voter.get(old_a).status_code == 302
    assert voter.post("/ballot", data={**full_ballot(round_, "subordinate"),
                                       "csrf_token": csrf_token(voter)}).status_code == 302
    page = text(remind(post, round_))
    assert "Sent 1, skipped 0 (sent before), failed 0." in page
    reminders = inbox.messages[2:]
    assert [m["To"] for m in reminders] == ["b@example.org"]
    assert reminders[0]["Subject"].startswith("提醒")
    new_b = inbox.links_for("b@example.org")[1]
    assert new_b != old_b
    assert app.test_client().get(old_b).status_code == 404
    assert app.test_client().get(new_b).status_code == 302
    assert "links.remind" in client.get(f"/staff/rounds/{round_.id}").get_data(as_text=True)


def test_reminders_on_a_draft_round_are_refused_with_a_clear_error(client, sign_in, post,
                                                                   make_round, inbox, addresses):
    sign_in()
    round_ = make_round("draft")
    upload(post, round_, addresses)
    sent = len(inbox.messages)
    page = text(remind(post, round_))
    assert "This round is draft: no mail goes out now." in page
    assert len(inbox.messages) == sent


def test_the_invitation_report_is_in_chinese_for_a_chinese_browser(client, sign_in, post, make_round,
                                                                   inbox, addresses):
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "zh-CN"
    sign_in()
    round_ = make_round("open")
    assert "发送邀请" in client.get(f"/staff/rounds/{round_.id}").get_data(as_text=True)
    page = text(upload(post, round_, addresses))
    assert "已发送 2 封，跳过 0 封（此前已发送），失败 2 封。" in page
    assert "未发送：not-an-address：" in page


def test_refusals_of_pingyi_s_own_show_in_the_page_s_language(client, sign_in, post, make_round,
                                                             inbox, addresses, tmp_path):
    sign_in()
    round_ = make_round("open")
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "zh-CN"
    page = text(upload(post, round_, addresses))
    assert "未发送：not-an-address：第 4 行：不是电子邮箱地址" in page
    assert f"未发送：{REFUSED}：" in page  # the mail server's own words follow, as it said them
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    assert "文件是空的。" in text(upload(post, round_, empty))



def test_an_unreadable_address_file_is_refused_in_the_page_s_language(client, sign_in, post,
                                                                      make_round, tmp_path):
    sign_in()
    round_ = make_round("open")
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "zh-CN"
    broken = tmp_path / "people.xlsx"
    broken.write_bytes(b"not a zip")
    assert "file: 不是可读取的 XLSX 工作簿" in text(upload(post, round_, broken))
