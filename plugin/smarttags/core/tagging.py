"""The tagger: one object event in, one asset written. The Lambda handler and the local worker hand it
one event at a time (``entrypoints.batch`` owns the batch and its partial failures); the daily tagging
run feeds it work items through the same queue.

Two halves. ``decide`` and ``apply_reading`` are pure: from plain values (the event, the asset the
index holds, what was read from the object) they say what the event means and what the asset becomes.
``Tagger`` does the effects around them through injected ports: it reads the held asset, the object's
bytes (opened once), the folder flag and the active model, and writes with optimistic concurrency.

Correct under real delivery: a duplicate event changes nothing; an event older than what the index holds
for the key (S3 ``sequencer``) is ignored; writes use ``if_seq_no`` and re-apply on conflict, so a
moderator's concurrent edit survives; rejected tags are never re-added and promoted ones stay promoted.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import numpy as np

from smarttags.core import events, video
from smarttags.core.asset import (
    SETTLED,
    Asset,
    Handled,
    Outcome,
    StoredEmbedding,
    TaggingStatus,
    run_counter,
)
from smarttags.core.clock import now_iso, parse_iso
from smarttags.core.folders import Folder, FolderRegistry
from smarttags.core.ingest import TagResolver, is_internal
from smarttags.core.model_registry import Model, ModelStore, near_misses, score_embedding
from smarttags.core.ports import (
    Assets,
    Embedder,
    ImageFacts,
    ObjectInfo,
    OpenPicture,
    StoredAsset,
    StoreFor,
    Videos,
)
from smarttags.core.runs import RunLog
from smarttags.core.taxonomy import Taxonomy, TaxonomyStore
from smarttags.errors import (
    ConfigError,
    ConflictError,
    CorruptImage,
    ImageError,
    ImageTooLarge,
    NotFound,
    ServiceError,
    SmartTagsError,
    UnsupportedImage,
)
from smarttags.settings import Settings

log = logging.getLogger(__name__)

# How long a loaded model is trusted before the active pointer (one small S3 read) is checked again;
# "no model yet" is never cached, so the first model is used as soon as it is activated.
MODEL_CHECK_SECONDS = 10.0
WRITE_ATTEMPTS = 8
# How long a claim keeps concurrent copies of an event away: longer than one object takes, shorter than
# the queue's visibility timeout (a crashed handler's event comes back after that and takes it over).
CLAIM_SECONDS = 90
# States whose facts and embedding were read from the bytes they name.
_READ_BEFORE = frozenset({TaggingStatus.TAGGED, TaggingStatus.EMBEDDED})
# S3 reads (and decodes) of one batch in flight at once.
READ_THREADS = 8
# A tally remembers this many counted deliveries: far more than come back within a visibility timeout.
DELIVERIES_REMEMBERED = 10_000


@dataclass(frozen=True)
class Result:
    """What handling one event did, for logs and run counts."""

    key: str
    status: Outcome
    reason: str | None = None
    tags: tuple[str, ...] = ()


class RecordFailed(SmartTagsError):
    """The record must be retried (and after N receives lands in the dead-letter queue)."""


# --- the pure half ---------------------------------------------------------------------------------


class Action(StrEnum):
    TAG = "tag"  # read the object and (re)write its asset
    REMOVE = "remove"
    DONE = "done"  # nothing to do: the result says why


@dataclass(frozen=True)
class Decision:
    action: Action
    result: Result | None = None  # set when action is DONE


def decide(event: events.ObjectEvent, held: Asset | None, *, active_model: str | None) -> Decision:
    """What an event means for the asset the index holds (``held``, None when there is none)."""
    if is_internal(event.key):
        # S3 notifications cannot exclude a prefix everywhere: our own models and thumbnails may arrive.
        return Decision(Action.DONE, Result(event.key, Handled.IGNORED, "a SmartTags file, not an asset"))
    if event.key.endswith("/"):
        return Decision(Action.DONE, Result(event.key, Handled.IGNORED, "a folder marker, not an asset"))
    if (
        held
        and event.sequencer
        and held.sequencer
        and not events.sequencer_newer(event.sequencer, held.sequencer)
        and not events.same_sequencer(event.sequencer, held.sequencer)
    ):
        reason = f"index holds a later event ({held.sequencer})"
        return Decision(Action.DONE, Result(event.key, Handled.STALE, reason))
    # This run's work item came again (a redelivery after a crash, the page a resumed dispatch sent
    # again): its outcome stands and is counted (the run counts an item once); nothing is read.
    own_run = event.action == events.TAG and event.run_id and held and held.tagging.run == event.run_id
    if own_run and held and already_done(held, active_model):
        return Decision(Action.DONE, Result(event.key, held.status, held.tagging.reason, held.smart_ids))
    if event.action == events.REMOVED:
        return Decision(Action.REMOVE)
    # No sequencer (some S3-compatible stores send none): the same bytes, done, are a redelivery.
    unordered = event.action == events.CREATED and not event.sequencer and event.etag
    if held and unordered and held.tagging.etag == event.etag and already_done(held, active_model):
        return Decision(Action.DONE, Result(event.key, Handled.DUPLICATE))
    if held and event.sequencer and held.sequencer:
        if events.same_sequencer(event.sequencer, held.sequencer):
            # A redelivery: nothing to do once done; a failure or a model change since is done again.
            if already_done(held, active_model):
                return Decision(Action.DONE, Result(event.key, Handled.DUPLICATE))
        elif not events.sequencer_newer(event.sequencer, held.sequencer):
            reason = f"index holds a later event ({held.sequencer})"
            return Decision(Action.DONE, Result(event.key, Handled.STALE, reason))
    return Decision(Action.TAG)


def already_done(held: Asset, active_model: str | None) -> bool:
    """A redelivered event needs no work unless the active model changed since the asset was tagged. A
    file that could not be read is a permanent failure of those bytes: recorded once, not redone."""
    if held.status == TaggingStatus.TAGGED:
        return active_model is None or held.tagging.model_version == active_model
    if held.status == TaggingStatus.FAILED:
        return held.tagging.etag == held.etag
    return held.status in SETTLED


@dataclass(frozen=True)
class Reading:
    """What was read for one event, as plain values: the object's S3 facts, the picture's facts (or why
    it could not be read), the asset's own tags among its keywords, its embedding and its folder flag."""

    info: ObjectInfo
    sequencer: str | None
    enabled: bool
    facts: ImageFacts | None = None
    failure: ImageError | None = None
    own_tags: tuple[str, ...] = ()
    embedding: StoredEmbedding | None = None
    frames: video.Frames | None = None  # a video's sampled frames, embedded (core/video.py)


