"""The results document's shape: entries built from stats' arrays, and their CSV/XLSX renderings.

The entries hold plain Python values only (NaN as None), converted from the arrays in one pass.
In the table renderings, text cells that a spreadsheet would read as a formula (starting with
= + - @, a tab or a carriage return) are prefixed with an apostrophe; numbers stay numbers.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, fields

import numpy as np
from openpyxl import Workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

from evaluation.models import Round

#: First characters that make a spreadsheet evaluate a cell (OWASP "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
XLSX_MIMETYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
_FIXED = ["rank", "band", "key", "name", "post", "unit", "n_ballots", "valid_n", "dont_know",
          "score", "kpi", "composite", "item_score", "dissatisfied_k", "dissatisfied_share",
          "dissatisfied_ci_low", "dissatisfied_ci_high", "flagged", "flag_status",
          "approval_share", "approval_warning", "public_dissatisfied_share", "public_flag_status",
          "folded"]


# --- the document ------------------------------------------------------------------------------


def label_of(obj) -> dict:
    """The bilingual label of a grade, group, dimension or item."""
    return {"zh": obj.label_zh, "en": obj.label_en}


def _lists(obj) -> dict:
    """Every array field of a stats dataclass as nested Python lists, NaN as None (at once)."""
    out = {}
    for f in fields(obj):
        a = np.asarray(getattr(obj, f.name))
        if a.dtype.kind == "f":
            a = np.where(np.isnan(a), None, a.astype(object))
        out[f.name] = a.tolist()
    return out


def round_entry(round_: Round, n_ballots: int, dissatisfied, approval, approval_min: float) -> dict:
    """The round's identity, definition and rules as they bear on the results."""
    return {
        "id": round_.id, "title": round_.title, "period": round_.period,
        "status": round_.status, "fingerprint": round_.fingerprint,
        "n_ballots": n_ballots, "n_cadres": len(round_.participations),
        "grades": [{"key": g.key, "label": label_of(g), "score": g.score,
                    "dissatisfied": bool(d), "approval": bool(a)}
                   for g, d, a in zip(round_.grades, dissatisfied, approval)],
        "groups": [{"key": g.key, "label": label_of(g), "weight": g.weight} for g in round_.groups],
        "dimensions": [{"key": d.key, "label": label_of(d), "weight": d.weight}
                       for d in round_.dimensions],
        "items": [{"key": i.key, "label": label_of(i)} for i in round_.items],
        "item_scale": {"min": round_.item_min, "max": round_.item_max},
        "rules": {
            "trim": {"method": round_.trim_method, "k": round_.trim_k,
                     "proportion": round_.trim_proportion, "min_n": round_.trim_min_n},
            "threshold": f"{round_.threshold_num}/{round_.threshold_den}",
            "strict": round_.strict, "min_group_size": round_.min_group_size,
            "approval_min": approval_min, "kpi_weight": round_.kpi_weight,
            "bands": round_.bands or None,
        },
    }


@dataclass(frozen=True)
class _Shape:
    """What every cadre entry needs, computed once: keys, labels and the results as lists."""

    round_: Round
    groups: list[dict]
    grades: list[str]
    items: list[str]
    dimensions: list[str]
    agg: dict
    public: dict | None
    public_k: int | None
    renormalised: list[bool]
    approval_min: float


def document_shape(round_: Round, agg, public, public_key: str, approval_min: float) -> _Shape:
    """What cadre_entry needs from the aggregate (and the public group's Dissatisfaction)."""
    groups = [{"group": g.key, "label": label_of(g), "weight": g.weight} for g in round_.groups]
    raw = np.array([g["weight"] for g in groups], dtype=float)
    return _Shape(
        round_=round_, groups=groups, grades=[g.key for g in round_.grades],
        items=[i.key for i in round_.items], dimensions=[d.key for d in round_.dimensions],
        agg=_lists(agg), public=None if public is None else _lists(public),
        public_k=None if public is None else [g["group"] for g in groups].index(public_key),
        renormalised=(~np.isclose(agg.weights_used, raw[None, :]).all(axis=1)).tolist(),
        approval_min=approval_min)


