"""Staff account use cases: create users and check passwords."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from evaluation import audit
from evaluation.errors import AccountError
from evaluation.models import ROLES, User

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MIN_PASSWORD = 10
#: Compared against when the e-mail is unknown, so that timing does not reveal accounts.
_DUMMY_HASH = generate_password_hash("not-a-password", method="pbkdf2:sha256:1000")


def create_user(session: Session, email: str, password: str, role: str, actor: str,
                hash_method: str = "scrypt") -> User:
    """Create a staff account with a hashed password, log it and commit."""
    email = (email or "").strip().lower()
    problems = []
    if not EMAIL_RE.match(email):
        problems.append(f"email: {email!r} is not an e-mail address")
    if role not in ROLES:
        problems.append(f"role: must be one of {', '.join(ROLES)}, got {role!r}")
    if len(password or "") < MIN_PASSWORD:
        problems.append(f"password: at least {MIN_PASSWORD} characters")
    if problems:
        raise AccountError(problems[0], problems)
    if session.scalar(select(User.id).where(User.email == email)):
        raise AccountError(f"email: a user {email} exists already")
    user = User(email=email, role=role,
                password_hash=generate_password_hash(password, method=hash_method))
    session.add(user)
    try:
        session.flush()
        audit.record(session, actor, "user.create", None, email=email, role=role)
        session.commit()
    except IntegrityError:
        session.rollback()
        raise AccountError(f"email: a user {email} exists already") from None
    return user


def authenticate(session: Session, email: str, password: str) -> User | None:
    """The enabled user with this e-mail and password, or None."""
    user = session.scalar(select(User).where(User.email == (email or "").strip().lower()))
    if user is None:
        check_password_hash(_DUMMY_HASH, password or "")
        return None
    if not check_password_hash(user.password_hash, password or "") or not user.is_enabled:
        return None
    return user
