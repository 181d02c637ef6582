"""The ``smarttags`` command. Each subcommand parses its arguments, calls one library function, prints."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from smarttags import settings as settings_mod
from smarttags.errors import SmartTagsError
from smarttags.settings import Settings


def _print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, ensure_ascii=False, default=str)
    sys.stdout.write("\n")


# --- stack ------------------------------------------------------------------------------------------


def _stack_build(settings: Settings, args: argparse.Namespace) -> int:
    from smarttags import stack

    built = stack.build_launcher(force=args.force)
    print("launcher built" if built else "launcher up to date")
    return 0


def _stack_up(settings: Settings, args: argparse.Namespace) -> int:
    from smarttags import stack

    result = stack.stack_up(settings, heap_max=args.heap)
    for handle in result.handles:
        verb = "already running" if handle.reused else "started"
        print(f"{handle.name}: {verb}, pid {handle.pid}, {handle.url}")
    wiring = result.wiring
    print(f"bucket {wiring.bucket} -> queue {wiring.queue_url} (DLQ {wiring.dead_letter_queue_url})")
    return 0


def _stack_status(settings: Settings, args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from smarttags import stack

    rows = stack.stack_status(settings)
    if args.json:
        _print_json([asdict(row) for row in rows])
    else:
        for row in rows:
            owner = (
                f"pid {row.pid}" if row.pid is not None else ("not running" if row.managed else "external")
            )
            print(f"{row.name:<11} {row.state:<5} {owner:<12} {row.url}  {row.detail}")
    return 0 if all(row.state == "up" for row in rows) else 1


def _stack_down(settings: Settings, args: argparse.Namespace) -> int:
    from smarttags import stack

    stopped = stack.stack_down(settings)
    print("stopped: " + ", ".join(stopped) if stopped else "nothing was running")
    return 0


def _add_stack_commands(sub: Any) -> None:
    stack_parser = sub.add_parser(
        "stack", help="the embedded OpenSearch node and moto (S3+SQS) for dev and tests"
    )
    stack_sub = stack_parser.add_subparsers(dest="stack_command", required=True, metavar="ACTION")
    build = stack_sub.add_parser("build", help="build the OpenSearch launcher (skipped when up to date)")
    build.add_argument("--force", action="store_true", help="rebuild even if up to date")
    build.set_defaults(handler=_stack_build)
    up = stack_sub.add_parser("up", help="start local services, wire bucket -> queue (harmless if running)")
    up.add_argument("--heap", default="1g", help="OpenSearch max heap, e.g. 1g or 768m (default 1g)")
    up.set_defaults(handler=_stack_up)
    status = stack_sub.add_parser("status", help="each service with pid, URL, version and health")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=_stack_status)
    down = stack_sub.add_parser("down", help="stop what `stack up` started")
    down.set_defaults(handler=_stack_down)


# --- backbone and embeddings ----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smarttags", description=__doc__)
    parser.add_argument("--config", help="TOML settings file (default: $SMARTTAGS_CONFIG)")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_stack_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
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
