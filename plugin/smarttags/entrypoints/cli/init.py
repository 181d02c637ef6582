"""``smarttags init`` and ``smarttags taxonomy import``: a deployment's indices, templates and taxonomy."""

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

    taxonomy = sub.add_parser("taxonomy", help="the business taxonomy").add_subparsers(dest="action", required=True)
    p = taxonomy.add_parser("import", help="import tags from a JSON or YAML file")
    p.add_argument("file")
    p.set_defaults(handler=_taxonomy_import)
