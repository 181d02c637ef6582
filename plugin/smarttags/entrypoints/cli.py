"""The ``smarttags`` command. Each subcommand parses its arguments, calls one library function, prints."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from smarttags import settings as settings_mod
from smarttags.entrypoints.progress import Progress
from smarttags.errors import RequestError, SmartTagsError
from smarttags.settings import Settings


def _read_text(path: str, what: str) -> str:
    """A user's input file, or one clear error line (exit 2) instead of a traceback."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RequestError(f"cannot read {what} {path}: {getattr(exc, 'strerror', None) or exc}") from exc


def _print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, ensure_ascii=False, default=str)
    sys.stdout.write("\n")


# --- stack ------------------------------------------------------------------------------------------


def _stack_build(settings: Settings, args: argparse.Namespace) -> int:
    from smarttags.devtools import stack

    built = stack.build_launcher(force=args.force)
    print("launcher built" if built else "launcher up to date")
    return 0


def _stack_up(settings: Settings, args: argparse.Namespace) -> int:
    import time

    from smarttags.devtools import stack

    ours: list[Any] = []

    def up() -> None:
        result = stack.stack_up(settings, heap_max=args.heap)
        ours.extend(h for h in result.handles if not h.reused)
        for handle in result.handles:
            verb = "already running" if handle.reused else "started"
            print(f"{handle.name}: {verb}, pid {handle.pid}, {handle.url}", flush=True)
        wiring = result.wiring
        print(f"bucket {wiring.bucket} -> queue {wiring.queue_url} (DLQ {wiring.dead_letter_queue_url})", flush=True)
        if args.foreground:
            print("running in the foreground: SIGTERM, SIGINT or SIGHUP stops what this started", flush=True)
            while not ours or all(handle.alive() for handle in ours):
                time.sleep(1)
            # One died (a crash, or `stack down` elsewhere): stop the rest and fail, so a supervisor sees it.
            died.append(True)
            _say("a service this started is gone: " + ", ".join(h.name for h in ours if not h.alive()))

    def clean_up() -> None:
        if args.foreground:
            _say("stopping what stack up started")
            for handle in reversed(ours):
                handle.stop()

    # A signal while starting stops what was started (stack_up does); with --foreground, also later.
    died: list[bool] = []
    return 130 if stack.run_until_stopped(up, clean_up) else 1 if died else 0


def _stack_status(settings: Settings, args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from smarttags.devtools import stack

    rows = stack.stack_status(settings)
    if args.json:
        _print_json([asdict(row) for row in rows])
    else:
        for row in rows:
            owner = f"pid {row.pid}" if row.pid is not None else ("not running" if row.managed else "external")
            print(f"{row.name:<11} {row.state:<5} {owner:<12} {row.url}  {row.detail}")
    return 0 if all(row.state == "up" for row in rows) else 1


def _stack_down(settings: Settings, args: argparse.Namespace) -> int:
    from smarttags.devtools import stack

    stopped = stack.stack_down(settings)
    print("stopped: " + ", ".join(stopped) if stopped else "nothing was running")
    return 0


def _add_stack_commands(sub: Any) -> None:
    stack_parser = sub.add_parser("stack", help="the embedded OpenSearch node and moto (S3+SQS) for dev and tests")
    stack_sub = stack_parser.add_subparsers(dest="stack_command", required=True, metavar="ACTION")
    build = stack_sub.add_parser("build", help="build the OpenSearch launcher (skipped when up to date)")
    build.add_argument("--force", action="store_true", help="rebuild even if up to date")
    build.set_defaults(handler=_stack_build)
    up = stack_sub.add_parser("up", help="start local services, wire bucket -> queue (harmless if running)")
    up.add_argument("--heap", default="1g", help="OpenSearch max heap, e.g. 1g or 768m (default 1g)")
    up.add_argument("--foreground", action="store_true", help="stay until a signal, then stop what it started")
    up.set_defaults(handler=_stack_up)
    status = stack_sub.add_parser("status", help="each service with pid, URL, version and health")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=_stack_status)
    down = stack_sub.add_parser("down", help="stop what `stack up` started")
    down.set_defaults(handler=_stack_down)


