"""The evaluator's door: link and code entry, the ballot, the receipt, the bulletin."""

from __future__ import annotations

from flask import (
    Blueprint, abort, current_app, redirect, render_template, request, session, url_for,
)

from flask_babel import get_locale, refresh
from markupsafe import Markup

from core.config import LOCALES
from core.extensions import db, limiter
from core.signing import BadLinkError
from evaluation.ballot_box import CastError, receipts
from evaluation.invitations import UnknownLinkError
from evaluation.models import Round
from evaluation.voting import (
    BallotInvalidError, Ticket, answers_so_far, cast, enter_with_code, enter_with_link, sheet_for,
)

bp = Blueprint("survey", __name__)
#: HTTP status of each refusal; the page says it in the voter's language.
REFUSAL_STATUS = {"invalid": 404, "unknown": 404, "not_started": 403, "closed": 410, "used": 409}


def _keys():
    return current_app.extensions["pingyi.keys"]


def _config():
    return current_app.config["PINGYI"]


def link_limit() -> str:
    return _config().link_rate_limit


def _only_failures(response) -> bool:
    """Only invalid links and codes count toward the limit; used or closed ones never do."""
    return response.status_code in (400, 404)


def refused(reason: str, by_code: bool = False):
    """The page for a link, code or ballot that cannot vote, with its status code."""
    return (render_template("survey/refused.html", reason=reason, by_code=by_code),
            REFUSAL_STATUS[reason])


def home():
    """Say what Pingyi is; evaluators can type a code, staff sign in."""
    return render_template("survey/home.html")


def open_link(token: str):
    """Exchange a ballot link for a session and send the browser to a URL without the token."""
    try:
        ticket = enter_with_link(db.session, token, _keys())
    except (BadLinkError, UnknownLinkError):
        return refused("invalid")
    except CastError as exc:
        return refused(exc.reason)
    session["ticket"] = ticket.to_session()
    session.pop("receipt", None)
    return redirect(url_for("survey.show_ballot"))


def enter_code():
    """Let the evaluator type the short code from a slip."""
    if request.method == "POST":
        typed = request.form.get("code", "")[:64]
        try:
            ticket = enter_with_code(db.session, typed, _keys())
        except UnknownLinkError:  # the code comes back, so that the voter can see the typo
            return render_template("survey/code.html", wrong=True, typed=typed[:20]), 404
        except CastError as exc:
            return refused(exc.reason, by_code=True)
        session["ticket"] = ticket.to_session()
        session.pop("receipt", None)
        return redirect(url_for("survey.show_ballot"))
    return render_template("survey/code.html", wrong=False)


def show_ballot():
    """Show the ballot of the ticket in the session."""
    ticket = Ticket.from_session(session.get("ticket"))
    if ticket is None:
        return redirect(url_for("survey.show_receipt") if session.get("receipt")
                        else url_for("survey.enter_code"))
    try:
        sheet = sheet_for(db.session, ticket)
    except CastError as exc:
        return refused(exc.reason)
    return render_template("survey/ballot.html", sheet=sheet, values={}, errors={},
                           cards=blank_cards(sheet))


_CARDS: dict[tuple, tuple] = {}


def blank_cards(sheet) -> Markup:
    """The cadre cards of an unanswered ballot, rendered once per sheet and language."""
    key = (sheet.round_id, sheet.group_id, str(get_locale()))
    hit = _CARDS.get(key)
    if hit is None or hit[0] is not sheet:
        hit = (sheet, Markup(render_template("survey/_cards.html", sheet=sheet, values={}, errors={})))
        if len(_CARDS) > 512:
            _CARDS.clear()
        _CARDS[key] = hit
    return hit[1]


