"""Read models for the admin pages: folders with their counts and latest runs, models side by side.
Plain library functions over ``Services``; the admin only renders what they return."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from botocore.exceptions import BotoCoreError, ClientError

from smarttags.adapters.clients import translate_aws_error
from smarttags.core.folders import Folder
from smarttags.core.model_registry import Manifest
from smarttags.core.runs import TAG, TRAIN, Run
from smarttags.entrypoints.compose import Services

MAX_TOP_LEVEL = 1000
MAX_COMPARED = 4


@dataclass(frozen=True)
class FolderRow:
    folder: Folder
    registered: bool
    enabled: bool
    assets: int
    last_training: Run | None
    last_tagging: Run | None

    @property
    def uri(self) -> str:
        return self.folder.uri


def top_level_prefixes(services: Services) -> list[str]:
    """The bucket's first-level "folders" (at most 1000), without SmartTags' own prefixes."""
    bucket = services.settings.aws.bucket
    try:
        page = services.s3.list_objects_v2(Bucket=bucket, Delimiter="/", MaxKeys=MAX_TOP_LEVEL)
    except (ClientError, BotoCoreError) as exc:
        raise translate_aws_error(exc, "s3") from exc
    own = (services.settings.aws.models_prefix, services.settings.aws.thumbnails_prefix)
    prefixes = [str(p["Prefix"]) for p in page.get("CommonPrefixes", [])]
    return [p for p in prefixes if not any(o.startswith(p) for o in own)]


def asset_count(services: Services, folder: Folder) -> int:
    return services.index.count("assets", folder.query())


def folder_rows(services: Services) -> list[FolderRow]:
    """Registered folders plus the bucket's top-level prefixes, each with its asset count and last runs."""
    bucket = services.settings.aws.bucket
    registered = {f.folder: f for f in services.folders.all()}
    folders = set(registered) | {Folder(bucket, p) for p in top_level_prefixes(services)}
    rows = []
    for folder in sorted(folders):
        setting = registered.get(folder)
        rows.append(
            FolderRow(
                folder=folder,
                registered=setting is not None,
                enabled=bool(setting and setting.enabled),
                assets=asset_count(services, folder),
                last_training=services.runs.latest(TRAIN, folder.uri),
                last_tagging=services.runs.latest(TAG, folder.uri),
            )
        )
    return rows


@dataclass(frozen=True)
class ModelComparison:
    manifests: list[Manifest]  # the compared versions, newest first
    all_versions: list[str]  # every stored version, newest first
    active: str | None
    tags: list[str]
    mean_ap: dict[str, float | None] = field(default_factory=dict)

    def metric(self, version: str, tag: str, name: str) -> float | None:
        for manifest in self.manifests:
            if manifest.version == version:
                value = manifest.metrics.get(tag, {}).get(name)
                return None if value is None else float(value)
        return None


def compare_models(services: Services, versions: Sequence[str] = ()) -> ModelComparison:
    """The chosen versions (default: the newest few) with their per-tag metrics side by side."""
    manifests = sorted(services.models.list(), key=lambda m: m.version, reverse=True)
    chosen = [m for m in manifests if m.version in versions] if versions else manifests[:MAX_COMPARED]
    chosen = chosen[:MAX_COMPARED]
    tags = sorted({tag for m in chosen for tag in m.metrics})
    return ModelComparison(
        manifests=chosen,
        all_versions=[m.version for m in manifests],
        active=services.models.active_version(),
        tags=tags,
        mean_ap={m.version: m.mean_average_precision for m in chosen},
    )