class Stale(Exception):
    """The index holds a later event for the key than the one being applied."""


def apply_reading(asset: Asset, reading: Reading, model: Model | None, *, max_tags: int) -> Asset:
    """The asset after this reading (pure). Raises ``Stale`` when ``asset`` holds a later event."""
    if (
        reading.sequencer
        and asset.sequencer
        and not events.sequencer_newer(reading.sequencer, asset.sequencer)
        and not events.same_sequencer(reading.sequencer, asset.sequencer)
    ):
        raise Stale(asset.sequencer)
    info, facts = reading.info, reading.facts
    asset = replace(
        asset,
        etag=info.etag,
        size=info.size,
        content_type=info.content_type or asset.content_type,
        version_id=info.version_id or asset.version_id,
        modified=info.last_modified.isoformat() if info.last_modified else now_iso(),
        sequencer=reading.sequencer or asset.sequencer,
        tags=tuple(sorted({*asset.tags, *reading.own_tags})),
    )
    if facts is not None:
        asset = asset.with_facts(facts)
    if reading.embedding is not None:
        asset = replace(asset, embedding=reading.embedding)
    etag = info.etag
    if reading.failure is not None:
        status, reason = classify_failure(reading.failure, info.content_type)
        return asset.with_status(status, reason=reason, etag=etag)
    if not reading.enabled:
        return asset.with_status(
            TaggingStatus.NOT_ENABLED, reason="Smart Tags are not enabled for this folder", etag=etag
        )
    if model is not None and reading.frames is not None:  # a video: every frame scored, with time ranges
        scored = video.score_frames(
            model, reading.frames, rejected=asset.rejected, promoted=asset.promoted, max_tags=max_tags
        )
        # A video's near miss: a tag whose best frame fell just short.
        best = model.heads.scores(reading.frames.vectors).max(axis=0)
        near = near_misses(
            model,
            dict(zip(model.heads.tags, (float(v) for v in best.tolist()), strict=True)),
            chosen=[t.tag for t in scored],
            rejected=asset.rejected,
        )
        return (
            asset.with_smart_tags(scored)
            .with_near_misses(near)
            .with_status(TaggingStatus.TAGGED, model_version=model.version, etag=etag)
        )
    if model is None or reading.embedding is None:
        return asset.with_status(TaggingStatus.EMBEDDED, reason="no active model yet", etag=etag)
    chosen, scores = score_embedding(
        model,
        np.asarray(reading.embedding.vector, dtype=np.float32),
        rejected=asset.rejected,
        promoted=asset.promoted,
        max_tags=max_tags,
    )
    near = near_misses(model, scores, chosen=[t.tag for t in chosen], rejected=asset.rejected)
    return (
        asset.with_smart_tags(chosen)
        .with_near_misses(near)
        .with_status(TaggingStatus.TAGGED, model_version=model.version, etag=etag)
    )


