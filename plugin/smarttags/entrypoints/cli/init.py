"""``smarttags init``, ``smarttags index refresh-fields`` and ``smarttags taxonomy import``: a deployment's
indices, templates and taxonomy."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from smarttags.entrypoints.cli.common import read_text, services
from smarttags.settings import Settings


def _init(settings: Settings, args: argparse.Namespace) -> int:
    index = services(settings).index
    created = index.ensure()
    print(f"OpenSearch {index.server_version()}: indices ready ({len(created)} created), templates installed")
    if settings.is_local_aws:
        from smarttags.adapters.clients import ensure_bucket_and_queue

        ensure_bucket_and_queue(settings)
        print(f"bucket {settings.aws.bucket} and queue {settings.aws.queue_name} ready")
    return 0


def checkpoint_file(settings: Settings) -> Path:
    """Where an interrupted ``index refresh-fields`` left off, per deployment (index prefix)."""
    return Path(settings.data_dir) / "refresh-fields" / f"{settings.opensearch.index_prefix}.json"


def _refresh_fields(settings: Settings, args: argparse.Namespace) -> int:
    import json

    from smarttags.core.refresh_fields import refresh_fields
    from smarttags.entrypoints.progress import Progress

    built = services(settings)
    built.index.ensure()  # the new fields' mapping first
    saved = checkpoint_file(settings)
    after = None
    if saved.exists() and not args.restart:
        after = json.loads(saved.read_text(encoding="utf-8"))["after"]
        print(f"resuming after asset {after} (--restart to start over)")
    saved.parent.mkdir(parents=True, exist_ok=True)

    def save(asset_id: str) -> None:
        saved.write_text(json.dumps({"after": asset_id}), encoding="utf-8")

    progress = Progress(not args.quiet, unit="asset")
    try:
        result = refresh_fields(
            built.assets, built.models, after=after, batch_size=args.batch_size, progress=progress, checkpoint=save
        )
    finally:
        progress.close()
    saved.unlink(missing_ok=True)  # done: the next run starts from the beginning
    print(
        f"{result.written} assets rewritten ({result.retried} redone after a concurrent write, {result.gone} gone);"
        f" {result.thresholds} smart tags given their model's threshold"
    )
    return 0


def _taxonomy_import(settings: Settings, args: argparse.Namespace) -> int:
    from smarttags.core import taxonomy

    path = Path(args.file)
    text = read_text(args.file, "taxonomy file")
    store = services(settings).taxonomy
    # Checked whole against the tags imported before (a parent may be one of them); a problem refuses all.
    checked = taxonomy.read(text, source=str(path), known=store.load().tags)
    for note in checked.notes:
        print(note)
    count = store.import_tags(checked.tags)
    print(f"imported {count} tags from {path}")
    return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser("init", help="create the indices and stored templates (and the local bucket/queue)")
    p.set_defaults(handler=_init)

    index = sub.add_parser("index", help="the assets index").add_subparsers(dest="action", required=True)
    p = index.add_parser(
        "refresh-fields",
        help="recompute every asset document's derived fields in place (after an upgrade); resumable",
    )
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--restart", action="store_true", help="ignore where an interrupted run left off")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_refresh_fields)

    taxonomy = sub.add_parser("taxonomy", help="the business taxonomy").add_subparsers(dest="action", required=True)
    p = taxonomy.add_parser("import", help="import tags from a JSON or YAML file")
    p.add_argument("file")
    p.set_defaults(handler=_taxonomy_import)
