"""The asset, SmartTags' central value: one object of a bucket, what it says about itself, its own tags,
its smart tags and its tagging state.

Values are frozen; a change is a new value (``with_smart_tags``, ``reject``, ...), so the tagger,
ingest and moderation all make the same changes the same way. Only the assets-index adapter
(``adapters.asset_index``) turns an ``Asset`` into an OpenSearch document and back; the mapping in
``search_templates/assets.index.json`` is that document's contract.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING

from smarttags.core.clock import now_iso
from smarttags.core.folders import Folder

if TYPE_CHECKING:
    from smarttags.core.ports import ImageFacts


class TaggingStatus(StrEnum):
    """The tagging state an operator sees on an asset."""

    PENDING = "pending"  # registered, not looked at yet
    TAGGED = "tagged"
    EMBEDDED = "embedded"  # embedded, but no model was active yet
    NOT_ENABLED = "not_enabled"  # its folder does not have Smart Tags enabled
    UNSUPPORTED = "unsupported"  # a file type we do not tag (Office, audio, archives...): the reason names it
    FAILED = "failed"  # a picture that could not be read; retried


class Handled(StrEnum):
    """What an event did when it wrote no tagging state."""

    DELETED = "deleted"
    STALE = "stale"  # the index holds a later event for the key
    DUPLICATE = "duplicate"  # a redelivery of work already done
    GONE = "gone"  # the object was deleted before we read it
    IGNORED = "ignored"  # one of SmartTags' own files
    FORWARDED = "forwarded"  # a video handed to the video function (which counts its outcome)


Outcome = TaggingStatus | Handled

# Done for good on the same bytes: a redelivered event for an asset in one of these states needs no work.
SETTLED = frozenset({TaggingStatus.UNSUPPORTED, TaggingStatus.NOT_ENABLED, TaggingStatus.EMBEDDED})


def run_counter(status: Outcome) -> str:
    """The run counter an outcome adds to (besides "processed"): the one counting rule of every run, so
    that processed is the sum of the outcome counters (``runs.OUTCOMES``)."""
    if status in (TaggingStatus.TAGGED, TaggingStatus.FAILED, TaggingStatus.EMBEDDED, TaggingStatus.UNSUPPORTED):
        return status.value
    if status == Handled.DELETED:
        return "deleted"
    return "skipped"


def asset_id(bucket: str, key: str) -> str:
    """A stable document id; S3 keys may be 1,024 bytes but OpenSearch ids at most 512."""
    return hashlib.sha256(f"{bucket}\x00{key}".encode()).hexdigest()[:40]


def feature_name(tag: str) -> str:
    """A tag id as a ``rank_features`` key: dots would be read as object paths, so they are escaped."""
    return tag.replace("%", "%25").replace(".", "%2E")


@dataclass(frozen=True)
class SmartTag:
    """A tag the model gave the asset. Whether it is promoted is the asset's say, not the tag's."""

    tag: str
    confidence: float
    model_version: str
    # A video's: the [start, end] seconds where the tag clears its threshold (core/video.py).
    ranges: tuple[tuple[float, float], ...] = ()
    # The threshold the model held the confidence against (None for a moderator's tag, or one written
    # before thresholds were kept): how near it is tells how unsure the model was.
    threshold: float | None = None

    @property
    def margin(self) -> float | None:
        """How far the confidence is from the threshold, either side (None without a threshold)."""
        return None if self.threshold is None else abs(self.confidence - self.threshold)


@dataclass(frozen=True)
class Tagging:
    status: TaggingStatus = TaggingStatus.PENDING
    reason: str | None = None
    model_version: str | None = None
    etag: str | None = None  # the bytes this state is about
    tagged_at: str | None = None
    # Who is handling which event now (so a concurrent copy of the event finds it taken), and until when.
    claim: str | None = None
    claim_until: str | None = None
    # The delivery (queue message) whose handling wrote this state: when its answer is lost and the
    # message comes back, the state is its own and counts once.
    done_by: str | None = None
    # The tagging run whose work item wrote this state (None for an upload): a work item of that run
    # that comes again (a redelivery after a crash, a resumed dispatch) finds it done and reads nothing.
    run: str | None = None


@dataclass(frozen=True)
class StoredEmbedding:
    """The backbone's embedding of the asset's bytes; reused while both are unchanged."""

    vector: tuple[float, ...]
    backbone: str  # the backbone's identity: name and weights hash
    etag: str

    def fits(self, etag: str, backbone: str) -> bool:
        return self.etag == etag and self.backbone == backbone


@dataclass(frozen=True)
class Asset:
    bucket: str
    key: str
    etag: str = ""
    size: int = 0
    content_type: str | None = None
    version_id: str | None = None
    sequencer: str | None = None
    modified: str | None = None
    created: str | None = None
    width: int | None = None
    height: int | None = None
    title: str | None = None
    description: str | None = None
    keywords: tuple[str, ...] = ()
    format: str | None = None  # detected from the bytes, e.g. "JPEG", "HEIF"
    decoder: str | None = None  # the library that read it
    media: str | None = None  # "image" or "video"
    duration: float | None = None  # a video's, in seconds
    tags: tuple[str, ...] = ()  # the asset's own taxonomy tags (keywords, manifest, a librarian)
    smart_tags: tuple[SmartTag, ...] = ()  # best first; promoted ones first of all
    promoted: frozenset[str] = frozenset()
    rejected: frozenset[str] = frozenset()
    # The promoted or rejected tags whose verdict came from the review queue (the training report counts them).
    reviewed: frozenset[str] = frozenset()
    # Tags the model scored just below their threshold (not applied: never searched, never shown as the
    # asset's tags), nearest first and bounded; the tag page and the review queue show them.
    near_misses: tuple[SmartTag, ...] = ()
    embedding: StoredEmbedding | None = None
    tagging: Tagging = field(default_factory=Tagging)
    updated_at: str | None = None

    @property
    def id(self) -> str:
        return asset_id(self.bucket, self.key)

    @property
    def folder(self) -> Folder:
        return Folder.of_key(self.bucket, self.key)

    @property
    def smart_ids(self) -> tuple[str, ...]:
        return tuple(t.tag for t in self.smart_tags)

    @property
    def status(self) -> TaggingStatus:
        return self.tagging.status

    def is_promoted(self, tag: str) -> bool:
        return tag in self.promoted

    def open_decisions(self) -> list[SmartTag]:
        """The model's decisions on this asset no moderator has ruled on, with their threshold: the smart
        tags it applied (not promoted) and its near misses, least certain first."""
        applied = [t for t in self.smart_tags if t.threshold is not None and t.tag not in self.promoted]
        decisions = [t for t in (*applied, *self.near_misses) if t.tag not in self.reviewed]
        return sorted(decisions, key=lambda t: (t.margin or 0.0, t.tag))

    @property
    def least_margin(self) -> float | None:
        """The margin of the least certain open decision (None when there is none): the review queue's order."""
        decisions = self.open_decisions()
        return decisions[0].margin if decisions else None

    def with_near_misses(self, near: Iterable[SmartTag]) -> Asset:
        """The model's near misses replace the old ones, less those a moderator ruled on or the asset carries."""
        ruled = self.rejected | self.promoted | set(self.smart_ids)
        kept = [t for t in near if t.tag not in ruled]
        return replace(self, near_misses=tuple(sorted(kept, key=lambda t: (t.margin or 0.0, t.tag))))

    def with_smart_tags(self, tags: Iterable[SmartTag]) -> Asset:
        """The model's tags replace the old ones: rejected ones never appear, promoted ones stay first
        (a promoted tag the model did not give is kept from before)."""
        given = {t.tag: t for t in tags if t.tag not in self.rejected}
        for old in self.smart_tags:
            if old.tag in self.promoted and old.tag not in given:
                given[old.tag] = old
        return replace(self, smart_tags=self._ranked(given.values()))

    def reject(self, tag: str, *, reviewed: bool = False) -> Asset:
        """A moderator removes a smart tag: gone now, and never re-added by a later run."""
        return replace(
            self,
            rejected=self.rejected | {tag},
            promoted=self.promoted - {tag},
            reviewed=self.reviewed | {tag} if reviewed else self.reviewed - {tag},
            smart_tags=tuple(t for t in self.smart_tags if t.tag != tag),
            near_misses=tuple(t for t in self.near_misses if t.tag != tag),
        )

    def promote(self, tag: str, *, model_version: str = "moderator", reviewed: bool = False) -> Asset:
        """A moderator promotes a tag: the asset carries it (even if the model did not) and ranks higher."""
        tags = list(self.smart_tags)
        near = next((t for t in self.near_misses if t.tag == tag), None)
        if tag not in self.smart_ids:
            # A near miss keeps the model's own confidence (the tag page shows where it stood).
            tags.append(near or SmartTag(tag, 1.0, model_version))
        verdicts = self.reviewed | {tag} if reviewed else self.reviewed - {tag}
        promoted = replace(
            self,
            promoted=self.promoted | {tag},
            rejected=self.rejected - {tag},
            reviewed=verdicts,
            near_misses=tuple(t for t in self.near_misses if t.tag != tag),
        )
        return replace(promoted, smart_tags=promoted._ranked(tags))

    def unpromote(self, tag: str) -> Asset:
        unpromoted = replace(self, promoted=self.promoted - {tag}, reviewed=self.reviewed - {tag})
        return replace(unpromoted, smart_tags=unpromoted._ranked(self.smart_tags))

    def with_facts(self, facts: ImageFacts) -> Asset:
        """What the picture says about itself: its size, embedded text, detected format and decoder."""
        return replace(
            self,
            width=facts.width,
            height=facts.height,
            title=facts.title,
            description=facts.description,
            keywords=tuple(facts.keywords),
            format=facts.format or None,
            decoder=facts.decoder or None,
            media=facts.media,
            duration=facts.duration,
        )

    def with_status(
        self,
        status: TaggingStatus,
        *,
        reason: str | None = None,
        model_version: str | None = None,
        etag: str | None = None,
    ) -> Asset:
        tagging = Tagging(
            status=status,
            reason=reason,
            model_version=model_version if model_version is not None else self.tagging.model_version,
            etag=etag if etag is not None else self.tagging.etag,
            tagged_at=now_iso(),
        )
        return replace(self, tagging=tagging)

    def claimed(self, claim: str, until: str) -> Asset:
        return replace(self, tagging=replace(self.tagging, claim=claim, claim_until=until))

    def touched(self) -> Asset:
        return replace(self, updated_at=now_iso())

    def _ranked(self, tags: Iterable[SmartTag]) -> tuple[SmartTag, ...]:
        return tuple(sorted(tags, key=lambda t: (t.tag not in self.promoted, -t.confidence, t.tag)))


def changed(before: Asset, after: Asset) -> bool:
    """Whether a moderation edit changed anything (ignoring timestamps)."""
    return (before.smart_tags, before.promoted, before.rejected, before.reviewed, before.near_misses) != (
        after.smart_tags,
        after.promoted,
        after.rejected,
        after.reviewed,
        after.near_misses,
    )
