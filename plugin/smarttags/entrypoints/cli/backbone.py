"""``smarttags backbone build`` and ``embed``: the image encoder (ONNX) and what it makes of files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from smarttags.entrypoints.cli.common import print_json
from smarttags.settings import Settings


def _build(settings: Settings, args: argparse.Namespace) -> int:
    from smarttags.adapters import backbone

    built = backbone.build(settings, args.name, force=args.force)
    print(f"{built.path}\nsha256 {built.sha256}")
    return 0


def _embed(settings: Settings, args: argparse.Namespace) -> int:
    from smarttags.adapters.embedder import load_embedder
    from smarttags.errors import ImageError

    paths = [Path(p) for p in args.files]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        print(f"smarttags embed: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    embedder = load_embedder(settings)
    report: list[dict[str, Any]] = []
    failed = 0
    for path, result in zip(paths, embedder.iter_embed(paths, Path.read_bytes), strict=True):
        if isinstance(result, ImageError):
            failed += 1
            report.append(
                {
                    "file": str(path),
                    "error": type(result).__name__,
                    "reason": result.reason,
                    "content_type": result.content_type,
                }
            )
        else:
            report.append(
                {
                    "file": str(path),
                    "dim": int(result.shape[0]),
                    "norm": round(float((result.astype("float64") ** 2).sum() ** 0.5), 6),
                    "first": [round(float(v), 6) for v in result[:5]],
                }
            )
    if args.json:
        print_json({"backbone_id": embedder.backbone_id, "results": report})
    else:
        for row in report:
            detail = row.get("reason") or f"dim={row['dim']} norm={row['norm']} first={row['first']}"
            print(f"{row['file']}: {detail}")
    embedder.close()
    return 1 if failed else 0


def add_commands(sub: Any) -> None:
    bb = sub.add_parser("backbone", help="the image encoder (ONNX)")
    bb_sub = bb.add_subparsers(dest="backbone_command", required=True, metavar="ACTION")
    build = bb_sub.add_parser("build", help="build the preset backbone's ONNX file from its pinned weights")
    # The presets of adapters/backbone.py (not imported here: --help stays fast); default: the settings'.
    names = ["efficientnet-lite0+lite2", "efficientnet-lite0", "efficientnet-lite2"]
    build.add_argument("--name", choices=names, default=None)
    build.add_argument("--force", action="store_true", help="rebuild even if a verified file is cached")
    build.set_defaults(handler=_build)
    embed = sub.add_parser("embed", help="embed image files and print what came out (for inspection)")
    embed.add_argument("files", nargs="+", metavar="FILE")
    embed.add_argument("--json", action="store_true", help="print JSON")
    embed.set_defaults(handler=_embed)
