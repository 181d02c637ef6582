"""The admin pages. Each view parses its input, calls one library function and renders a template."""

from __future__ import annotations

import calendar
import functools
import html
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, send_file, url_for
from flask.typing import ResponseReturnValue
from markupsafe import Markup, escape
from werkzeug.datastructures import MultiDict

from smarttags.core import report
from smarttags.core.asset import Asset
from smarttags.core.folders import Folder
from smarttags.core.moderation import MAX_BULK, PROMOTE, REMOVE
from smarttags.core.runs import ON_DEMAND, TRAIN
from smarttags.core.search import CONFIDENCE_STEPS, SearchRequest
from smarttags.core.users import ADMIN, MODERATOR, ROLES, VIEWER
from smarttags.entrypoints import dead_letters, overview
from smarttags.entrypoints import health as status
from smarttags.entrypoints.admin.auth import ctx, current_user, require
from smarttags.errors import NotFound, RequestError

log = logging.getLogger(__name__)

bp = Blueprint("admin", __name__)
PAGE_SIZE = 24
MAX_TAG_CHARS = 512
THUMBNAIL_MAX_AGE = 24 * 3600
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
STATUS_CLASS = {report.TRAINED: "trained", report.PARTIAL: "partial", report.NOT_TRAINED: "not-trained"}
_MARK = re.compile(r"(</?mark>)")
_training_lock = threading.Lock()


def highlight(fragment: str) -> Markup:
    """An OpenSearch highlight (HTML-encoded text with <mark> around hits) made safe: every piece of
    text is decoded and escaped again, and only the literal <mark> and </mark> tags survive."""
    out = []
    for part in _MARK.split(fragment):
        out.append(part if part in ("<mark>", "</mark>") else str(escape(html.unescape(part))))
    return Markup("".join(out))


def timecode(seconds: float) -> str:
    """Seconds as m:ss.s (h:mm:ss from an hour on), for a video tag's time ranges."""
    minutes, rest = divmod(float(seconds), 60.0)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{rest:04.1f}" if hours else f"{minutes}:{rest:04.1f}"


def _user_name() -> str:
    user = current_user()
    return user.username if user else "?"


@bp.app_context_processor
def _template_globals() -> dict[str, Any]:
    user = current_user()
    return {
        "user": user,
        "can_admin": bool(user and user.role == ADMIN),
        "can_moderate": bool(user and user.role in (ADMIN, MODERATOR)),
        "status_class": STATUS_CLASS,
    }


@bp.route("/")
@require(VIEWER)
def home() -> ResponseReturnValue:
    return redirect(url_for("admin.search"))


# --- status ---------------------------------------------------------------------------------------


@bp.route("/status")
@require(ADMIN)
def status_page() -> ResponseReturnValue:
    checks = status.validate(ctx().services)
    return render_template("status.html", checks=checks, healthy=all(c.ok for c in checks))


# --- folders --------------------------------------------------------------------------------------


@bp.route("/folders")
@require(VIEWER)
def folders() -> ResponseReturnValue:
    return render_template("folders.html", rows=overview.folder_rows(ctx().services))


def _folder_from_form() -> Folder:
    try:
        return Folder.parse(request.form.get("uri", ""), ctx().settings.aws.bucket)
    except ValueError as exc:
        raise RequestError(str(exc)) from None


@bp.route("/folders/enable", methods=["POST"])
@require(ADMIN)
def folder_enable() -> ResponseReturnValue:
    enabled = request.form.get("enabled") == "1"
    folder = ctx().services.folders.set_enabled(_folder_from_form(), enabled, user=_user_name())
    flash(f"Smart Tags {'enabled' if enabled else 'disabled'} for {folder.uri}", "ok")
    return redirect(url_for("admin.folders"))


