"""``smarttags stack build|up|status|down``: the embedded OpenSearch node, moto (S3 + SQS) and the worker."""

from __future__ import annotations

import argparse
from typing import Any

from smarttags.entrypoints.cli.common import print_json, say
from smarttags.settings import Settings


def _build(settings: Settings, args: argparse.Namespace) -> int:
    from smarttags.devtools import stack

    built = stack.build_launcher(force=args.force)
    print("launcher built" if built else "launcher up to date")
    return 0


def _up(settings: Settings, args: argparse.Namespace) -> int:
    import time

    from smarttags.devtools import stack

    ours: list[Any] = []
    died: list[bool] = []

    def up() -> None:
        result = stack.stack_up(settings, heap_max=args.heap)
        ours.extend(h for h in result.handles if not h.reused)
        for handle in result.handles:
            verb = "already running" if handle.reused else "started"
            say(f"{handle.name}: {verb}, pid {handle.pid}, {handle.url}")
        wiring = result.wiring
        say(f"bucket {wiring.bucket} -> queue {wiring.queue_url} (DLQ {wiring.dead_letter_queue_url})")
        if args.foreground:
            say("running in the foreground: SIGTERM, SIGINT or SIGHUP stops what this started")
            while not ours or all(handle.alive() for handle in ours):
                time.sleep(1)
            # One died (a crash, or `stack down` elsewhere): stop the rest and fail, so a supervisor sees it.
            died.append(True)
            say("a service this started is gone: " + ", ".join(h.name for h in ours if not h.alive()))

    def clean_up() -> None:
        if args.foreground:
            say("stopping what stack up started")
            for handle in reversed(ours):
                handle.stop()

    # A signal while starting stops what was started (stack_up does); with --foreground, also later.
    return 130 if stack.run_until_stopped(up, clean_up) else 1 if died else 0


def _status(settings: Settings, args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from smarttags.devtools import stack

    rows = stack.stack_status(settings)
    if args.json:
        print_json([asdict(row) for row in rows])
    else:
        for row in rows:
            owner = f"pid {row.pid}" if row.pid is not None else ("not running" if row.managed else "external")
            print(f"{row.name:<11} {row.state:<5} {owner:<12} {row.url}  {row.detail}")
    return 0 if all(row.state == "up" for row in rows) else 1


def _down(settings: Settings, args: argparse.Namespace) -> int:
    from smarttags.devtools import stack

    stopped = stack.stack_down(settings)
    print("stopped: " + ", ".join(stopped) if stopped else "nothing was running")
    return 0


def add_commands(sub: Any) -> None:
    stack_parser = sub.add_parser("stack", help="the embedded OpenSearch node and moto (S3+SQS) for dev and tests")
    stack_sub = stack_parser.add_subparsers(dest="stack_command", required=True, metavar="ACTION")
    build = stack_sub.add_parser("build", help="build the OpenSearch launcher (skipped when up to date)")
    build.add_argument("--force", action="store_true", help="rebuild even if up to date")
    build.set_defaults(handler=_build)
    up = stack_sub.add_parser("up", help="start local services, wire bucket -> queue (harmless if running)")
    up.add_argument("--heap", default="1g", help="OpenSearch max heap, e.g. 1g or 768m (default 1g)")
    up.add_argument("--foreground", action="store_true", help="stay until a signal, then stop what it started")
    up.set_defaults(handler=_up)
    status = stack_sub.add_parser("status", help="each service with pid, URL, version and health")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=_status)
    down = stack_sub.add_parser("down", help="stop what `stack up` started")
    down.set_defaults(handler=_down)