def classify_failure(failure: ImageError, declared_type: str | None) -> tuple[TaggingStatus, str]:
    """A file type we do not tag is ``unsupported`` (recorded, never retried); a picture we could not
    read is ``failed`` (retried, then dead-lettered). The detected type decides; the uploader's declared
    Content-Type only names a file whose bytes match no known format at all."""
    if isinstance(failure, UnsupportedImage):
        return TaggingStatus.UNSUPPORTED, f"unsupported type {failure.content_type or 'unknown'} ({failure.reason})"
    unknown_bytes = isinstance(failure, CorruptImage) and failure.content_type is None
    if unknown_bytes and not (declared_type or "").startswith("image/"):
        return TaggingStatus.UNSUPPORTED, f"not an image: {declared_type or 'unknown content type'} ({failure.reason})"
    return TaggingStatus.FAILED, failure.reason


# --- the effects ---------------------------------------------------------------------------------


class Tagger:
    def __init__(
        self,
        settings: Settings,
        assets: Assets,
        stores: StoreFor,
        *,
        embedder: Callable[[], Embedder],
        open_picture: OpenPicture,
        models: ModelStore,
        taxonomy: TaxonomyStore,
        folders: FolderRegistry,
        videos: Videos | None = None,
        forward_video: Callable[[events.ObjectEvent], None] | None = None,
    ) -> None:
        self._settings = settings
        self._videos = videos  # None: videos are recorded as unsupported
        self._forward_video = forward_video  # where videos go when this process cannot sample them
        self._assets = assets
        self._stores = stores
        self._embedder_factory = embedder
        self._open_picture = open_picture
        self._embedder: Embedder | None = None
        self._folders = folders
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
        if model is not None and model is not cached:
            self._check_backbone(model)
        with self._lock:
            self._model = (time.monotonic(), model)
        return model

    def _check_backbone(self, model: Model) -> None:
        """A model's heads only read embeddings of the backbone it was trained on: another one's would
        be scored as if they were (silently wrong tags), or not fit at all. Every message then fails
        with this one line (retried, then dead-lettered: nothing is lost) until the setting is fixed."""
        trained, used = model.manifest.backbone_id, self.embedder.backbone_id  # named from the checksum file
        if trained == used:
            return
        name, used_name = trained.split(":", 1)[0], used.split(":", 1)[0]
        if name != used_name:
            raise ConfigError(
                "SMARTTAGS_BACKBONE__NAME",
                f"the active model {model.version} was trained on {name}, this process embeds with {used_name}: "
                f"set it to {name}, or train and activate a model on {used_name}",
            )
        raise ConfigError(
            "SMARTTAGS_BACKBONE__ONNX_FILE",
            f"the active model {model.version} was trained on {trained}, this process's backbone file is "
            f"{used}: deploy the file the model was trained on, or train and activate a model on this one",
        )

    def _resolver(self) -> TagResolver:
        taxonomy = self._taxonomy.load()  # cached for a short while by the store
        with self._lock:
            if self._tag_resolver is None or self._tag_resolver[0] is not taxonomy:
                self._tag_resolver = (taxonomy, TagResolver(taxonomy))
            return self._tag_resolver[1]

    def forget_model(self) -> None:
        with self._lock:
            self._model = None

    # --- one event ---

    def handle(self, event: events.ObjectEvent, *, owner: str | None = None) -> Result:
        """Handle one event; raises a ServiceError when a dependency fails (the event is retried).
        ``owner`` names this delivery (the queue message): a concurrent copy of the same event from
        another delivery finds it claimed and does nothing; a redelivery of this one takes it over."""
        owner = owner or uuid.uuid4().hex
        stored = self._assets.get(_id(event)) if not is_internal(event.key) else None
        decision = decide(event, stored.asset if stored else None, active_model=self._active_for(stored, event))
        if decision.action == Action.DONE:
            return _done(decision, stored, owner)
        if decision.action == Action.REMOVE:
            try:
                self._stores(event.bucket).head(event.key)
            except NotFound:
                return self._remove(event, stored)
            # The key still has a current object (a non-current version or a delete marker's undo
            # was removed, or it was re-uploaded since): the asset follows what is there now.
        claimed = self._claim(event, stored, owner)
        if isinstance(claimed, Result):
            return claimed
        try:
            reading = self._embedded([self._read(event, claimed.asset, self._enabled([event])[0])])[0]
        except NotFound:
            self._release(claimed)
            return Result(event.key, Handled.GONE, "the object no longer exists")
        except video.Forwarded:
            self._release(claimed)
            return Result(event.key, Handled.FORWARDED, "sent to the video function")
        except BaseException:
            self._release(claimed)  # a retry of this event must not find it claimed by no one
            raise
        model = self.active_model() if reading.enabled and reading.failure is None else None
        try:
            asset = self._write(event, claimed, reading, model, owner)
        except Stale as stale:
            return Result(event.key, Handled.STALE, f"index holds a later event ({stale})")
        return Result(event.key, asset.status, asset.tagging.reason, asset.smart_ids)

    def handle_many(self, deliveries: Sequence[tuple[events.ObjectEvent, str]]) -> list[Result | Exception]:
        """Handle a batch of (event, delivery) pairs with the guarantees of ``handle``, in a few round
        trips for all: one multi-get, one bulk of claims, the S3 reads in parallel, one embedder call,
        one bulk of writes. Each answer is its own: a result, or the error of that event alone (a
        conflicting write is redone one at a time; deletes, our own files and a key named twice in the
        batch go one at a time, in order). A long batch goes ``backbone.batch_size`` events at a time, so
        the bytes and pixels held at once stay bounded."""
        step = self._settings.backbone.batch_size
        if len(deliveries) > step:
            return [
                a
                for start in range(0, len(deliveries), step)
                for a in self.handle_many(deliveries[start : start + step])
            ]
        answers: list[Result | Exception | None] = [None] * len(deliveries)
        ids = [_id(event) for event, _ in deliveries]
        seen = Counter(ids)
        batched = [
            i
            for i, (event, _) in enumerate(deliveries)
            if event.action != events.REMOVED and not is_internal(event.key) and seen[ids[i]] == 1
        ]
        alone = sorted(set(range(len(deliveries))) - set(batched))
        try:
            claimed, retag = self._claim_many(deliveries, batched, [ids[i] for i in batched], answers, alone)
            self._retag_many(deliveries, retag, answers, alone)
            self._tag_many(deliveries, claimed, answers)
        except SmartTagsError as exc:  # a batch-wide request failed: each event not answered yet is retried
            answers = [exc if answer is None and i not in alone else answer for i, answer in enumerate(answers)]
        for i in sorted(alone):
            event, owner = deliveries[i]
            try:
                answers[i] = self.handle(event, owner=owner)
            except Exception as exc:  # the caller tells a service failure from a bug
                answers[i] = exc
        return [answer if answer is not None else RecordFailed("not handled") for answer in answers]

    def _claim_many(
        self,
        deliveries: Sequence[tuple[events.ObjectEvent, str]],
        batched: list[int],
        ids: list[str],
        answers: list[Result | Exception | None],
        alone: list[int],
    ) -> tuple[list[tuple[int, StoredAsset]], list[tuple[int, StoredAsset]]]:
        """Decide every event from one multi-get and claim those that read the object (one bulk).
        Returns the claimed ones and the re-tags that only run the heads (``_retag_many``: no claim)."""
        claims: list[tuple[int, Asset, StoredAsset | None]] = []
        retag: list[tuple[int, StoredAsset]] = []
        maybe: list[tuple[int, StoredAsset]] = []
        pending: list[tuple[int, StoredAsset | None]] = []
        for i, stored in zip(batched, self._assets.get_many(ids), strict=True):
            event, owner = deliveries[i]
            decision = decide(event, stored.asset if stored else None, active_model=self._active_for(stored, event))
            if decision.action == Action.DONE:
                answers[i] = _done(decision, stored, owner)
            elif stored is not None and self._heads_only(event, stored.asset):
                maybe.append((i, stored))
            else:
                pending.append((i, stored))
        if maybe:  # the heads alone where the folder is enabled (its flags in one request)
            flags = self._enabled([deliveries[i][0] for i, _ in maybe])
            for (i, stored), enabled in zip(maybe, flags, strict=True):
                (retag if enabled else pending).append((i, stored))
        for i, stored in sorted(pending, key=lambda pair: pair[0]):
            event, owner = deliveries[i]
            claim = _claim_of(event, stored.asset if stored else None, owner)
            if isinstance(claim, Result):
                answers[i] = claim
            else:
                claims.append((i, claim, stored))
        claimed: list[tuple[int, StoredAsset]] = []
        written = self._assets.put_many([(claim, stored) for _, claim, stored in claims]) if claims else []
        for (i, _, _), answer in zip(claims, written, strict=True):
            if isinstance(answer, ConflictError):
                alone.append(i)  # someone wrote in between: this one goes the careful way
            elif isinstance(answer, ServiceError):
                answers[i] = answer
            else:
                claimed.append((i, answer))
        return claimed, retag

    def _heads_only(self, event: events.ObjectEvent, held: Asset) -> bool:
        """A re-tag (a model change, a backfill) of bytes this backbone embedded, not being read by
        another delivery now: the heads alone run again, if its folder is enabled."""
        if event.action != events.TAG or held.embedding is None or held.status not in _READ_BEFORE:
            return False
        if not held.embedding.fits(held.etag, self.embedder.backbone_id):  # named from the checksum file
            return False
        until = parse_iso(held.tagging.claim_until) if held.tagging.claim else None
        return until is None or until <= datetime.now(UTC)  # else someone reads it now: the careful path

    def _retag_many(
        self,
        deliveries: Sequence[tuple[events.ObjectEvent, str]],
        retag: list[tuple[int, StoredAsset]],
        answers: list[Result | Exception | None],
        alone: list[int],
    ) -> None:
        """Re-tags whose stored embedding fits the asset's bytes and the backbone: the heads of the active
        model and one bulk of writes, each over the version the multi-get read (an edit since is redone
        one at a time). No S3 request: the asset's ETag is the index's, kept current by the object's own
        events, so bytes changed since are re-read by their event (which is newer); no claim (a copy of
        the item doing this too loses the conditional write); no image read, no inference."""
        if not retag:
            return
        model = self.active_model()
        max_tags = self._settings.tagging.max_tags_per_asset
        writes: list[tuple[int, Asset, StoredAsset]] = []
        for i, stored in retag:
            event, owner = deliveries[i]
            held = stored.asset
            info = ObjectInfo(
                held.bucket,
                held.key,
                held.etag,
                held.size,
                last_modified=parse_iso(held.modified),
                content_type=held.content_type,
                version_id=held.version_id,
            )
            reading = Reading(info=info, sequencer=None, enabled=True, embedding=held.embedding)
            writes.append((i, _written(held, reading, model, max_tags, owner, event), stored))
        written = self._assets.put_many([(asset, stored) for _, asset, stored in writes])
        for (i, asset, _), answer in zip(writes, written, strict=True):
            if isinstance(answer, ConflictError):
                alone.append(i)  # a moderator's edit (or a copy of this item) since the multi-get
            elif isinstance(answer, ServiceError):
                answers[i] = answer
            else:
                answers[i] = Result(asset.key, asset.status, asset.tagging.reason, asset.smart_ids)

    def _tag_many(
        self,
        deliveries: Sequence[tuple[events.ObjectEvent, str]],
        claimed: list[tuple[int, StoredAsset]],
        answers: list[Result | Exception | None],
    ) -> None:
        if not claimed:
            return
        read: list[tuple[int, StoredAsset, tuple[Reading, np.ndarray | None]]] = []
        try:
            enabled = self._enabled([deliveries[i][0] for i, _ in claimed])
        except BaseException:
            for _, claim in claimed:
                self._release(claim)
            raise
        with ThreadPoolExecutor(max_workers=min(READ_THREADS, len(claimed))) as pool:
            futures = [
                (i, claim, pool.submit(self._read, deliveries[i][0], claim.asset, flag))
                for (i, claim), flag in zip(claimed, enabled, strict=True)
            ]
        for i, claim, future in futures:
            try:
                read.append((i, claim, future.result()))
            except NotFound:
                self._release(claim)
                answers[i] = Result(deliveries[i][0].key, Handled.GONE, "the object no longer exists")
            except video.Forwarded:
                self._release(claim)
                answers[i] = Result(deliveries[i][0].key, Handled.FORWARDED, "sent to the video function")
            except Exception as exc:  # answered for this event alone
                self._release(claim)  # a retry of this event must not find it claimed by no one
                answers[i] = exc
        try:
            readings = self._embedded([r for _, _, r in read])
        except BaseException:
            for _, claim, _ in read:
                self._release(claim)
            raise
        model = self.active_model() if any(r.enabled and r.failure is None for r in readings) else None
        max_tags = self._settings.tagging.max_tags_per_asset
        writes: list[tuple[int, Asset, StoredAsset, Reading]] = []
        for (i, claim, _), reading in zip(read, readings, strict=True):
            event, owner = deliveries[i]
            use = model if reading.enabled and reading.failure is None else None
            try:
                writes.append((i, _written(claim.asset, reading, use, max_tags, owner, event), claim, reading))
            except Stale as stale:
                answers[i] = Result(event.key, Handled.STALE, f"index holds a later event ({stale})")
        written = self._assets.put_many([(asset, claim) for _, asset, claim, _ in writes])
        for (i, asset, _, reading), answer in zip(writes, written, strict=True):
            event, owner = deliveries[i]
            if isinstance(answer, ConflictError):  # a moderator's edit: re-apply on top of it
                try:
                    use = model if reading.enabled and reading.failure is None else None
                    asset = self._write(event, self._assets.get(_id(event)), reading, use, owner)
                except Stale as stale:
                    answers[i] = Result(event.key, Handled.STALE, f"index holds a later event ({stale})")
                    continue
                except SmartTagsError as exc:
                    answers[i] = exc
                    continue
            elif isinstance(answer, ServiceError):
                answers[i] = answer
                continue
            answers[i] = Result(event.key, asset.status, asset.tagging.reason, asset.smart_ids)

    def _active_for(self, stored: StoredAsset | None, event: events.ObjectEvent) -> str | None:
        """The active model's version, read only when a duplicate check needs it."""
        if stored and stored.asset.status == TaggingStatus.TAGGED and (event.sequencer or event.etag):
            model = self.active_model()
            return model.version if model else None
        return None

    def _claim(self, event: events.ObjectEvent, stored: StoredAsset | None, owner: str) -> StoredAsset | Result:
        """Mark the asset as being handled for this event (one conditional write), so that concurrent
        deliveries of the same event do the work once. Returns the claimed asset, or the result for a
        copy that lost: another delivery holds the claim, or finished the work meanwhile."""
        for attempt in range(WRITE_ATTEMPTS):
            held = stored.asset if stored else None
            if attempt:  # someone wrote in between: what does the event mean now?
                decision = decide(event, held, active_model=self._active_for(stored, event))
                if decision.action == Action.DONE and decision.result is not None:
                    return decision.result
            claim = _claim_of(event, held, owner)
            if isinstance(claim, Result):
                return claim
            try:
                return self._assets.put(claim, expected=stored)
            except ConflictError:
                stored = self._assets.get(_id(event))
        raise ConflictError("opensearch", f"asset {event.key} kept changing; gave up after {WRITE_ATTEMPTS} attempts")

    def _release(self, claimed: StoredAsset) -> None:
        """Best effort: drop our claim after a failure (else it expires by itself)."""
        released = replace(claimed.asset, tagging=replace(claimed.asset.tagging, claim=None, claim_until=None))
        try:
            self._assets.put(released, expected=claimed)
        except SmartTagsError as exc:
            log.debug("claim on %s left to expire: %s", claimed.asset.key, exc)

    def _enabled(self, batch: Sequence[events.ObjectEvent]) -> list[bool]:
        """Whether smart tags are on for each event's folder: one request for the whole batch."""
        if self._settings.tagging.ignore_smart_tag_flag:
            return [True] * len(batch)
        return self._folders.are_enabled([(event.bucket, event.key) for event in batch])

    def _read(self, event: events.ObjectEvent, held: Asset | None, enabled: bool) -> tuple[Reading, np.ndarray | None]:
        """Everything the decision needs from outside: the bytes (opened once), the embedding (the
        stored one while bytes and backbone are unchanged); ``enabled`` is the folder's flag. Returns the
        reading and, when it needs a new embedding, the pixels to embed (``_embedded`` embeds a batch of
        them at once)."""
        store = self._stores(event.bucket)
        if event.action == events.TAG and enabled and held and held.embedding and held.status in _READ_BEFORE:
            # A re-tag (a model change, a backfill) of bytes embedded before by this backbone: only the
            # heads run again. One HEAD proves the bytes are the same; no image read, no inference.
            info = store.head(event.key)
            if held.embedding.fits(info.etag, self.embedder.backbone_id):
                return Reading(info=info, sequencer=event.sequencer, enabled=enabled, embedding=held.embedding), None
        try:
            data, info = store.read(event.key, max_bytes=self._settings.backbone.max_object_bytes)
        except ImageTooLarge as exc:  # refused before download, recorded like any other refusal
            return Reading(info=store.head(event.key), sequencer=event.sequencer, enabled=enabled, failure=exc), None
        reading = Reading(info=info, sequencer=event.sequencer, enabled=enabled)
        if self._videos is not None and self._videos.is_video(data):  # many frames, not one picture
            forward = self._forward_video
            read = video.read(
                data,
                self._videos,
                self.embedder if enabled else None,
                max_pixels=self._settings.backbone.max_pixels,
                asset_id=_id(event),
                etag=info.etag,
                forward=(lambda: forward(event)) if forward else None,
            )
            return replace(reading, facts=read.facts, frames=read.frames, failure=read.failure), None
        try:
            embedder = self.embedder if enabled else None
            size = embedder.input_size if embedder else None  # vector and RAW files are drawn at it, once
            picture = self._open_picture(data, max_pixels=self._settings.backbone.max_pixels, size=size)
            facts = picture.facts
            # Keywords that name taxonomy tags are the asset's own tags, as `smarttags ingest` reads them.
            own = tuple(self._resolver().resolve(facts.keywords)[0]) if facts.keywords else ()
            reading = replace(reading, facts=facts, own_tags=own)
            if embedder:
                if held and held.embedding and held.embedding.fits(info.etag, embedder.backbone_id):
                    return replace(reading, embedding=held.embedding), None
                return reading, picture.pixels(embedder.input_size)
        except ImageError as exc:
            reading = replace(reading, failure=exc)
        return reading, None

    def _embedded(self, read: Sequence[tuple[Reading, np.ndarray | None]]) -> list[Reading]:
        """The readings with their new embeddings, from one embedder call for all of them."""
        waiting = [pixels for _, pixels in read if pixels is not None]
        if not waiting:
            return [reading for reading, _ in read]
        embedder = self.embedder
        vectors = iter(embedder.embed_arrays(waiting))
        log.info("embedded %d pictures in one call", len(waiting))
        return [
            reading
            if pixels is None
            else replace(
                reading,
                embedding=StoredEmbedding(
                    tuple(float(v) for v in next(vectors)), embedder.backbone_id, reading.info.etag
                ),
            )
            for reading, pixels in read
        ]

    def _write(
        self, event: events.ObjectEvent, stored: StoredAsset | None, reading: Reading, model: Model | None, owner: str
    ) -> Asset:
        max_tags = self._settings.tagging.max_tags_per_asset
        for _ in range(WRITE_ATTEMPTS):
            base = stored.asset if stored else Asset(event.bucket, event.key, created=now_iso())
            asset = _written(base, reading, model, max_tags, owner, event)
            try:
                self._assets.put(asset, expected=stored)
                return asset
            except ConflictError:
                stored = self._assets.get(_id(event))  # a moderator's edit: re-apply on top of it
        raise ConflictError("opensearch", f"asset {event.key} kept changing; gave up after {WRITE_ATTEMPTS} attempts")

    def _remove(self, event: events.ObjectEvent, stored: StoredAsset | None) -> Result:
        for _ in range(WRITE_ATTEMPTS):
            if stored is None:
                return Result(event.key, Handled.DELETED, "already absent")
            held = stored.asset.sequencer
            if event.sequencer and held and not events.sequencer_newer(event.sequencer, held):
                return Result(event.key, Handled.STALE, f"index holds a later event ({held})")
            try:
                self._assets.delete(stored)
                return Result(event.key, Handled.DELETED)
            except ConflictError:
                stored = self._assets.get(_id(event))
        raise ConflictError("opensearch", f"asset {event.key} kept changing while being deleted")


