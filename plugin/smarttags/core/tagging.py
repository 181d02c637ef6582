"""The tagger: one S3 event (or work item) in, one asset document written. Lambda and the local worker
both call ``Tagger.handle_invocation``; the daily tagging run feeds it work items through the same queue.

Correct under real delivery: a duplicate event changes nothing; an event older than what the index holds
for the key (S3 ``sequencer``) is ignored; writes use ``if_seq_no`` and re-apply on conflict, so a
moderator's concurrent edit survives; rejected tags are never re-added and promoted ones stay promoted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from smarttags.core import asset as assets
from smarttags.core import events
from smarttags.core.folders import FolderRegistry
from smarttags.core.ingest import TagResolver, is_internal
from smarttags.core.model_registry import Model, ModelStore, score_embedding
from smarttags.core.ports import Embedder, Index, ReadFacts, StoreFor
from smarttags.core.runs import RunLog
from smarttags.core.taxonomy import Taxonomy, TaxonomyStore
from smarttags.errors import ConflictError, ImageError, NotFound, ServiceError, SmartTagsError
from smarttags.settings import Settings

log = logging.getLogger(__name__)

# How long a loaded model is trusted before the active pointer (one small S3 read) is checked again;
# "no model yet" is never cached, so the first model is used as soon as it is activated.
MODEL_CHECK_SECONDS = 10.0
WRITE_ATTEMPTS = 8


@dataclass(frozen=True)
class Outcome:
    key: str
    status: str  # tagged, embedded, not_enabled, skipped, failed, deleted, stale, duplicate, gone
    reason: str | None = None
    tags: tuple[str, ...] = ()


class RecordFailed(SmartTagsError):
    """The record must be retried (and after N receives lands in the dead-letter queue)."""


class Tagger:
    def __init__(
        self,
        settings: Settings,
        index: Index,
        stores: StoreFor,
        *,
        embedder: Callable[[], Embedder],
        read_facts: ReadFacts,
        models: ModelStore,
        taxonomy: TaxonomyStore,
        folders: FolderRegistry,
        runs: RunLog,
    ) -> None:
        self._settings = settings
        self._index = index
        self._stores = stores
        self._embedder_factory = embedder
        self._read_facts = read_facts
        self._embedder: Embedder | None = None
        self._folders = folders
        self._runs = runs
        self._models = models
        self._model: tuple[float, Model | None] | None = None
        self._taxonomy = taxonomy
        self._tag_resolver: tuple[Taxonomy, TagResolver] | None = None
        self._lock = threading.Lock()

    # --- shared, lazily loaded state (warm Lambda starts reuse it) ---

    @property
    def embedder(self) -> Embedder:
        with self._lock:
            if self._embedder is None:
                self._embedder = self._embedder_factory()
            return self._embedder

    def active_model(self) -> Model | None:
        with self._lock:
            if self._model and self._model[1] is not None and time.monotonic() - self._model[0] < MODEL_CHECK_SECONDS:
                return self._model[1]
            cached = self._model[1] if self._model else None
        version = self._models.active_version()
        model = cached if cached and cached.version == version else (self._models.load(version) if version else None)
        with self._lock:
            self._model = (time.monotonic(), model)
        return model

    def _resolver(self) -> TagResolver:
        taxonomy = self._taxonomy.load()  # cached for a short while by the store
        with self._lock:
            if self._tag_resolver is None or self._tag_resolver[0] is not taxonomy:
                self._tag_resolver = (taxonomy, TagResolver(taxonomy))
            return self._tag_resolver[1]

    def forget_model(self) -> None:
        with self._lock:
            self._model = None

    # --- one invocation ---

    def handle_invocation(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """Handle an SQS batch (returns partial-batch failures) or a direct S3 notification (raises)."""
        failures: list[dict[str, str]] = []
        tally = _Tally()
        try:
            for message in events.parse_invocation(event):
                failed = self._handle_message(message, tally)
                if failed:
                    if message.message_id is None:
                        raise RecordFailed(failed)
                    failures.append({"itemIdentifier": message.message_id})
        finally:
            self._flush(tally)
        return {"batchItemFailures": failures}

    def _handle_message(self, message: events.Message, tally: _Tally) -> str | None:
        """Returns the reason the message failed, or None."""
        if message.error:
            log.error("message %s: %s", message.message_id, message.error)
            return message.error
        for event in message.events:
            try:
                outcome = self.handle(event)
            except SmartTagsError as exc:
                log.warning("s3://%s/%s failed (receive %d): %s", event.bucket, event.key, message.receive_count, exc)
                tally.add(event, "failed", str(exc))
                return str(exc)
            log.info(
                "s3://%s/%s: %s%s",
                event.bucket,
                event.key,
                outcome.status,
                f" ({outcome.reason})" if outcome.reason else "",
            )
            tally.add(event, outcome.status, outcome.reason)
        return None

    def _flush(self, tally: _Tally) -> None:
        """One counting update per run and invocation (not per object: they would all contend for the
        same run document). Upload events count in an hourly upload run; work items in their own run."""
        for (run_id, trigger), (counts, errors) in tally.runs.items():
            try:
                self._runs.add_counts(run_id, dict(counts), errors, create_as=(events.TAG, trigger))
            except ServiceError as exc:  # the assets are written; a lost count must not redo them
                log.warning("could not count %d objects in run %s: %s", counts["processed"], run_id, exc)

    # --- one object ---

    def handle(self, event: events.ObjectEvent) -> Outcome:
        if is_internal(event.key):
            # S3 notifications cannot exclude a prefix: our own models and thumbnails arrive here too.
            return Outcome(event.key, "ignored", "a SmartTags file, not an asset")
        if event.action == events.REMOVED:
            return self._remove(event)
        doc_id = assets.asset_id(event.bucket, event.key)
        current = self._index.get("assets", doc_id)
        held = current.source if current else None
        if held and event.sequencer and held.get("sequencer"):
            if events.same_sequencer(event.sequencer, held["sequencer"]) and self._already_done(held):
                return Outcome(event.key, "duplicate")
            if not events.sequencer_newer(event.sequencer, held["sequencer"]):
                return Outcome(event.key, "stale", f"index holds a later event ({held['sequencer']})")
        store = self._stores(event.bucket)
        try:
            data, info = store.get_bytes(event.key)
        except NotFound:
            return Outcome(event.key, "gone", "the object no longer exists")
        enabled = self._settings.tagging.ignore_smart_tag_flag or self._folders.is_enabled(event.bucket, event.key)
        fields: dict[str, Any] = {
            "etag": info.etag,
            "size": info.size,
            "content_type": info.content_type,
            "version_id": info.version_id,
            "modified": info.last_modified.isoformat() if info.last_modified else assets.now_iso(),
        }
        if event.sequencer:
            fields["sequencer"] = event.sequencer
        failure: ImageError | None = None
        embedding: np.ndarray[Any, Any] | None = None
        own_tags: list[str] = []
        try:
            meta = self._read_facts(data, max_pixels=self._settings.backbone.max_pixels)
            fields.update(
                width=meta.width,
                height=meta.height,
                title=meta.title,
                description=meta.description,
                keywords=list(meta.keywords),
            )
            # Keywords that name taxonomy tags are the asset's own tags, as `smarttags ingest` reads them.
            own_tags = self._resolver().resolve(meta.keywords)[0] if meta.keywords else []
            if enabled:
                embedding = self._embedding(held, info.etag, data)
        except ImageError as exc:
            failure = exc
        model = self.active_model() if enabled and failure is None else None

        def change(doc: dict[str, Any]) -> None:
            if (
                fields.get("sequencer")
                and doc.get("sequencer")
                and not events.sequencer_newer(fields["sequencer"], doc["sequencer"])
                and not events.same_sequencer(fields["sequencer"], doc["sequencer"])
            ):
                raise _Stale(doc["sequencer"])
            doc.update({k: v for k, v in fields.items() if v is not None or k in ("title", "description")})
            doc["tags"] = sorted({*(doc.get("tags") or []), *own_tags})
            if embedding is not None:
                doc["embedding"] = embedding.tolist()
                doc["embedding_model"] = self.embedder.model_id
                doc["embedding_etag"] = info.etag
            if failure is not None:
                non_image = not (info.content_type or "").startswith("image/") and failure.reason_code != "too_large"
                status = assets.SKIPPED if non_image else assets.FAILED
                assets.set_status(doc, status, reason=_reason(failure, info.content_type), etag=info.etag)
            elif not enabled:
                assets.set_status(
                    doc, "not_enabled", reason="Smart Tags are not enabled for this folder", etag=info.etag
                )
            elif model is None:
                assets.set_status(doc, "embedded", reason="no active model yet", etag=info.etag)
            else:
                assert embedding is not None
                chosen, _ = score_embedding(
                    model,
                    embedding,
                    rejected=doc.get("rejected_tags") or [],
                    promoted=doc.get("promoted_tags") or [],
                    max_tags=self._settings.tagging.max_tags_per_asset,
                )
                assets.set_smart_tags(doc, chosen, model.version)
                assets.set_status(doc, assets.TAGGED, model_version=model.version, etag=info.etag)

        try:
            doc = self._write(event, current, change)
        except _Stale as stale:
            return Outcome(event.key, "stale", f"index holds a later event ({stale})")
        status = doc["tagging"]["status"]
        if failure is not None and status == assets.FAILED and not self._settings.tagging.ignore_errors:
            raise RecordFailed(f"s3://{event.bucket}/{event.key}: {failure.reason}")
        return Outcome(event.key, status, doc["tagging"].get("reason"), tuple(doc.get("smart_ids") or ()))

    def _already_done(self, held: dict[str, Any]) -> bool:
        """A redelivered event needs no work unless it failed (failures are retried) or the active
        model changed since the asset was tagged."""
        status = (held.get("tagging") or {}).get("status")
        if status == assets.TAGGED:
            model = self.active_model()
            return model is None or held["tagging"].get("model_version") == model.version
        return status in (assets.SKIPPED, "not_enabled", "embedded")

    def _embedding(self, held: dict[str, Any] | None, etag: str, data: bytes) -> np.ndarray[Any, Any]:
        """Reuse the stored embedding when the bytes and the backbone are unchanged; else embed."""
        embedder = self.embedder
        if (
            held
            and held.get("embedding")
            and held.get("embedding_etag") == etag
            and held.get("embedding_model") == embedder.model_id
        ):
            return np.asarray(held["embedding"], dtype=np.float32)
        result = embedder.embed_bytes([data])[0]
        if isinstance(result, ImageError):
            raise result
        return np.asarray(result, dtype=np.float32)

    def _write(
        self,
        event: events.ObjectEvent,
        current: Any,
        change: Callable[[dict[str, Any]], None],
    ) -> dict[str, Any]:
        doc_id = assets.asset_id(event.bucket, event.key)
        for _ in range(WRITE_ATTEMPTS):
            if current is None:
                doc = assets.base_document(
                    bucket=event.bucket,
                    key=event.key,
                    etag=event.etag or "",
                    size=event.size or 0,
                    content_type=None,
                )
            else:
                doc = dict(current.source)
            change(doc)
            doc["updated_at"] = assets.now_iso()
            try:
                self._index.put("assets", doc_id, doc, expected=current, create=current is None)
                return doc
            except ConflictError:
                current = self._index.get("assets", doc_id)
        raise ConflictError("opensearch", f"asset {event.key} kept changing; gave up after {WRITE_ATTEMPTS} attempts")

    def _remove(self, event: events.ObjectEvent) -> Outcome:
        doc_id = assets.asset_id(event.bucket, event.key)
        for _ in range(WRITE_ATTEMPTS):
            current = self._index.get("assets", doc_id)
            if current is None:
                return Outcome(event.key, "deleted", "already absent")
            held = current.source.get("sequencer")
            if event.sequencer and held and not events.sequencer_newer(event.sequencer, held):
                return Outcome(event.key, "stale", f"index holds a later event ({held})")
            try:
                self._index.delete("assets", doc_id, expected=current)
                return Outcome(event.key, "deleted")
            except ConflictError:
                continue
        raise ConflictError("opensearch", f"asset {event.key} kept changing while being deleted")


class _Stale(Exception):
    pass


class _Tally:
    """Counts and error reasons of one invocation, per run."""

    def __init__(self) -> None:
        self.runs: dict[tuple[str, str], tuple[Counter[str], list[dict[str, str]]]] = {}

    def add(self, event: events.ObjectEvent, status: str, reason: str | None) -> None:
        run_id = event.run_id or f"tag-upload-{datetime.now(UTC).strftime('%Y%m%d%H')}"
        counts, errors = self.runs.setdefault((run_id, event.trigger), (Counter(), []))
        counts["processed"] += 1
        if status == assets.TAGGED:
            counts["tagged"] += 1
        elif status == assets.FAILED:
            counts["failed"] += 1
            errors.append({"key": event.key, "reason": reason or ""})
        elif status not in ("deleted", "embedded"):
            counts["skipped"] += 1


def _reason(failure: ImageError, content_type: str | None) -> str:
    if not (content_type or "").startswith("image/") and failure.reason_code != "too_large":
        return f"not an image: {content_type or 'unknown content type'} ({failure.reason})"
    return failure.reason