# --- backbone and embeddings ----------------------------------------------------------------------


# --- index, taxonomy, ingest, training, models ---------------------------------------------------


def _services(settings: Settings) -> Any:
    from smarttags.entrypoints.compose import Services

    return Services(settings)


def _cmd_init(settings: Settings, args: argparse.Namespace) -> int:
    services = _services(settings)
    created = services.index.ensure()
    print(f"OpenSearch {services.index.server_version()}: indices ready ({len(created)} created), templates installed")
    if settings.is_local_aws:
        from smarttags.adapters.clients import ensure_bucket_and_queue

        ensure_bucket_and_queue(settings)
        print(f"bucket {settings.aws.bucket} and queue {settings.aws.queue_name} ready")
    return 0


def _cmd_taxonomy_import(settings: Settings, args: argparse.Namespace) -> int:
    from smarttags.core import taxonomy

    path = Path(args.file)
    tags = taxonomy.parse(_read_text(args.file, "taxonomy file"), source=str(path))
    count = _services(settings).taxonomy.import_tags(tags)
    print(f"imported {count} tags from {path}")
    return 0


def _cmd_ingest(settings: Settings, args: argparse.Namespace) -> int:
    from smarttags.adapters import imaging
    from smarttags.adapters.s3 import ObjectStore
    from smarttags.core import ingest
    from smarttags.core.folders import parse_uri

    manifest = ingest.read_manifest(_read_text(args.manifest, "manifest")) if args.manifest else None
    services = _services(settings)
    bucket, prefix = parse_uri(args.uri, settings.aws.bucket)
    progress = Progress(not args.json)
    try:
        result = ingest.sync_folder(
            services.index,
            ObjectStore(services.s3, bucket),
            prefix,
            services.taxonomy.load(),
            read_facts=imaging.read_metadata,
            manifest=manifest,
            max_pixels=settings.backbone.max_pixels,
            progress=lambda n: progress("ingest", n, None),
        )
    finally:
        progress.close()
    if args.json:
        _print_json(result.to_json())
    else:
        print(
            f"{result.new} new, {result.changed} changed, {result.unchanged} unchanged, {result.removed} removed, "
            f"{len(result.failed)} unreadable"
        )
        for tag, keys in sorted(result.unknown_tags.items()):
            print(f"refused tag {tag!r} (not in the taxonomy) on {len(keys)} asset(s), e.g. {keys[0]}")
    return 0


def _cmd_train(settings: Settings, args: argparse.Namespace) -> int:
    from smarttags.adapters.s3 import ObjectStore
    from smarttags.core import ingest, report
    from smarttags.core.folders import parse_uri
    from smarttags.core.runs import ON_DEMAND

    manifest = ingest.read_manifest(_read_text(args.manifest, "manifest")) if args.manifest else None
    services = _services(settings)
    folders = [parse_uri(uri, settings.aws.bucket) for uri in args.folder]
    for bucket, prefix in folders:
        if next(ObjectStore(services.s3, bucket).list(prefix), None) is None:
            raise RequestError(f"no objects under s3://{bucket}/{prefix}: check the folder URI")
    progress = Progress(not args.json)
    try:
        result = services.trainer.train(
            folders, trigger=ON_DEMAND, manifest=manifest, activate=not args.no_activate, progress=progress
        )
    finally:
        progress.close()
    if args.xlsx:
        Path(args.xlsx).write_bytes(report.as_xlsx(result))
    if args.json:
        print(report.as_json(result))
    else:
        print(report.as_table(result))
        if args.xlsx:
            print(f"report written to {args.xlsx}")
    if not result.model_version:
        print("smarttags train: no tag had enough pictures to train; no model was made", file=sys.stderr)
        return 1
    return 0


def _cmd_report(settings: Settings, args: argparse.Namespace) -> int:
    from smarttags.core import report
    from smarttags.errors import NotFound

    services = _services(settings)
    runs = [services.runs.get(args.run)] if args.run else services.runs.list(kind="train", size=20)
    found = next((r for r in runs if r is not None and r.report), None)
    if found is None or found.report is None:
        raise NotFound("no training report yet: run `smarttags train --folder ...`")
    result = report.TrainingReport.from_json(found.report)
    if args.xlsx:
        Path(args.xlsx).write_bytes(report.as_xlsx(result))
    print(report.as_json(result) if args.json else report.as_table(result))
    return 0


