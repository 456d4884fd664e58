"""Round use cases: create and edit a draft from a spec, and move a round through its lifecycle."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.types import utcnow
from evaluation import audit
from evaluation.ballot_box import seal_round
from evaluation.definitions import apply_spec, export_spec
from evaluation.errors import (
    N_, NotFoundError, PingyiError, Problem, RoundNotEditableError, TransitionError,
)
from evaluation.mixing import mix_round, vacuum_after_mix
from evaluation.models import Round
from evaluation.specs import (
    SpecError, canonical_json, fingerprint, frozen_settings, validate_spec,
)

#: action -> (states it may start from, state it leads to, timestamp column)
TRANSITIONS = {
    "open": (("draft",), "open", "opened_at"),
    "close": (("open",), "closed", "closed_at"),
    "publish": (("closed",), "published", "published_at"),
    "archive": (("closed", "published"), "archived", "archived_at"),
}


def get_round(session: Session, round_id: int) -> Round:
    """The round with this id, or NotFoundError."""
    round_ = session.get(Round, round_id)
    if round_ is None:
        raise NotFoundError(f"no round with id {round_id}")
    return round_


def list_rounds(session: Session) -> list[Round]:
    """All rounds, newest first."""
    return list(session.scalars(select(Round).order_by(Round.id.desc())))


def create_round(session: Session, spec: dict, actor: str) -> Round:
    """Create a draft round from a validated spec, log it and commit."""
    round_ = Round(title=spec["title"], period=spec["period"], status="draft")
    session.add(round_)
    try:
        apply_spec(session, round_, spec)
        audit.record(session, actor, "round.create", round_.id, title=round_.title)
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise PingyiError(f"the round could not be saved: {exc.orig}") from None
    return round_


def update_round(session: Session, round_: Round, spec: dict, actor: str, what: str) -> Round:
    """Replace a draft round's definition by a validated spec, log it and commit."""
    try:
        apply_spec(session, round_, spec)
        audit.record(session, actor, "round.edit", round_.id, section=what)
        session.commit()
    except PingyiError:
        session.rollback()
        raise
    except IntegrityError as exc:
        session.rollback()
        raise PingyiError(f"the round could not be saved: {exc.orig}") from None
    return round_


def edit_round(session: Session, round_: Round, changes: dict, actor: str, what: str) -> Round:
    """Apply top-level spec changes to a draft: merge, validate the whole, then save."""
    if not round_.is_draft:
        raise RoundNotEditableError(Problem.of(
            N_("only a draft round can be changed; this one is {status}"), status=round_.status))
    document = export_spec(round_) | changes
    spec = validate_spec(document)
    return update_round(session, round_, spec, actor, what)


def readiness_problems(round_: Round) -> list[Problem]:
    """Why the round cannot open yet; empty when it can."""
    try:
        spec = validate_spec(export_spec(round_))
    except SpecError as exc:
        return exc.details
    problems = []
    if not spec["cadres"]:
        problems.append(Problem("cadres", N_("a round needs at least one cadre")))
    if not spec["groups"]:
        problems.append(Problem("groups", N_("a round needs at least one rater group")))
    rated = {key for g in spec["groups"] for key in (g["cadres"] or [c["key"] for c in spec["cadres"]])}
    for i, cadre in enumerate(spec["cadres"]):
        if cadre["key"] not in rated:
            problems.append(Problem(f"cadres[{i}]", N_("no group rates {key!r}"),
                                    (("key", cadre["key"]),)))
    return problems


def is_closing(round_: Round) -> bool:
    """Voting has ended but the ballots are not yet mixed and sealed: a close that stopped halfway
    (or a round closed before seals existed). Closing it again finishes the job."""
    return round_.status == "closed" and round_.seal_head is None


def transition_round(session: Session, round_: Round, action: str, actor: str) -> Round:
    """Open, close, publish or archive the round; refuse an illegal move; log and commit.

    Closing ends voting first, in a transaction of its own, and then mixes and seals the ballots
    (see finish_closing): a close never waits behind voters who keep arriving. Closing a round
    whose close stopped halfway finishes it; publishing or archiving it is refused until then.
    """
    if action not in TRANSITIONS:
        raise TransitionError(Problem.of(N_("unknown action {action!r}"), action=action))
    if action == "close" and is_closing(round_):
        return finish_closing(session, round_, actor)
    sources, target, stamp = TRANSITIONS[action]
    if round_.status not in sources:
        raise TransitionError(Problem.of(
            N_("cannot {action} a round that is {status} (only a round that is {sources})"),
            action=action, status=round_.status, sources=" or ".join(sources)))
    if is_closing(round_):
        raise TransitionError(Problem.of(
            N_("the round's close did not finish: close it again before you {action} it"),
            action=action))
    values = {"status": target, stamp: utcnow()}
    if action == "open":
        problems = readiness_problems(round_)
        if problems:
            raise TransitionError(Problem.of(N_("the round cannot open: {problems}"),
                                             problems="; ".join(map(str, problems))), problems)
        text = canonical_json(frozen_settings(export_spec(round_)))
        values |= {"frozen_spec": text, "fingerprint": fingerprint(text)}
    _move(session, round_, values, actor, f"round.{action}",
          {"fingerprint": values["fingerprint"]} if action == "open" else {})
    if action == "close":
        return finish_closing(session, round_, actor)
    session.refresh(round_)
    return round_


def _move(session: Session, round_: Round, values: dict, actor: str, action: str,
          detail: dict) -> None:
    """Set the round's new state with a conditional update (of two racing requests exactly one
    moves the round) and log it, committed together (see audit.commit_entry).

    Committed on its own: once a close is, every cast finds the round closed (and on PostgreSQL
    does not even take its lock on the round), so the closing mix waits only for casts in flight.
    """
    status = round_.status

    def write() -> None:
        result = session.execute(
            update(Round).where(Round.id == round_.id, Round.status == status).values(**values)
            .execution_options(synchronize_session=False))
        if result.rowcount != 1:
            session.rollback()
            raise TransitionError(Problem.of(N_("the round changed meanwhile; reload and try again")))

    audit.commit_entry(session, actor, action, round_.id, write=write, **detail)


def finish_closing(session: Session, round_: Round, actor: str) -> Round:
    """Mix and seal a closed round's ballots, commit, log the seal; clear old row versions.

    A conditional update claims the unsealed round first: it takes SQLite's write lock before the
    seal is read, and of two requests finishing one close the second finds the seal made and
    does nothing. The closing mix then locks the round FOR UPDATE on PostgreSQL: ballots in flight
    (FOR KEY SHARE) commit first and are mixed and sealed with the rest.
    """
    claimed = session.execute(
        update(Round).where(Round.id == round_.id, Round.status == "closed",
                            Round.seal_head.is_(None))
        .values(sealed_count=None).execution_options(synchronize_session=False))
    if claimed.rowcount != 1:
        session.rollback()
        session.refresh(round_)
        return round_
    mix_round(session, round_.id)
    seal_round(session, round_)
    session.commit()
    session.refresh(round_)
    audit.commit_entry(session, actor, "round.seal", round_.id, ballots=round_.sealed_count,
                       seal=round_.seal_head)
    vacuum_after_mix(session, full=True)
    session.refresh(round_)
    return round_
