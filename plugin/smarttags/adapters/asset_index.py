"""The assets index: ``Asset`` values to OpenSearch documents and back, and the reads and writes the
core makes of them (``core.ports.Assets``). The only place that knows the document's shape; the mapping
``search_templates/assets.index.json`` is its contract.

Search reads five fields derived here from the asset: ``smart_ids`` (the smart tags' ids),
``smart_scores`` (one rank feature per smart tag: its confidence, +1 when promoted; the search template
also lifts an asset with a promoted matching tag above any number of unpromoted ones), ``folder`` (the
key's folder path, for the ``folder.tree`` filter) and ``file_name`` (the key's last segment, searched
with the metadata), and ``smart_bands`` (``tag@0.7`` per tenth of confidence a tag reaches, for the
grid's confidence filter). Promotion itself is stored once, in ``promoted_tags``.

Two more serve the moderators and nothing else (search never reads them, so ranking is untouched):
``near_scores`` (one rank feature per near miss, a tag the model scored just below its threshold; the
near misses themselves are kept, unindexed, in ``near_misses``) and ``review_margin`` (how near its
threshold the asset's least certain open decision is, either side: the review queue sorts on it).

The embedding lives in an index of its own (``vectors``, ``search_templates/vectors.index.json``: the
k-NN vector with the asset's bucket, folder, bytes' ETag and backbone); the asset's document names the
embedding it has (``embedding_model``, ``embedding_etag``). A vector is written only when it changed, so a
claim, a re-tag or a moderator's edit rewrites a small document and never rebuilds the vector's HNSW
graph; a vector that does not match what its asset names (a write between the two, a crash) is no
embedding. Documents written before the split hold their vector themselves: it is read from there and
moved on the asset's next write (``smarttags index refresh-fields`` moves them all).

A video's smart tags carry time ranges: they are stored once, as ``segments`` (nested: ``tag``, ``start``,
``end`` in seconds), so a nested query can ask for a tag within a stretch of time; reading an asset
puts them back on its smart tags.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any

from smarttags.core.asset import Asset, SmartTag, StoredEmbedding, Tagging, TaggingStatus, feature_name
from smarttags.core.clock import now_iso
from smarttags.core.folders import Folder
from smarttags.core.ports import Index, StoredAsset, Versioned, Write
from smarttags.core.search import CONFIDENCE_STEPS
from smarttags.errors import ServiceError

log = logging.getLogger(__name__)

KIND = "assets"
VECTORS = "vectors"
# An asset attribute -> the document fields it is written to (the rest are written under their own name).
_FIELDS: dict[str, tuple[str, ...]] = {
    "folder": ("folder",),
    "key": ("key", "file_name"),
    "smart_tags": ("smart_tags", "smart_ids", "smart_scores", "smart_bands", "segments", "review_margin"),
    "promoted": ("promoted_tags", "smart_scores", "review_margin"),
    "rejected": ("rejected_tags",),
    "reviewed": ("reviewed_tags", "review_margin"),
    "near_misses": ("near_misses", "near_scores", "review_margin"),
    "embedding": ("embedding", "embedding_model", "embedding_etag"),
}


def confidence_bands(smart_tags: Sequence[SmartTag]) -> list[str]:
    """``tag@0.7`` for every tenth a tag's confidence reaches: the grid's confidence filter for a chosen
    tag is one term (``smart_tags`` is not nested, so a range cannot tie a confidence to its tag)."""
    return [f"{t.tag}@{band}" for t in smart_tags for band in CONFIDENCE_STEPS if t.confidence >= float(band)]


def to_document(asset: Asset) -> dict[str, Any]:
    modified = asset.modified or now_iso()
    embedding = asset.embedding
    return {
        "asset_id": asset.id,
        "bucket": asset.bucket,
        "key": asset.key,
        "file_name": asset.key.rsplit("/", 1)[-1],
        "folder": asset.folder.path,
        "etag": asset.etag,
        "version_id": asset.version_id,
        "sequencer": asset.sequencer,
        "content_type": asset.content_type,
        "size": asset.size,
        "width": asset.width,
        "height": asset.height,
        "created": asset.created or modified,
        "modified": modified,
        "title": asset.title,
        "description": asset.description,
        "keywords": list(asset.keywords),
        "format": asset.format,
        "decoder": asset.decoder,
        "media": asset.media,
        "duration": asset.duration,
        "tags": list(asset.tags),
        "smart_tags": [_smart_tag(t) for t in asset.smart_tags],
        "smart_ids": list(asset.smart_ids),
        "smart_scores": {
            # rank_features refuses 0; a promoted tag's +1 puts it above every unpromoted confidence.
            feature_name(t.tag): max(float(t.confidence), 1e-4) + (1.0 if t.tag in asset.promoted else 0.0)
            for t in asset.smart_tags
        },
        "smart_bands": confidence_bands(asset.smart_tags),
        "segments": [{"tag": t.tag, "start": s, "end": e} for t in asset.smart_tags for s, e in t.ranges],
        "near_misses": [_smart_tag(t) for t in asset.near_misses],
        "near_scores": {feature_name(t.tag): max(float(t.confidence), 1e-4) for t in asset.near_misses},
        "review_margin": asset.least_margin,
        "promoted_tags": sorted(asset.promoted),
        "rejected_tags": sorted(asset.rejected),
        "reviewed_tags": sorted(asset.reviewed),
        "embedding_model": embedding.backbone if embedding else None,
        "embedding_etag": embedding.etag if embedding else None,
        "tagging": {
            "status": asset.tagging.status.value,
            "reason": asset.tagging.reason,
            "model_version": asset.tagging.model_version,
            "etag": asset.tagging.etag,
            "tagged_at": asset.tagging.tagged_at,
            "claim": asset.tagging.claim,
            "claim_until": asset.tagging.claim_until,
            "done_by": asset.tagging.done_by,
            "run": asset.tagging.run,
        },
        "updated_at": asset.updated_at or now_iso(),
    }


def vector_document(asset: Asset) -> dict[str, Any]:
    """The asset's embedding as the vectors index holds it (for k-NN: the filters similar search uses)."""
    assert asset.embedding is not None
    return {
        "asset_id": asset.id,
        "bucket": asset.bucket,
        "folder": asset.folder.path,
        "etag": asset.embedding.etag,
        "backbone": asset.embedding.backbone,
        "embedding": list(asset.embedding.vector),
    }


