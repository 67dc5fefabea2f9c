"""What the help desk does: release (teaching or not), delete, delete as spam; allow-list.

One form posts the chosen queue IDs and the action, from the list (many)
or the message view (one). The work is QuarantineReview's, as
``trustmilter quarantine`` does it: every ID is checked first (syntax,
then the hold queue), one that is not there stops the whole batch, and a
release teaches the state store (a deletion as spam teaches the other
way). Each action, done or failed, is one audit row and one log line,
then the list again with what happened (post, redirect, get: a reload
does not do it twice). Asking to allow-list a sender (admins only) does
not change the policy — the page may not write it — but shows the exact
line to add under checks.allowlist.senders, and is recorded.
"""

from __future__ import annotations

from collections.abc import Callable

import yaml
from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from trustmilter.i18n import N_
from trustmilter.quarantine.review import ReviewError
from trustmilter.review import audit
from trustmilter.review.context import ReviewContext, context
from trustmilter.review.language import tr
from trustmilter.review.people import admin_only, current_name, login_required
from trustmilter.review.presenting import printable
from trustmilter.state.base import StateError

blueprint = Blueprint("actions", __name__)
MAX_SELECTED = 1000  # queue IDs one form may name
SHOWN_SENDERS = 5  # senders named in the message after an action


def _release(ctx: ReviewContext, ids: list[str]) -> str:
    with ctx.open_state() as store:
        released = ctx.review.release(ids, store)
    learned = [f"{r.reputation.sender} ({r.reputation.releases})"
               for r in released if r.reputation is not None]
    return _learned_line(learned)


def _release_quietly(ctx: ReviewContext, ids: list[str]) -> str:
    ctx.review.release(ids, None)
    return ""


def _delete(ctx: ReviewContext, ids: list[str]) -> str:
    ctx.review.delete(ids)
    return ""


def _delete_as_spam(ctx: ReviewContext, ids: list[str]) -> str:
    with ctx.open_state() as store:
        marked = ctx.review.delete_as_spam(ids, store)
    return _learned_line([f"{m.reputation.sender} ({m.reputation.spam_marks})"
                          for m in marked if m.reputation is not None])


def _learned_line(senders: list[str]) -> str:
    shown = senders[:SHOWN_SENDERS]
    more = len(senders) - len(shown)
    return ", ".join(shown) + (f" (+{more})" if more > 0 else "")


# action value -> (audit action, the work, what to say when done). No plural
# forms: the catalogs hold plain msgids (and Japanese has none).
ACTIONS: dict[str, tuple[str, Callable[[ReviewContext, list[str]], str], str]] = {
    "release": (audit.RELEASE, _release, N_("Released: %(count)s.")),
    "release-no-learn": (audit.RELEASE_QUIETLY, _release_quietly,
                         N_("Released without teaching: %(count)s.")),
    "delete": (audit.DELETE, _delete, N_("Deleted: %(count)s.")),
    "delete-as-spam": (audit.DELETE_AS_SPAM, _delete_as_spam,
                       N_("Deleted as spam: %(count)s.")),
}


@blueprint.route("/act", methods=["POST"])
@login_required
def act() -> ResponseReturnValue:
    ctx = context()
    chosen = request.form.get("action", "")
    if chosen not in ACTIONS:
        abort(400)
    ids = list(dict.fromkeys(request.form.getlist("id")))
    if not ids:
        flash(tr("Choose at least one message."), "error")
        return redirect(url_for("pages.held"))
    if len(ids) > MAX_SELECTED:
        abort(400)
    action, work, done = ACTIONS[chosen]
    who = current_name()
    try:
        learned = work(ctx, ids)
    except (ReviewError, StateError) as error:
        ctx.audit.record(ctx.clock(), who, action, ids, audit.FAILED, str(error))
        flash(tr("Not done: %(error)s") % {"error": printable(str(error))}, "error")
        return redirect(url_for("pages.held"))
    ctx.audit.record(ctx.clock(), who, action, ids, audit.OK, learned)
    said = tr(done) % {"count": len(ids)}
    if learned:
        said += " " + (tr("Learned about: %(senders)s") if chosen == "release" else
                       tr("Marked as spam: %(senders)s")) % {"senders": printable(learned)}
    flash(said, "done")
    return redirect(url_for("pages.held"))


def allowlist_line(identity: str) -> str:
    """The policy lines that allow-list `identity` (YAML-quoted where it must be)."""
    entry = yaml.safe_dump([identity], default_flow_style=False, allow_unicode=True).strip()
    return f"checks:\n  allowlist:\n    senders:\n      {entry}"


@blueprint.route("/allowlist", methods=["POST"])
@login_required
@admin_only
def allowlist() -> ResponseReturnValue:
    ctx = context()
    queue_id = request.form.get("id", "")
    who = current_name()
    try:
        message = ctx.review.show(queue_id)
    except ReviewError as error:
        ctx.audit.record(ctx.clock(), who, audit.ALLOWLIST, [queue_id], audit.FAILED, str(error))
        flash(tr("Not done: %(error)s") % {"error": printable(str(error))}, "error")
        return redirect(url_for("pages.held"))
    if not message.sender:
        flash(tr("A bounce has no sender to allow-list."), "error")
        return redirect(url_for("pages.message", queue_id=queue_id))
    identity = printable(ctx.review.identity(message))
    line = allowlist_line(identity)
    ctx.audit.record(ctx.clock(), who, audit.ALLOWLIST, [queue_id], audit.OK, identity)
    return render_template("allowlist.html", title=tr("Allow-list a sender"),
                           identity=identity, line=line,
                           queue_id=queue_id)
