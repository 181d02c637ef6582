"""``smarttags demo``: the whole product on the embedded stack with public-domain sample art."""

from __future__ import annotations

import argparse
from typing import Any

from smarttags.settings import Settings


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from smarttags.devtools import demo

    result: Any = None
    try:
        result = demo.run(settings)
        if not args.no_serve:
            demo.serve_admin(settings)
    except KeyboardInterrupt:
        print("\nstopping")
    finally:
        # Ctrl-C (or the end of a --no-serve run) stops what this demo started, nothing else.
        for handle in reversed(result.started if result else []):
            handle.stop()
    return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser("demo", help="the whole product on the embedded stack with public-domain sample art")
    p.add_argument("--no-serve", action="store_true", help="stop after the searches instead of serving the admin panel")
    p.set_defaults(handler=_demo)
