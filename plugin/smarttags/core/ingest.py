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

from smarttags.core import asset as assets
from smarttags.core.ports import Index, ReadFacts, Store
from smarttags.core.taxonomy import Taxonomy
from smarttags.errors import ImageError, NotFound, RequestError

log = logging.getLogger(__name__)

# Our own objects (models, thumbnails) live under this prefix and are never assets.
INTERNAL_PREFIX = "_smarttags/"
BULK_SIZE = 200


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
    index: Index,
    store: Store,
    prefix: str,
    taxonomy: Taxonomy,
    *,
    read_facts: ReadFacts,
    manifest: Mapping[str, list[str]] | None = None,
    max_pixels: int = 100_000_000,
    progress: Callable[[int], None] | None = None,
) -> IngestResult:
    """Make the index's assets under ``prefix`` match the bucket."""
    result = IngestResult()
    resolver = TagResolver(taxonomy)
    indexed: dict[str, dict[str, Any]] = {}
    folder = prefix.rstrip("/")
    query: dict[str, Any] = {"bool": {"filter": [{"term": {"bucket": store.bucket}}]}}
    if folder:
        query["bool"]["filter"].append({"term": {"folder.tree": folder}})
    for hit in index.scan("assets", query, source=["key", "etag", "tags"]):
        indexed[hit["_source"]["key"]] = hit["_source"]
    seen: set[str] = set()
    pending: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
    for info in store.list(prefix):
        if is_internal(info.key) or info.key.endswith("/"):
            continue
        seen.add(info.key)
        held = indexed.get(info.key)
        wanted_tags = list(manifest.get(info.key, [])) if manifest else []
        if (
            held
            and held.get("etag") == info.etag
            and not (
                manifest
                and info.key in manifest
                and sorted(resolver.resolve(wanted_tags)[0]) != sorted(held.get("tags") or [])
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
        doc = {
            "asset_id": assets.asset_id(store.bucket, info.key),
            "bucket": store.bucket,
            "key": info.key,
            "folder": assets.folder_path(info.key),
            "etag": info.etag,
            "size": info.size,
            "content_type": info.content_type or meta.content_type,
            "modified": info.last_modified.isoformat() if info.last_modified else assets.now_iso(),
            "width": meta.width,
            "height": meta.height,
            "title": meta.title,
            "description": meta.description,
            "keywords": list(meta.keywords),
            "tags": tags,
            "updated_at": assets.now_iso(),
        }
        upsert = {
            **assets.base_document(
                bucket=store.bucket,
                key=info.key,
                etag=info.etag,
                size=info.size,
                content_type=info.content_type or meta.content_type,
                modified=info.last_modified,
            ),
            **doc,
        }
        pending.append(
            (
                {"update": {"_index": index.name("assets"), "_id": doc["asset_id"], "retry_on_conflict": 5}},
                {"doc": doc, "upsert": upsert},
            )
        )
        if held:
            result.changed += 1
        else:
            result.new += 1
        if len(pending) >= BULK_SIZE:
            index.bulk(pending)
            pending = []
        if progress:
            progress(1)
    index.bulk(pending)
    gone = [
        ({"delete": {"_index": index.name("assets"), "_id": assets.asset_id(store.bucket, key)}}, None)
        for key in indexed
        if key not in seen
    ]
    index.bulk(gone)
    result.removed = len(gone)
    index.refresh("assets")
    if result.unknown_tags:
        log.warning("tags not in the taxonomy were refused: %s", ", ".join(sorted(result.unknown_tags)[:10]))
    return result
