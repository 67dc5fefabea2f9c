"""The admins' pages: the audit log and the accounts.

The audit log is shown newest first, a page at a time. Accounts are
listed with their roles; an admin may remove one (not themselves: the
page must keep an admin), which is audited. Accounts are added and
passwords set on the command line (`trustmilter review adduser`,
`passwd`), where a password never passes through a browser form of
someone else.
"""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from trustmilter.command_support import utc
from trustmilter.review import audit
from trustmilter.review.accounts import AccountError
from trustmilter.review.context import context
from trustmilter.review.language import tr
from trustmilter.review.listing import page_number, paged
from trustmilter.review.people import admin_only, current_name, login_required
from trustmilter.review.presenting import printable

blueprint = Blueprint("admin", __name__)


@blueprint.route("/audit")
@login_required
@admin_only
def audit_log() -> ResponseReturnValue:
    ctx = context()
    size = ctx.settings.review.page_size
    total = ctx.audit.count()
    page = paged(range(total), page_number(request.args.get("page")), size)
    entries = ctx.audit.newest(size, (page.number - 1) * size)
    rows = [(utc(e.at), printable(e.who), tr(audit.ACTION_WORDS.get(e.action, e.action)),
             " ".join(e.queue_ids), tr(audit.OUTCOME_WORDS.get(e.outcome, e.outcome)),
             printable(e.detail)) for e in entries]
    return render_template("audit.html", title=tr("Audit log"), rows=rows, page=page)


@blueprint.route("/accounts")
@login_required
@admin_only
def accounts() -> ResponseReturnValue:
    listed = [(a.name, a.role, utc(a.created)) for a in context().accounts.all()]
    return render_template("accounts.html", title=tr("Accounts"), accounts=listed,
                           me=current_name())


@blueprint.route("/accounts/remove", methods=["POST"])
@login_required
@admin_only
def remove_account() -> ResponseReturnValue:
    ctx = context()
    name = request.form.get("name", "")
    who = current_name()
    if name == who:
        flash(tr("You cannot remove your own account."), "error")
        return redirect(url_for("admin.accounts"))
    try:
        ctx.accounts.remove(name)
    except AccountError as error:
        flash(tr("Not done: %(error)s") % {"error": printable(str(error))}, "error")
        return redirect(url_for("admin.accounts"))
    ctx.audit.record(ctx.clock(), who, audit.ACCOUNT_REMOVED, [], audit.OK, name)
    flash(tr("Account %(name)s removed.") % {"name": name}, "done")
    return redirect(url_for("admin.accounts"))
