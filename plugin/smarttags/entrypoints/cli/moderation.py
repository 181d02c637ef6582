"""``smarttags moderate remove|promote|unpromote``: a moderator's word on one asset's smart tag."""

from __future__ import annotations

import argparse
from typing import Any

from smarttags.entrypoints.cli.common import services
from smarttags.settings import Settings


def _moderate(settings: Settings, args: argparse.Namespace) -> int:
    from smarttags.core.asset import asset_id

    moderation = services(settings).moderation
    action = {"remove": moderation.remove, "promote": moderation.promote, "unpromote": moderation.unpromote}
    asset = action[args.action](asset_id(settings.aws.bucket, args.key), args.tag, user=args.user)
    print(f"{args.key}: smart tags now {', '.join(asset.smart_ids) or '(none)'}")
    return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser("moderate", help="remove, promote or unpromote a smart tag on an asset")
    p.add_argument("action", choices=["remove", "promote", "unpromote"])
    p.add_argument("key")
    p.add_argument("tag")
    p.add_argument("--user", default="cli")
    p.set_defaults(handler=_moderate)