def _cmd_models(settings: Settings, args: argparse.Namespace) -> int:
    models = _services(settings).models
    if args.action == "list":
        active = models.active_version()
        for manifest in models.list():
            aps = [m["average_precision"] for m in manifest.metrics.values()]
            mean_ap = sum(aps) / len(aps) if aps else 0.0
            mark = "*" if manifest.version == active else " "
            print(
                f"{mark} {manifest.version}  {len(manifest.tags):3d} tags  "
                f"mean AP {mean_ap:.3f}  {manifest.backbone_id[:40]}"
            )
        return 0
    if args.action == "show":
        version = args.version or models.active_version()
        if version is None:
            print("no active model", file=sys.stderr)
            return 1
        _print_json(models.manifest(version).to_json())
        return 0
    if args.action == "activate":
        if not args.version:
            print("activate needs a VERSION", file=sys.stderr)
            return 2
        print(f"active: {models.activate(args.version).version}")
        return 0
    print(f"active: {models.rollback().version}")
    return 0


def _cmd_predict(settings: Settings, args: argparse.Namespace) -> int:
    from smarttags.core.model_registry import score_embedding
    from smarttags.errors import ImageError

    services = _services(settings)
    model = services.models.load_active()
    embedder = services.embedder()
    out: list[dict[str, Any]] = []
    readable: list[tuple[dict[str, Any], bytes]] = []
    for name in args.images:
        entry: dict[str, Any] = {"file": name}
        out.append(entry)
        try:
            readable.append((entry, Path(name).read_bytes()))
        except OSError as exc:
            entry["error"] = f"cannot read: {exc.strerror or exc}"
    results = embedder.embed_bytes([data for _, data in readable])
    for (entry, _), result in zip(readable, results, strict=True):
        if isinstance(result, ImageError):
            entry["error"] = result.reason
            continue
        chosen, scores = score_embedding(model, result, max_tags=settings.tagging.max_tags_per_asset)
        entry["tags"] = [{"tag": t.tag, "confidence": t.confidence} for t in chosen]
        if args.all_scores:
            entry["scores"] = scores
    failed = [entry for entry in out if "error" in entry]
    if args.json:
        _print_json({"model": model.version, "predictions": out})
    else:
        for entry in out:
            if "error" in entry:
                continue
            tags = ", ".join(f"{t['tag']} ({t['confidence']:.2f})" for t in entry["tags"]) or "(no tag)"
            print(f"{entry['file']}: {tags}")
            for tag, score in sorted(entry.get("scores", {}).items(), key=lambda kv: (-kv[1], kv[0])):
                print(f"    {score:.6f}  {tag}")
    for entry in failed:
        print(f"smarttags predict: {entry['file']}: {entry['error']}", file=sys.stderr)
    return 1 if failed else 0


# --- tagging, runs, folders, worker, scheduler -----------------------------------------------------


def _cmd_tag(settings: Settings, args: argparse.Namespace) -> int:
    from smarttags.core import windows as scheduling
    from smarttags.core.runs import ON_DEMAND

    services = _services(settings)
    if args.asset:
        run = scheduling.tag_assets(services, args.asset)
        _print_json(run.to_json()) if args.json else print(f"run {run.run_id}: {dict(run.counts)}")
        return 0 if not run.errors else 1
    if not args.folder:
        print("tag needs --folder URI or --asset KEY ...", file=sys.stderr)
        return 2
    dispatch = scheduling.dispatch_tagging(services, args.folder, trigger=ON_DEMAND)
    if args.json:
        _print_json({**dispatch.run.to_json(), "reasons": dispatch.reasons})
    else:
        print(f"run {dispatch.run.run_id}: {dispatch.run.counts['selected']} assets queued {dispatch.reasons}")
    return 0