def _id(event: events.ObjectEvent) -> str:
    return Asset(event.bucket, event.key).id


def _done(decision: Decision, stored: StoredAsset | None, owner: str) -> Result:
    assert decision.result is not None
    if decision.result.status == Handled.DUPLICATE and stored and stored.asset.tagging.done_by == owner:
        # This very message wrote the state and its answer was lost (a cut connection): the outcome
        # is its own and was never counted. It counts now (the tally skips a delivery it counted).
        done = stored.asset
        return Result(done.key, done.status, done.tagging.reason, done.smart_ids)
    return decision.result


def _claim_of(event: events.ObjectEvent, held: Asset | None, owner: str) -> Asset | Result:
    """The asset claimed for this event by ``owner``, or the result when another delivery of the same
    event holds a fresh claim."""
    event_id = "|".join(str(part or "") for part in (event.sequencer, event.version_id, event.run_id, event.etag))
    now = datetime.now(UTC)
    if held and held.tagging.claim:
        claim_event, _, claim_owner = held.tagging.claim.rpartition("@")
        until = parse_iso(held.tagging.claim_until)
        if claim_event == event_id and claim_owner != owner and until is not None and until > now:
            return Result(event.key, Handled.DUPLICATE, "another delivery of this event is handling it")
    base = held or Asset(event.bucket, event.key, created=now_iso())
    return base.claimed(f"{event_id}@{owner}", (now + timedelta(seconds=CLAIM_SECONDS)).isoformat())