def _smart_tag(tag: SmartTag) -> dict[str, Any]:
    entry: dict[str, Any] = {"tag": tag.tag, "confidence": tag.confidence, "model_version": tag.model_version}
    if tag.threshold is not None:
        entry["threshold"] = tag.threshold
    return entry


def _read_tag(entry: Mapping[str, Any], ranges: Sequence[tuple[float, float]] = ()) -> SmartTag:
    threshold = entry.get("threshold")
    return SmartTag(
        entry["tag"],
        float(entry["confidence"]),
        entry.get("model_version") or "",
        tuple(ranges),
        threshold=None if threshold is None else float(threshold),
    )


def _embedding(source: Mapping[str, Any], vector: Mapping[str, Any] | None) -> StoredEmbedding | None:
    """The embedding the asset names, from its vector document if that matches, else from the asset's own
    document (written before vectors had an index of their own), else none."""
    backbone, etag = source.get("embedding_model") or "", source.get("embedding_etag") or ""
    if vector is not None and (vector.get("backbone"), vector.get("etag")) == (backbone, etag):
        values = vector["embedding"]
    else:
        values = source.get("embedding")
    return StoredEmbedding(tuple(float(v) for v in values), backbone, etag) if values else None


def from_document(source: Mapping[str, Any], vector: Mapping[str, Any] | None = None) -> Asset:
    """An asset from a document (with its vector document, if read), or from the fields of one a search
    asked for (the rest take defaults: such a partial value is for reading, never for writing back)."""
    tagging = source.get("tagging") or {}
    ranges: dict[str, list[tuple[float, float]]] = {}
    for segment in source.get("segments") or ():
        ranges.setdefault(segment["tag"], []).append((float(segment["start"]), float(segment["end"])))
    return Asset(
        bucket=source["bucket"],
        key=source["key"],
        etag=source.get("etag") or "",
        size=int(source.get("size") or 0),
        content_type=source.get("content_type"),
        version_id=source.get("version_id"),
        sequencer=source.get("sequencer"),
        modified=source.get("modified"),
        created=source.get("created"),
        width=source.get("width"),
        height=source.get("height"),
        title=source.get("title"),
        description=source.get("description"),
        keywords=tuple(source.get("keywords") or ()),
        format=source.get("format"),
        decoder=source.get("decoder"),
        media=source.get("media"),
        duration=source.get("duration"),
        tags=tuple(source.get("tags") or ()),
        smart_tags=tuple(_read_tag(e, ranges.get(e["tag"], ())) for e in source.get("smart_tags") or ()),
        near_misses=tuple(_read_tag(e) for e in source.get("near_misses") or ()),
        promoted=frozenset(source.get("promoted_tags") or ()),
        rejected=frozenset(source.get("rejected_tags") or ()),
        reviewed=frozenset(source.get("reviewed_tags") or ()),
        embedding=_embedding(source, vector),
        tagging=Tagging(
            status=TaggingStatus(tagging.get("status") or TaggingStatus.PENDING),
            reason=tagging.get("reason"),
            model_version=tagging.get("model_version"),
            etag=tagging.get("etag"),
            tagged_at=tagging.get("tagged_at"),
            claim=tagging.get("claim"),
            claim_until=tagging.get("claim_until"),
            done_by=tagging.get("done_by"),
            run=tagging.get("run"),
        ),
        updated_at=source.get("updated_at"),
    )


