"""``smarttags models`` and ``predict``: the stored model versions, and a dry run of the active one."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from smarttags.entrypoints.cli.common import print_json, services
from smarttags.settings import Settings


def _models(settings: Settings, args: argparse.Namespace) -> int:
    models = services(settings).models
    if args.action == "list":
        active = models.active_version()
        for manifest in models.list():
            mark = "*" if manifest.version == active else " "
            print(
                f"{mark} {manifest.version}  {len(manifest.tags):3d} tags  "
                f"mean AP {manifest.mean_average_precision or 0.0:.3f}  {manifest.backbone_id[:40]}"
            )
        return 0
    if args.action == "show":
        version = args.version or models.active_version()
        if version is None:
            print("no active model", file=sys.stderr)
            return 1
        print_json(models.manifest(version).to_json())
        return 0
    if args.action == "activate":
        if not args.version:
            print("activate needs a VERSION", file=sys.stderr)
            return 2
        print(f"active: {models.activate(args.version).version}")
        return 0
    print(f"active: {models.rollback().version}")
    return 0


def _predict(settings: Settings, args: argparse.Namespace) -> int:
    from smarttags.core.model_registry import predict
    from smarttags.errors import ImageError

    built = services(settings)
    model = built.models.load_active()
    out: list[dict[str, Any]] = []
    readable: list[tuple[dict[str, Any], bytes]] = []
    for name in args.images:
        entry: dict[str, Any] = {"file": name}
        out.append(entry)
        try:
            readable.append((entry, Path(name).read_bytes()))
        except OSError as exc:
            entry["error"] = f"cannot read: {exc.strerror or exc}"
    predictions = predict(
        model, built.embedder(), [data for _, data in readable], max_tags=settings.tagging.max_tags_per_asset
    )
    for (entry, _), result in zip(readable, predictions, strict=True):
        if isinstance(result, ImageError):
            entry["error"] = result.reason
            continue
        entry["tags"] = [{"tag": t.tag, "confidence": t.confidence} for t in result.tags]
        if args.all_scores:
            entry["scores"] = result.scores
    failed = [entry for entry in out if "error" in entry]
    if args.json:
        print_json({"model": model.version, "predictions": out})
    else:
        for entry in out:
            if "error" in entry:
                continue
            tags = ", ".join(f"{t['tag']} ({t['confidence']:.2f})" for t in entry["tags"]) or "(no tag)"
            print(f"{entry['file']}: {tags}")
            for tag, score in sorted(entry.get("scores", {}).items(), key=lambda kv: (-kv[1], kv[0])):
                print(f"    {score:.6f}  {tag}")
    for entry in failed:
        print(f"smarttags predict: {entry['file']}: {entry['error']}", file=sys.stderr)
    return 1 if failed else 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser("models", help="model versions")
    p.add_argument("action", choices=["list", "show", "activate", "rollback"])
    p.add_argument("version", nargs="?")
    p.set_defaults(handler=_models)

    p = sub.add_parser("predict", help="dry run: the active model's tags for local image files")
    p.add_argument("images", nargs="+")
    p.add_argument("--json", action="store_true")
    p.add_argument("--all-scores", action="store_true")
    p.set_defaults(handler=_predict)
