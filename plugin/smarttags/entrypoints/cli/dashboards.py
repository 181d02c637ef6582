"""``smarttags dashboards export``: the OpenSearch Dashboards saved objects for this index prefix."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from smarttags.settings import Settings


def _export(settings: Settings, args: argparse.Namespace) -> int:
    from smarttags.core import dashboards

    text = dashboards.render(settings.opensearch.index_prefix)
    if args.out in (None, "-"):
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote {text.count(chr(10))} saved objects to {args.out}", file=sys.stderr)
    return 0


def add_commands(sub: Any) -> None:
    dash = sub.add_parser("dashboards", help="OpenSearch Dashboards saved objects")
    dash_sub = dash.add_subparsers(dest="dashboards_command", required=True, metavar="ACTION")
    p = dash_sub.add_parser("export", help="the index patterns, visualizations and dashboard as ndjson to import")
    p.add_argument("--out", help="file to write (default: standard output)")
    p.set_defaults(handler=_export)