@bp.route("/folders/train", methods=["POST"])
@require(ADMIN)
def folder_train() -> ResponseReturnValue:
    folder = _folder_from_form()
    uri = folder.uri
    services = ctx().services
    if not _training_lock.acquire(blocking=False):
        flash("A training run started here is still going; wait for it to finish.", "error")
        return redirect(url_for("admin.folders"))

    def work() -> None:
        # Training runs in a background thread of this process; its run and report appear under Runs.
        try:
            services.trainer.train([folder], trigger=ON_DEMAND)
        except Exception:
            log.exception("training %s from the admin failed", uri)
        finally:
            _training_lock.release()

    threading.Thread(target=work, name=f"smarttags-train {uri}", daemon=True).start()
    flash(f"Training on {uri} started; its report appears under Reports when it is done.", "ok")
    return redirect(url_for("admin.folders"))


@bp.route("/folders/tag", methods=["POST"])
@require(ADMIN)
def folder_tag() -> ResponseReturnValue:
    # A web request must not last as long as the run: the whole selection is queued at once.
    dispatch = ctx().services.dispatch_tagging(_folder_from_form(), trigger=ON_DEMAND, max_queued=0)
    queued = dispatch.run.counts.get("selected", 0)
    flash(f"Tagging run {dispatch.run.run_id}: {queued} assets queued.", "ok")
    return redirect(url_for("admin.folders"))


# --- training reports ------------------------------------------------------------------------------


@bp.route("/reports")
@require(VIEWER)
def reports() -> ResponseReturnValue:
    runs = [r for r in ctx().services.runs.list(kind=TRAIN, size=50)]
    return render_template("reports.html", runs=runs)


def _report(run_id: str) -> report.TrainingReport:
    run = ctx().services.runs.get(run_id)
    if run is None or run.kind != TRAIN:
        raise NotFound(f"no training run {run_id}")
    if not run.report:
        raise NotFound(f"training run {run_id} has no report (status: {run.status})")
    return report.TrainingReport.from_json(run.report)


@dataclass(frozen=True)
class Bar:
    label: str
    precision: float
    recall: float


@bp.route("/reports/<run_id>")
@require(VIEWER)
def report_page(run_id: str) -> ResponseReturnValue:
    training = _report(run_id)
    bars = [
        Bar(row.title or row.tag, row.precision or 0.0, row.recall or 0.0)
        for row in training.rows
        if row.precision is not None or row.recall is not None
    ]
    return render_template("report.html", report=training, counts=training.counts(), bars=bars, run_id=run_id)


@bp.route("/reports/<run_id>/report.xlsx")
@require(VIEWER)
def report_xlsx(run_id: str) -> ResponseReturnValue:
    import io

    data = report.as_xlsx(_report(run_id))
    safe = re.sub(r"[^A-Za-z0-9_\-]", "_", run_id)
    return send_file(io.BytesIO(data), mimetype=XLSX, as_attachment=True, download_name=f"training-report-{safe}.xlsx")


# --- search and moderation --------------------------------------------------------------------------


# Facet name -> the query-string argument that filters by it (repeatable: every value is required).
FACET_ARGS = {"smart_tags": "tag", "keywords": "keyword", "formats": "format", "statuses": "status"}
FACET_TITLES = {
    "smart_tags": "Smart tags",
    "keywords": "Keywords",
    "folders": "Folder",
    "formats": "Format",
    "statuses": "Tagging status",
    "months": "Modified",
}


def _month_range(month: str) -> tuple[str, str] | None:
    """``YYYY-MM`` as the first and last instant of that month, or None if it is not one."""
    match = re.fullmatch(r"(\d{4})-(\d{2})", month)
    if not match or not 1 <= int(match.group(2)) <= 12:
        return None
    last = calendar.monthrange(int(match.group(1)), int(match.group(2)))[1]
    return f"{month}-01T00:00:00.000Z", f"{month}-{last:02d}T23:59:59.999Z"


def facet_url(name: str, value: str) -> str:
    """This search with ``value`` of facet ``name`` chosen, or dropped if it was chosen (page 1 again)."""
    args = request.args.to_dict(flat=False)
    args.pop("page", None)
    arg = FACET_ARGS.get(name) or {"folders": "folder", "months": "month"}[name]
    chosen = args.get(arg, [])
    if arg in ("folder", "month"):
        args[arg] = [] if chosen == [value] else [value]
    else:
        args[arg] = [v for v in chosen if v != value] if value in chosen else [*chosen, value]
    return _search_url({k: v for k, v in args.items() if v})


