"""What one rater group's ballot holds, and the strict parsing of a posted ballot against it.

Every value is checked against fixed choices: a grade key (or "dont_know"), an item value that is
exactly one of the scale's decimal numerals ("3", never "٣", "５", "+3" or " 3"). Anything else —
unknown or repeated fields, a missing grade, the Excellent quota, a missing required reason —
is an error, and nothing is stored.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import cached_property

from evaluation.models import Round

DONT_KNOW = "dont_know"
MAX_COMMENT = 500
#: Control characters other than tab and line breaks (PostgreSQL text refuses NUL outright).
CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
FIXED_FIELDS = {"csrf_token"}


@dataclass(frozen=True)
class SheetCadre:
    participation_id: int
    key: str
    name: str
    post: str | None
    unit: str | None


@dataclass(frozen=True)
class SheetChoice:
    id: int
    key: str
    label_zh: str
    label_en: str
    is_dissatisfied: bool = False
    dimension_zh: str = ""
    dimension_en: str = ""


@dataclass(frozen=True, eq=False)
class Sheet:
    """The ballot of one group in one open round: immutable while the round is open."""

    round_id: int
    group_id: int
    group_key: str
    title: str
    cadres: tuple[SheetCadre, ...]
    grades: tuple[SheetChoice, ...]
    items: tuple[SheetChoice, ...]
    scale: tuple[int, ...]
    dont_know: bool
    quota: int | None
    reason_required: bool
    validity: str

    @cached_property
    def numerals(self) -> dict[str, int]:
        """The only accepted spellings of item values: "1" ... "10"."""
        return {str(v): v for v in self.scale}

    @cached_property
    def cadre_fields(self) -> tuple[tuple[SheetCadre, str, str, tuple[str, ...]], ...]:
        """Each cadre with the names of its fields: grade, comment, and items in order."""
        return tuple((c, f"grade-{c.key}", f"comment-{c.key}",
                      tuple(f"item-{c.key}-{i.key}" for i in self.items)) for c in self.cadres)

    @cached_property
    def field_names(self) -> frozenset[str]:
        names = set(FIXED_FIELDS)
        for _cadre, grade, comment, items in self.cadre_fields:
            names |= {grade, comment, *items}
        return frozenset(names)

    @cached_property
    def grades_by_key(self) -> dict[str, SheetChoice]:
        return {g.key: g for g in self.grades}


@dataclass
class ParsedBallot:
    """A posted ballot: the answers as given, and the errors by field name ("" for the whole)."""

    values: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    #: (participation_id, grade_id or None for don't know, comment, the item scores in the
    #: sheet's order with None for a blank one)
    answers: list[tuple[int, int | None, str | None, list[int | None]]] = field(default_factory=list)
    #: Reasons the ballot would be invalid under the round's validity rule.
    suspicious: list[str] = field(default_factory=list)


def quota_count(quota: float | None, n_cadres: int) -> int | None:
    """How many cadres one ballot may grade Excellent: floor(quota × n), but at least one."""
    if quota is None:
        return None
    return max(1, math.floor(quota * n_cadres + 1e-9))


def build_sheet(round_: Round, group_id: int) -> Sheet:
    """The sheet of a group from the round's rows."""
    group = next(g for g in round_.groups if g.id == group_id)
    targets = {t.participation_id for t in group.targets}
    cadres = tuple(SheetCadre(p.id, p.cadre.key, p.cadre.name, p.post, p.unit)
                   for p in round_.participations if group.rates_all or p.id in targets)
    return Sheet(
        round_id=round_.id, group_id=group.id, group_key=group.key, title=round_.title,
        cadres=cadres,
        grades=tuple(SheetChoice(g.id, g.key, g.label_zh, g.label_en, g.is_dissatisfied)
                     for g in round_.grades),
        items=tuple(SheetChoice(i.id, i.key, i.label_zh, i.label_en, False, i.dimension.label_zh,
                                i.dimension.label_en) for i in round_.items),
        scale=tuple(range(round_.item_min, round_.item_max + 1)),
        dont_know=round_.dont_know, quota=quota_count(round_.excellent_quota, len(cadres)),
        reason_required=round_.reason_required, validity=round_.validity)


