"""Video smart tags in the core (core/video.py): time ranges, per-frame scoring, and the tagger's video
branch on the fakes (sampling, forwarding, failures) — no PyAV, no services."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from smarttags import settings as settings_mod
from smarttags.adapters.asset_index import AssetIndex, from_document, to_document
from smarttags.core import events, video
from smarttags.core.asset import Asset, Handled, SmartTag, TaggingStatus
from smarttags.core.folders import Folder, FolderRegistry
from smarttags.core.heads import Heads, TagFit
from smarttags.core.model_registry import Manifest, Model, ModelStore
from smarttags.core.tagging import RunTally, Tagger
from smarttags.core.taxonomy import TaxonomyStore
from smarttags.errors import CorruptImage, ImageTooLarge, UnsupportedImage

from tests.core.test_tagging_unit import BUCKET, HEADS, PixelEmbedder, open_picture
from tests.fakes import FakeIndex, FakeStore


def model_of(heads: Heads) -> Model:
    manifest = Manifest("v1", "fake:1", "0" * 64, list(heads.tags), {}, {}, "t", "2026-01-01T00:00:00+00:00")
    return Model(manifest, heads)


# Axis 0 is "red", axis 1 is "blue"; "shapes:red/dark" is a child of "shapes:red" seen on axis 2.
THREE = Heads(
    ("shapes:red", "shapes:blue", "shapes:red/dark"),
    np.array([[20.0, 0, 0], [0, 20.0, 0], [0, 0, 20.0], [0, 0, 0]], np.float32),
    np.array([-10.0, -10.0, -10.0], np.float32),
    np.array([0.5, 0.5, 0.5], np.float32),
)


def frames(pattern: str, times: list[float], duration: float) -> video.Frames:
    """'R' a red frame, 'B' a blue one, 'D' a dark red one (its child tag), '.' nothing."""
    axis = {"R": 0, "B": 1, "D": 2, ".": 3}
    vectors = np.stack([np.eye(4, dtype=np.float32)[axis[c]] for c in pattern])
    return video.Frames(tuple(times), vectors, duration)


def test_time_ranges_merge_adjacent_frames_and_end_at_the_next_sample_or_the_duration() -> None:
    times = [0.0, 5.0, 10.0, 15.0]
    assert video.time_ranges(times, [True, True, False, True], 17.5) == ((0.0, 10.0), (15.0, 17.5))
    assert video.time_ranges(times, [False, True, False, False], 17.5) == ((5.0, 10.0),)
    assert video.time_ranges(times, [False] * 4, 17.5) == ()
    # An unknown duration (0.0) ends the last range at its own frame's time.
    assert video.time_ranges([0.0, 2.0], [False, True], 0.0) == ((2.0, 2.0),)
    assert video.time_ranges([0.0], [True], 3.33333) == ((0.0, 3.333),)


def test_every_tag_is_scored_per_frame_with_its_best_confidence_and_ranges() -> None:
    clip = frames("RRB.R", [0.0, 5.0, 10.0, 15.0, 20.0], 24.0)
    chosen = {t.tag: t for t in video.score_frames(model_of(THREE), clip)}
    assert set(chosen) == {"shapes:red", "shapes:blue"}
    assert chosen["shapes:red"].ranges == ((0.0, 10.0), (20.0, 24.0))
    assert chosen["shapes:blue"].ranges == ((10.0, 15.0),)
    assert chosen["shapes:red"].confidence > 0.99 and chosen["shapes:red"].model_version == "v1"


def test_a_child_implies_its_parent_frame_by_frame() -> None:
    chosen = {t.tag: t for t in video.score_frames(model_of(THREE), frames("D.R", [0.0, 4.0, 8.0], 12.0))}
    assert chosen["shapes:red/dark"].ranges == ((0.0, 4.0),)
    assert chosen["shapes:red"].ranges == ((0.0, 4.0), (8.0, 12.0))


def test_rejected_tags_never_return_promoted_ones_stay_and_max_tags_cuts() -> None:
    clip = frames("RB", [0.0, 1.0], 2.0)
    chosen = video.score_frames(model_of(THREE), clip, rejected={"shapes:blue"}, promoted={"shapes:red/dark"})
    assert [t.tag for t in chosen] == ["shapes:red/dark", "shapes:red"]
    assert chosen[0] == SmartTag("shapes:red/dark", 1.0, "v1")  # promoted, no frame carries it: no ranges
    assert len(video.score_frames(model_of(THREE), frames("RB", [0.0, 1.0], 2.0), max_tags=1)) == 1


def test_frames_must_match_their_times() -> None:
    with pytest.raises(ValueError):
        video.Frames((0.0,), np.zeros((2, 4), np.float32), 1.0)


def test_the_ranges_survive_the_document_as_nested_segments() -> None:
    tag = SmartTag("shapes:red", 0.9, "v1", ((0.0, 5.0), (10.0, 12.5)))
    asset = Asset(BUCKET, "v/a.mp4", smart_tags=(tag,), media="video", duration=12.5)
    doc = to_document(asset)
    assert doc["segments"] == [
        {"tag": "shapes:red", "start": 0.0, "end": 5.0},
        {"tag": "shapes:red", "start": 10.0, "end": 12.5},
    ]
    assert (doc["media"], doc["duration"]) == ("video", 12.5)
    back = from_document(doc)
    assert back.smart_tags == (tag,) and (back.media, back.duration) == ("video", 12.5)


# --- the tagger's video branch, on the fakes ---


@dataclass(frozen=True)
class ClipFacts:
    width: int = 320
    height: int = 240
    title: str | None = None
    description: str | None = None
    keywords: tuple[str, ...] = ()
    content_type: str | None = "video/mp4"
    format: str = "H264"
    decoder: str = "pyav"
    media: str = "video"
    duration: float | None = 10.0


@dataclass
class FakeClip:
    pattern: str
    facts: ClipFacts = field(default_factory=ClipFacts)
    duration: float = 10.0

    @property
    def times(self) -> list[float]:
        return [i * self.duration / len(self.pattern) for i in range(len(self.pattern))]

    def frames(self, size: int) -> list[Any]:
        return [np.full((size, size, 3), 255 if c == "R" else 0, np.uint8) for c in self.pattern]


class FakeVideos:
    """'video:RR..' bytes are a video of red and dark frames; 'video:huge' is over the pixel limit."""

    def __init__(self, can_sample: bool = True) -> None:
        self.can_sample = can_sample
        self.posters: list[tuple[str, str]] = []
        self.opened = 0

    def is_video(self, data: bytes) -> bool:
        return data.startswith(b"video:")

    def open(self, data: bytes, *, max_pixels: int, size: int | None = None) -> FakeClip:
        self.opened += 1
        body = data.removeprefix(b"video:").decode()
        if body == "huge":
            raise ImageTooLarge("65536x65536 = 4294967296 pixels per frame is over the limit", content_type="video/mp4")
        if body == "audio":
            raise UnsupportedImage("no video stream (audio only?)", content_type="video/mp4")
        if not body:
            raise CorruptImage("no decodable keyframe", content_type="video/mp4")
        return FakeClip(body)

    def keep_poster(self, clip: Any, asset_id: str, etag: str) -> None:
        self.posters.append((asset_id, etag))


def tagger_with(videos: FakeVideos, *, forward: Any = None) -> tuple[Tagger, AssetIndex, FakeStore]:
    index, store = FakeIndex(), FakeStore(BUCKET)
    assets = AssetIndex(index)
    settings = settings_mod.load(aws={"bucket": BUCKET})
    models = ModelStore(store, settings.aws.models_prefix)
    fit = TagFit("shapes:red", 30, 1, 0.5, 1, 1, 1, 1)
    manifest = models.save(
        HEADS, [fit], backbone_id="fake:1", backbone_sha256="0" * 64, training_fingerprint="t", folders=[]
    )
    models.activate(manifest.version)
    folders = FolderRegistry(index)
    folders.set_enabled(Folder(BUCKET, "up/"), True)
    tagger = Tagger(
        settings,
        assets,
        lambda bucket: store,
        embedder=PixelEmbedder,
        open_picture=open_picture,
        models=models,
        taxonomy=TaxonomyStore(index),
        folders=folders,
        videos=videos,
        forward_video=forward,
    )
    return tagger, assets, store


def stored(assets: AssetIndex, key: str) -> Asset:
    found = assets.get(Asset(BUCKET, key).id)
    assert found is not None
    return found.asset


def test_a_video_is_tagged_from_its_frames_in_one_batch_with_ranges_and_a_poster() -> None:
    videos = FakeVideos()
    tagger, assets, store = tagger_with(videos)
    etag = store.put_bytes("up/clip.mp4", b"video:RR..R")
    PixelEmbedder.calls = 0
    result = tagger.handle(events.ObjectEvent(events.CREATED, BUCKET, "up/clip.mp4", sequencer="01"))
    assert (result.status, result.tags) == (TaggingStatus.TAGGED, ("shapes:red",))
    assert PixelEmbedder.calls == 1  # every frame in one embedder call
    asset = stored(assets, "up/clip.mp4")
    assert (asset.media, asset.duration, asset.format, asset.decoder) == ("video", 10.0, "H264", "pyav")
    assert asset.smart_tags[0].ranges == ((0.0, 4.0), (8.0, 10.0))
    assert asset.embedding is None  # a video keeps no single vector
    assert videos.posters == [(asset.id, etag)]
    # A re-tag (a new model, a backfill) samples the frames again: the ranges need them.
    again = tagger.handle(events.ObjectEvent(events.TAG, BUCKET, "up/clip.mp4", run_id="r1"))
    assert again.status == TaggingStatus.TAGGED and videos.opened == 2
    assert stored(assets, "up/clip.mp4").smart_tags[0].ranges == ((0.0, 4.0), (8.0, 10.0))


def test_hostile_videos_get_a_typed_status_with_a_reason() -> None:
    tagger, assets, store = tagger_with(FakeVideos())
    cases = {"up/huge.mp4": b"video:huge", "up/empty.mp4": b"video:", "up/sound.m4a": b"video:audio"}
    for key, data in cases.items():
        store.put_bytes(key, data)
        tagger.handle(events.ObjectEvent(events.CREATED, BUCKET, key, sequencer="01"))
    assert stored(assets, "up/huge.mp4").status == TaggingStatus.FAILED
    assert "over the limit" in (stored(assets, "up/huge.mp4").tagging.reason or "")
    assert stored(assets, "up/empty.mp4").status == TaggingStatus.FAILED
    assert stored(assets, "up/sound.m4a").status == TaggingStatus.UNSUPPORTED


def test_a_folder_not_enabled_records_the_video_facts_without_embedding() -> None:
    videos = FakeVideos()
    tagger, assets, store = tagger_with(videos)
    store.put_bytes("off/clip.mp4", b"video:RR")
    PixelEmbedder.calls = 0
    assert tagger.handle(events.ObjectEvent(events.CREATED, BUCKET, "off/clip.mp4")).status == "not_enabled"
    assert PixelEmbedder.calls == 0 and stored(assets, "off/clip.mp4").media == "video"


def test_without_pyav_a_video_is_forwarded_and_counted_by_the_video_function_only() -> None:
    sent: list[events.ObjectEvent] = []
    tagger, assets, store = tagger_with(FakeVideos(can_sample=False), forward=sent.append)
    store.put_bytes("up/clip.mp4", b"video:RR")
    event = events.ObjectEvent(events.CREATED, BUCKET, "up/clip.mp4", sequencer="01")
    result = tagger.handle(event)
    assert result.status == Handled.FORWARDED and sent == [event]
    assert stored(assets, "up/clip.mp4").tagging.claim is None  # released for the video function
    tally = RunTally()
    tally.add(event, result.status, result.reason)
    assert not tally.runs  # the video function counts its outcome, once
    # Pictures still go the picture way.
    store.put_bytes("up/a.png", b"red circle")
    assert tagger.handle(events.ObjectEvent(events.CREATED, BUCKET, "up/a.png")).status == TaggingStatus.TAGGED


def test_without_pyav_and_nowhere_to_forward_a_video_is_unsupported() -> None:
    class NotInstalled(FakeVideos):
        def open(self, data: bytes, *, max_pixels: int, size: int | None = None) -> FakeClip:
            raise UnsupportedImage("video support is not installed", content_type="video/mp4")

    tagger, _, store = tagger_with(NotInstalled(can_sample=False))
    store.put_bytes("up/clip.mp4", b"video:RR")
    assert tagger.handle(events.ObjectEvent(events.CREATED, BUCKET, "up/clip.mp4")).status == "unsupported"


# --- training: a video's frames weigh one picture ---


def test_a_long_videos_frames_together_weigh_one_picture_in_training() -> None:
    from smarttags.core.heads import train_heads

    rng = np.random.default_rng(0)
    pictures, negatives = rng.normal(size=(6, 16)) + 2, rng.normal(size=(30, 16))
    odd = rng.normal(size=(1, 16)) - 1  # a positive unlike the others
    single, fit_single = train_heads(
        np.vstack([pictures, odd, negatives]), np.r_[np.ones(7), np.zeros(30)][:, None], ["t"], folds=3
    )
    # The same positive as a video of 24 sampled frames (one fold: they share a group).
    frames_ = np.repeat(odd, 24, axis=0) + rng.normal(scale=0.01, size=(24, 16))
    x = np.vstack([pictures, frames_, negatives])
    y = np.r_[np.ones(30), np.zeros(30)][:, None]
    groups = [*map(str, range(6)), *["video"] * 24, *(f"n{i}" for i in range(30))]
    weights = np.r_[np.ones(6), np.full(24, 1 / 24), np.ones(30)]
    weighted, fit_weighted = train_heads(x, y, ["t"], folds=3, groups=groups, sample_weight=weights)
    drowned, _ = train_heads(x, y, ["t"], folds=3, groups=groups)
    probe = np.vstack([pictures, odd, negatives])
    assert fit_weighted[0].positives == fit_single[0].positives == 7
    assert np.allclose(weighted.scores(probe), single.scores(probe), atol=0.01)
    # Unweighted, the video's 24 frames pull the head towards it: it scores far above what one picture does.
    assert drowned.scores(odd)[0, 0] > single.scores(odd)[0, 0] + 0.5


class FrameEmbedder:
    """The trainer tests' embedder, plus frames: a frame's first pixel names its subject."""

    backbone_id = "fake:1"
    sha256 = "0" * 64
    input_size = 4

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.batches = 0

    def iter_embed(self, items: Any, load: Any) -> Any:
        return self._inner.iter_embed(items, load)

    def embed_arrays(self, pixels: Any) -> Any:
        from tests.core.test_trainer_unit import SUBJECTS, vector

        self.batches += 1
        names = {v: k for k, v in SUBJECTS.items()}
        return np.stack([vector(f"{names[int(p[0, 0, 0])]} frame {i}".encode()) for i, p in enumerate(pixels)])


class SubjectClip:
    def __init__(self, subject: int, count: int) -> None:
        self.subject, self.count = subject, count
        self.duration = float(count)
        self.times = [float(i) for i in range(count)]
        self.facts = ClipFacts()

    def frames(self, size: int) -> list[Any]:
        return [np.full((size, size, 3), self.subject, np.uint8) for _ in range(self.count)]


class SubjectVideos:
    """b'video cat 20 kw:Cat': a video of 20 frames of a cat, carrying the keyword Cat."""

    can_sample = True

    def is_video(self, data: bytes) -> bool:
        return data.startswith(b"video ")

    def open(self, data: bytes, *, max_pixels: int, size: int | None = None) -> SubjectClip:
        from tests.core.test_trainer_unit import SUBJECTS

        words = data.decode().split()
        return SubjectClip(SUBJECTS[words[1]], int(words[2]))

    def keep_poster(self, clip: Any, asset_id: str, etag: str) -> None:
        pass


def test_training_takes_a_tagged_videos_frames_as_one_examples_worth() -> None:
    from dataclasses import replace

    from smarttags.core.runs import RunLog
    from smarttags.core.training import Trainer

    from tests.core.test_trainer_unit import TAGS, SubjectEmbedder
    from tests.core.test_trainer_unit import read_facts as picture_facts

    def read_facts(data: bytes, *, max_pixels: int) -> Any:
        if data.startswith(b"video "):
            return replace(picture_facts(data.removeprefix(b"video "), max_pixels=max_pixels), media="video")
        return picture_facts(data, max_pixels=max_pixels)

    index, store = FakeIndex(), FakeStore(BUCKET)
    for tag, title in TAGS.items():
        index.put("taxonomy", tag, {"tag": tag, "titles": {"en": title}, "synonyms": {}})
    settings = settings_mod.load(aws={"bucket": BUCKET}, training={"cv_folds": 3})
    embedder = FrameEmbedder(SubjectEmbedder())
    for subject, count, words in (("cat", 8, "kw:Cat"), ("dog", 8, "kw:Dog"), ("tree", 4, "")):
        for i in range(count):
            store.put_bytes(f"a/{subject}-{i}.jpg", f"{subject} {i} {words}".encode())
    store.put_bytes("a/cat-film.mp4", b"video cat 20 kw:Cat")

    def trainer(videos: Any) -> Trainer:
        return Trainer(
            settings,
            AssetIndex(index),
            lambda bucket: store,
            lambda: embedder,
            read_facts=read_facts,
            models=ModelStore(store, settings.aws.models_prefix),
            taxonomy=TaxonomyStore(index),
            runs=RunLog(index),
            videos=videos,
        )

    report = trainer(SubjectVideos()).train([Folder(BUCKET, "a/")], trigger="on_demand")
    rows = {row.tag: row for row in report.rows}
    # The video is one more cat (nine, not 28), its 20 frames embedded in one batch.
    assert rows["animals:pet/cat"].images == 9 and rows["animals:pet/dog"].images == 8
    assert report.images_used == 21 and embedder.batches == 1 and report.model_version
    # Where video cannot be sampled, the video is named as unreadable and the pictures still train.
    without = trainer(None).train([Folder(BUCKET, "a/")], trigger="on_demand")
    assert any("a/cat-film.mp4" in note and "video support" in note for note in without.notes)
    assert {row.tag: row for row in without.rows}["animals:pet/cat"].images == 8


def test_a_video_keeps_as_near_miss_a_tag_whose_best_frame_fell_just_short() -> None:
    from datetime import UTC, datetime

    from smarttags.core.ports import ObjectInfo
    from smarttags.core.tagging import Reading, apply_reading

    # Frame 2 is 0.48 blue: sigmoid(20 * 0.48 - 10) = 0.401, 0.099 under the threshold.
    clip = video.Frames((0.0, 5.0), np.array([[1, 0, 0, 0], [0, 0.48, 0, 0]], np.float32), 10.0)
    info = ObjectInfo(BUCKET, "clips/a.mp4", "e1", 10, datetime(2026, 1, 1, tzinfo=UTC), "video/mp4")
    reading = Reading(info, "01", True, frames=clip)
    after = apply_reading(Asset(BUCKET, "clips/a.mp4"), reading, model_of(THREE), max_tags=5)
    assert after.smart_ids == ("shapes:red",) and after.smart_tags[0].threshold == 0.5
    assert [(t.tag, round(t.confidence, 3)) for t in after.near_misses] == [("shapes:blue", 0.401)]