def confidence_url(step: str) -> str:
    """This search keeping only smart tags at ``step`` or above, or without that filter if it was chosen."""
    args = request.args.to_dict(flat=False)
    args.pop("page", None)
    args["confidence"] = [] if args.get("confidence") == [step] else [step]
    return _search_url({k: v for k, v in args.items() if v})


def _search_url(args: dict[str, list[str]]) -> str:
    query: dict[str, Any] = dict(args)  # url_for repeats a list's values: ?tag=a&tag=b
    return url_for("admin.search", **query)


def _search_request(args: MultiDict[str, str], *, page: int, size: int) -> SearchRequest:
    """The search the page's query string describes (text, folder, facet values, month); it counts the
    matches to one past ``MAX_BULK``, so the page can say whether "all results" may be changed at once."""
    month = args.get("month", "")
    months = _month_range(month) if month else None
    if month and months is None:
        raise RequestError("month must be YYYY-MM")
    return SearchRequest(
        text=args.get("q", ""),
        folder=args.get("folder") or None,
        page=max(page, 0),
        size=size,
        highlight=True,
        tags=args.getlist("tag"),
        keywords=args.getlist("keyword"),
        formats=args.getlist("format"),
        statuses=args.getlist("status"),
        min_confidence=args.get("confidence") or None,
        modified_from=months[0] if months else None,
        modified_to=months[1] if months else None,
        facets=True,
        count_to=MAX_BULK + 1,
    )


@bp.route("/search")
@require(VIEWER)
def search() -> ResponseReturnValue:
    text = request.args.get("q", "")
    folder = request.args.get("folder") or None
    page = request.args.get("page", 0, type=int) or 0
    month = request.args.get("month", "")
    chosen = {arg: request.args.getlist(arg) for arg in FACET_ARGS.values()}
    result = None
    error = None
    try:
        result = ctx().services.searcher.search(_search_request(request.args, page=page, size=PAGE_SIZE))
    except RequestError as exc:
        error = str(exc)
    titles = {tag.id: tag.title() for tag in ctx().services.taxonomy.load().tags.values()}
    selected = {
        **{name: set(chosen[arg]) for name, arg in FACET_ARGS.items()},
        "folders": {folder} if folder else set(),
        "months": {month} if month else set(),
    }
    return render_template(
        "search.html",
        q=text,
        folder=folder or "",
        page=page,
        result=result,
        error=error,
        titles=titles,
        page_size=PAGE_SIZE,
        facet_titles=FACET_TITLES,
        selected=selected,
        facet_url=facet_url,
        confidence_url=confidence_url,
        confidence_steps=CONFIDENCE_STEPS[4:],
        confidence=request.args.get("confidence", ""),
        page_url=lambda n: _search_url({**request.args.to_dict(flat=False), "page": [str(n)]}),
        query_string=request.query_string.decode("utf-8", "replace"),
        taxonomy=sorted(ctx().services.taxonomy.load().tags.values(), key=lambda t: t.title().lower()),
        max_bulk=MAX_BULK,
    )


@bp.route("/moderation/bulk", methods=["POST"])
@require(MODERATOR)
def bulk_moderation() -> ResponseReturnValue:
    """Remove or promote one tag on the selected assets, or on every result of the search (at most
    ``MAX_BULK``); each change is audited."""
    query = request.form.get("query", "")
    back = url_for("admin.search") + (f"?{query}" if query else "")
    action = {"remove": REMOVE, "promote": PROMOTE}.get(request.form.get("action", ""))
    tag = request.form.get("bulk_tag", "").strip()
    if action is None or not tag or len(tag) > MAX_TAG_CHARS:
        abort(400)
    if action == PROMOTE and tag not in ctx().services.taxonomy.load():
        flash(f"{tag} is not in the taxonomy; import it first.", "error")
        return redirect(back)
    if request.form.get("scope") == "all":
        ids = _all_results(MultiDict(parse_qsl(query)))
    else:
        ids = [i for i in request.form.getlist("asset") if re.fullmatch(r"[0-9a-f]{1,64}", i)]
    if not ids:
        flash("Select at least one asset, or choose all results.", "error")
        return redirect(back)
    done = ctx().services.moderation.bulk(ids, action, tag, user=_user_name())
    verb = "removed from" if action == REMOVE else "promoted on"
    flash(
        f"{tag}: {verb} {done.changed} asset{'s' if done.changed != 1 else ''}"
        f" ({done.unchanged} already so, {done.missing} gone).",
        "ok",
    )
    return redirect(back)