def _written(
    base: Asset, reading: Reading, model: Model | None, max_tags: int, owner: str, event: events.ObjectEvent
) -> Asset:
    """What the tagger writes: the reading applied, stamped with the delivery and the run that wrote it."""
    asset = apply_reading(base, reading, model, max_tags=max_tags).touched()
    return replace(asset, tagging=replace(asset.tagging, done_by=owner, run=event.run_id))


class RunTally:
    """The counts and error reasons of a batch, per run: written once per run and batch (not per object:
    every object would contend for the same run document). Upload events count in an hourly upload
    run; work items in the run that dispatched them. Each counted item goes with a key (``item_key``),
    so the run counts an item it counted lately once, whichever process counts it again."""

    def __init__(self) -> None:
        self.runs: dict[tuple[str, str], tuple[Counter[str], list[dict[str, str]]]] = {}
        self.items: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.folders: dict[tuple[str, str], set[str]] = {}
        # Writes that failed, each kept whole with its batch id until it lands.
        self.pending: list[_Pending] = []
        # The deliveries counted lately: a message that comes back after its outcome was counted (its
        # delete failed, or a later event of it did) finds its own state again and must not count twice.
        self.counted: OrderedDict[tuple[str, str, str, str], None] = OrderedDict()

    def add(
        self, event: events.ObjectEvent, status: Outcome, reason: str | None, *, delivery: str | None = None
    ) -> None:
        if status in (Handled.IGNORED, Handled.DUPLICATE, Handled.FORWARDED):
            return  # our own files and repeated deliveries are no new work: the run counts each object once
        if delivery is not None:
            seen = (delivery, event.bucket, event.key, event.sequencer or event.etag or "")
            if seen in self.counted:
                return
            self.counted[seen] = None
            if len(self.counted) > DELIVERIES_REMEMBERED:
                self.counted.popitem(last=False)
        run_id = event.run_id or f"tag-upload-{datetime.now(UTC).strftime('%Y%m%d%H')}"
        counts, errors = self.runs.setdefault((run_id, event.trigger), (Counter(), []))
        if event.run_id is None:  # an upload run: every folder above the object finds it
            self.folders.setdefault((run_id, event.trigger), set()).update(_ancestors(event.bucket, event.key))
        counts["processed"] += 1
        counter = run_counter(status)
        counts[counter] += 1
        error = {"key": event.key, "reason": reason or ""} if status == TaggingStatus.FAILED else None
        if error:
            errors.append(error)
        self.items.setdefault((run_id, event.trigger), []).append(
            {"id": item_key(event, delivery), "counter": counter, "error": error}
        )

    def flush(self, runs: RunLog) -> None:
        """Write the counts. A write that fails (OpenSearch down) is kept whole, with its batch id, and
        tried again with the next flush of this tally: the run applies a batch id once, so a write whose
        answer was lost is not counted twice, and nothing is lost (the assets are written already)."""
        for run, (counts, errors) in self.runs.items():
            folders = sorted(self.folders.get(run, ()))
            items = self.items.get(run, [])
            self.pending.append(_Pending(run, dict(counts), list(errors), folders, uuid.uuid4().hex, items))
        self.runs.clear()
        self.items.clear()
        self.folders.clear()
        kept = []
        for item in self.pending:
            (run_id, trigger) = item.run
            try:
                runs.add_counts(
                    run_id,
                    item.counts,
                    item.errors,
                    create_as=(events.TAG, trigger),
                    folders=item.folders,
                    batch_id=item.batch_id,
                    items=item.items,
                )
            except ServiceError as exc:
                log.warning("counting %d objects in run %s later: %s", item.counts.get("processed", 0), run_id, exc)
                kept.append(item)
        self.pending = kept


