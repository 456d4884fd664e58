"""Problems in the page's language."""

from __future__ import annotations

from collections.abc import Iterable

from flask_babel import gettext

from evaluation.errors import Problem


#: Values that are themselves words of the catalogue (a round's status, or several joined by
#: " or "), translated along with the message.
_WORDS = ("status", "sources")


def _word(word: str) -> str:
    return gettext(word) if word else word  # gettext("") is the catalogue's header


def _translated(problem: Problem) -> str:
    if not problem.message:
        return problem.text()
    values = {key: " / ".join(_word(word) for word in value.split(" or "))
              if key in _WORDS and isinstance(value, str) else value
              for key, value in problem.values}
    return Problem(problem.path, problem.message, tuple(values.items())).text(gettext)


def shown(problems: Iterable) -> list[str]:
    """Problems translated for the page; plain strings as they are."""
    return [_translated(p) if isinstance(p, Problem) else str(p) for p in problems]


def said(exc) -> str:
    """A refusal's one-line message, translated for the page; a {problems} field in it stands
    for its details, translated too."""
    summary = exc.summary
    if "problems" in dict(summary.values):
        values = {**dict(summary.values), "problems": "; ".join(shown(exc.details))}
        summary = Problem(summary.path, summary.message, tuple(values.items()))
    return _translated(summary)
