"""Problems in the page's language."""

from __future__ import annotations

from collections.abc import Iterable

from flask_babel import gettext

from evaluation.specs import Problem


def shown(problems: Iterable) -> list[str]:
    """Round-spec problems translated for the page; other problems as they are."""
    return [p.text(gettext) if isinstance(p, Problem) else str(p) for p in problems]
