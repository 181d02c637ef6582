"""Register a folder's images as assets: S3 facts, embedded metadata, and the asset's own taxonomy tags.

Tags come from keywords embedded in the files (XMP dc:subject, IPTC 2:25, as photographers deliver them)
and/or a manifest CSV ``key,tags`` (tags separated by ';'). A keyword counts as a tag when it is a tag id
or a tag's title in any locale. Re-running touches only objects whose ETag changed, and removes assets
whose objects are gone.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from smarttags.core.asset import Asset
from smarttags.core.clock import now_iso
from smarttags.core.folders import Folder
from smarttags.core.ports import Assets, ReadFacts, Store
from smarttags.core.taxonomy import Taxonomy
from smarttags.errors import ImageError, NotFound, RequestError

log = logging.getLogger(__name__)

# Our own objects (models, thumbnails) live under this prefix and are never assets.
INTERNAL_PREFIX = "_smarttags/"
BULK_SIZE = 200
# What a sync writes over an existing asset: the object's and the picture's facts and its own tags; its
# smart tags, moderation and tagging state are the tagger's and the moderators' and stay as they are.
SYNCED = (
    "folder",
    "etag",
    "size",
    "content_type",
    "modified",
    "width",
    "height",
    "title",
    "description",
    "keywords",
    "format",
    "decoder",
    "tags",
    "updated_at",
)


@dataclass
class IngestResult:
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    unknown_tags: dict[str, list[str]] = field(default_factory=dict)  # tag -> keys

    def to_json(self) -> dict[str, Any]:
        return {
            "new": self.new,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "failed": [{"key": k, "reason": r} for k, r in self.failed],
            "unknown_tags": self.unknown_tags,
        }


def read_manifest(text: str) -> dict[str, list[str]]:
    """``key,tags`` rows (tags separated by ';') -> {key: [tags]}; a header row is optional."""
    rows = csv.reader(io.StringIO(text))
    manifest: dict[str, list[str]] = {}
    for number, row in enumerate(rows, start=1):
        if not row or (number == 1 and [c.strip().lower() for c in row[:2]] == ["key", "tags"]):
            continue
        if len(row) < 2:
            raise RequestError(f"manifest line {number}: expected 'key,tags'")
        key = row[0].strip().lstrip("/")
        manifest[key] = [t.strip() for t in row[1].split(";") if t.strip()]
    return manifest


class TagResolver:
    """Keywords and manifest entries -> taxonomy tag ids (by id, or by title/synonym in any locale)."""

    def __init__(self, taxonomy: Taxonomy) -> None:
        self._by_name: dict[str, str] = {}
        for tag in taxonomy.tags.values():
            names = [*tag.titles.values(), *(s for group in tag.synonyms.values() for s in group)]
            for name in names:
                self._by_name.setdefault(name.strip().casefold(), tag.id)
        self._ids = set(taxonomy.tags)

    def resolve(self, words: Iterable[str]) -> tuple[list[str], list[str]]:
        """(known tag ids, words that look like tag ids but are not in the taxonomy)."""
        known: list[str] = []
        unknown: list[str] = []
        for word in words:
            word = word.strip()
            tag = word if word in self._ids else self._by_name.get(word.casefold())
            if tag:
                if tag not in known:
                    known.append(tag)
            elif ":" in word:
                unknown.append(word)
        return known, unknown


def is_internal(key: str) -> bool:
    return key.startswith(INTERNAL_PREFIX)


def sync_folder(
    assets: Assets,
    store: Store,
    folder: Folder,
    taxonomy: Taxonomy,
    *,
    read_facts: ReadFacts,
    manifest: Mapping[str, list[str]] | None = None,
    max_pixels: int = 100_000_000,
    progress: Callable[[int], None] | None = None,
) -> IngestResult:
    """Make the index's assets under ``folder`` match the bucket."""
    result = IngestResult()
    resolver = TagResolver(taxonomy)
    indexed = {a.key: a for a in assets.scan(folder, attributes=["etag", "tags"])}
    seen: set[str] = set()
    pending: list[Asset] = []
    for info in store.list(folder.prefix):
        if is_internal(info.key) or info.key.endswith("/"):
            continue
        seen.add(info.key)
        held = indexed.get(info.key)
        wanted_tags = list(manifest.get(info.key, [])) if manifest else []
        if (
            held
            and held.etag == info.etag
            and not (
                manifest and info.key in manifest and sorted(resolver.resolve(wanted_tags)[0]) != sorted(held.tags)
            )
        ):
            result.unchanged += 1
            if progress:
                progress(1)
            continue
        try:
            data, info = store.get_bytes(info.key)
            meta = read_facts(data, max_pixels=max_pixels)
        except NotFound:
            continue
        except ImageError as exc:
            result.failed.append((info.key, exc.reason))
            if progress:
                progress(1)
            continue
        tags, unknown = resolver.resolve([*meta.keywords, *wanted_tags])
        for word in unknown:
            result.unknown_tags.setdefault(word, []).append(info.key)
        modified = info.last_modified.isoformat() if info.last_modified else now_iso()
        pending.append(
            Asset(
                bucket=store.bucket,
                key=info.key,
                etag=info.etag,
                size=info.size,
                content_type=info.content_type or meta.content_type,
                modified=modified,
                created=modified,
                tags=tuple(tags),
            )
            .with_facts(meta)
            .touched()
        )
        if held:
            result.changed += 1
        else:
            result.new += 1
        if len(pending) >= BULK_SIZE:
            assets.merge(pending, SYNCED)
            pending = []
        if progress:
            progress(1)
    assets.merge(pending, SYNCED)
    gone = [a.id for key, a in indexed.items() if key not in seen]
    assets.delete_many(gone)
    result.removed = len(gone)
    assets.refresh()
    if result.unknown_tags:
        log.warning("tags not in the taxonomy were refused: %s", ", ".join(sorted(result.unknown_tags)[:10]))
    return result
