"""Register a folder's images as assets: S3 facts, embedded metadata, and the asset's own taxonomy tags.

Tags come from keywords embedded in the files (XMP dc:subject, IPTC 2:25, as photographers deliver them)
and/or a manifest CSV ``key,tags`` (tags separated by ';'). A keyword counts as a tag when it is a tag id
or a tag's title in any locale. Re-running reads only objects whose ETag changed, and removes assets
whose objects are gone. A manifest's mistakes (a key that matches no object, a tag not in the taxonomy)
are reported one line each with the manifest line, never dropped silently.
"""

from __future__ import annotations

import csv
import difflib
import io
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from smarttags.core.asset import Asset
from smarttags.core.clock import now_iso
from smarttags.core.folders import Folder
from smarttags.core.ports import Assets, ReadFacts, Store
from smarttags.core.taxonomy import Taxonomy
from smarttags.errors import ConflictError, ImageError, NotFound, RequestError

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
    "media",
    "duration",
    "tags",
    "updated_at",
)
FACTS = tuple(name for name in SYNCED if name != "tags")
WRITE_ATTEMPTS = 5


@dataclass
class IngestResult:
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    unknown_tags: dict[str, list[str]] = field(default_factory=dict)  # tag -> keys
    problems: list[str] = field(default_factory=list)  # the manifest's refused tags, one line each
    unmatched: dict[str, str] = field(default_factory=dict)  # manifest key matching no object -> its line

    def messages(self) -> list[str]:
        """Every manifest mistake, one line each."""
        return [*self.unmatched.values(), *self.problems]

    def to_json(self) -> dict[str, Any]:
        return {
            "new": self.new,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "failed": [{"key": k, "reason": r} for k, r in self.failed],
            "unknown_tags": self.unknown_tags,
            "problems": self.messages(),
        }


class Manifest(dict[str, list[str]]):
    """key -> tags as the manifest wrote them, and the line each key came from (for its messages)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: dict[str, int] = {}

    def where(self, key: str) -> str:
        return f"manifest line {self.lines[key]}" if key in self.lines else f"manifest key {key!r}"


def read_manifest(text: str) -> Manifest:
    """``key,tags`` rows (tags separated by ';') -> {key: [tags]}; a header row is optional."""
    rows = csv.reader(io.StringIO(text))
    manifest = Manifest()
    for number, row in enumerate(rows, start=1):
        if not row or (number == 1 and [c.strip().lower() for c in row[:2]] == ["key", "tags"]):
            continue
        if len(row) < 2:
            raise RequestError(f"manifest line {number}: expected 'key,tags'")
        key = row[0].strip().lstrip("/")
        manifest[key] = [t.strip() for t in row[1].split(";") if t.strip()]
        manifest.lines[key] = number
    return manifest


class TagResolver:
    """Keywords and manifest entries -> taxonomy tag ids: by id, by the id without its namespace when
    only one tag has that path (``animals/birds`` for ``nature:animals/birds``), or by a title or synonym
    in any locale (case-insensitive)."""

    def __init__(self, taxonomy: Taxonomy) -> None:
        self._by_name: dict[str, str] = {}
        for tag in taxonomy.tags.values():
            names = [*tag.titles.values(), *(s for group in tag.synonyms.values() for s in group)]
            for name in names:
                self._by_name.setdefault(name.strip().casefold(), tag.id)
        self._by_path: dict[str, list[str]] = {}
        for tag_id in sorted(taxonomy.tags):
            self._by_path.setdefault(tag_id.partition(":")[2].casefold(), []).append(tag_id)
        self._ids = set(taxonomy.tags)

    def candidates(self, word: str) -> list[str]:
        """The tags a word may name: itself as an id, or the tags with that path or title."""
        word = word.strip()
        if word in self._ids:
            return [word]
        found = list(self._by_path.get(word.casefold(), [])) if ":" not in word else []
        titled = self._by_name.get(word.casefold())
        return [*found, titled] if titled and titled not in found else found

    def lookup(self, word: str) -> str | None:
        """The one tag a word names, or None (unknown, or ambiguous)."""
        found = self.candidates(word)
        return found[0] if len(found) == 1 else None

    def resolve(self, words: Iterable[str]) -> tuple[list[str], list[str]]:
        """(known tag ids, words that look like tag ids but are not in the taxonomy)."""
        known: list[str] = []
        unknown: list[str] = []
        for word in words:
            tag = self.lookup(word)
            if tag:
                if tag not in known:
                    known.append(tag)
            elif ":" in word:
                unknown.append(word.strip())
        return known, unknown

    def problem(self, word: str) -> str:
        """Why a manifest's tag was refused, with the taxonomy ids it may have meant."""
        word = word.strip()
        found = self.candidates(word)
        if len(found) > 1:
            return f"tag {word!r} matches several taxonomy ids ({', '.join(sorted(found))}): write the full id"

        def likeness(tag_id: str) -> float:
            forms = (tag_id.casefold(), tag_id.partition(":")[2].casefold())
            return max(difflib.SequenceMatcher(None, word.casefold(), form).ratio() for form in forms)

        close = [t for t in sorted(self._ids, key=lambda t: (-likeness(t), t)) if likeness(t) >= 0.6][:3]
        hint = f"closest: {', '.join(close[:3])}" if close else "no taxonomy id is close"
        return f"tag {word!r} is not in the taxonomy ({hint})"


def is_internal(key: str) -> bool:
    return key.startswith(INTERNAL_PREFIX)


