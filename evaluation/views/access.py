"""Who may see and change what: every staff view goes through one of these decorators."""

from __future__ import annotations

from functools import wraps

from flask import abort
from flask_login import current_user, login_required

from core.extensions import db, login_manager
from evaluation.errors import NotFoundError
from evaluation.models import User
from evaluation.rounds import get_round


def staff_required(view):
    """Any signed-in staff member (analysts included): read access."""
    wrapped = login_required(view)
    wrapped.access = "read"
    return wrapped


def writer_required(view):
    """Organisers and admins only; analysts get 403."""
    @wraps(view)
    def check(*args, **kwargs):
        if not current_user.can_write:
            abort(403)
        return view(*args, **kwargs)
    wrapped = login_required(check)
    wrapped.access = "write"
    return wrapped


def actor() -> str:
    """The audit-log name of the signed-in user."""
    return current_user.email


def round_or_404(round_id: int):
    """The round, or a 404 page."""
    try:
        return get_round(db.session, round_id)
    except NotFoundError:
        abort(404)


@login_manager.user_loader
def load_user(user_id: str):
    """The signed-in user from the session cookie's id."""
    if not user_id.isdigit():
        return None
    return db.session.get(User, int(user_id))
