"""``smarttags demo``: the whole product on the embedded stack with public-domain sample art."""

from __future__ import annotations

import argparse
from typing import Any

from smarttags.entrypoints.cli.common import say
from smarttags.settings import Settings


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from smarttags.devtools import demo, stack

    started: list[Any] = []

    def work() -> None:
        demo.run(settings, started, serve_admin=not args.no_serve)
        if not args.no_serve:
            demo.serve_admin(settings, out=say)

    def clean_up() -> None:
        # Ctrl-C, SIGTERM, SIGHUP (or the end of a --no-serve run) stop what this demo started, nothing else.
        if started:
            say("\nstopping what the demo started")
        for handle in reversed(started):
            handle.stop()

    return 130 if stack.run_until_stopped(work, clean_up) else 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser("demo", help="the whole product on the embedded stack with public-domain sample art")
    p.add_argument("--no-serve", action="store_true", help="stop after the searches instead of serving the admin panel")
    p.set_defaults(handler=_demo)