def _all_results(args: MultiDict[str, str]) -> list[str]:
    """The ids of every result of a search, refused above ``MAX_BULK`` (a bulk change needs a narrow query)."""
    searcher = ctx().services.searcher
    first = searcher.search(_search_request(args, page=0, size=100))
    if first.total > MAX_BULK:
        raise RequestError(f"the search has {first.total} results; a bulk change takes at most {MAX_BULK}")
    ids = [hit.asset_id for hit in first.hits]
    page = 1
    while len(ids) < first.total:
        more = searcher.search(_search_request(args, page=page, size=100)).hits
        if not more:
            break
        ids.extend(hit.asset_id for hit in more)
        page += 1
    return ids


def _asset(asset_id: str) -> Asset:
    found = ctx().services.assets.get(asset_id) if re.fullmatch(r"[0-9a-f]{1,64}", asset_id) else None
    if found is None:
        raise NotFound(f"no asset {asset_id}")
    asset: Asset = found.asset
    return asset


@bp.route("/assets/<asset_id>")
@require(VIEWER)
def asset(asset_id: str) -> ResponseReturnValue:
    doc = _asset(asset_id)
    taxonomy = ctx().services.taxonomy.load()
    titles = {tag.id: tag.title() for tag in taxonomy.tags.values()}
    audit = ctx().services.moderation.audit(asset_id=asset_id)
    return render_template("asset.html", doc=doc, titles=titles, audit=audit)


@bp.route("/assets/<asset_id>/original")
@require(VIEWER)
def original(asset_id: str) -> ResponseReturnValue:
    """Open the original: a redirect to a presigned S3 link, made per click and valid for five minutes."""
    doc = _asset(asset_id)
    store = ctx().services.store_for(doc.bucket)
    return redirect(store.presigned_url(doc.key, version_id=doc.version_id), code=303)


@bp.route("/assets/<asset_id>/tags", methods=["POST"])
@require(MODERATOR)
def asset_tags(asset_id: str) -> ResponseReturnValue:
    action = request.form.get("action", "")
    tag = request.form.get("tag", "").strip()
    moderation = ctx().services.moderation
    operations = {"remove": moderation.remove, "promote": moderation.promote, "unpromote": moderation.unpromote}
    if action not in operations or not tag or len(tag) > MAX_TAG_CHARS:
        abort(400)
    if action == "promote" and tag not in ctx().services.taxonomy.load():
        flash(f"{tag} is not in the taxonomy; import it first.", "error")
        return redirect(url_for("admin.asset", asset_id=asset_id))
    operations[action](asset_id, tag, user=_user_name())
    ctx().services.index.refresh("audit")  # the page we redirect to shows this change in its audit trail
    done = {"remove": "removed", "promote": "promoted", "unpromote": "no longer promoted"}[action]
    flash(f"{tag}: {done}.", "ok")
    return redirect(url_for("admin.asset", asset_id=asset_id))


# --- review queue ----------------------------------------------------------------------------------------

REVIEW_SIZE = 20


@bp.route("/review")
@require(MODERATOR)
def review() -> ResponseReturnValue:
    decisions = ctx().services.review.next(REVIEW_SIZE)
    titles = {tag.id: tag.title() for tag in ctx().services.taxonomy.load().tags.values()}
    active = ctx().services.models.active_version()
    return render_template("review.html", decisions=decisions, titles=titles, active=active)


