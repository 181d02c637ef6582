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


# --- backbone and embeddings ----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smarttags", description=__doc__)
    parser.add_argument("--config", help="TOML settings file (default: $SMARTTAGS_CONFIG)")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    del sub  # subcommands are added below, one block per area
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