def _flag(d: dict, c: int) -> dict:
    """Dissatisfaction figures of cadre c from the lists of a Dissatisfaction or Aggregate."""
    low, high = d["dissatisfied_ci"][c]
    return {
        "valid_n": d["valid_n"][c], "dissatisfied_k": d["dissatisfied_k"][c],
        "dissatisfied_share": d["dissatisfied_share"][c],
        "dissatisfied_ci": None if low is None else [low, high],
        "flagged": d["flagged"][c], "flag_certain": d["flag_certain"][c],
        "flag_status": d["flag_status"][c],
    }


def _group(s: _Shape, c: int, k: int) -> dict:
    """Figures of group k for cadre c; only called for a shown group."""
    a = s.agg
    return s.groups[k] | {
        "weight_used": a["weights_used"][c][k], "n_ballots": a["group_n"][c][k],
        "dont_know": a["dont_know"][c][k], "score": a["group_score"][c][k],
        "item_score": a["item_score"][c][k],
        "dimensions": dict(zip(s.dimensions, a["dimension_scores"][c][k])),
        "items": dict(zip(s.items, a["item_means"][c][k])),
        "grades": dict(zip(s.grades, a["grade_counts"][c][k])),
    }


def cadre_entry(s: _Shape, c: int) -> dict:
    """The entry of cadre c: totals, flag, public flag, rank, band, shown groups and notes."""
    a, p = s.agg, s.round_.participations[c]
    shown = [k for k, on in enumerate(a["group_shown"][c]) if on]
    entry = {
        "id": p.cadre_id, "key": p.cadre.key, "name": p.cadre.name, "post": p.post,
        "unit": p.unit, "n_ballots": a["n_ballots"][c], "dont_know": sum(a["dont_know"][c]),
        "score": a["score"][c], "pooled": a["pooled"][c], "kpi": p.kpi,
        "composite": a["composite"][c], "item_score": a["item_score_all"][c],
        "dimensions": dict(zip(s.dimensions, a["dimension_scores_all"][c])),
        "items": dict(zip(s.items, a["item_means_all"][c])),
        "grades": dict(zip(s.grades, map(sum, zip(*a["grade_counts"][c])))),
        **_flag(a, c),
        "approval_share": a["approval_share"][c], "approval_warning": a["approval_warning"][c],
        "public": _flag(s.public, c) if s.public_k in shown else None,
        "rank": a["rank"][c] or None, "band": a["band"][c] + 1 if a["band"][c] >= 0 else None,
        "groups": [_group(s, c, k) for k in shown],
        "folded": [g["group"] for g, on in zip(s.groups, a["folded"][c]) if on],
    }
    if entry["folded"]:
        # The totals include the folded ballots: beside them, the other groups' own figures
        # would give the folded group's away by subtraction. The public's share alone is safe
        # only while another shown group is mixed with the folded ones in the remainder.
        entry["groups"] = []
        if len(shown) < 2:
            entry["public"] = None
    entry["notes"] = _notes(s, c, entry, shown)
    return entry


def _notes(s: _Shape, c: int, entry: dict, shown: list[int]) -> list[dict]:
    """Why figures are missing or reweighted, as codes the page and readers can translate."""
    notes, size = [], s.round_.min_group_size
    if entry["folded"]:
        notes.append({"code": "folded", "groups": entry["folded"], "min_group_size": size})
        notes.append({"code": "groups_withheld", "groups": [s.groups[k]["group"] for k in shown]})
    if shown and s.renormalised[c]:
        notes.append({"code": "weights_renormalised", "weights": {
            s.groups[k]["group"]: s.agg["weights_used"][c][k] for k in shown}})
    for code, on in (("pooled", entry["pooled"]), ("no_score", entry["score"] is None),
                     ("no_kpi", entry["kpi"] is None)):
        if on:
            notes.append({"code": code})
    if entry["approval_warning"]:
        notes.append({"code": "approval_low", "min": s.approval_min})
    if s.public_k is not None and entry["public"] is None and s.agg["group_n"][c][s.public_k]:
        notes.append({"code": "public_folded", "min_group_size": size})
    return notes


