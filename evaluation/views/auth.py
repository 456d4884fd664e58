"""Sign in, sign out, language switch."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import flash, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_user, logout_user

from core.config import LOCALES
from core.extensions import db
from evaluation.accounts import authenticate
from evaluation.forms import ActionForm, SignInForm



def _safe_next(target: str | None) -> str:
    if target and target.startswith("/") and not target.startswith("//") and not urlsplit(target).netloc:
        return target
    return url_for("evaluation.list_rounds")


def sign_in():
    """Show the sign-in form and sign a staff member in."""
    if current_user.is_authenticated:
        return redirect(url_for("evaluation.list_rounds"))
    form = SignInForm()
    if form.validate_on_submit():
        user = authenticate(db.session, form.email.data, form.password.data)
        if user is not None:
            session.clear()
            login_user(user)
            return redirect(_safe_next(request.args.get("next")))
        flash(_("Wrong e-mail or password."), "error")
    return render_template("evaluation/sign_in.html", form=form)


def sign_out():
    """Sign the staff member out."""
    if ActionForm().validate_on_submit():
        logout_user()
        session.clear()
    return redirect(url_for("evaluation.sign_in"))


def set_language():
    """Remember the chosen language for this browser session."""
    form = ActionForm()
    lang = request.form.get("lang")
    if form.validate_on_submit() and lang in LOCALES:
        session["lang"] = lang
    return redirect(_safe_next(request.form.get("next")))
