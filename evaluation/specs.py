"""The round-spec format: validate a JSON document into a normalised spec, and fingerprint it.

A normalised spec has every field present, defaults filled in, labels as {"zh", "en"} and the
threshold as "num/den". Its canonical JSON is what a round freezes at opening; the SHA-256 of
those bytes is the round's fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from fractions import Fraction
from typing import Any

from evaluation.errors import N_, Problem

KEY_RE = re.compile(r"^[A-Za-z0-9_]{1,32}$")
CADRE_KEY_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
TOP_FIELDS = {"title", "period", "grades", "dont_know", "dimensions", "item_scale", "groups",
              "cadres", "rules"}
RULE_FIELDS = {"trim", "dissatisfaction", "min_group_size", "excellent_quota", "kpi_weight",
               "bands", "reason_required_for_dissatisfied", "validity"}

DEFAULT_GRADES = [
    {"key": "excellent", "label": {"zh": "优秀", "en": "Excellent"}, "score": 100},
    {"key": "competent", "label": {"zh": "称职", "en": "Competent"}, "score": 80},
    {"key": "basic", "label": {"zh": "基本称职", "en": "Basically competent"}, "score": 60},
    {"key": "incompetent", "label": {"zh": "不称职", "en": "Incompetent"}, "score": 40,
     "dissatisfied": True},
]
DEFAULT_GROUPS = [
    {"key": "superior", "label": {"zh": "上级", "en": "Superiors"}, "weight": 0.30},
    {"key": "peer", "label": {"zh": "同级", "en": "Peers"}, "weight": 0.25},
    {"key": "subordinate", "label": {"zh": "下级", "en": "Subordinates"}, "weight": 0.25},
    {"key": "public", "label": {"zh": "群众", "en": "Public"}, "weight": 0.20},
]
DEFAULT_DIMENSIONS = [
    {"key": key, "label": {"zh": zh, "en": en}, "items": [{"key": key, "label": {"zh": zh, "en": en}}]}
    for key, zh, en in [("de", "德", "Character"), ("neng", "能", "Competence"),
                        ("qin", "勤", "Diligence"), ("ji", "绩", "Achievement"),
                        ("lian", "廉", "Integrity")]
]
WEIGHT_TOLERANCE = 1e-9


class SpecError(ValueError):
    """A round spec with problems: `problems` holds one English "path: what is wrong" line each,
    `details` the same as Problem objects."""

    def __init__(self, problems: list[Problem]):
        self.details = list(problems)
        self.problems = [str(p) for p in self.details]
        super().__init__("\n".join(self.problems))


class _Checker:
    """Collects problems, each named by the path of the field."""

    def __init__(self):
        self.problems: list[Problem] = []

    def fail(self, path: str, message: str, **values) -> None:
        self.problems.append(Problem(path, message, tuple(sorted(values.items()))))

    def string(self, value, path, *, max_len=200, required=True, pattern=None, what=None):
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value.strip():
            self.fail(path, N_("required, a non-empty string") if value is None else
                      N_("must be a non-empty string"))
            return None
        value = value.strip()
        if len(value) > max_len:
            self.fail(path, N_("at most {max_len} characters, got {got}"), max_len=max_len,
                      got=len(value))
            return None
        if pattern is not None and not pattern.match(value):
            self.fail(path, what or N_("has characters that are not allowed"))
            return None
        return value

    def number(self, value, path, *, low=None, high=None, low_open=False, high_open=False,
               integer=False, required=True):
        if value is None:
            if required:
                self.fail(path, N_("required"))
            return None
        ok = isinstance(value, int) if integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok:
            self.fail(path, N_("must be a whole number") if integer else N_("must be a number"))
            return None
        if isinstance(value, float) and not math.isfinite(value):
            self.fail(path, N_("must be a finite number"))
            return None
        if low is not None and (value < low or (low_open and value == low)):
            self.fail(path, N_("must be more than {low}, got {got}") if low_open else
                      N_("must be at least {low}, got {got}"), low=low, got=value)
            return None
        if high is not None and (value > high or (high_open and value == high)):
            self.fail(path, N_("must be less than {high}, got {got}") if high_open else
                      N_("must be at most {high}, got {got}"), high=high, got=value)
            return None
        return value

    def boolean(self, value, path, default):
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(path, N_("must be true or false"))
            return default
        return value

    def obj(self, value, path, allowed: set[str] | None = None) -> dict | None:
        if not isinstance(value, dict):
            self.fail(path, N_("must be an object"))
            return None
        for extra in sorted(set(value) - allowed) if allowed is not None else ():
            self.fail(f"{path}.{extra}" if path else extra, N_("unknown field"))
        return value

    def array(self, value, path, *, min_len=0) -> list | None:
        if not isinstance(value, list):
            self.fail(path, N_("must be a list"))
            return None
        if len(value) < min_len:
            self.fail(path, N_("needs at least {n} entry") if min_len == 1 else
                      N_("needs at least {n} entries"), n=min_len)
            return None
        return value

    def label(self, value, path):
        if isinstance(value, dict):
            self.obj(value, path, {"zh", "en"})
            zh = self.string(value.get("zh"), f"{path}.zh", required=False)
            en = self.string(value.get("en"), f"{path}.en", required=False)
            if zh is None and en is None:
                if "zh" not in value and "en" not in value:
                    self.fail(path, N_("needs a \"zh\" or an \"en\" label"))
                return None
            return {"zh": zh or en, "en": en or zh}
        text = self.string(value, path)
        return None if text is None else {"zh": text, "en": text}

    def unique_keys(self, entries: list[dict], path: str, field: str = "key") -> None:
        seen: set[str] = set()
        for i, entry in enumerate(entries):
            key = entry.get(field)
            if key in seen:
                self.fail(f"{path}[{i}].{field}", N_("duplicate key {key!r}"), key=key)
            seen.add(key)


def parse_threshold(value, checker: _Checker, path: str) -> Fraction | None:
    """A threshold as a number in (0, 1) or a string "a/b"."""
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", value)
        if not match or int(match.group(2)) == 0:
            checker.fail(path, N_("must be a number or a fraction like \"1/3\", got {got!r}"),
                         got=value)
            return None
        fraction = Fraction(int(match.group(1)), int(match.group(2)))
    else:
        number = checker.number(value, path)
        if number is None:
            return None
        fraction = Fraction(number).limit_denominator(10_000)
    if not 0 < fraction < 1:
        checker.fail(path, N_("must be between 0 and 1, got {got}"), got=value)
        return None
    return fraction


def _grades(c: _Checker, raw) -> list[dict]:
    grades = c.array(raw, "grades", min_len=2) if raw is not None else DEFAULT_GRADES
    out = []
    for i, g in enumerate(grades or []):
        path = f"grades[{i}]"
        if c.obj(g, path, {"key", "label", "score", "dissatisfied"}) is None:
            continue
        key = c.string(g.get("key"), f"{path}.key", max_len=32, pattern=KEY_RE,
                       what=N_("letters, digits and _ only"))
        if key == "dont_know":
            c.fail(f"{path}.key", N_("\"dont_know\" is reserved for the don't-know answer"))
        out.append({"key": key, "label": c.label(g.get("label"), f"{path}.label"),
                    "score": c.number(g.get("score"), f"{path}.score"),
                    "dissatisfied": c.boolean(g.get("dissatisfied"), f"{path}.dissatisfied", False)})
    c.unique_keys(out, "grades")
    for i in range(1, len(out)):
        before, now = out[i - 1]["score"], out[i]["score"]
        if before is not None and now is not None and now >= before:
            c.fail(f"grades[{i}].score", N_("grades go best first, so scores must decrease "
                                            "({now} is not below {before})"), now=now, before=before)
    return out


def _dimensions(c: _Checker, raw) -> list[dict]:
    dims = c.array(raw, "dimensions") if raw is not None else DEFAULT_DIMENSIONS
    out = []
    for i, d in enumerate(dims or []):
        path = f"dimensions[{i}]"
        if c.obj(d, path, {"key", "label", "weight", "items"}) is None:
            continue
        items = []
        for j, item in enumerate(c.array(d.get("items"), f"{path}.items", min_len=1) or []):
            ipath = f"{path}.items[{j}]"
            if c.obj(item, ipath, {"key", "label"}) is None:
                continue
            items.append({"key": c.string(item.get("key"), f"{ipath}.key", max_len=32,
                                          pattern=KEY_RE, what=N_("letters, digits and _ only")),
                          "label": c.label(item.get("label"), f"{ipath}.label")})
        out.append({"key": c.string(d.get("key"), f"{path}.key", max_len=32, pattern=KEY_RE,
                                    what=N_("letters, digits and _ only")),
                    "label": c.label(d.get("label"), f"{path}.label"),
                    "weight": c.number(d.get("weight"), f"{path}.weight", low=0, high=1,
                                       required=False),
                    "items": items})
    c.unique_keys(out, "dimensions")
    all_items = [(i, j, item) for i, d in enumerate(out) for j, item in enumerate(d["items"])]
    seen: set = set()
    for i, j, item in all_items:
        if item["key"] in seen:
            c.fail(f"dimensions[{i}].items[{j}].key", N_(
                "duplicate item key {key!r} (item keys are unique across the questionnaire)"),
                key=item["key"])
        seen.add(item["key"])
    weights = [d["weight"] for d in out]
    given = [w for w in weights if w is not None]
    if given and len(given) != len(weights):
        first_missing = weights.index(None)
        c.fail(f"dimensions[{first_missing}].weight", N_("give a weight for every dimension or none"))
    if given and len(given) == len(weights) and abs(sum(given) - 1) > WEIGHT_TOLERANCE:
        c.fail(f"dimensions[{len(out) - 1}].weight",
               N_("weights must add up to 1, they add up to {total:g}"), total=round(sum(given), 9))
    return out


def _groups(c: _Checker, raw, cadre_keys: set[str]) -> list[dict]:
    groups = c.array(raw, "groups", min_len=1) if raw is not None else DEFAULT_GROUPS
    out = []
    for i, g in enumerate(groups or []):
        path = f"groups[{i}]"
        if c.obj(g, path, {"key", "label", "weight", "cadres"}) is None:
            continue
        targets = None
        if g.get("cadres") is not None:
            targets = []
            for j, key in enumerate(c.array(g["cadres"], f"{path}.cadres", min_len=1) or []):
                if not isinstance(key, str) or key not in cadre_keys:
                    c.fail(f"{path}.cadres[{j}]", N_("no cadre with key {key!r}"), key=key)
                elif key in targets:
                    c.fail(f"{path}.cadres[{j}]", N_("cadre {key!r} listed twice"), key=key)
                else:
                    targets.append(key)
        out.append({"key": c.string(g.get("key"), f"{path}.key", max_len=32, pattern=KEY_RE,
                                    what=N_("letters, digits and _ only")),
                    "label": c.label(g.get("label"), f"{path}.label"),
                    "weight": c.number(g.get("weight"), f"{path}.weight", low=0, high=1),
                    "cadres": targets})
    c.unique_keys(out, "groups")
    weights = [g["weight"] for g in out]
    if out and None not in weights and abs(sum(weights) - 1) > WEIGHT_TOLERANCE:
        c.fail(f"groups[{len(out) - 1}].weight",
               N_("weights must add up to 1, they add up to {total:g}"), total=round(sum(weights), 9))
    return out


def _cadres(c: _Checker, raw) -> list[dict]:
    out = []
    for i, cadre in enumerate(c.array(raw, "cadres") if raw is not None else []):
        path = f"cadres[{i}]"
        if c.obj(cadre, path, {"key", "name", "post", "unit", "kpi"}) is None:
            continue
        out.append({
            "key": c.string(cadre.get("key"), f"{path}.key", max_len=64, pattern=CADRE_KEY_RE,
                            what=N_("letters, digits and _ . - only")),
            "name": c.string(cadre.get("name"), f"{path}.name"),
            "post": c.string(cadre.get("post"), f"{path}.post", required=False),
            "unit": c.string(cadre.get("unit"), f"{path}.unit", required=False),
            "kpi": c.number(cadre.get("kpi"), f"{path}.kpi", low=0, high=100, required=False),
        })
    c.unique_keys(out, "cadres")
    return out


def _trim(c: _Checker, raw) -> dict:
    trim = c.obj(raw, "rules.trim", {"method", "k", "proportion", "min_n"}) if raw is not None else {}
    trim = trim or {}
    method = trim.get("method", "drop_extremes")
    if method not in ("none", "drop_extremes", "proportion"):
        c.fail("rules.trim.method", N_("must be one of none, drop_extremes, proportion; got {got!r}"),
               got=method)
    k = c.number(trim.get("k", 1), "rules.trim.k", low=0, integer=True)
    proportion = c.number(trim.get("proportion", 0.1 if method == "proportion" else 0),
                          "rules.trim.proportion", low=0, high=0.5, high_open=True)
    min_n = c.number(trim.get("min_n", 6), "rules.trim.min_n", low=1, integer=True)
    if method == "drop_extremes" and k is not None and min_n is not None and min_n <= 2 * k:
        c.fail("rules.trim.min_n", N_("must be more than 2 × k = {twice_k}, or nothing would be left"),
               twice_k=2 * k)
    return {"method": method, "k": k, "proportion": proportion, "min_n": min_n}


def _dissatisfaction(c: _Checker, raw, grades: list[dict]) -> dict:
    rule = c.obj(raw, "rules.dissatisfaction", {"grades", "threshold", "strict"}) if raw is not None else {}
    rule = rule or {}
    grade_keys = [g["key"] for g in grades]
    flagged = [g["key"] for g in grades if g["dissatisfied"]]
    keys = flagged or grade_keys[-1:]
    if rule.get("grades") is not None:
        given = c.array(rule["grades"], "rules.dissatisfaction.grades", min_len=1) or []
        for j, key in enumerate(given):
            if key not in grade_keys:
                c.fail(f"rules.dissatisfaction.grades[{j}]", N_("no grade with key {key!r}"), key=key)
        if flagged and set(given) != set(flagged):
            c.fail("rules.dissatisfaction.grades", N_(
                "disagrees with the grades marked \"dissatisfied\" ({keys}); say it in one place"),
                keys=", ".join(flagged))
        keys = [k for k in grade_keys if k in given]
    if grade_keys and grade_keys[0] in keys:
        c.fail("rules.dissatisfaction.grades", N_("the best grade cannot count as dissatisfied"))
    threshold = parse_threshold(rule.get("threshold", "1/3"), c, "rules.dissatisfaction.threshold")
    return {"grades": keys,
            "threshold": f"{threshold.numerator}/{threshold.denominator}" if threshold else None,
            "strict": c.boolean(rule.get("strict"), "rules.dissatisfaction.strict", True)}


def _rules(c: _Checker, raw, grades: list[dict]) -> dict:
    rules = (c.obj(raw, "rules", RULE_FIELDS) if raw is not None else {}) or {}
    bands = rules.get("bands")
    if bands is not None:
        checked = [c.number(b, f"rules.bands[{j}]", low=0, low_open=True)
                   for j, b in enumerate(c.array(bands, "rules.bands", min_len=2) or [])]
        bands = checked if bands and None not in checked else None
    validity = rules.get("validity", "warn")
    if validity not in ("warn", "invalidate"):
        c.fail("rules.validity", N_("must be \"warn\" or \"invalidate\", got {got!r}"), got=validity)
    quota = rules.get("excellent_quota")
    return {
        "trim": _trim(c, rules.get("trim")),
        "dissatisfaction": _dissatisfaction(c, rules.get("dissatisfaction"), grades),
        "min_group_size": c.number(rules.get("min_group_size", 3), "rules.min_group_size",
                                   low=1, high=1000, integer=True),
        "excellent_quota": None if quota is None else c.number(
            quota, "rules.excellent_quota", low=0, low_open=True, high=1),
        "kpi_weight": c.number(rules.get("kpi_weight", 0.5), "rules.kpi_weight", low=0, high=1),
        "bands": bands,
        "reason_required_for_dissatisfied": c.boolean(
            rules.get("reason_required_for_dissatisfied"),
            "rules.reason_required_for_dissatisfied", False),
        "validity": validity,
    }


def _item_scale(c: _Checker, raw) -> dict:
    scale = (c.obj(raw, "item_scale", {"min", "max"}) if raw is not None else {}) or {}
    low = c.number(scale.get("min", 1), "item_scale.min", low=0, high=1000, integer=True)
    high = c.number(scale.get("max", 10), "item_scale.max", low=1, high=1000, integer=True)
    if low is not None and high is not None and low >= high:
        c.fail("item_scale.max", N_("must be more than item_scale.min ({low}), got {got}"), low=low,
               got=high)
    return {"min": low, "max": high}


def validate_spec(data: Any) -> dict:
    """Check a parsed round-spec document; return it normalised or raise SpecError."""
    c = _Checker()
    if c.obj(data, "", TOP_FIELDS) is None:
        raise SpecError([Problem("(document)", N_("must be a JSON object"))])
    cadres = _cadres(c, data.get("cadres"))
    grades = _grades(c, data.get("grades"))
    spec = {
        "title": c.string(data.get("title"), "title"),
        "period": c.string(data.get("period"), "period", max_len=64),
        "grades": grades,
        "dont_know": c.boolean(data.get("dont_know"), "dont_know", False),
        "dimensions": _dimensions(c, data.get("dimensions")),
        "item_scale": _item_scale(c, data.get("item_scale")),
        "groups": _groups(c, data.get("groups"), {x["key"] for x in cadres if x["key"]}),
        "cadres": cadres,
        "rules": _rules(c, data.get("rules"), grades),
    }
    if c.problems:
        raise SpecError(c.problems)
    dissatisfied = set(spec["rules"]["dissatisfaction"]["grades"])
    for grade in grades:
        grade["dissatisfied"] = grade["key"] in dissatisfied
    return spec


def load_spec(text: str | bytes) -> dict:
    """Parse and validate round-spec JSON text."""
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SpecError([Problem("(document)", N_("not valid JSON: {error}"),
                                 (("error", str(exc)),))]) from None
    return validate_spec(data)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not allowed")


def canonical_json(spec: dict) -> str:
    """The canonical text of a spec: sorted keys, no spaces, UTF-8 characters kept."""
    return json.dumps(spec, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False)


def fingerprint(text: str) -> str:
    """SHA-256, hex, of the UTF-8 bytes of a canonical spec."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def frozen_settings(spec: dict) -> dict:
    """The part of a spec that freezes at opening: everything but KPI, entered later."""
    frozen = dict(spec)
    frozen["cadres"] = [{k: v for k, v in cadre.items() if k != "kpi"} for cadre in spec["cadres"]]
    return frozen
