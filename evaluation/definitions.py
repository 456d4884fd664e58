"""Between a normalised round spec and the rows that hold a round's definition."""

from __future__ import annotations

from fractions import Fraction

from sqlalchemy import select
from sqlalchemy.orm import Session

from evaluation.models import (
    Cadre, Dimension, Grade, GroupTarget, Invitation, Item, Participation, RaterGroup, Round,
)
from evaluation.errors import N_, Problem, RoundNotEditableError


def _label(obj) -> dict:
    return {"zh": obj.label_zh, "en": obj.label_en}


def _set_label(obj, label: dict) -> None:
    obj.label_zh, obj.label_en = label["zh"], label["en"]


def export_spec(round_: Round) -> dict:
    """The round's definition as a normalised spec (the same shape validate_spec returns)."""
    threshold = Fraction(round_.threshold_num, round_.threshold_den)
    return {
        "title": round_.title,
        "period": round_.period,
        "grades": [{"key": g.key, "label": _label(g), "score": _number(g.score),
                    "dissatisfied": g.is_dissatisfied} for g in round_.grades],
        "dont_know": round_.dont_know,
        "dimensions": [{"key": d.key, "label": _label(d), "weight": _number(d.weight),
                        "items": [{"key": i.key, "label": _label(i)} for i in d.items]}
                       for d in round_.dimensions],
        "item_scale": {"min": round_.item_min, "max": round_.item_max},
        "groups": _groups_with_keys(round_),
        "cadres": [{"key": p.cadre.key, "name": p.cadre.name, "post": p.post, "unit": p.unit,
                    "kpi": _number(p.kpi)} for p in round_.participations],
        "rules": {
            "trim": {"method": round_.trim_method, "k": round_.trim_k,
                     "proportion": _number(round_.trim_proportion), "min_n": round_.trim_min_n},
            "dissatisfaction": {"grades": [g.key for g in round_.grades if g.is_dissatisfied],
                                "threshold": f"{threshold.numerator}/{threshold.denominator}",
                                "strict": round_.strict},
            "min_group_size": round_.min_group_size,
            "excellent_quota": _number(round_.excellent_quota),
            "kpi_weight": _number(round_.kpi_weight),
            "bands": [_number(b) for b in round_.bands] if round_.bands else None,
            "reason_required_for_dissatisfied": round_.reason_required,
            "validity": round_.validity,
        },
    }


def _groups_with_keys(round_: Round) -> list[dict]:
    out = []
    for g in round_.groups:
        targets = None if g.rates_all else [
            p.cadre.key for p in sorted((t.participation for t in g.targets),
                                        key=lambda p: p.position)]
        out.append({"key": g.key, "label": _label(g), "weight": _number(g.weight),
                    "cadres": targets})
    return out


def _number(value):
    """Whole floats as ints, so that 100.0 and 100 export alike."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _sync(existing: list, wanted: list[dict], make, update) -> list:
    """Match rows to spec entries by key: update kept ones, make new ones; return in order."""
    by_key = {row.key: row for row in existing}
    result = []
    for position, entry in enumerate(wanted):
        row = by_key.pop(entry["key"], None)
        if row is None:
            row = make(entry)
        update(row, entry, position)
        result.append(row)
    return result


def _park_positions(session: Session, rows: list) -> None:
    """Move positions out of the way so that reordering never trips a unique constraint."""
    for n, row in enumerate(rows):
        row.position = -1 - n
    session.flush()


def apply_spec(session: Session, round_: Round, spec: dict) -> None:
    """Make the round's definition equal to the spec, matching children by key (flushes)."""
    if not round_.is_draft:
        raise RoundNotEditableError(Problem.of(N_("only a draft round can be changed")))
    _apply_rules(round_, spec)
    for rows in (round_.grades, round_.dimensions, round_.items, round_.groups,
                 round_.participations):
        _park_positions(session, rows)

    def set_grade(g, e, pos):
        g.position, g.score, g.is_dissatisfied = pos, e["score"], e["dissatisfied"]
        _set_label(g, e["label"])

    round_.grades = _sync(round_.grades, spec["grades"], lambda e: Grade(key=e["key"]), set_grade)
    _apply_cadres(session, round_, spec["cadres"])
    _apply_questionnaire(session, round_, spec["dimensions"])
    _apply_groups(session, round_, spec["groups"])
    session.flush()