def _match_manifest(
    manifest: Mapping[str, list[str]], folder: Folder, keys: set[str], result: IngestResult
) -> dict[str, str]:
    """Object key -> manifest key. A manifest key is the object's key in the bucket, or its key relative
    to the folder; one that matches neither is reported with both forms tried."""
    matched: dict[str, str] = {}
    for key in manifest:
        relative = folder.prefix + key
        found = key if key in keys else relative if relative in keys else None
        if found is None:
            tried = f"{key!r}" + (f" and {relative!r}" if relative != key else "")
            result.unmatched[key] = f"{_where(manifest, key)}: no object under {folder.uri} matches (tried {tried})"
        else:
            matched[found] = key
    return matched


def _where(manifest: Mapping[str, list[str]], key: str) -> str:
    return manifest.where(key) if isinstance(manifest, Manifest) else f"manifest key {key!r}"


def _write_tags(assets: Assets, asset_id: str, tags_for: Callable[[Asset], set[str]]) -> None:
    """Set an asset's own tags from what the index holds now, with optimistic concurrency as the tagger
    writes (a conflict re-reads and re-applies), so a concurrent upload event or edit is never lost."""
    for _ in range(WRITE_ATTEMPTS):
        stored = assets.get(asset_id)
        if stored is None:
            return
        wanted = tuple(sorted(tags_for(stored.asset)))
        if wanted == tuple(sorted(stored.asset.tags)):
            return
        try:
            assets.put(replace(stored.asset, tags=wanted).touched(), expected=stored)
            return
        except ConflictError:
            continue
    raise ConflictError("opensearch", f"asset {asset_id} kept changing; gave up after {WRITE_ATTEMPTS} attempts")


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
    """Make the index's assets under ``folder`` match the bucket.

    Own tags are never lost: a sync adds the tags the file's keywords name to the tags the asset holds
    (from an earlier manifest, keywords or the admin), whatever happened to its bytes; only a manifest
    row for the key changes them, to that row's tags plus the keywords' ones."""
    result = IngestResult()
    resolver = TagResolver(taxonomy)
    indexed = {a.key: a for a in assets.scan(folder, attributes=["etag", "tags", "keywords"])}
    listed = [i for i in store.list(folder.prefix) if not (is_internal(i.key) or i.key.endswith("/"))]
    rows = _match_manifest(manifest, folder, {i.key for i in listed}, result) if manifest else {}
    given: dict[str, set[str]] = {}  # object key -> the tags its manifest row sets
    for key, row in rows.items():
        assert manifest is not None
        given[key] = set()
        for word in manifest[row]:
            tag = resolver.lookup(word)
            if tag:
                given[key].add(tag)
            else:
                result.problems.append(f"{_where(manifest, row)}: {resolver.problem(word)}")
                result.unknown_tags.setdefault(word.strip(), []).append(key)

    def own_tags(current: Asset, keyword_tags: Iterable[str], key: str) -> set[str]:
        return (given[key] if key in given else set(current.tags)) | set(keyword_tags)

    pending: list[Asset] = []
    retag: dict[str, tuple[str, tuple[str, ...]]] = {}  # asset id -> (key, keyword tags)
    for info in listed:
        held = indexed.get(info.key)
        if held and held.etag == info.etag:
            held_keyword_tags = tuple(resolver.resolve(held.keywords)[0])
            if own_tags(held, held_keyword_tags, info.key) != set(held.tags):
                retag[held.id] = (info.key, held_keyword_tags)  # a changed manifest row: tags only, no bytes read
                result.changed += 1
            else:
                result.unchanged += 1
            if progress:
                progress(1)
            continue
        try:
            data, info = store.read(info.key)  # a large object: only what its header needs is fetched
            meta = read_facts(data, max_pixels=max_pixels)
        except NotFound:
            continue
        except ImageError as exc:
            result.failed.append((info.key, exc.reason))
            if progress:
                progress(1)
            continue
        keyword_tags, unknown = resolver.resolve(meta.keywords)
        for word in unknown:
            result.unknown_tags.setdefault(word, []).append(info.key)
        modified = info.last_modified.isoformat() if info.last_modified else now_iso()
        asset = (
            Asset(
                bucket=store.bucket,
                key=info.key,
                etag=info.etag,
                size=info.size,
                content_type=info.content_type or meta.content_type,
                modified=modified,
                created=modified,
                tags=tuple(sorted(own_tags(held or Asset(store.bucket, info.key), keyword_tags, info.key))),
            )
            .with_facts(meta)
            .touched()
        )
        pending.append(asset)
        if held:
            result.changed += 1
            if set(asset.tags) != set(held.tags):
                retag[asset.id] = (info.key, tuple(keyword_tags))
        else:
            result.new += 1
        if len(pending) >= BULK_SIZE:
            _flush(assets, pending, indexed)
            pending = []
        if progress:
            progress(1)
    _flush(assets, pending, indexed)
    for asset_id, (key, keywords) in retag.items():
        _write_tags(assets, asset_id, partial(own_tags, keyword_tags=keywords, key=key))
    seen = {i.key for i in listed}
    gone = [a.id for key, a in indexed.items() if key not in seen]
    assets.delete_many(gone)
    result.removed = len(gone)
    assets.refresh()
    if result.unknown_tags:
        log.warning("tags not in the taxonomy were refused: %s", ", ".join(sorted(result.unknown_tags)[:10]))
    return result


def _flush(assets: Assets, pending: Sequence[Asset], indexed: Mapping[str, Asset]) -> None:
    """New assets are written whole (their tags with them); over held ones a sync writes the facts only
    and leaves the tags to ``_write_tags``, which reads what the index holds at that moment."""
    assets.merge([a for a in pending if a.key not in indexed], SYNCED)
    assets.merge([a for a in pending if a.key in indexed], FACTS, create=False)