def _cmd_runs(settings: Settings, args: argparse.Namespace) -> int:
    runs = _services(settings).runs.list(kind=args.kind, size=args.size)
    if args.json:
        _print_json([{k: v for k, v in r.to_json().items() if k != "report"} for r in runs])
        return 0
    for run in runs:
        counts = " ".join(f"{k}={v}" for k, v in run.to_json()["counts"].items() if v)
        print(f"{run.started_at[:19]}  {run.kind:5} {run.trigger:9} {run.status:12} {run.folder or '-'}  {counts}")
        for error in run.errors[:3]:
            print(f"    ! {error['key']}: {error['reason']}")
    return 0


def _cmd_folders(settings: Settings, args: argparse.Namespace) -> int:
    from smarttags.core.folders import parse_uri

    registry = _services(settings).folders
    if args.action in ("enable", "disable"):
        if not args.uri:
            print(f"folders {args.action} needs a URI", file=sys.stderr)
            return 2
        bucket, prefix = parse_uri(args.uri, settings.aws.bucket)
        folder = registry.set_enabled(bucket, prefix, args.action == "enable", user="cli")
        print(f"{folder.uri}: Smart Tags {'enabled' if folder.enabled else 'disabled'}")
        return 0
    for folder in registry.all():
        print(f"{'on ' if folder.enabled else 'off'}  {folder.uri}")
    return 0


def _cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    import signal

    from smarttags.entrypoints.worker import Worker

    services = _services(settings)
    services.index.ensure()  # never let a first write auto-create an index without our mapping
    worker = Worker(
        services.tagger, services.queue, concurrency=args.concurrency or settings.tagging.worker_concurrency
    )
    signal.signal(signal.SIGTERM, lambda *_: worker.stop.set())
    try:
        worker.run()
    except KeyboardInterrupt:
        worker.stop.set()
    return 0


def _cmd_scheduler(settings: Settings, args: argparse.Namespace) -> int:
    from smarttags.entrypoints import scheduler

    return scheduler.main(settings, once=args.once)


def _cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from smarttags.devtools import demo, stack

    started: list[Any] = []

    def work() -> None:
        demo.run(settings, started, serve_admin=not args.no_serve)
        if not args.no_serve:
            _serve_demo_admin(settings)

    def clean_up() -> None:
        # Ctrl-C, SIGTERM, SIGHUP (or the end of a --no-serve run) stop what this demo started, nothing else.
        if started:
            _say("\nstopping what the demo started")
        for handle in reversed(started):
            handle.stop()

    return 130 if stack.run_until_stopped(work, clean_up) else 0


def _say(text: str) -> None:
    """Print now, even into a pipe; a terminal that went away (SIGHUP) must not stop the clean-up."""
    import contextlib

    with contextlib.suppress(OSError):
        print(text, flush=True)


def _serve_demo_admin(settings: Settings) -> None:
    """Serve the admin panel on loopback with a demo login kept in data_dir/demo (mode 0600)."""
    import secrets as secrets_mod

    import waitress

    from smarttags.core.users import UserStore
    from smarttags.entrypoints.admin import create_app

    folder = settings.data_dir / "demo"
    folder.mkdir(parents=True, exist_ok=True)

    def kept(name: str) -> str:
        path = folder / name
        if not path.is_file():
            path.write_text(secrets_mod.token_urlsafe(18))
            path.chmod(0o600)
        return path.read_text().strip()

    admin = settings.admin
    if admin.secret_key is None:
        admin = admin.model_copy(update={"secret_key": SecretStr(kept("secret_key"))})
    # Plain http on loopback: a Secure cookie would never come back.
    demo_settings = settings.model_copy(update={"admin": admin.model_copy(update={"secure_cookies": False})})
    services = _services(demo_settings)
    password = kept("password")
    users = UserStore(services.index)
    if users.get("demo") is None:
        users.create("demo", password, "admin")
    app = create_app(demo_settings, services)
    _say(f"\nAdmin panel: http://{admin.host}:{admin.port}/  (login: demo / {password})")
    _say("Ctrl-C stops the admin panel and everything the demo started.")
    waitress.serve(app, host=admin.host, port=admin.port, threads=8, ident="smarttags")


def load_adapter(relative: str, name: str) -> Any:
    """Load a top-level file of the checkout (``lambda/handler.py``) by path, as Lambda does."""
    import importlib.util

    path = Path(__file__).resolve().parents[3] / relative  # plugin/smarttags/entrypoints/cli.py -> checkout
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- search and moderation ---------------------------------------------------------------------------