@bp.route("/review/decide", methods=["POST"])
@require(MODERATOR)
def review_decide() -> ResponseReturnValue:
    """Accept (promote: a positive for the next training) or reject (remove: a negative) one decision,
    from the review queue or from a tag's page (``back=tag``: the verdict returns there)."""
    verdict = request.form.get("verdict", "")
    tag = request.form.get("tag", "").strip()
    if verdict not in ("accept", "reject") or not tag or len(tag) > MAX_TAG_CHARS:
        abort(400)
    asset_id = _asset(request.form.get("asset_id", "")).id
    moderation = ctx().services.moderation
    (moderation.promote if verdict == "accept" else moderation.remove)(asset_id, tag, user=_user_name(), reviewed=True)
    flash(f"{tag}: {'accepted' if verdict == 'accept' else 'rejected'}.", "ok")
    if request.form.get("back") == "tag":
        return redirect(url_for("admin.tag_page", tag=tag, page=request.form.get("page", 0, type=int) or None))
    return redirect(url_for("admin.review"))


# --- one tag -------------------------------------------------------------------------------------------


@bp.route("/tags")
@require(VIEWER)
def tag_page() -> ResponseReturnValue:
    """One tag: the assets just above and just below its threshold side by side, and all by confidence."""
    tag = request.args.get("tag", "").strip()
    if not tag or len(tag) > MAX_TAG_CHARS:
        abort(400)
    page = request.args.get("page", 0, type=int) or 0
    view = ctx().services.review.tag_page(tag, page=page, page_size=PAGE_SIZE)
    titles = {t.id: t.title() for t in ctx().services.taxonomy.load().tags.values()}
    return render_template(
        "tag.html",
        view=view,
        titles=titles,
        page_url=lambda n: url_for("admin.tag_page", tag=tag, page=n or None),
    )


@functools.cache
def _placeholder() -> bytes:
    return (Path(__file__).parent / "static" / "placeholder.svg").read_bytes()


@bp.route("/assets/<asset_id>/thumbnail")
@require(VIEWER)
def thumbnail(asset_id: str) -> ResponseReturnValue:
    try:
        asset: Asset | None = _asset(asset_id)
    except NotFound:
        asset = None
    thumb = None
    if asset and asset.bucket == ctx().settings.aws.bucket:
        thumb = ctx().thumbnails.get(asset_id, asset.key, asset.etag)
    if thumb is None:
        response = Response(_placeholder(), mimetype="image/svg+xml")
        response.cache_control.private = True
        response.cache_control.max_age = 300
        return response
    response = Response(thumb.data, mimetype="image/jpeg")
    response.set_etag(thumb.etag)
    response.cache_control.private = True
    response.cache_control.max_age = THUMBNAIL_MAX_AGE
    return response.make_conditional(request)


# --- models ------------------------------------------------------------------------------------------


@bp.route("/models")
@require(VIEWER)
def models() -> ResponseReturnValue:
    comparison = overview.compare_models(ctx().services, request.args.getlist("v"))
    return render_template("models.html", cmp=comparison)


@bp.route("/models/activate", methods=["POST"])
@require(ADMIN)
def model_activate() -> ResponseReturnValue:
    version = request.form.get("version", "")
    manifest = ctx().services.models.activate(version)
    log.info("model %s activated by %s", manifest.version, _user_name())
    flash(f"Model {manifest.version} is now active.", "ok")
    return redirect(url_for("admin.models"))


@bp.route("/models/rollback", methods=["POST"])
@require(ADMIN)
def model_rollback() -> ResponseReturnValue:
    manifest = ctx().services.models.rollback()
    log.info("model rolled back to %s by %s", manifest.version, _user_name())
    flash(f"Rolled back: model {manifest.version} is active again.", "ok")
    return redirect(url_for("admin.models"))


# --- runs ----------------------------------------------------------------------------------------------


def _runs_page(error: str | None = None, keys: str = "", code: int = 200) -> ResponseReturnValue:
    kind = request.args.get("kind") or None
    runs = ctx().services.runs.list(kind=kind if kind in ("train", "tag") else None, size=100)
    limit = ctx().settings.tagging.max_assets_on_demand
    return render_template("runs.html", runs=runs, error=error, keys=keys, limit=limit), code


