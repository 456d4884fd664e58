"""Walk the URL map: every staff endpoint refuses anonymous users, every write refuses analysts."""

import re

import pytest
from werkzeug.routing import Rule

PUBLIC_ENDPOINTS = {"evaluation.sign_in", "evaluation.sign_out", "evaluation.set_language"}


def staff_rules(app) -> list[Rule]:
    return [r for r in app.url_map.iter_rules()
            if r.endpoint.startswith("evaluation.") and r.endpoint not in PUBLIC_ENDPOINTS]


def concrete_paths(rule: Rule, round_id: int) -> list[str]:
    """Every URL a rule can produce for the round (each choice of an any() converter)."""
    paths = []
    choices = {name: getattr(conv, "items", None) for name, conv in rule._converters.items()}
    any_name = next((n for n, items in choices.items() if items), None)
    values = choices[any_name] if any_name else [None]
    for value in values:
        args = {"round_id": round_id} if "round_id" in rule.arguments else {}
        if any_name:
            args[any_name] = value
        paths.append(rule.build(args)[1])
    return paths


def test_every_staff_view_is_behind_an_access_decorator(app):
    for rule in staff_rules(app):
        assert getattr(app.view_functions[rule.endpoint], "access", None) in ("read", "write"), rule


def test_anonymous_user_gets_only_the_sign_in_page(app, client, make_round):
    round_ = make_round("open")
    for rule in staff_rules(app):
        for path in concrete_paths(rule, round_.id):
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                response = client.open(path, method=method)
                if method == "POST" and response.status_code == 400:
                    continue  # refused earlier still: no CSRF token
                assert response.status_code == 302, (method, path, response.status_code)
                assert response.location.startswith("/staff/sign-in"), (method, path)


def test_anonymous_post_with_valid_csrf_is_still_refused(app, client, post, make_round):
    round_ = make_round("draft")
    response = post(f"/staff/rounds/{round_.id}/open")
    assert response.status_code == 302 and response.location.startswith("/staff/sign-in")
    assert round_.status == "draft"


def test_analyst_is_refused_every_write(app, client, sign_in, post, make_round, session):
    from evaluation.models import Round
    round_ = make_round("draft")
    sign_in("analyst")
    writes = [r for r in staff_rules(app) if app.view_functions[r.endpoint].access == "write"]
    assert {r.endpoint for r in writes} >= {
        "evaluation.new_round", "evaluation.transition_round", "evaluation.edit_settings",
        "evaluation.edit_list", "evaluation.edit_questionnaire", "evaluation.import_cadres",
        "evaluation.make_slips", "evaluation.send_invitations", "evaluation.send_reminders"}
    for rule in writes:
        for path in concrete_paths(rule, round_.id):
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                response = post(path) if method == "POST" else client.get(path)
                assert response.status_code == 403, (method, path, response.status_code)
    session.expire_all()
    assert session.get(Round, round_.id).status == "draft"


def test_analyst_can_read(client, sign_in, make_round):
    round_ = make_round("open")
    sign_in("analyst")
    for path in ["/staff/rounds", f"/staff/rounds/{round_.id}",
                 f"/staff/rounds/{round_.id}/spec.json", f"/staff/rounds/{round_.id}/frozen.json"]:
        assert client.get(path).status_code == 200, path
    page = client.get(f"/staff/rounds/{round_.id}").get_data(as_text=True)
    assert "/close" not in page and "New round" not in page


@pytest.mark.parametrize("role", ["organiser", "admin"])
def test_writers_see_the_buttons(client, sign_in, make_round, role):
    round_ = make_round("open")
    sign_in(role)
    page = client.get(f"/staff/rounds/{round_.id}").get_data(as_text=True)
    assert re.search(rf'action="/staff/rounds/{round_.id}/close"', page)