def _apply_rules(round_: Round, spec: dict) -> None:
    rules = spec["rules"]
    threshold = Fraction(rules["dissatisfaction"]["threshold"])
    round_.title, round_.period, round_.dont_know = spec["title"], spec["period"], spec["dont_know"]
    round_.item_min, round_.item_max = spec["item_scale"]["min"], spec["item_scale"]["max"]
    trim = rules["trim"]
    round_.trim_method, round_.trim_k = trim["method"], trim["k"]
    round_.trim_proportion, round_.trim_min_n = trim["proportion"], trim["min_n"]
    round_.threshold_num, round_.threshold_den = threshold.numerator, threshold.denominator
    round_.strict = rules["dissatisfaction"]["strict"]
    round_.min_group_size = rules["min_group_size"]
    round_.excellent_quota = rules["excellent_quota"]
    round_.kpi_weight = rules["kpi_weight"]
    round_.bands = rules["bands"]
    round_.reason_required = rules["reason_required_for_dissatisfied"]
    round_.validity = rules["validity"]


def _apply_cadres(session: Session, round_: Round, cadres: list[dict]) -> None:
    keys = [c["key"] for c in cadres]
    people = {c.key: c for c in session.scalars(select(Cadre).where(Cadre.key.in_(keys)))} if keys else {}
    by_key = {p.cadre.key: p for p in round_.participations}
    result = []
    for position, entry in enumerate(cadres):
        cadre = people.get(entry["key"]) or Cadre(key=entry["key"], name=entry["name"])
        cadre.name = entry["name"]
        part = by_key.pop(entry["key"], None) or Participation(cadre=cadre)
        part.position, part.post, part.unit, part.kpi = (
            position, entry["post"], entry["unit"], entry["kpi"])
        result.append(part)
    round_.participations = result


def _apply_questionnaire(session: Session, round_: Round, dimensions: list[dict]) -> None:
    """Sync dimensions and items; items move before any dimension goes, so none is lost."""
    wanted_items = {i["key"] for d in dimensions for i in d["items"]}
    round_.items = [i for i in round_.items if i.key in wanted_items]
    session.flush()
    old_items = {i.key: i for i in round_.items}
    old_dimensions = list(round_.dimensions)

    def set_dimension(d, e, pos):
        d.position, d.weight = pos, e["weight"]
        _set_label(d, e["label"])

    kept = _sync(old_dimensions, dimensions, lambda e: Dimension(key=e["key"]), set_dimension)
    round_.dimensions = kept + [d for d in old_dimensions if d not in kept]
    session.flush()
    items = []
    for dimension, entry in zip(kept, dimensions):
        for item_entry in entry["items"]:
            item = old_items.pop(item_entry["key"], None) or Item(key=item_entry["key"])
            item.dimension, item.position = dimension, len(items)
            _set_label(item, item_entry["label"])
            items.append(item)
    round_.items = items
    session.flush()
    round_.dimensions = kept


def _apply_groups(session: Session, round_: Round, groups: list[dict]) -> None:
    session.flush()
    by_cadre_key = {p.cadre.key: p for p in round_.participations}
    wanted = {g["key"] for g in groups}
    for group in round_.groups:
        if group.key not in wanted and session.scalar(
                select(Invitation.id).where(Invitation.round_id == round_.id,
                                            Invitation.group_id == group.id).limit(1)):
            raise RoundNotEditableError(Problem.of(
                N_("group {key!r} has links issued already, so it cannot be removed"),
                key=group.key))

    def set_group(g, e, pos):
        g.position, g.weight, g.rates_all = pos, e["weight"], e["cadres"] is None
        _set_label(g, e["label"])
        g.targets = [] if e["cadres"] is None else [
            _target(g, by_cadre_key[key]) for key in e["cadres"]]

    round_.groups = _sync(round_.groups, groups, lambda e: RaterGroup(key=e["key"]), set_group)


def _target(group: RaterGroup, participation: Participation) -> GroupTarget:
    existing = next((t for t in group.targets if t.participation is participation), None)
    return existing or GroupTarget(participation=participation)