# --- tables ----------------------------------------------------------------------------------


def neutralise(value):
    """A cell value safe in a spreadsheet: formula-like text gets a leading apostrophe."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def by_rank(cadres: list[dict]) -> list[dict]:
    """Cadre entries best rank first, unranked last, ties by key."""
    return sorted(cadres, key=lambda c: (c["rank"] is None, c["rank"] or 0, c["key"]))


def cadre_table(doc: dict) -> tuple[list[str], list[list]]:
    """Header and one row per cadre (in rank order) of a results document; cells neutralised."""
    round_ = doc["round"]
    grades = [g["key"] for g in round_["grades"]]
    groups = [g["key"] for g in round_["groups"]]
    items = [i["key"] for i in round_["items"]]
    header = (_FIXED + [f"grade_{g}" for g in grades] + [f"item_{i}" for i in items]
              + [f"{g}_{what}" for g in groups for what in ("n_ballots", "score", "weight_used")])
    rows = [_row(c, grades, groups, items) for c in by_rank(doc["cadres"])]
    return [neutralise(h) for h in header], [[neutralise(v) for v in row] for row in rows]


def _row(c: dict, grades: list[str], groups: list[str], items: list[str]) -> list:
    """The cells of one cadre, in header order; a folded group's cells stay empty."""
    low, high = c["dissatisfied_ci"] or (None, None)
    public = c["public"] or {}
    row = [c["rank"], c["band"], c["key"], c["name"], c["post"], c["unit"], c["n_ballots"],
           c["valid_n"], c["dont_know"], c["score"], c["kpi"], c["composite"], c["item_score"],
           c["dissatisfied_k"], c["dissatisfied_share"], low, high, c["flagged"],
           c["flag_status"], c["approval_share"], c["approval_warning"],
           public.get("dissatisfied_share"), public.get("flag_status"), " ".join(c["folded"])]
    row += [c["grades"][g] for g in grades] + [c["items"][i] for i in items]
    shown = {g["group"]: g for g in c["groups"]}
    for key in groups:
        group = shown.get(key, {})
        row += [group.get("n_ballots"), group.get("score"), group.get("weight_used")]
    return row


def results_csv(doc: dict) -> str:
    """The cadre table as CSV text (comma-separated, CRLF line ends, empty cell for none)."""
    header, rows = cadre_table(doc)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows([_csv_cell(v) for v in row] for row in rows)
    return out.getvalue()


def _csv_cell(value):
    """None as an empty cell, booleans as true/false, numbers as they are."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def comment_table(doc: dict) -> tuple[list[str], list[list]]:
    """Header and one row per comment (cadres in rank order, comments as the document sorts
    them); cells neutralised."""
    rows = [[c["key"], c["name"], text] for c in by_rank(doc["cadres"]) for text in c["comments"]]
    return ["key", "name", "comment"], [[neutralise(v) for v in row] for row in rows]


def results_xlsx(doc: dict) -> bytes:
    """The cadre table, and the comments on a sheet of their own, as an XLSX workbook; text
    cells are typed as text, never formulas."""
    book = Workbook()
    _fill(book.active, "results", *cadre_table(doc)).freeze_panes = "E2"
    _fill(book.create_sheet(), "comments", *comment_table(doc)).freeze_panes = "C2"
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def _fill(sheet, title: str, header: list[str], rows: list[list]):
    sheet.title = title
    for r, row in enumerate([header, *rows], start=1):
        for col, value in enumerate(row, start=1):
            if isinstance(value, str):  # control characters are not allowed in XLSX text
                value = ILLEGAL_CHARACTERS_RE.sub("", value)
            cell = sheet.cell(row=r, column=col, value=value)
            if isinstance(value, str):
                cell.data_type = "s"
    return sheet
