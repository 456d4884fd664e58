"""Domain errors raised by the use cases; views and commands turn them into messages."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def N_(message: str) -> str:
    """Marks a message for the translation catalogue; pages translate it when they show it."""
    return message


@dataclass(frozen=True)
class Problem:
    """One thing wrong: where (a field's path, or nothing), and what, as an English message
    whose {fields} take `values`. Commands print it as it is; pages show it translated."""

    path: str
    message: str
    values: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, message: str, path: str = "", **values) -> "Problem":
        return cls(path, message, tuple(sorted(values.items())))

    def text(self, translate: Callable[[str], str] = str) -> str:
        """The problem as one line, the message translated by `translate` where given."""
        message = translate(self.message)
        if self.values:
            message = message.format(**dict(self.values))
        return f"{self.path}: {message}" if self.path else message

    def __str__(self) -> str:
        return self.text()


class PingyiError(Exception):
    """Base of every refusal a user can be shown.

    `message` and `problems` are English lines (for commands and logs); `summary` and `details`
    the same as Problem objects, which pages show in their language. Plain strings are kept as
    they are.
    """

    def __init__(self, message: str | Problem, problems: list[str | Problem] | None = None):
        self.summary = message if isinstance(message, Problem) else Problem("", message)
        self.details = [p if isinstance(p, Problem) else Problem("", p)
                        for p in (problems or [self.summary])]
        self.message = str(self.summary)
        self.problems = [str(p) for p in self.details]
        super().__init__(self.message)


class TransitionError(PingyiError):
    """A round cannot move to the requested state."""


class RoundNotEditableError(PingyiError):
    """Settings of a round that is no longer a draft cannot change."""


class NotFoundError(PingyiError):
    """No such round, user or record."""


class ImportRowsError(PingyiError):
    """An import file with bad rows; nothing was imported."""


class AccountError(PingyiError):
    """A staff account cannot be created or changed as asked."""


class ResultsNotReadyError(PingyiError):
    """The round has no results yet (draft or open)."""
