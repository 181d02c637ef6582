"""Video smart tags: the sampled frames of a video scored like pictures, and where in time each tag applies.

A video is many pictures, not one. The tagger hands a detected video here (``read``): its keyframes
(sampled by the ``Videos`` port, bounded by count) are embedded in one batched embedder call, and
``score_frames`` scores every tag on every frame with the active model's heads. The asset keeps, per
tag, its best confidence over the frames and the time ranges where it clears its threshold: a frame
stands for the time until the next sampled frame (the last one until the end), and adjacent frames
that carry the tag merge into one range. A child tag implies its parent frame by frame, as
``apply_thresholds`` does for a picture.

A video stores no single embedding (``Asset.embedding`` stays None): the tagger's re-tag shortcut
and training's reuse are both for one vector per asset; a video's frames are read again instead (a
bounded number of keyframe decodes). Pure apart from ``read``, which only calls the ports it is given.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import IO

import numpy as np
from numpy.typing import NDArray

from smarttags.core.asset import SmartTag
from smarttags.core.model_registry import Model, apply_thresholds
from smarttags.core.ports import Embedder, ImageFacts, Videos
from smarttags.errors import ImageError

log = logging.getLogger(__name__)

MEDIA = "video"  # Asset.media of a video (pictures: "image")
DECIMALS = 3  # time ranges in milliseconds


@dataclass(frozen=True)
class Frames:
    """A video's sampled frames as the model sees them: their times (seconds, ascending), one embedding
    per frame (rows of ``vectors``) and the video's duration (0.0 when the container does not say)."""

    times: tuple[float, ...]
    vectors: NDArray[np.float32]
    duration: float

    def __post_init__(self) -> None:
        if len(self.times) != len(self.vectors) or not self.times:
            raise ValueError(f"{len(self.times)} frame times for {len(self.vectors)} embeddings")


class Forwarded(Exception):
    """This process cannot sample video and handed the object to the video function's queue."""


def time_ranges(times: Sequence[float], hits: Sequence[bool], duration: float) -> tuple[tuple[float, float], ...]:
    """The ``[start, end]`` spans where ``hits`` holds: frame i covers ``times[i]`` up to the next
    frame's time (the last frame up to ``duration``, or its own time when the duration is unknown);
    consecutive hits merge."""
    ranges: list[tuple[float, float]] = []
    for i, (start, hit) in enumerate(zip(times, hits, strict=True)):
        if not hit:
            continue
        end = times[i + 1] if i + 1 < len(times) else max(duration, start)
        if ranges and ranges[-1][1] == start:  # the previous frame carried it too
            ranges[-1] = (ranges[-1][0], end)
        else:
            ranges.append((start, end))
    return tuple((round(s, DECIMALS), round(e, DECIMALS)) for s, e in ranges)


def score_frames(
    model: Model,
    frames: Frames,
    *,
    rejected: Iterable[str] = (),
    promoted: Iterable[str] = (),
    max_tags: int = 20,
) -> list[SmartTag]:
    """The smart tags of a video: every tag that clears its threshold on some frame (parents implied
    per frame), at its best confidence over the frames, with the time ranges where it applies; promoted
    tags are kept (without ranges unless a frame carries them). Promoted first, then best first."""
    rejected_set, promoted_set = frozenset(rejected), frozenset(promoted) - frozenset(rejected)
    scores = model.heads.scores(frames.vectors)  # (frames, tags): one matrix product for all
    best: dict[str, float] = {}
    carried: dict[str, list[bool]] = {}
    for i, row in enumerate(scores):
        for smart in apply_thresholds(
            model.heads.tags,
            row,
            model.heads.thresholds,
            model_version=model.version,
            rejected=rejected_set,
            max_tags=len(model.heads.tags),
        ):
            best[smart.tag] = max(best.get(smart.tag, 0.0), smart.confidence)
            carried.setdefault(smart.tag, [False] * len(frames.times))[i] = True
    threshold_of = dict(zip(model.heads.tags, (float(t) for t in model.heads.thresholds.tolist()), strict=True))
    chosen = [
        SmartTag(
            tag,
            confidence,
            model.version,
            time_ranges(frames.times, carried[tag], frames.duration),
            threshold=threshold_of.get(tag),
        )
        for tag, confidence in best.items()
    ]
    chosen += [SmartTag(tag, 1.0, model.version) for tag in sorted(promoted_set - best.keys())]
    ranked = sorted(chosen, key=lambda s: (s.tag not in promoted_set, -s.confidence, s.tag))
    return ranked[:max_tags]


@dataclass(frozen=True)
class Read:
    """What reading a video gave the tagger: its facts, its frames (when embedded), or why it failed."""

    facts: ImageFacts | None = None
    frames: Frames | None = None
    failure: ImageError | None = None


def read(
    data: bytes | IO[bytes],
    videos: Videos,
    embedder: Embedder | None,
    *,
    max_pixels: int,
    asset_id: str,
    etag: str,
    forward: Callable[[], None] | None = None,
) -> Read:
    """Sample the video ``data``, keep its poster as the asset's thumbnail and embed its frames in one
    batch (``embedder`` None: a folder not enabled, facts only). Raises ``Forwarded`` when this process
    cannot sample video and ``forward`` handed it on; a file that cannot be read is a ``failure``."""
    if not videos.can_sample and forward is not None:
        forward()
        raise Forwarded
    try:
        size = embedder.input_size if embedder else None
        clip = videos.open(data, max_pixels=max_pixels, size=size)
        videos.keep_poster(clip, asset_id, etag)
        if embedder is None:
            return Read(facts=clip.facts)
        pixels = clip.frames(embedder.input_size)
        vectors = np.asarray(embedder.embed_arrays(pixels), dtype=np.float32)
        return Read(facts=clip.facts, frames=Frames(tuple(clip.times), vectors, clip.duration))
    except ImageError as exc:
        return Read(failure=exc)
