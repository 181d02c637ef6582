"""``smarttags ingest``, ``train`` and ``report``: a folder's own tags in, a model and its report out."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from smarttags.entrypoints.cli.common import print_json, read_text, services
from smarttags.entrypoints.progress import Progress
from smarttags.errors import RequestError
from smarttags.settings import Settings


def _ingest(settings: Settings, args: argparse.Namespace) -> int:
    from smarttags.adapters import imaging
    from smarttags.core import ingest
    from smarttags.core.folders import Folder

    manifest = ingest.read_manifest(read_text(args.manifest, "manifest")) if args.manifest else None
    built = services(settings)
    folder = Folder.parse(args.uri, settings.aws.bucket)
    progress = Progress(not args.json)
    try:
        result = ingest.sync_folder(
            built.assets,
            built.store_for(folder.bucket),
            folder,
            built.taxonomy.load(),
            read_facts=imaging.read_metadata,
            manifest=manifest,
            max_pixels=settings.backbone.max_pixels,
            progress=lambda n: progress("ingest", n, None),
        )
    finally:
        progress.close()
    if args.json:
        print_json(result.to_json())
    else:
        print(
            f"{result.new} new, {result.changed} changed, {result.unchanged} unchanged, {result.removed} removed, "
            f"{len(result.failed)} unreadable"
        )
        for tag, keys in sorted(result.unknown_tags.items()):
            print(f"refused tag {tag!r} (not in the taxonomy) on {len(keys)} asset(s), e.g. {keys[0]}")
        for problem in result.messages():
            print(problem)
    return 0


def _train(settings: Settings, args: argparse.Namespace) -> int:
    from smarttags.core import ingest, report
    from smarttags.core.folders import Folder
    from smarttags.core.runs import ON_DEMAND

    manifest = ingest.read_manifest(read_text(args.manifest, "manifest")) if args.manifest else None
    built = services(settings)
    folders = [Folder.parse(uri, settings.aws.bucket) for uri in args.folder]
    for folder in folders:
        if next(built.store_for(folder.bucket).list(folder.prefix), None) is None:
            raise RequestError(f"no objects under {folder.uri}: check the folder URI")
    progress = Progress(not args.json)
    try:
        result = built.trainer.train(
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


def _report(settings: Settings, args: argparse.Namespace) -> int:
    from smarttags.core import report
    from smarttags.errors import NotFound

    runs = services(settings).runs
    found = runs.get(args.run) if args.run else next((r for r in runs.list(kind="train", size=20) if r.report), None)
    if found is None or found.report is None:
        raise NotFound("no training report yet: run `smarttags train --folder ...`")
    result = report.TrainingReport.from_json(found.report)
    if args.xlsx:
        Path(args.xlsx).write_bytes(report.as_xlsx(result))
    print(report.as_json(result) if args.json else report.as_table(result))
    return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser("ingest", help="register a folder's images as assets with their own tags")
    p.add_argument("uri", help="s3://bucket/prefix/")
    p.add_argument("--manifest", help="CSV with columns key,tags (tags separated by ';')")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_ingest)

    p = sub.add_parser("train", help="train on folders' tagged assets now")
    p.add_argument("--folder", action="append", required=True, help="s3://bucket/prefix/ (repeatable)")
    p.add_argument("--manifest", help="CSV key,tags applied while syncing the folder")
    p.add_argument("--json", action="store_true")
    p.add_argument("--xlsx", help="also write the report as an Excel file")
    p.add_argument("--no-activate", action="store_true", help="keep the current model active")
    p.set_defaults(handler=_train)

    p = sub.add_parser("report", help="show the latest (or a given) training report")
    p.add_argument("--run")
    p.add_argument("--json", action="store_true")
    p.add_argument("--xlsx")
    p.set_defaults(handler=_report)
