"""The `flask --app wsgi ...` commands, through Click's runner on the real app and database."""

import json

import pytest
from sqlalchemy import func, select

from evaluation.models import AuditEntry, Cadre, Round, User

EXAMPLE = "examples/round.json"


def count(session, model):
    return session.scalar(select(func.count()).select_from(model))


def test_round_create_prints_only_the_new_id(runner, session):
    result = runner.invoke(args=["round", "create", "--from", EXAMPLE])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().isdigit()
    round_ = session.get(Round, int(result.stdout))
    assert round_.status == "draft" and len(round_.participations) == 12


def test_bad_spec_exits_2_with_one_line_per_problem_and_creates_nothing(runner, session, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"title": "", "period": "2026", "groups": [
        {"key": "a", "label": "A", "weight": 0.5}, {"key": "b", "label": "B", "weight": 0.2},
        {"key": "c", "label": "C", "weight": 0.2}]}))
    result = runner.invoke(args=["round", "create", "--from", str(bad)])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: {bad}: title: must be a non-empty string",
        f"error: {bad}: groups[2].weight: weights must add up to 1, they add up to 0.9",
    ]
    assert count(session, Round) == 0 and count(session, Cadre) == 0
    assert count(session, AuditEntry) == 0


def test_missing_spec_file_is_refused(runner, tmp_path):
    result = runner.invoke(args=["round", "create", "--from", str(tmp_path / "nope.json")])
    assert result.exit_code == 2
    assert "cannot read the file" in result.stderr


def test_lifecycle_from_the_command_line(runner, session):
    round_id = runner.invoke(args=["round", "create", "--from", EXAMPLE]).stdout.strip()
    for action, status in [("open", "open"), ("close", "closed"), ("publish", "published"),
                           ("archive", "archived")]:
        result = runner.invoke(args=["round", action, round_id])
        assert result.exit_code == 0, result.output
        assert f"round {round_id} is {status}" in result.stderr
    session.expire_all()
    assert session.get(Round, int(round_id)).status == "archived"


def test_open_prints_the_fingerprint(runner, session):
    round_id = runner.invoke(args=["round", "create", "--from", EXAMPLE]).stdout.strip()
    result = runner.invoke(args=["round", "open", round_id])
    fingerprint = session.get(Round, int(round_id)).fingerprint
    assert f"fingerprint {fingerprint}" in result.stderr


def test_illegal_transition_exits_non_zero_with_one_line(runner):
    round_id = runner.invoke(args=["round", "create", "--from", EXAMPLE]).stdout.strip()
    result = runner.invoke(args=["round", "publish", round_id])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: cannot publish a round that is draft (only a round that is closed)")


def test_unknown_round_is_refused(runner):
    result = runner.invoke(args=["round", "open", "999"])
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: no round with id 999"


def test_round_list(runner):
    runner.invoke(args=["round", "create", "--from", EXAMPLE])
    table = runner.invoke(args=["round", "list"])
    assert table.stdout.startswith("1\tdraft\t2026\t")
    listed = json.loads(runner.invoke(args=["round", "list", "--json"]).stdout)
    assert listed[0]["id"] == 1 and listed[0]["status"] == "draft"


def test_user_create_from_stdin(runner, session):
    result = runner.invoke(args=["user", "create", "Ana@Example.org", "--role", "analyst",
                                 "--password-stdin"], input="a long enough password\n")
    assert result.exit_code == 0, result.output
    user = session.scalar(select(User))
    assert (user.email, user.role) == ("ana@example.org", "analyst")
    assert "a long enough password" not in user.password_hash


def test_user_create_prompts_for_the_password(runner, session):
    result = runner.invoke(args=["user", "create", "o@example.org", "--role", "organiser"],
                           input="another long password\nanother long password\n")
    assert result.exit_code == 0, result.output
    assert count(session, User) == 1


@pytest.mark.parametrize("args, stdin, message", [
    (["user", "create", "not-an-email", "--role", "admin", "--password-stdin"],
     "long enough password\n", "email: 'not-an-email' is not an e-mail address"),
    (["user", "create", "a@example.org", "--role", "admin", "--password-stdin"], "short\n",
     "password: at least 10 characters"),
])
def test_user_create_refusals(runner, session, args, stdin, message):
    result = runner.invoke(args=args, input=stdin)
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: {message}"
    assert count(session, User) == 0


def test_duplicate_user_is_refused(runner, session):
    args = ["user", "create", "a@example.org", "--role", "admin", "--password-stdin"]
    runner.invoke(args=args, input="long enough password\n")
    result = runner.invoke(args=args, input="long enough password\n")
    assert result.exit_code == 1
    assert "a user a@example.org exists already" in result.stderr


def test_bad_role_is_refused_by_click(runner, session):
    result = runner.invoke(args=["user", "create", "a@example.org", "--role", "king",
                                 "--password-stdin"], input="long enough password\n")
    assert result.exit_code == 2
    assert count(session, User) == 0


def test_demo_loads_once(runner, session):
    first = runner.invoke(args=["demo"])
    assert first.exit_code == 0, first.output
    assert "organiser@example.org" in first.stderr
    links = (runner.app.config["PINGYI"].instance_path / "demo-links.txt").read_text().splitlines()
    assert len(links) == 20 and all(line.count("\t") == 2 for line in links)
    assert "sample ballot links:" in first.stderr
    second = runner.invoke(args=["demo"])
    assert "present already" in second.stderr
    assert count(session, Round) == 1
    assert session.scalar(select(Round)).status == "open"


def test_every_option_has_help_text(app):
    import click
    commands = [app.cli.get_command(None, name) for name in ("user", "round", "demo")]
    stack = list(commands)
    while stack:
        command = stack.pop()
        if isinstance(command, click.Group):
            stack.extend(command.commands.values())
            continue
        assert command.help, command.name
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"{command.name} {param.name}"
