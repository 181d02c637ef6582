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


def cmd_backbone_build(settings: Settings, args: argparse.Namespace) -> int:
    from smarttags import backbone

    built = backbone.build(settings, args.name, force=args.force)
    print(f"{built.path}\nsha256 {built.sha256}")
    return 0


def cmd_embed(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from smarttags.embedder import load_embedder
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
        _print_json({"model_id": embedder.model_id, "results": report})
    else:
        for row in report:
            detail = row.get("reason") or f"dim={row['dim']} norm={row['norm']} first={row['first']}"
            print(f"{row['file']}: {detail}")
    embedder.close()
    return 1 if failed else 0


def _add_backbone_commands(sub: Any) -> None:
    bb = sub.add_parser("backbone", help="the image encoder (ONNX)")
    bb_sub = bb.add_subparsers(dest="backbone_command", required=True, metavar="ACTION")
    build = bb_sub.add_parser("build", help="build the preset backbone's ONNX file from its pinned weights")
    build.add_argument("--name", choices=["efficientnet-lite0", "efficientnet-lite2"], default=None)
    build.add_argument("--force", action="store_true", help="rebuild even if a verified file is cached")
    build.set_defaults(handler=cmd_backbone_build)
    embed = sub.add_parser("embed", help="embed image files and print what came out (for inspection)")
    embed.add_argument("files", nargs="+", metavar="FILE")
    embed.add_argument("--json", action="store_true", help="print JSON")
    embed.set_defaults(handler=cmd_embed)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smarttags", description=__doc__)
    parser.add_argument("--config", help="TOML settings file (default: $SMARTTAGS_CONFIG)")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_backbone_commands(sub)
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
