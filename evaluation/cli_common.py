"""What every command shares: the audit-log actor and the way a command refuses."""

from __future__ import annotations

import getpass
import sys

import click


def cli_actor() -> str:
    """The audit-log name for commands: the system user running them."""
    return f"cli:{getpass.getuser()}"


def refuse(problems: list[str], status: int = 1):
    """Print one `error: ...` line per problem on stderr and exit non-zero."""
    for problem in problems:
        click.echo(f"error: {problem}", err=True)
    sys.exit(status)