@bp.route("/runs")
@require(VIEWER)
def runs() -> ResponseReturnValue:
    return _runs_page()


@bp.route("/runs/tag", methods=["POST"])
@require(ADMIN)
def runs_tag() -> ResponseReturnValue:
    text = request.form.get("keys", "")
    selected = [_asset(i).key for i in request.form.getlist("asset")[: ctx().settings.tagging.max_assets_on_demand + 1]]
    keys = list(dict.fromkeys([*request.form.getlist("key"), *selected, *(line.strip() for line in text.splitlines())]))
    keys = [k for k in keys if k]
    try:
        run = ctx().services.tag_now(keys, user=_user_name())
    except RequestError as exc:
        return _runs_page(error=str(exc), keys="\n".join(keys), code=400)
    why = "; ".join(f"{e['key']}: {e['reason']}" for e in [*run.errors, *run.skips][:5])
    flash(
        f"Run {run.run_id}: {run.counts.get('tagged', 0)} tagged, {run.counts.get('skipped', 0)} skipped, "
        f"{run.counts.get('unsupported', 0)} unsupported, {run.counts.get('failed', 0)} failed."
        + (f" {why}" if why else ""),
        "error" if run.errors else "warn" if run.skips else "ok",
    )
    return redirect(url_for("admin.runs"))


# --- dead letters ---------------------------------------------------------------------------------------


@bp.route("/dead-letters")
@require(ADMIN)
def dead_letters_page() -> ResponseReturnValue:
    letters = dead_letters.list_dead_letters(ctx().services)
    depth = ctx().services.dead_letter_queue.depth()
    return render_template("dead_letters.html", letters=letters, depth=depth, limit=dead_letters.MAX_LISTED)


@bp.route("/dead-letters/redrive", methods=["POST"])
@require(ADMIN)
def dead_letters_redrive() -> ResponseReturnValue:
    message_id = request.form.get("message_id") or None
    if message_id is None and request.form.get("all") != "1":
        abort(400)
    moved = dead_letters.redrive(ctx().services, message_id)
    log.info("%d dead letter(s) redriven by %s", moved, _user_name())
    if message_id and not moved:
        flash("That message is no longer in the dead-letter queue.", "error")
    else:
        flash(f"{moved} message{'s' if moved != 1 else ''} sent back to the tagging queue.", "ok")
    return redirect(url_for("admin.dead_letters_page"))


# --- users ---------------------------------------------------------------------------------------------


@bp.route("/users", methods=["GET", "POST"])
@require(ADMIN)
def users() -> ResponseReturnValue:
    store = ctx().users
    if request.method == "POST":
        try:
            created = store.create(
                request.form.get("username", "").strip(),
                request.form.get("password", ""),
                request.form.get("role", ""),
                by=_user_name(),
            )
        except RequestError as exc:
            flash(str(exc), "error")
        else:
            flash(f"User {created.username} ({created.role}) created.", "ok")
        return redirect(url_for("admin.users"))
    return render_template("users.html", users=store.list(), roles=ROLES, history=store.history())


@bp.route("/users/<username>", methods=["POST"])
@require(ADMIN)
def user_change(username: str) -> ResponseReturnValue:
    """Change one user's role, disable or enable them, or reset their password: each ends their sessions."""
    store = ctx().users
    action = request.form.get("action", "")
    by = _user_name()
    try:
        if action == "role":
            changed = store.set_role(username, request.form.get("role", ""), by=by)
            flash(f"{changed.username} is now {changed.role}; their sessions ended.", "ok")
        elif action in ("disable", "enable"):
            changed = store.set_disabled(username, action == "disable", by=by)
            flash(f"{changed.username} {action}d.", "ok")
        elif action == "password":
            changed = store.set_password(username, request.form.get("password", ""), by=by)
            flash(f"Password of {changed.username} reset; their sessions ended.", "ok")
        else:
            abort(400)
    except RequestError as exc:
        flash(str(exc), "error")
    if username == by and action != "enable":
        return redirect(url_for("auth.login"))  # one's own change ends one's own session too
    return redirect(url_for("admin.users"))
