"""Domain errors raised by the use cases; views and commands turn them into messages."""


class PingyiError(Exception):
    """Base of every refusal a user can be shown."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.message = message
        self.problems = problems or [message]


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
