"""``smarttags search`` and ``similar``: the three-tier omnisearch and look-alike assets."""

from __future__ import annotations

import argparse
from typing import Any

from smarttags.entrypoints.cli.common import print_json, services
from smarttags.settings import Settings


def _search(settings: Settings, args: argparse.Namespace) -> int:
    from smarttags.core.search import TIER_NAMES, SearchRequest

    text = " ".join(args.text)
    request = SearchRequest(text=text, locale=args.locale, folder=args.folder, page=args.page, size=args.size)
    result = services(settings).searcher.search(request)
    if args.json:
        print_json(
            {
                "total": result.total,
                "total_exact": result.total_exact,
                "hits": [
                    {
                        "key": h.key,
                        "tier": h.tier,
                        "score": round(h.relevance, 4),
                        "why": h.why,
                        "matched_tags": h.matched_tags,
                        "title": h.asset.title,
                        "smart_tags": [
                            {
                                "tag": t.tag,
                                "confidence": t.confidence,
                                "model_version": t.model_version,
                                "promoted": h.asset.is_promoted(t.tag),
                            }
                            for t in h.asset.smart_tags
                        ],
                    }
                    for h in result.hits
                ],
            }
        )
        return 0
    print(f"{result.total}{'' if result.total_exact else '+'} result(s) for {text!r}")
    tier = None
    for hit in result.hits:
        if hit.tier != tier:
            tier = hit.tier
            print(f"-- tier {tier}: {TIER_NAMES[tier]}")
        print(f"  {hit.relevance:6.3f}  {hit.key}  [{hit.why}]")
    return 0


def _similar(settings: Settings, args: argparse.Namespace) -> int:
    hits = services(settings).searcher.similar(args.key, folder=args.folder, size=args.size)
    if args.json:
        print_json([{"key": h.key, "score": round(h.score, 4)} for h in hits])
    else:
        for hit in hits:
            print(f"  {hit.score:6.3f}  {hit.key}")
    return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser("search", help="omnisearch through the stored template")
    # Free text: words that look like options ("-woman") are query words too (see cli.main).
    p.add_argument("text", nargs="*", metavar="WORD")
    p.add_argument("--locale", default="en")
    p.add_argument("--folder")
    p.add_argument("--page", type=int, default=0)
    p.add_argument("--size", type=int, default=20)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_search, free_text="text")

    p = sub.add_parser("similar", help="assets that look like the given one")
    p.add_argument("key")
    p.add_argument("--folder")
    p.add_argument("--size", type=int, default=10)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_similar)
