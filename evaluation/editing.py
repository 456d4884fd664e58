"""Turn the staff edit forms' plain values into round-spec fragments, and back."""

from __future__ import annotations

import re

from evaluation.errors import N_, Problem

INT_RE = re.compile(r"^[+-]?[0-9]+$")
FLOAT_RE = re.compile(r"^[+-]?(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)(?:[eE][+-]?[0-9]+)?$")
ROW_PATH_RE = re.compile(r"^(\w+)\[(\d+)\]\.(\w+)")


def number_or_text(text: str | None):
    """"" -> None, ASCII numerals -> int or float, anything else unchanged (for the validator)."""
    text = (text or "").strip()
    if not text:
        return None
    if INT_RE.match(text):
        return int(text)
    if FLOAT_RE.match(text):
        return float(text)
    return text


def label_of(row: dict) -> dict | None:
    zh, en = (row.get("label_zh") or "").strip(), (row.get("label_en") or "").strip()
    if not zh and not en:
        return None
    return {"zh": zh or en, "en": en or zh}


def _is_blank(row: dict) -> bool:
    return not any(str(v).strip() for k, v in row.items() if k != "csrf_token" and v not in (False, None))


def non_blank(rows: list[dict]) -> tuple[list[dict], list[int]]:
    """Rows with something typed in, and the form index of each."""
    kept = [(i, r) for i, r in enumerate(rows) if not _is_blank(r)]
    return [r for _, r in kept], [i for i, _ in kept]


def grades_from_rows(rows: list[dict]) -> list[dict]:
    return [{"key": r["key"].strip(), "label": label_of(r), "score": number_or_text(r["score"]),
             "dissatisfied": bool(r["dissatisfied"])} for r in rows]


def groups_from_rows(rows: list[dict]) -> list[dict]:
    out = []
    for r in rows:
        targets = [k for k in re.split(r"[\s,，;；]+", r.get("cadres") or "") if k]
        out.append({"key": r["key"].strip(), "label": label_of(r),
                    "weight": number_or_text(r["weight"]), "cadres": targets or None})
    return out


def cadres_from_rows(rows: list[dict]) -> list[dict]:
    return [{"key": r["key"].strip(), "name": r["name"].strip(), "post": r["post"].strip() or None,
             "unit": r["unit"].strip() or None, "kpi": number_or_text(r["kpi"])} for r in rows]


def dimensions_from_rows(dim_rows: list[dict], item_rows: list[dict]) -> tuple[list[dict], list[Problem]]:
    """Nest items under their dimension key; problems for items naming no dimension."""
    dims = [{"key": r["key"].strip(), "label": label_of(r), "weight": number_or_text(r["weight"]),
             "items": []} for r in dim_rows]
    by_key = {d["key"]: d for d in dims}
    problems = []
    for n, r in enumerate(item_rows):
        dimension = by_key.get(r["dimension"].strip())
        if dimension is None:
            problems.append(Problem.of(N_("no dimension with key {key!r}"), f"items[{n}].dimension",
                                       key=r["dimension"].strip()))
            continue
        dimension["items"].append({"key": r["key"].strip(), "label": label_of(r)})
    return dims, problems


def settings_changes(data: dict) -> dict:
    """Top-level spec changes from the settings form."""
    bands_text = (data.get("bands") or "").strip()
    bands = None
    if bands_text:
        bands = [number_or_text(part) for part in re.split(r"[\s:：,，/]+", bands_text) if part]
    quota = number_or_text(data.get("excellent_quota"))
    if isinstance(quota, str) and quota.endswith("%") and FLOAT_RE.match(quota[:-1]):
        quota = float(quota[:-1]) / 100
    return {
        "title": data["title"], "period": data["period"], "dont_know": bool(data["dont_know"]),
        "item_scale": {"min": number_or_text(data["item_min"]), "max": number_or_text(data["item_max"])},
        "rules": {
            "trim": {"method": data["trim_method"], "k": number_or_text(data["trim_k"]),
                     "proportion": number_or_text(data["trim_proportion"]) or 0,
                     "min_n": number_or_text(data["trim_min_n"])},
            "dissatisfaction": {"grades": list(data["dissatisfied"]),
                                "threshold": (data["threshold"] or "").strip() or None,
                                "strict": bool(data["strict"])},
            "min_group_size": number_or_text(data["min_group_size"]),
            "excellent_quota": quota,
            "kpi_weight": number_or_text(data["kpi_weight"]),
            "bands": bands,
            "reason_required_for_dissatisfied": bool(data["reason_required"]),
            "validity": data["validity"],
        },
    }


