"""What the help desk sees: the held messages, and one message in full.

Both read the hold queue anew on every request (the queue is the truth;
the page keeps no copy). The list is newest first, filtered and paged
(listing.py); for a bounce on the page its explain-bounce reading is
added. The message view has every header field and the body as safe text
(quarantine/body.py: decoded text, HTML without markup, nothing fetched,
attachments listed and never opened).
"""

from __future__ import annotations

from flask import Blueprint, abort, render_template, request
from flask.typing import ResponseReturnValue

from trustmilter.quarantine.postfix import PostfixCommandError, valid_queue_id
from trustmilter.quarantine.review import ReviewError
from trustmilter.review.context import ReviewContext, context
from trustmilter.review.language import tr
from trustmilter.review.listing import (
    AGES,
    NOT_OURS,
    ListFilter,
    newest_first,
    page_number,
    paged,
    reasons_seen,
)
from trustmilter.review.people import login_required
from trustmilter.review.presenting import (
    BOUNCE_READ,
    bounce_reading,
    header_fields,
    printable,
    reasons_in_words,
    shown,
)

blueprint = Blueprint("pages", __name__)


@blueprint.route("/")
@login_required
def held() -> ResponseReturnValue:
    ctx = context()
    try:
        messages = ctx.review.held()
    except ReviewError as error:
        return _queue_failed(error)
    chosen = ListFilter.from_query(request.args)
    page = paged(newest_first(messages, chosen), page_number(request.args.get("page")),
                 ctx.settings.review.page_size)
    bounces = {m.queue_id: _bounce(ctx, m.queue_id) for m in page.items if not m.sender}
    return render_template(
        "held.html", title=tr("Held messages"), filter=chosen, query=chosen.query(),
        page=page, messages=[shown(m, tr) for m in page.items], bounces=bounces,
        reasons=reasons_in_words(tuple(reasons_seen(messages)), tr), ages=tuple(AGES),
        not_ours=NOT_OURS)


@blueprint.route("/message/<queue_id>")
@login_required
def message(queue_id: str) -> ResponseReturnValue:
    if not valid_queue_id(queue_id):
        abort(404)
    ctx = context()
    try:
        held_message = ctx.review.show(queue_id)
        body = ctx.review.body(queue_id)
    except ReviewError as error:
        if not _still_held(ctx, queue_id):
            abort(404)  # released or deleted meanwhile, or never held
        return _queue_failed(error)
    return render_template(
        "message.html", title=tr("Held message"), message=shown(held_message, tr),
        headers=header_fields(held_message), body=body,
        bounce=None if held_message.sender else _bounce(ctx, queue_id),
        identity=printable(ctx.review.identity(held_message)) if held_message.sender else "")


def _bounce(ctx: ReviewContext, queue_id: str) -> tuple[str, ...]:
    try:
        raw, _ = ctx.queue.read_message(queue_id, BOUNCE_READ)
    except PostfixCommandError as error:
        return (printable(str(error)),)
    return bounce_reading(raw, ctx.settings.checks.bounce.own_domains, tr)


def _still_held(ctx: ReviewContext, queue_id: str) -> bool:
    """Whether `queue_id` is in the hold queue (False when the queue cannot be read:
    the error the caller has says why)."""
    try:
        return any(entry.queue_id == queue_id for entry in ctx.queue.held())
    except PostfixCommandError:
        return True


def _queue_failed(error: ReviewError) -> ResponseReturnValue:
    return render_template("failed.html", title=tr("The hold queue cannot be read"),
                           error=printable(str(error))), 503