@dataclass(frozen=True)
class _Pending:
    run: tuple[str, str]
    counts: dict[str, int]
    errors: list[dict[str, str]]
    folders: list[str]
    batch_id: str
    items: list[dict[str, Any]]


def item_key(event: events.ObjectEvent, delivery: str | None) -> str:
    """What a run counts once: a work item's asset (its run sends each asset once, but a resumed dispatch
    or a redelivery may bring it again), an upload's event (the same S3 event, delivered again)."""
    if event.run_id is not None:
        identity = f"{event.run_id}\x00{_id(event)}"
    else:
        parts = (delivery or uuid.uuid4().hex, event.bucket, event.key, event.sequencer or event.etag or "")
        identity = "\x00".join(parts)
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


def _ancestors(bucket: str, key: str) -> list[str]:
    """The URIs of every folder an object is in: s3://b/, s3://b/a/, s3://b/a/b/ for a/b/c.jpg."""
    parts = key.split("/")[:-1]
    return [Folder(bucket, "".join(f"{p}/" for p in parts[:depth])).uri for depth in range(len(parts) + 1)]


def handle_logged(
    tagger: Tagger, event: events.ObjectEvent, tally: RunTally, receive_count: int = 1, *, owner: str | None = None
) -> Result:
    """Handle one event, log and count its result. A failure of a service is logged and raised (the
    event is retried), and counted in no run: only its final outcome counts, once."""
    try:
        result = tagger.handle(event, owner=owner)
    except SmartTagsError as exc:
        log.warning("s3://%s/%s will be retried (receive %d): %s", event.bucket, event.key, receive_count, exc)
        raise
    return record(event, result, tally, owner=owner)


def record(event: events.ObjectEvent, result: Result, tally: RunTally, *, owner: str | None = None) -> Result:
    """Log and count an event's final result."""
    log.info("s3://%s/%s: %s%s", event.bucket, event.key, result.status, f" ({result.reason})" if result.reason else "")
    tally.add(event, result.status, result.reason, delivery=owner)
    return result
