"""``smarttags tag``, ``runs`` and ``folders``: tagging now or through the queue, its history, the folder flags."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from smarttags.entrypoints.cli.common import print_json, say, services
from smarttags.settings import Settings


def _tag(settings: Settings, args: argparse.Namespace) -> int:
    from smarttags.core.folders import Folder
    from smarttags.core.runs import ON_DEMAND

    built = services(settings)
    if args.asset:
        run = built.tag_now(args.asset, user="cli")
        if args.json:
            print_json(run.to_json())
        else:
            print(f"run {run.run_id}: {dict(run.counts)}")
            for note in [*run.errors, *run.skips]:
                print(f"  {note['key']}: {note['reason']}")
        return 0 if not run.errors else 1
    if not args.folder:
        print("tag needs --folder URI or --asset KEY ...", file=sys.stderr)
        return 2
    from smarttags.entrypoints.progress import Progress

    progress = Progress(enabled=not args.json)
    try:
        dispatch = built.dispatch_tagging(
            Folder.parse(args.folder, settings.aws.bucket), trigger=ON_DEMAND, resume=args.resume, progress=progress
        )
        if not args.json:
            say(f"run {dispatch.run.run_id}: {dispatch.run.counts['selected']} assets queued {dispatch.reasons}")
        run = built.runs.follow(dispatch.run.run_id, progress=progress) if args.wait else dispatch.run
    finally:
        progress.close()
    if args.json:
        print_json({**run.to_json(), "reasons": dispatch.reasons})
    elif args.wait:
        counts = " ".join(f"{k}={v}" for k, v in run.to_json()["counts"].items() if v)
        print(f"run {run.run_id}: {run.status} {counts}")
        for note in run.errors[:10]:
            print(f"  {note['key']}: {note['reason']}")
    return 0 if not args.wait or run.status == "succeeded" else 1


def _runs(settings: Settings, args: argparse.Namespace) -> int:
    runs = services(settings).runs.list(kind=args.kind, size=args.size)
    if args.json:
        print_json([{k: v for k, v in r.to_json().items() if k != "report"} for r in runs])
        return 0
    for run in runs:
        counts = " ".join(f"{k}={v}" for k, v in run.to_json()["counts"].items() if v)
        print(f"{run.started_at[:19]}  {run.kind:5} {run.trigger:9} {run.status:12} {run.folder or '-'}  {counts}")
        for error in run.errors[:3]:
            print(f"    ! {error['key']}: {error['reason']}")
    return 0


def _folders(settings: Settings, args: argparse.Namespace) -> int:
    from smarttags.core.folders import Folder

    registry = services(settings).folders
    if args.action in ("enable", "disable"):
        if not args.uri:
            print(f"folders {args.action} needs a URI", file=sys.stderr)
            return 2
        folder = registry.set_enabled(Folder.parse(args.uri, settings.aws.bucket), args.action == "enable", user="cli")
        print(f"{folder.uri}: Smart Tags {'enabled' if folder.enabled else 'disabled'}")
        return 0
    for folder in registry.all():
        print(f"{'on ' if folder.enabled else 'off'}  {folder.uri}")
    return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser("tag", help="tag a folder (through the queue) or up to 15 assets (now)")
    p.add_argument("--folder")
    p.add_argument("--asset", nargs="+", help="object keys (or s3:// URIs)")
    p.add_argument("--wait", action="store_true", help="follow the run until its last item is counted")
    p.add_argument("--resume", metavar="RUN_ID", help="go on with a run whose dispatch stopped (with --folder)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_tag)

    p = sub.add_parser("runs", help="training and tagging run history")
    p.add_argument("--kind", choices=["train", "tag"])
    p.add_argument("--size", type=int, default=20)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_runs)

    p = sub.add_parser("folders", help="folders and their Enable Smart Tags flag")
    p.add_argument("action", choices=["list", "enable", "disable"])
    p.add_argument("uri", nargs="?")
    p.set_defaults(handler=_folders)
