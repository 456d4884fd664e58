"""The Chinese catalogue covers every user-facing string of the code and templates."""

from pathlib import Path

from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parent.parent
SKIPPED = {".venv", "tests", "bench", "migrations", ".git", "instance"}


def catalogue():
    with open(ROOT / "translations" / "zh" / "LC_MESSAGES" / "messages.po", "rb") as f:
        return read_po(f)


def test_every_catalogue_entry_is_translated_and_not_fuzzy():
    untranslated = [m.id for m in catalogue() if m.id and (
        m.fuzzy or not (m.string if isinstance(m.string, str) else all(m.string)))]
    assert untranslated == []


def test_every_string_in_code_and_templates_is_in_the_catalogue():
    with open(ROOT / "babel.cfg", encoding="utf-8") as f:
        method_map, options_map = parse_mapping_cfg(f)
    keywords = {**DEFAULT_KEYWORDS, "_l": None, "lazy_gettext": None}
    found = set()
    for filename, _line, message, _comments, _context in extract_from_dir(
            str(ROOT), method_map, options_map, keywords=keywords,
            callback=None, strip_comment_tags=False,
            directory_filter=lambda path: Path(path).name not in SKIPPED):
        found.add(message[0] if isinstance(message, tuple) else message)
    known = {m.id[0] if isinstance(m.id, tuple) else m.id for m in catalogue() if m.id}
    assert len(found) > 200  # the extraction really read the code and the templates
    assert sorted(found - known) == []