def parse_ballot(sheet: Sheet, form) -> ParsedBallot:
    """Check a posted form (a werkzeug MultiDict) against the sheet."""
    parsed = ParsedBallot()
    allowed = sheet.field_names
    for name in form.keys():
        values = form.getlist(name)
        if name not in allowed:
            parsed.errors[""] = "unknown field"
        elif len(values) > 1:
            parsed.errors[name] = "given more than once"
        else:
            parsed.values[name] = values[0]
    for cadre, grade_field, comment_field, item_fields in sheet.cadre_fields:
        _parse_cadre(sheet, cadre, parsed, grade_field, comment_field, item_fields)
    _check_quota(sheet, parsed)
    _check_validity(sheet, parsed)
    if parsed.errors:
        parsed.answers = []
    return parsed


def _parse_cadre(sheet: Sheet, cadre: SheetCadre, parsed: ParsedBallot, grade_field: str,
                 comment_field: str, item_fields: tuple[str, ...]) -> None:
    raw = parsed.values.get(grade_field, "")
    grade = sheet.grades_by_key.get(raw)
    if raw == DONT_KNOW and sheet.dont_know:
        grade_id = None
    elif grade is not None:
        grade_id = grade.id
    else:
        parsed.errors.setdefault(grade_field, "choose a grade" if raw == "" else "not one of the choices")
        # Its items are marked too, so that one round of corrections does; blank ones are fine
        # with "don't know", so where the round offers it they are marked so.
        _parse_items(sheet, item_fields, parsed, "rate this item or don't know"
                     if sheet.dont_know else "rate this item")
        return
    items = _parse_items(sheet, item_fields, parsed, None if grade_id is None else "rate this item")
    # Browsers send line breaks as CRLF but count them as one character.
    comment = parsed.values.get(comment_field, "").replace("\r\n", "\n").strip()
    if len(comment) > MAX_COMMENT:
        parsed.errors[comment_field] = "too long"
    elif CONTROL_RE.search(comment):
        parsed.errors[comment_field] = "control characters"
    elif not comment and sheet.reason_required and grade is not None and grade.is_dissatisfied:
        parsed.errors[comment_field] = "give a reason"
    parsed.answers.append((cadre.participation_id, grade_id, comment or None, items))


def _parse_items(sheet: Sheet, item_fields: tuple[str, ...], parsed: ParsedBallot,
                 blank: str | None) -> list[int | None]:
    """A cadre's item scores in the sheet's order (item_fields: their field names); a value
    off the scale is marked, and a blank one with the error `blank` (None: blanks are allowed,
    and give None)."""
    scores = []
    for name in item_fields:
        value = parsed.values.get(name, "")
        number = sheet.numerals.get(value)
        if number is None and (value != "" or blank is not None):
            parsed.errors.setdefault(name, blank if value == "" else "not one of the choices")
        scores.append(number)
    return scores


def _check_quota(sheet: Sheet, parsed: ParsedBallot) -> None:
    best = sheet.grades[0].id
    n_best = sum(1 for _p, grade_id, _c, _i in parsed.answers if grade_id == best)
    if sheet.quota is not None and n_best > sheet.quota:
        parsed.errors["quota"] = "quota"


def _check_validity(sheet: Sheet, parsed: ParsedBallot) -> None:
    grades = [grade_id for _p, grade_id, _c, _i in parsed.answers if grade_id is not None]
    if len(grades) >= 2 and len(set(grades)) == 1:
        parsed.suspicious.append("all_excellent" if grades[0] == sheet.grades[0].id else "same_grade")
