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


def transition_round(session: Session, round_: Round, action: str, actor: str) -> Round:
    """Open, close, publish or archive the round; refuse an illegal move; log and commit."""
    if action not in TRANSITIONS:
        raise TransitionError(Problem.of(N_("unknown action {action!r}"), action=action))
    sources, target, stamp = TRANSITIONS[action]
    if round_.status not in sources:
        raise TransitionError(Problem.of(
            N_("cannot {action} a round that is {status} (only a round that is {sources})"),
            action=action, status=round_.status, sources=" or ".join(sources)))
    values = {"status": target, stamp: utcnow()}
    if action == "open":
        problems = readiness_problems(round_)
        if problems:
            raise TransitionError(Problem.of(N_("the round cannot open: {problems}"),
                                             problems="; ".join(map(str, problems))), problems)
        text = canonical_json(frozen_settings(export_spec(round_)))
        values |= {"frozen_spec": text, "fingerprint": fingerprint(text)}
    # Conditional update: of two racing requests exactly one moves the round.
    result = session.execute(
        update(Round).where(Round.id == round_.id, Round.status == round_.status).values(**values)
        .execution_options(synchronize_session=False))
    if result.rowcount != 1:
        session.rollback()
        raise TransitionError(Problem.of(N_("the round changed meanwhile; reload and try again")))
    if action == "close":
        # The closing mix locks the round FOR UPDATE: ballots in flight (FOR KEY SHARE) commit
        # first and are mixed and sealed with the rest; later ones find the round closed.
        mix_round(session, round_.id)
        seal_round(session, round_)
    audit.record(session, actor, f"round.{action}", round_.id,
                 **({"fingerprint": values["fingerprint"]} if action == "open" else {}))
    session.commit()
    if action == "close":
        vacuum_after_mix(session, full=True)
    session.refresh(round_)
    return round_