def _cmd_search(settings: Settings, args: argparse.Namespace) -> int:
    from smarttags.core.search import TIER_NAMES, SearchRequest

    request = SearchRequest(text=args.text, locale=args.locale, folder=args.folder, page=args.page, size=args.size)
    result = _services(settings).searcher.search(request)
    if args.json:
        _print_json(
            {
                "total": result.total,
                "hits": [
                    {
                        "key": h.key,
                        "tier": h.tier,
                        "score": round(h.score, 4),
                        "why": h.why,
                        "matched_tags": h.matched_tags,
                        "title": h.source.get("title"),
                        "smart_tags": h.source.get("smart_tags"),
                    }
                    for h in result.hits
                ],
            }
        )
        return 0
    print(f"{result.total} result(s) for {args.text!r}")
    tier = None
    for hit in result.hits:
        if hit.tier != tier:
            tier = hit.tier
            print(f"-- tier {tier}: {TIER_NAMES[tier]}")
        print(f"  {hit.score:6.3f}  {hit.key}  [{hit.why}]")
    return 0


def _cmd_similar(settings: Settings, args: argparse.Namespace) -> int:
    hits = _services(settings).searcher.similar(args.key, folder=args.folder, size=args.size)
    if args.json:
        _print_json([{"key": h.key, "score": round(h.score, 4)} for h in hits])
    else:
        for hit in hits:
            print(f"  {hit.score:6.3f}  {hit.key}")
    return 0


def _cmd_moderate(settings: Settings, args: argparse.Namespace) -> int:
    from smarttags.core.asset import asset_id

    services = _services(settings)
    doc_id = asset_id(settings.aws.bucket, args.key)
    action = {
        "remove": services.moderation.remove,
        "promote": services.moderation.promote,
        "unpromote": services.moderation.unpromote,
    }[args.action]
    doc = action(doc_id, args.tag, user=args.user)
    print(f"{args.key}: smart tags now {', '.join(doc.get('smart_ids') or []) or '(none)'}")
    return 0


def cmd_backbone_build(settings: Settings, args: argparse.Namespace) -> int:
    from smarttags.adapters import backbone

    built = backbone.build(settings, args.name, force=args.force)
    print(f"{built.path}\nsha256 {built.sha256}")
    return 0


