"""Read cadre lists from CSV or XLSX files: all rows good, or nothing."""

from __future__ import annotations

import csv
import io
import zipfile

from openpyxl import load_workbook
from openpyxl.utils.exceptions import InvalidFileException

from evaluation.editing import number_or_text
from evaluation.errors import N_, ImportRowsError, Problem
from evaluation.specs import CADRE_KEY_RE

#: Accepted column headings (lower-cased), Chinese or English, for each field.
HEADINGS = {
    "key": {"key", "id", "编号", "工号", "代码"},
    "name": {"name", "姓名", "名字"},
    "post": {"post", "position", "职务", "岗位"},
    "unit": {"unit", "department", "单位", "部门"},
    "kpi": {"kpi", "kpi score", "绩效", "kpi完成率", "kpi得分"},
}
MAX_ROWS = 5000


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def read_table(filename: str, data: bytes) -> list[list[str]]:
    """The rows of a CSV (UTF-8, with or without BOM, or GB18030) or XLSX file, as text."""
    name = filename.lower()
    if name.endswith(".xlsx"):
        try:
            sheet = load_workbook(io.BytesIO(data), read_only=True, data_only=True).worksheets[0]
        except (InvalidFileException, zipfile.BadZipFile, KeyError, OSError, IndexError):
            raise ImportRowsError(Problem.of(N_("not a readable XLSX workbook"), "file")) from None
        return [[_cell(v) for v in row] for row in sheet.iter_rows(values_only=True)]
    if name.endswith(".csv"):
        for encoding in ("utf-8-sig", "gb18030"):
            try:
                text = data.decode(encoding)
                break
            except UnicodeDecodeError:
                continue
        else:
            raise ImportRowsError(Problem.of(N_("not UTF-8 or GB18030 text"), "file"))
        return [[c.strip() for c in row] for row in csv.reader(io.StringIO(text))]
    raise ImportRowsError(Problem.of(N_("must be a .csv or .xlsx file"), "file"))


def _columns(header: list[str]) -> dict[str, int]:
    columns: dict[str, int] = {}
    problems = []
    for index, heading in enumerate(header):
        field = next((f for f, names in HEADINGS.items() if heading.strip().lower() in names), None)
        if field is None:
            if heading.strip():
                problems.append(Problem.of(N_("row 1: unknown column {heading!r}"), heading=heading))
        elif field in columns:
            problems.append(Problem.of(N_("row 1: column {heading!r} appears twice"), heading=heading))
        else:
            columns[field] = index
    for needed in ("key", "name"):
        if needed not in columns:
            problems.append(Problem.of(N_("row 1: a {column!r} column is required"), column=needed))
    if problems:
        raise ImportRowsError(problems[0], problems)
    return columns


def parse_cadres(filename: str, data: bytes) -> list[dict]:
    """Cadre entries from an import file; ImportRowsError lists every bad row."""
    rows = read_table(filename, data)
    rows = [r for r in rows if any(c for c in r)]
    if not rows:
        raise ImportRowsError(Problem.of(N_("it is empty"), "file"))
    if len(rows) > MAX_ROWS + 1:
        raise ImportRowsError(Problem.of(N_("at most {n} cadres at once"), "file", n=MAX_ROWS))
    columns = _columns(rows[0])
    cadres, problems, seen = [], [], {}
    for number, row in enumerate(rows[1:], start=2):
        values = {f: (row[i] if i < len(row) else "") for f, i in columns.items()}
        key, name = values["key"], values.get("name", "")
        if not key:
            problems.append(Problem.of(N_("row {row}: key: required"), row=number))
        elif not CADRE_KEY_RE.match(key):
            problems.append(Problem.of(N_("row {row}: key: {key!r} may use letters, digits and _ . - only"),
                                          row=number, key=key))
        elif key in seen:
            problems.append(Problem.of(N_("row {row}: key: {key!r} repeats row {first}"), row=number,
                                          key=key, first=seen[key]))
        seen.setdefault(key, number)
        if not name:
            problems.append(Problem.of(N_("row {row}: name: required"), row=number))
        kpi = number_or_text(values.get("kpi"))
        if kpi is not None and (isinstance(kpi, str) or not 0 <= kpi <= 100):
            problems.append(Problem.of(N_("row {row}: kpi: must be a number from 0 to 100, got {got!r}"),
                                          row=number, got=values["kpi"]))
        cadres.append({"key": key, "name": name, "post": values.get("post") or None,
                       "unit": values.get("unit") or None, "kpi": kpi})
    if problems:
        raise ImportRowsError(problems[0], problems)
    return cadres


def merge_cadres(existing: list[dict], imported: list[dict]) -> list[dict]:
    """Existing cadres updated by key from the import, new ones appended in file order."""
    by_key = {c["key"]: c for c in imported}
    merged = [by_key.pop(c["key"], c) for c in existing]
    return merged + [c for c in imported if c["key"] in by_key]