def settings_form_data(spec: dict) -> dict:
    """The settings form's initial values for a spec."""
    rules = spec["rules"]
    return {
        "title": spec["title"], "period": spec["period"], "dont_know": spec["dont_know"],
        "item_min": spec["item_scale"]["min"], "item_max": spec["item_scale"]["max"],
        "trim_method": rules["trim"]["method"], "trim_k": rules["trim"]["k"],
        "trim_proportion": rules["trim"]["proportion"], "trim_min_n": rules["trim"]["min_n"],
        "dissatisfied": rules["dissatisfaction"]["grades"],
        "threshold": rules["dissatisfaction"]["threshold"],
        "strict": rules["dissatisfaction"]["strict"],
        "min_group_size": rules["min_group_size"],
        "excellent_quota": "" if rules["excellent_quota"] is None else rules["excellent_quota"],
        "kpi_weight": rules["kpi_weight"],
        "bands": ":".join(f"{b:g}" for b in rules["bands"]) if rules["bands"] else "",
        "reason_required": rules["reason_required_for_dissatisfied"],
        "validity": rules["validity"],
    }


def rows_for(kind: str, spec: dict) -> list[dict]:
    """The form rows of one list section for a spec."""
    def labels(entry):
        return {"label_zh": entry["label"]["zh"], "label_en": entry["label"]["en"]}
    if kind == "grades":
        return [{"key": g["key"], **labels(g), "score": f"{g['score']:g}",
                 "dissatisfied": g["dissatisfied"]} for g in spec["grades"]]
    if kind == "groups":
        return [{"key": g["key"], **labels(g), "weight": f"{g['weight']:g}",
                 "cadres": ", ".join(g["cadres"] or [])} for g in spec["groups"]]
    if kind == "cadres":
        return [{"key": c["key"], "name": c["name"], "post": c["post"] or "",
                 "unit": c["unit"] or "", "kpi": "" if c["kpi"] is None else f"{c['kpi']:g}"}
                for c in spec["cadres"]]
    if kind == "dimensions":
        return [{"key": d["key"], **labels(d),
                 "weight": "" if d["weight"] is None else f"{d['weight']:g}"}
                for d in spec["dimensions"]]
    if kind == "items":
        return [{"key": i["key"], **labels(i), "dimension": d["key"]}
                for d in spec["dimensions"] for i in d["items"]]
    raise ValueError(kind)


def split_problems(problems: list[str], section: str, row_index: list[int]) -> tuple[dict, list[str]]:
    """Map "section[i].field: msg" problems onto form rows; the rest stay general. In the
    general list a row's problem names the row as the page numbers it ("#2 kpi: ..."), not by
    the spec's index from 0."""
    by_row: dict[tuple[int, str], list[str]] = {}
    general = []
    for problem in problems:
        match = ROW_PATH_RE.match(problem)
        if match and match.group(1) == section and int(match.group(2)) < len(row_index):
            row, message = row_index[int(match.group(2))], problem.split(": ", 1)[-1]
            by_row.setdefault((row, match.group(3)), []).append(message)
            problem = f"#{row + 1} {match.group(3)}: {message}"
        general.append(problem)
    return by_row, general