def cmd_embed(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from smarttags.adapters.embedder import load_embedder
    from smarttags.errors import ImageError

    paths = [Path(p) for p in args.files]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        print(f"smarttags embed: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    embedder = load_embedder(settings)
    report: list[dict[str, Any]] = []
    failed = 0
    for path, result in zip(paths, embedder.iter_embed(paths, Path.read_bytes), strict=True):
        if isinstance(result, ImageError):
            failed += 1
            report.append(
                {
                    "file": str(path),
                    "error": type(result).__name__,
                    "reason": result.reason,
                    "content_type": result.content_type,
                }
            )
        else:
            report.append(
                {
                    "file": str(path),
                    "dim": int(result.shape[0]),
                    "norm": round(float((result.astype("float64") ** 2).sum() ** 0.5), 6),
                    "first": [round(float(v), 6) for v in result[:5]],
                }
            )
    if args.json:
        _print_json({"model_id": embedder.model_id, "results": report})
    else:
        for row in report:
            detail = row.get("reason") or f"dim={row['dim']} norm={row['norm']} first={row['first']}"
            print(f"{row['file']}: {detail}")
    embedder.close()
    return 1 if failed else 0


# --- admin and validate ------------------------------------------------------------------------------


def scheduler_next_runs(settings: Settings) -> dict[str, str | None]:
    """The scheduler's next window times (the scheduler module needs APScheduler)."""
    from datetime import UTC, datetime

    from smarttags.entrypoints import scheduler

    return scheduler.next_run_times(settings, datetime.now(UTC))


def _cmd_validate(settings: Settings, args: argparse.Namespace) -> int:
    from smarttags.entrypoints import health as status

    checks = status.validate(_services(settings), next_runs=lambda: scheduler_next_runs(settings))
    print(status.as_text(checks))
    return 0 if all(c.ok for c in checks) else 1


def _cmd_admin(settings: Settings, args: argparse.Namespace) -> int:
    if args.action == "create-user":
        return _cmd_admin_create_user(settings, args)
    from smarttags.entrypoints.admin import create_app

    host = args.host or settings.admin.host
    port = args.port or settings.admin.port
    app = create_app(settings, debug=args.debug)
    if args.debug:
        app.run(host=host, port=port, debug=True, use_reloader=False)
        return 0
    import waitress

    print(f"SmartTags admin on http://{host}:{port}/")
    waitress.serve(app, host=host, port=port, threads=8, ident="smarttags")
    return 0


def _cmd_admin_create_user(settings: Settings, args: argparse.Namespace) -> int:
    import getpass

    from smarttags.core.users import UserStore

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"Password for {args.name}: ")
        if getpass.getpass("Repeat it: ") != password:
            print("smarttags: the passwords differ", file=sys.stderr)
            return 2
    user = UserStore(_services(settings).index).create(args.name, password, args.role)
    print(f"created user {user.username} with role {user.role}")
    return 0


def _add_admin_commands(sub: Any) -> None:
    p = sub.add_parser("validate", help="check the configuration and services (exit 1 if any check fails)")
    p.set_defaults(handler=_cmd_validate)

    admin = sub.add_parser("admin", help="serve the admin panel (waitress), or manage its users")
    admin.add_argument("--host", help="default: admin.host")
    admin.add_argument("--port", type=int, help="default: admin.port")
    admin.add_argument("--debug", action="store_true", help="Flask's development server (no secret key needed)")
    admin.set_defaults(handler=_cmd_admin, action=None)
    actions = admin.add_subparsers(dest="action", metavar="ACTION")
    p = actions.add_parser("create-user", help="create an admin-panel user (password from a prompt or stdin)")
    p.add_argument("name")
    p.add_argument("--role", choices=["admin", "moderator", "viewer"], required=True)
    p.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")


def _add_backbone_commands(sub: Any) -> None:
    bb = sub.add_parser("backbone", help="the image encoder (ONNX)")
    bb_sub = bb.add_subparsers(dest="backbone_command", required=True, metavar="ACTION")
    build = bb_sub.add_parser("build", help="build the preset backbone's ONNX file from its pinned weights")
    build.add_argument("--name", choices=["efficientnet-lite0", "efficientnet-lite2"], default=None)
    build.add_argument("--force", action="store_true", help="rebuild even if a verified file is cached")
    build.set_defaults(handler=cmd_backbone_build)
    embed = sub.add_parser("embed", help="embed image files and print what came out (for inspection)")
    embed.add_argument("files", nargs="+", metavar="FILE")
    embed.add_argument("--json", action="store_true", help="print JSON")
    embed.set_defaults(handler=cmd_embed)


# --- dashboards -----------------------------------------------------------------------------------


def _cmd_dashboards_export(settings: Settings, args: argparse.Namespace) -> int:
    from smarttags.core import dashboards

    text = dashboards.render(settings.opensearch.index_prefix)
    if args.out in (None, "-"):
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote {text.count(chr(10))} saved objects to {args.out}", file=sys.stderr)
    return 0


def _add_dashboards_commands(sub: Any) -> None:
    dash = sub.add_parser("dashboards", help="OpenSearch Dashboards saved objects")
    dash_sub = dash.add_subparsers(dest="dashboards_command", required=True, metavar="ACTION")
    p = dash_sub.add_parser("export", help="the index patterns, visualizations and dashboard as ndjson to import")
    p.add_argument("--out", help="file to write (default: standard output)")
    p.set_defaults(handler=_cmd_dashboards_export)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smarttags", description=__doc__)
    parser.add_argument("--config", help="TOML settings file (default: $SMARTTAGS_CONFIG)")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("init", help="create the indices and stored templates (and the local bucket/queue)")
    p.set_defaults(handler=_cmd_init)

    taxonomy = sub.add_parser("taxonomy", help="the business taxonomy").add_subparsers(dest="action", required=True)
    p = taxonomy.add_parser("import", help="import tags from a JSON or YAML file")
    p.add_argument("file")
    p.set_defaults(handler=_cmd_taxonomy_import)

    p = sub.add_parser("ingest", help="register a folder's images as assets with their own tags")
    p.add_argument("uri", help="s3://bucket/prefix/")
    p.add_argument("--manifest", help="CSV with columns key,tags (tags separated by ';')")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_cmd_ingest)

    p = sub.add_parser("train", help="train on folders' tagged assets now")
    p.add_argument("--folder", action="append", required=True, help="s3://bucket/prefix/ (repeatable)")
    p.add_argument("--manifest", help="CSV key,tags applied while syncing the folder")
    p.add_argument("--json", action="store_true")
    p.add_argument("--xlsx", help="also write the report as an Excel file")
    p.add_argument("--no-activate", action="store_true", help="keep the current model active")
    p.set_defaults(handler=_cmd_train)

    p = sub.add_parser("report", help="show the latest (or a given) training report")
    p.add_argument("--run")
    p.add_argument("--json", action="store_true")
    p.add_argument("--xlsx")
    p.set_defaults(handler=_cmd_report)

    p = sub.add_parser("models", help="model versions")
    p.add_argument("action", choices=["list", "show", "activate", "rollback"])
    p.add_argument("version", nargs="?")
    p.set_defaults(handler=_cmd_models)

    p = sub.add_parser("predict", help="dry run: the active model's tags for local image files")
    p.add_argument("images", nargs="+")
    p.add_argument("--json", action="store_true")
    p.add_argument("--all-scores", action="store_true")
    p.set_defaults(handler=_cmd_predict)

    p = sub.add_parser("tag", help="tag a folder (through the queue) or up to 15 assets (now)")
    p.add_argument("--folder")
    p.add_argument("--asset", nargs="+", help="object keys (or s3:// URIs)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_cmd_tag)

    p = sub.add_parser("runs", help="training and tagging run history")
    p.add_argument("--kind", choices=["train", "tag"])
    p.add_argument("--size", type=int, default=20)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_cmd_runs)

    p = sub.add_parser("folders", help="folders and their Enable Smart Tags flag")
    p.add_argument("action", choices=["list", "enable", "disable"])
    p.add_argument("uri", nargs="?")
    p.set_defaults(handler=_cmd_folders)

    p = sub.add_parser("worker", help="tag uploads from the local queue (the Lambda handler, locally)")
    p.add_argument("--concurrency", type=int)
    p.set_defaults(handler=_cmd_worker)

    p = sub.add_parser("scheduler", help="run the weekly training and daily tagging windows")
    p.add_argument("--once", action="store_true", help="catch up on a missed window, then exit")
    p.set_defaults(handler=_cmd_scheduler)

    p = sub.add_parser("search", help="omnisearch through the stored template")
    p.add_argument("text")
    p.add_argument("--locale", default="en")
    p.add_argument("--folder")
    p.add_argument("--page", type=int, default=0)
    p.add_argument("--size", type=int, default=20)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_cmd_search)

    p = sub.add_parser("similar", help="assets that look like the given one")
    p.add_argument("key")
    p.add_argument("--folder")
    p.add_argument("--size", type=int, default=10)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_cmd_similar)

    p = sub.add_parser("moderate", help="remove, promote or unpromote a smart tag on an asset")
    p.add_argument("action", choices=["remove", "promote", "unpromote"])
    p.add_argument("key")
    p.add_argument("tag")
    p.add_argument("--user", default="cli")
    p.set_defaults(handler=_cmd_moderate)

    p = sub.add_parser("demo", help="the whole product on the embedded stack with public-domain sample art")
    p.add_argument("--no-serve", action="store_true", help="stop after the searches instead of serving the admin panel")
    p.set_defaults(handler=_cmd_demo)

    _add_backbone_commands(sub)
    _add_stack_commands(sub)
    _add_dashboards_commands(sub)
    _add_admin_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # opensearch-py logs every request (and every 404 we expect) itself; our own errors say enough.
        logging.getLogger("opensearch").setLevel(logging.ERROR)
    try:
        settings: Settings = settings_mod.load(args.config)
        return int(args.handler(settings, args))
    except SmartTagsError as exc:
        print(f"smarttags: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
