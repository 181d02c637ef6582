"""The ``smarttags`` command. Each subcommand parses its arguments, calls one library function, prints.

One module per command group; each adds its subcommands with ``add_commands`` and keeps its imports
inside the handlers, so ``smarttags --help`` loads neither Flask nor APScheduler nor the dev tools.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from collections.abc import Sequence

from smarttags import settings as settings_mod
from smarttags.entrypoints.cli import (
    admin,
    backbone,
    dashboards,
    demo,
    init,
    models,
    moderation,
    search,
    stack,
    tagging,
    training,
    workers,
)
from smarttags.errors import SmartTagsError
from smarttags.settings import Settings

# In the order ``smarttags --help`` lists them.
GROUPS = (init, training, models, tagging, workers, search, moderation, demo, backbone, stack, dashboards, admin)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smarttags", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="TOML settings file (default: $SMARTTAGS_CONFIG)")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.add_commands(sub)
    return parser


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line; a command taking free text (``set_defaults(free_text=FIELD)``, FIELD a
    ``nargs="*"`` positional) also takes words argparse would read as unknown options ("smarttags
    search -woman"), in their place, and needs at least one word."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args, unknown = parser.parse_known_args(argv)
    field: str | None = getattr(args, "free_text", None)
    if unknown and field is None:
        parser.error("unrecognized arguments: " + " ".join(unknown))
    if unknown and field is not None and "--" not in argv:
        # Every argument that is no option of the command, nor an option's value, goes after "--".
        command = argv.index(args.command)
        words = Counter([*getattr(args, field), *unknown])
        head, tail = argv[: command + 1], []
        for arg in argv[command + 1 :]:
            if words[arg] > 0:
                words[arg] -= 1
                tail.append(arg)
            else:
                head.append(arg)
        args = parser.parse_args([*head, "--", *tail])
    if field is not None and not getattr(args, field):
        parser.error(f'{args.command}: give at least one word (an empty string "" for everything)')
    return args


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse(parser, argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # opensearch-py logs every request (and every 404 we expect) itself; our own errors say enough.
        logging.getLogger("opensearch").setLevel(logging.ERROR)
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