def cast_ballot():
    """Record the ballot once; errors come back with the answers kept, and nothing stored."""
    ticket = Ticket.from_session(session.get("ticket"))
    if ticket is None:
        return refused("used" if session.get("receipt") else "invalid")
    try:
        receipt = cast(db.session, ticket, request.form, _config().mix_every)
    except BallotInvalidError as exc:
        return render_template("survey/ballot.html", sheet=exc.sheet, values=exc.parsed.values,
                               errors=exc.parsed.errors), 422
    except CastError as exc:
        session.pop("ticket", None)
        return refused(exc.reason)
    session.pop("ticket", None)
    session["receipt"] = receipt
    return redirect(url_for("survey.show_receipt"))


def ballot_language():
    """Show the ballot in the other language with the answers given so far; nothing is cast.

    The header's language buttons submit the ballot form here (see survey/ballot.html), so a
    voter who switches halfway loses nothing, with or without JavaScript.
    """
    if request.form.get("lang") in LOCALES:
        session["lang"] = request.form["lang"]
        refresh()  # this request already picked its locale
    ticket = Ticket.from_session(session.get("ticket"))
    if ticket is None:
        return redirect(url_for("survey.show_ballot"))
    try:
        sheet, values = answers_so_far(db.session, ticket, request.form)
    except CastError as exc:
        return refused(exc.reason)
    return render_template("survey/ballot.html", sheet=sheet, values=values, errors={})


def show_receipt():
    """Show the receipt code of the ballot just cast in this browser."""
    receipt = session.get("receipt")
    if not receipt:
        return redirect(url_for("survey.home"))
    return render_template("survey/receipt.html", receipt=receipt)


def about():
    """Say in plain words what is stored about a ballot and what is not; with a ticket in the
    session, the minimum group size is that round's."""
    ticket = Ticket.from_session(session.get("ticket"))
    round_ = db.session.get(Round, ticket.round_id) if ticket else None
    return render_template("survey/about.html", min_size=round_.min_group_size if round_ else None)


def bulletin(round_id: int):
    """The public bulletin of a closed round: every receipt, the count, the seal and fingerprint."""
    round_ = db.session.get(Round, round_id)
    if round_ is None or round_.seal_head is None:
        abort(404)
    return render_template("survey/bulletin.html", round=round_,
                           receipts=receipts(db.session, round_.id))


@bp.after_request
def private_pages(response):
    """Ballot pages are never cached and never leak their address to another site."""
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response


def _genuine_link() -> bool:
    """A link we signed is never limited, even from an address that has used up its budget."""
    token = (request.view_args or {}).get("token")
    if not token:
        return False
    try:
        _keys().signer.loads(token)
    except BadLinkError:
        return False
    return True


#: The voter's own pages once in: never limited (a meeting room shares one address), so the
#: limiter is not even consulted on the hot path of a meeting full of phones.
_NEVER_LIMITED = frozenset({"survey.show_ballot", "survey.cast_ballot", "survey.show_receipt"})


@limiter.request_filter
def _voter_inside() -> bool:
    return request.endpoint in _NEVER_LIMITED


#: Links and codes share one budget of invalid attempts per address.
_limited = limiter.shared_limit(link_limit, scope="ballot-entry", deduct_when=_only_failures,
                                exempt_when=_genuine_link, methods=["GET", "POST"])

for rule, endpoint, view, methods in [
    ("/", "home", home, ["GET"]),
    ("/v/<path:token>", "open_link", _limited(open_link), ["GET"]),
    ("/code", "enter_code", _limited(enter_code), ["GET", "POST"]),
    ("/ballot", "show_ballot", show_ballot, ["GET"]),
    ("/ballot", "cast_ballot", cast_ballot, ["POST"]),
    ("/ballot/language", "ballot_language", ballot_language, ["POST"]),
    ("/receipt", "show_receipt", show_receipt, ["GET"]),
    ("/about", "about", about, ["GET"]),
    ("/bulletin/<int:round_id>", "bulletin", bulletin, ["GET"]),
]:
    bp.add_url_rule(rule, endpoint, view, methods=methods)