def document_fields(attributes: Collection[str]) -> list[str]:
    """The document fields that hold these asset attributes (``bucket`` and ``key`` always)."""
    fields = {"bucket", "key"}
    for name in attributes:
        fields.update(_FIELDS.get(name, (name,)))
    return sorted(fields)


class AssetIndex:
    """``core.ports.Assets`` on any ``Index`` (OpenSearch, or the in-memory fake of the tests)."""

    def __init__(self, index: Index) -> None:
        self._index = index
        # Assets read with the vector in their own document (written before the split): the next write
        # of each moves the vector to the vectors index.
        self._unmoved: set[str] = set()

    def _stored(self, found: Versioned | None, vector: Mapping[str, Any] | None) -> StoredAsset | None:
        if found is None:
            return None
        if found.source.get("embedding"):
            self._unmoved.add(found.id)
        return StoredAsset(from_document(found.source, vector), found.seq_no, found.primary_term)

    def get(self, asset_id: str) -> StoredAsset | None:
        found, vector = self._index.get_many([(KIND, asset_id), (VECTORS, asset_id)])
        return self._stored(found, vector.source if vector else None)

    def get_many(self, asset_ids: Sequence[str]) -> list[StoredAsset | None]:
        """Several assets with their embeddings in one round trip, None where one does not exist."""
        if not asset_ids:
            return []
        found = self._index.get_many([(KIND, i) for i in asset_ids] + [(VECTORS, i) for i in asset_ids])
        assets, vectors = found[: len(asset_ids)], found[len(asset_ids) :]
        return [self._stored(a, v.source if v else None) for a, v in zip(assets, vectors, strict=True)]

    def _vector_write(self, asset: Asset, held: StoredAsset | None) -> Write | None:
        """The vector's write when the asset's embedding is new or changed (or still in the old place)."""
        if asset.embedding is None:
            return None
        if held is not None and held.asset.embedding == asset.embedding and asset.id not in self._unmoved:
            return None
        return Write(VECTORS, asset.id, vector_document(asset), create=False)

    def put(self, asset: Asset, *, expected: StoredAsset | None = None, refresh: bool | str = False) -> StoredAsset:
        """Write the asset: over ``expected`` (a ConflictError if it changed since), or as a new document
        (a ConflictError if one exists). Returns it as stored, for the next conditional write."""
        vector = self._vector_write(asset, expected)
        if vector is not None:  # first, so the asset never names a vector that is not there yet
            self._index.put(VECTORS, asset.id, vector.source)
            self._unmoved.discard(asset.id)
        version = Versioned(asset.id, {}, expected.seq_no, expected.primary_term) if expected else None
        seq_no, primary_term = self._index.put(
            KIND, asset.id, to_document(asset), expected=version, create=expected is None, refresh=refresh
        )
        return StoredAsset(asset, seq_no, primary_term)

    def put_many(self, writes: Sequence[tuple[Asset, StoredAsset | None]]) -> list[StoredAsset | ServiceError]:
        """``put`` of several assets (and their changed vectors) in one round trip; each asset answers
        alone (its stored self, or its error)."""
        items: list[Write] = []
        vectors: dict[int, int] = {}  # the write's position -> its vector's item
        for asset, held in writes:
            version = Versioned(asset.id, {}, held.seq_no, held.primary_term) if held else None
            items.append(Write(KIND, asset.id, to_document(asset), version))
        for n, (asset, held) in enumerate(writes):
            vector = self._vector_write(asset, held)
            if vector is not None:
                vectors[n] = len(items)
                items.append(vector)
        answers = self._index.put_many(items)
        results: list[StoredAsset | ServiceError] = []
        for n, ((asset, _), answer) in enumerate(zip(writes, answers[: len(writes)], strict=True)):
            vector_answer = answers[vectors[n]] if n in vectors else None
            if isinstance(vector_answer, ServiceError):
                # The asset stands; naming a vector that is not there, it reads as not yet embedded.
                log.warning("the embedding of %s was not written: %s", asset.id, vector_answer)
            elif n in vectors:
                self._unmoved.discard(asset.id)
            results.append(answer if isinstance(answer, ServiceError) else StoredAsset(asset, *answer))
        return results

    def delete(self, expected: StoredAsset) -> bool:
        version = Versioned(expected.asset.id, {}, expected.seq_no, expected.primary_term)
        deleted = self._index.delete(KIND, expected.asset.id, expected=version)
        if deleted:
            self._index.delete(VECTORS, expected.asset.id)
        return deleted

    def _with_vectors(self, hits: Sequence[Mapping[str, Any]], attributes: Collection[str] | None) -> list[Asset]:
        """Assets of search hits, joined with their vectors (one multi-get) when the embedding was asked for."""
        if attributes is not None and "embedding" not in attributes:
            return [from_document(hit["_source"]) for hit in hits]
        vectors = self._index.mget(VECTORS, [hit["_id"] for hit in hits])
        return [from_document(hit["_source"], vector) for hit, vector in zip(hits, vectors, strict=True)]

    def scan(
        self, folder: Folder, *, attributes: Collection[str] | None = None, batch_size: int = 500
    ) -> Iterator[Asset]:
        """Every asset of the folder and its subfolders (with only ``attributes`` filled in, if given)."""
        for page, _ in self.pages(folder, attributes=attributes, page_size=batch_size):
            yield from page

    def pages(
        self,
        folder: Folder,
        *,
        attributes: Collection[str] | None = None,
        page_size: int = 500,
        after: Sequence[Any] | None = None,
    ) -> Iterator[tuple[list[Asset], list[Any] | None]]:
        """The folder's assets a page at a time, each page with the cursor a later scan goes on after."""
        pages = self._index.scan_pages(
            KIND, folder.query(), source=_source(attributes), batch_size=page_size, after=after
        )
        for hits, cursor in pages:
            yield self._with_vectors(hits, attributes), cursor

    def count(self, folder: Folder | None = None) -> int:
        """The assets of a folder (and its subfolders), or of the whole index."""
        return self._index.count(KIND, folder.query() if folder is not None else None)

    def scan_rejected(
        self, bucket: str, *, attributes: Collection[str] | None = None, batch_size: int = 500
    ) -> Iterator[Asset]:
        """Every asset of the bucket with a smart tag a moderator removed (training's explicit negatives)."""
        query = {"bool": {"filter": [{"term": {"bucket": bucket}}, {"exists": {"field": "rejected_tags"}}]}}
        for hits, _ in self._index.scan_pages(KIND, query, source=_source(attributes), batch_size=batch_size):
            yield from self._with_vectors(hits, attributes)

    def merge(self, assets: Sequence[Asset], attributes: Collection[str], *, create: bool = True) -> None:
        """Write only these attributes of each asset, in one bulk request, leaving the document's other
        fields as they are (a concurrent tagger's smart tags survive a sync); with ``create`` a missing
        asset is written whole."""
        fields = document_fields(attributes)
        actions: list[tuple[Mapping[str, Any], Mapping[str, Any] | None]] = []
        for asset in assets:
            doc = to_document(asset)
            body: dict[str, Any] = {"doc": {name: doc[name] for name in fields if name in doc}}
            if create:
                body["upsert"] = doc
            actions.append(
                ({"update": {"_index": self._index.name(KIND), "_id": asset.id, "retry_on_conflict": 5}}, body)
            )
            if "embedding" in attributes and asset.embedding is not None:
                actions.append(
                    ({"index": {"_index": self._index.name(VECTORS), "_id": asset.id}}, vector_document(asset))
                )
        self._index.bulk(actions)

    def delete_many(self, asset_ids: Sequence[str]) -> None:
        self._index.bulk(
            [
                ({"delete": {"_index": self._index.name(kind), "_id": i}}, None)
                for i in asset_ids
                for kind in (KIND, VECTORS)
            ]
        )

    def scan_stored(self, *, after: str | None = None, batch_size: int = 500) -> Iterator[StoredAsset]:
        """Every asset with its version and embedding, in id order, from past ``after`` (an asset id: a
        resumed pass)."""
        pages = self._index.scan_pages(
            KIND, {"match_all": {}}, batch_size=batch_size, after=[after] if after else None, versions=True
        )
        for hits, _ in pages:
            vectors = self._index.mget(VECTORS, [hit["_id"] for hit in hits])
            for hit, vector in zip(hits, vectors, strict=True):
                found = Versioned(hit["_id"], hit["_source"], int(hit["_seq_no"]), int(hit["_primary_term"]))
                stored = self._stored(found, vector)
                assert stored is not None
                yield stored

    def refresh(self) -> None:
        self._index.refresh(KIND)
        self._index.refresh(VECTORS)

    @staticmethod
    def from_source(source: Mapping[str, Any]) -> Asset:
        return from_document(source)


def _source(attributes: Collection[str] | None) -> Sequence[str] | bool:
    """The document fields that hold ``attributes`` (all of them when none are named)."""
    return document_fields(attributes) if attributes is not None else True
