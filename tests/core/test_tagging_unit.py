"""The tagger on the in-memory fakes: its pure decisions from plain values, and its effects through the
ports — no OpenSearch, no S3, no ONNX; milliseconds."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from smarttags import settings as settings_mod
from smarttags.adapters.asset_index import AssetIndex
from smarttags.core import events
from smarttags.core.asset import Asset, Handled, SmartTag, StoredEmbedding, TaggingStatus
from smarttags.core.folders import Folder, FolderRegistry
from smarttags.core.heads import Heads, TagFit
from smarttags.core.model_registry import Manifest, Model, ModelStore
from smarttags.core.moderation import Moderation
from smarttags.core.ports import ObjectInfo
from smarttags.core.tagging import (
    Action,
    Reading,
    RunTally,
    Stale,
    Tagger,
    apply_reading,
    classify_failure,
    decide,
    handle_logged,
)
from smarttags.core.taxonomy import TaxonomyStore
from smarttags.errors import ConfigError, CorruptImage, ModelError, UnsupportedImage

from tests.fakes import FakeIndex, FakeStore

BUCKET = "assets"
HEADS = Heads(
    ("shapes:red",),
    np.array([[20.0], [0], [0], [0]], np.float32),
    np.array([-10.0], np.float32),
    np.array([0.5], np.float32),
)


@dataclass(frozen=True)
class Facts:
    width: int = 800
    height: int = 600
    title: str | None = None
    description: str | None = None
    keywords: tuple[str, ...] = ()
    content_type: str | None = "image/png"
    format: str = "PNG"
    decoder: str = "pillow"
    media: str = "image"
    duration: float | None = None


class FakePicture:
    """'red...' bytes are a red picture, 'broken...' bytes do not open; counts how often it is opened."""

    opened = 0

    def __init__(self, data: bytes) -> None:
        if data.startswith(b"broken"):
            raise CorruptImage("truncated file")
        FakePicture.opened += 1
        self.data = data
        self.facts = Facts()

    def pixels(self, size: int) -> Any:
        return np.full((size, size, 3), 255 if self.data.startswith(b"red") else 0, np.uint8)


def open_picture(data: bytes, *, max_pixels: int, size: int | None = None) -> FakePicture:
    return FakePicture(data)


class PixelEmbedder:
    """Bright pixels embed along axis 0, dark ones along axis 1."""

    backbone_id = "fake:1"
    sha256 = "0" * 64
    input_size = 4
    calls = 0

    def embed_arrays(self, pixels: Any) -> Any:
        PixelEmbedder.calls += 1
        return np.stack([np.eye(4, dtype=np.float32)[0 if p.mean() > 128 else 1] for p in pixels])


@pytest.fixture
def world() -> Any:
    index, store = FakeIndex(), FakeStore(BUCKET)
    assets = AssetIndex(index)
    return make_tagger(assets, store, index, "up/"), assets, store, index


def make_tagger(assets: Any, store: FakeStore, index: FakeIndex, enabled: str, embedder: Any = PixelEmbedder) -> Tagger:
    """A tagger on the fakes with an active one-tag model ("shapes:red") and one enabled folder."""
    settings = settings_mod.load(aws={"bucket": BUCKET})
    models = ModelStore(store, settings.aws.models_prefix)
    fit = TagFit("shapes:red", 30, 1, 0.5, 1, 1, 1, 1)
    manifest = models.save(
        HEADS, [fit], backbone_id="fake:1", backbone_sha256="0" * 64, training_fingerprint="t", folders=[]
    )
    models.activate(manifest.version)
    folders = FolderRegistry(index)
    folders.set_enabled(Folder(BUCKET, enabled), True)
    return Tagger(
        settings,
        assets,
        lambda bucket: store,
        embedder=embedder,
        open_picture=open_picture,
        models=models,
        taxonomy=TaxonomyStore(index),
        folders=folders,
    )


def created(key: str, sequencer: str | None) -> events.ObjectEvent:
    return events.ObjectEvent(events.CREATED, BUCKET, key, sequencer=sequencer)


def held(assets: AssetIndex, key: str) -> Asset:
    found = assets.get(Asset(BUCKET, key).id)
    assert found is not None
    return found.asset


# --- the pure decision ---


def test_decide_from_plain_values() -> None:
    tagged = Asset(BUCKET, "up/a.png", sequencer="02").with_status(TaggingStatus.TAGGED, model_version="m1")
    assert decide(created("_smarttags/thumbs/x.jpg", "01"), None, active_model=None).result.status == Handled.IGNORED
    assert decide(events.ObjectEvent(events.REMOVED, BUCKET, "up/a.png"), tagged, active_model="m1").action == (
        Action.REMOVE
    )
    assert decide(created("up/a.png", "02"), tagged, active_model="m1").result.status == Handled.DUPLICATE
    # The same event after a model change is work, not a duplicate.
    assert decide(created("up/a.png", "02"), tagged, active_model="m2").action == Action.TAG
    assert decide(created("up/a.png", "01"), tagged, active_model="m1").result.status == Handled.STALE
    assert decide(created("up/a.png", "03"), tagged, active_model="m1").action == Action.TAG
    assert decide(created("up/a.png", None), tagged, active_model="m1").action == Action.TAG  # a work item
    # A file that could not be read failed for good on those bytes; new bytes are tried again.
    failed = Asset(BUCKET, "up/b.png", etag="e1", sequencer="02").with_status(TaggingStatus.FAILED, etag="e1")
    assert decide(created("up/b.png", "02"), failed, active_model="m1").result.status == Handled.DUPLICATE
    assert decide(created("up/b.png", "03"), failed, active_model="m1").action == Action.TAG
    assert decide(created("up/dir/", "01"), None, active_model=None).result.status == Handled.IGNORED


def _reading(**kwargs: Any) -> Reading:
    info = ObjectInfo(BUCKET, "up/a.png", "e2", 10, datetime(2026, 1, 1, tzinfo=UTC), "image/png")
    return Reading(**{"info": info, "sequencer": "05", "enabled": True, "facts": Facts(), **kwargs})


def test_apply_reading_keeps_moderation_and_raises_on_a_later_event() -> None:
    model = Model(Manifest("m1", "fake:1", "0" * 64, ["shapes:red"], {}, {}, "t", "2026-01-01"), HEADS)
    red = StoredEmbedding((1.0, 0.0, 0.0, 0.0), "fake:1", "e2")
    base = Asset(BUCKET, "up/a.png", tags=("own:tag",))
    after = apply_reading(base.reject("shapes:red"), _reading(embedding=red), model, max_tags=5)
    assert after.status == TaggingStatus.TAGGED and after.smart_ids == () and after.tags == ("own:tag",)
    assert after.etag == "e2" and after.format == "PNG" and after.embedding == red
    promoted = apply_reading(base.promote("shapes:blue"), _reading(embedding=red), model, max_tags=5)
    assert promoted.smart_ids == ("shapes:blue", "shapes:red")
    assert apply_reading(base, _reading(enabled=False), model, max_tags=5).status == TaggingStatus.NOT_ENABLED
    assert apply_reading(base, _reading(embedding=red), None, max_tags=5).status == TaggingStatus.EMBEDDED
    broken = _reading(facts=None, failure=CorruptImage("truncated"))
    assert apply_reading(base, broken, model, max_tags=5).status == TaggingStatus.FAILED
    with pytest.raises(Stale):
        apply_reading(replace_sequencer(base, "09"), _reading(embedding=red), model, max_tags=5)


def test_apply_reading_keeps_the_near_misses_and_each_tags_threshold() -> None:
    # red fires on the first axis (sigmoid(20x - 10)); blue's logit is 0.4 below zero whatever the picture.
    heads = Heads(
        ("shapes:red", "shapes:blue"),
        np.array([[20.0, 0], [0, 0], [0, 0], [0, 0]], np.float32),
        np.array([-10.0, -0.4], np.float32),
        np.array([0.5, 0.5], np.float32),
    )
    model = Model(Manifest("m1", "fake:1", "0" * 64, list(heads.tags), {}, {}, "t", "2026-01-01"), heads)
    red = StoredEmbedding((1.0, 0.0, 0.0, 0.0), "fake:1", "e2")
    after = apply_reading(Asset(BUCKET, "up/a.png"), _reading(embedding=red), model, max_tags=5)
    assert after.smart_ids == ("shapes:red",) and after.smart_tags[0].threshold == 0.5
    # sigmoid(-0.4) = 0.401: 0.099 under its threshold, within the margin: a near miss, not a smart tag.
    assert [(t.tag, round(t.confidence, 3), t.threshold) for t in after.near_misses] == [("shapes:blue", 0.401, 0.5)]
    # A moderator's removal keeps it out of the near misses too.
    rejected = apply_reading(after.reject("shapes:blue"), _reading(embedding=red), model, max_tags=5)
    assert rejected.near_misses == ()


def replace_sequencer(asset: Asset, sequencer: str) -> Asset:
    from dataclasses import replace

    return replace(asset, sequencer=sequencer)


# --- the effects, through the fakes ---


def test_an_upload_in_an_enabled_folder_is_tagged_opening_the_picture_once(world: Any) -> None:
    tagger, _, store, index = world
    store.put_bytes("up/a.png", b"red circle")
    FakePicture.opened = 0
    outcome = tagger.handle(created("up/a.png", "01"))
    assert (outcome.status, outcome.tags) == ("tagged", ("shapes:red",))
    assert FakePicture.opened == 1
    assert index.get("assets", Asset(BUCKET, "up/a.png").id).source["smart_scores"]["shapes:red"] > 0.99


def test_the_stored_embedding_is_reused_while_the_bytes_are_unchanged(world: Any) -> None:
    tagger, _, store, _ = world
    store.put_bytes("up/a.png", b"red circle")
    tagger.handle(created("up/a.png", "01"))
    PixelEmbedder.calls = 0
    tagger.handle(created("up/a.png", None))  # a daily-run work item: same bytes
    assert PixelEmbedder.calls == 0
    store.put_bytes("up/a.png", b"red circle, retouched")
    tagger.handle(created("up/a.png", "02"))
    assert PixelEmbedder.calls == 1


def test_duplicates_and_older_events_change_nothing(world: Any) -> None:
    tagger, _, store, index = world
    store.put_bytes("up/a.png", b"red circle")
    tagger.handle(created("up/a.png", "02"))
    writes = index.writes
    assert tagger.handle(created("up/a.png", "02")).status == "duplicate"
    assert tagger.handle(created("up/a.png", "01")).status == "stale"
    assert index.writes == writes


def test_a_removed_tag_never_comes_back(world: Any) -> None:
    tagger, assets, store, index = world
    store.put_bytes("up/a.png", b"red circle")
    tagger.handle(created("up/a.png", "01"))
    Moderation(assets, index).remove(Asset(BUCKET, "up/a.png").id, "shapes:red", user="mod")
    store.put_bytes("up/a.png", b"red circle, retouched")
    assert tagger.handle(created("up/a.png", "02")).tags == ()
    assert held(assets, "up/a.png").rejected == {"shapes:red"}


def test_a_concurrent_moderator_edit_survives_the_tagger_write(world: Any) -> None:
    tagger, assets, store, index = world
    store.put_bytes("up/a.png", b"red circle")
    tagger.handle(created("up/a.png", "01"))
    moderation = Moderation(assets, index)
    real_put = assets.put

    def put_after_a_moderator(asset: Asset, **kwargs: Any) -> None:
        # The moderator promotes a tag between the tagger's read and its write: the write conflicts,
        # the tagger re-reads and re-applies, and the promotion is kept.
        assets.put = real_put
        moderation.promote(asset.id, "shapes:blue", user="mod")
        real_put(asset, **kwargs)

    assets.put = put_after_a_moderator
    store.put_bytes("up/a.png", b"red circle, retouched")
    assert tagger.handle(created("up/a.png", "02")).status == "tagged"
    assert held(assets, "up/a.png").smart_ids == ("shapes:blue", "shapes:red")


def test_folders_not_enabled_and_broken_files_are_recorded(world: Any) -> None:
    tagger, assets, store, _ = world
    store.put_bytes("other/a.png", b"red circle")
    assert tagger.handle(created("other/a.png", "01")).status == "not_enabled"
    store.put_bytes("up/bad.png", b"broken bytes", content_type="image/png")
    result = tagger.handle(created("up/bad.png", "01"))  # permanent: recorded, not raised (not retried)
    assert (result.status, held(assets, "up/bad.png").status) == ("failed", TaggingStatus.FAILED)
    assert "truncated file" in (result.reason or "")
    assert tagger.handle(created("up/bad.png", "01")).status == "duplicate"  # recorded once


def test_a_deleted_object_removes_its_asset_unless_a_later_event_holds_it(world: Any) -> None:
    tagger, assets, store, _ = world
    store.put_bytes("up/a.png", b"red circle")
    tagger.handle(created("up/a.png", "05"))
    removed = events.ObjectEvent(events.REMOVED, BUCKET, "up/a.png", sequencer="04")
    assert tagger.handle(removed).status == "stale"
    # A delete while the key still has a current object (a non-current version deleted in a versioned
    # bucket): the asset stays and follows the current object.
    assert tagger.handle(events.ObjectEvent(events.REMOVED, BUCKET, "up/a.png", sequencer="06")).status == "tagged"
    store.delete("up/a.png")
    assert tagger.handle(events.ObjectEvent(events.REMOVED, BUCKET, "up/a.png", sequencer="07")).status == "deleted"
    assert assets.get(Asset(BUCKET, "up/a.png").id) is None
    assert tagger.handle(created("up/gone.png", "01")).status == "gone"


def test_the_nearest_registered_folder_decides() -> None:
    folders = FolderRegistry(FakeIndex())
    folders.set_enabled(Folder(BUCKET, "a/"), True)
    folders.set_enabled(Folder(BUCKET, "a/b/"), False)
    assert folders.is_enabled(BUCKET, "a/x.png") and not folders.is_enabled(BUCKET, "a/b/x.png")
    assert folders.is_enabled(BUCKET, "a/c/d/x.png") and not folders.is_enabled(BUCKET, "z/x.png")


def test_smart_tag_values_are_plain() -> None:
    assert SmartTag("a:b", 0.5, "m") == SmartTag("a:b", 0.5, "m")


def test_a_batch_tally_counts_by_the_one_rule_and_skips_our_own_files() -> None:
    tally = RunTally()
    upload = created("up/a.png", "01")
    for status in (TaggingStatus.TAGGED, TaggingStatus.EMBEDDED, Handled.DUPLICATE, Handled.DELETED):
        tally.add(upload, status, None)
    tally.add(upload, TaggingStatus.FAILED, "truncated")
    tally.add(created("_smarttags/thumbnails/a.jpg", "02"), Handled.IGNORED, "a SmartTags file")
    ((counts, errors),) = tally.runs.values()
    assert dict(counts) == {"processed": 4, "tagged": 1, "embedded": 1, "failed": 1, "deleted": 1}
    assert errors == [{"key": "up/a.png", "reason": "truncated"}]
    # An upload run lists every folder its objects were in, so each folder's page finds its last tagging.
    assert tally.folders[next(iter(tally.runs))] == {"s3://assets/", "s3://assets/up/"}


def test_unsupported_types_are_recorded_not_retried_and_broken_pictures_are_failures() -> None:
    unsupported = classify_failure(UnsupportedImage("a Word file", content_type="application/msword"), None)
    assert unsupported == (TaggingStatus.UNSUPPORTED, "unsupported type application/msword (unsupported: a Word file)")
    text = classify_failure(CorruptImage("not an image (no known format signature)"), "text/plain")
    assert text[0] == TaggingStatus.UNSUPPORTED and "text/plain" in text[1]
    # A broken file of a format we read fails (and is retried), whatever its uploader declared.
    assert classify_failure(CorruptImage("truncated", content_type="application/pdf"), "application/pdf")[0] == (
        TaggingStatus.FAILED
    )
    assert classify_failure(CorruptImage("no signature"), "image/jpeg")[0] == TaggingStatus.FAILED


def test_concurrent_deliveries_of_one_event_do_the_work_once(world: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time

    tagger, assets, store, _ = world
    store.put_bytes("up/a.png", b"red circle")
    slow_embed = PixelEmbedder.embed_arrays

    def embed_slowly(self: Any, pixels: Any) -> Any:
        time.sleep(0.05)  # every copy is in flight at once
        return slow_embed(self, pixels)

    monkeypatch.setattr(PixelEmbedder, "embed_arrays", embed_slowly)
    PixelEmbedder.calls = 0
    results: list[str] = []
    barrier = threading.Barrier(4)

    def deliver(owner: str) -> None:
        barrier.wait()
        results.append(tagger.handle(created("up/a.png", "09"), owner=owner).status)

    threads = [threading.Thread(target=deliver, args=(f"message-{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["duplicate", "duplicate", "duplicate", "tagged"]
    assert PixelEmbedder.calls == 1
    assert held(assets, "up/a.png").tagging.claim is None  # the winner's write released it


def test_a_redelivery_of_the_same_message_takes_over_its_own_claim(world: Any) -> None:
    tagger, assets, store, _ = world
    store.put_bytes("up/a.png", b"red circle")
    event = created("up/a.png", "09")
    # A handler claimed the event and crashed before writing: its claim is still fresh.
    stale = Asset(BUCKET, "up/a.png").claimed("09|||@message-1", "2999-01-01T00:00:00+00:00")
    assets.put(stale)
    assert tagger.handle(event, owner="message-2").status == "duplicate"  # another copy: message-1 is pending
    assert tagger.handle(event, owner="message-1").status == "tagged"  # message-1 redelivered: done now


def test_without_a_sequencer_the_same_bytes_done_are_a_duplicate() -> None:
    done = Asset(BUCKET, "up/a.png", etag="e1").with_status(TaggingStatus.TAGGED, model_version="m1", etag="e1")
    again = events.ObjectEvent(events.CREATED, BUCKET, "up/a.png", etag="e1")
    assert decide(again, done, active_model="m1").result.status == Handled.DUPLICATE
    assert decide(again, done, active_model="m2").action == Action.TAG  # a new model: tag again
    changed = events.ObjectEvent(events.CREATED, BUCKET, "up/a.png", etag="e2")
    assert decide(changed, done, active_model="m1").action == Action.TAG


def test_counts_that_cannot_be_written_wait_for_the_next_flush() -> None:
    from smarttags.errors import ServiceUnavailable

    class FlakyRuns:
        def __init__(self) -> None:
            self.down = True
            self.written: list[dict[str, int]] = []
            self.batches: set[str] = set()

        def add_counts(self, run_id: str, counts: dict[str, int], errors: Any, **kwargs: Any) -> None:
            if self.down:
                raise ServiceUnavailable("opensearch", "down")
            assert kwargs["batch_id"] not in self.batches  # a new write gets a new id, a retry its old one
            self.batches.add(kwargs["batch_id"])
            self.written.append(counts)

    runs, tally = FlakyRuns(), RunTally()
    tally.add(created("up/a.png", "01"), TaggingStatus.TAGGED, None)
    tally.flush(runs)  # type: ignore[arg-type]
    assert runs.written == [] and tally.pending  # kept, not lost
    tally.add(created("up/b.png", "02"), TaggingStatus.TAGGED, None)
    runs.down = False
    tally.flush(runs)  # type: ignore[arg-type]
    assert runs.written == [{"processed": 1, "tagged": 1}] * 2 and not tally.pending  # each counted once


def test_a_write_whose_answer_was_lost_counts_once_when_its_message_comes_back(world: Any) -> None:
    from smarttags.errors import ServiceUnavailable

    tagger, assets, store, _ = world
    store.put_bytes("up/a.png", b"red circle")
    event = created("up/a.png", "09")
    put = assets.put

    def put_then_cut(asset: Asset, **kwargs: Any) -> Any:
        answer = put(asset, **kwargs)
        if asset.status == TaggingStatus.TAGGED:
            raise ServiceUnavailable("opensearch", "connection cut")  # the write landed, the answer did not
        return answer

    assets.put = put_then_cut
    tally = RunTally()
    with pytest.raises(ServiceUnavailable):
        handle_logged(tagger, event, tally, owner="message-1")
    assets.put = put
    assert held(assets, "up/a.png").status == TaggingStatus.TAGGED and not tally.runs  # landed, uncounted
    # The message comes back: its own state counts now, once, however often it comes back.
    assert handle_logged(tagger, event, tally, 2, owner="message-1").status == TaggingStatus.TAGGED
    assert handle_logged(tagger, event, tally, 3, owner="message-1").status == TaggingStatus.TAGGED
    # Another message with the same event (S3 sends duplicates) is a duplicate, as before.
    assert handle_logged(tagger, event, tally, owner="message-2").status == Handled.DUPLICATE
    ((counts, _),) = tally.runs.values()
    assert dict(counts) == {"processed": 1, "tagged": 1}


def test_a_heads_only_re_tag_loads_no_backbone(world: Any, tmp_path: Any) -> None:
    """The re-tag needs the backbone's id only: the real embedder names it from the model's checksum
    file, and reads the model (checks it, then loads it) only to run it."""
    from smarttags.adapters.backbone import BackboneFile, verify
    from smarttags.adapters.embedder import Embedder

    tagger, assets, store, index = world
    store.put_bytes("up/a.png", b"red circle")
    tagger.handle(created("up/a.png", "01"))  # embedded as "fake:1"
    model = tmp_path / "fake.onnx"
    model.write_bytes(b"not a model: running it would fail its checksum")
    (tmp_path / "fake.onnx.sha256").write_text("1  fake.onnx\n")
    made: list[Embedder] = []

    def check() -> BackboneFile:
        return BackboneFile("fake", model, verify(model), 4, 4)

    def load() -> Embedder:
        made.append(Embedder(settings_mod.load().backbone, model, sha256="1", name="fake", check=check))
        return made[0]

    lazy = make_tagger(assets, store, index, "up/", embedder=load)
    retag = events.ObjectEvent(events.TAG, BUCKET, "up/a.png", run_id="tag-1", trigger="on_demand")
    assert lazy.handle(retag).tags == ("shapes:red",)
    assert len(made) == 1 and not made[0].loaded  # the model file was never read
    with pytest.raises(ModelError, match="does not match"):
        made[0].embed_arrays([np.zeros((4, 4, 3), np.uint8)])  # ...and is still checked before it runs


def test_a_model_of_another_backbone_is_refused_with_the_setting_to_change(world: Any) -> None:
    """The active model was trained on "fake:1": an embedder of another backbone must not score with
    it (its heads would read another space). The error names the setting; nothing is tagged."""
    _, assets, store, index = world

    class OtherName(PixelEmbedder):
        backbone_id = "efficientnet-lite0+lite2:2"

    class OtherFile(PixelEmbedder):
        backbone_id = "fake:2"

    store.put_bytes("up/a.png", b"red circle")
    tagger = make_tagger(assets, store, index, "up/", embedder=OtherName)
    with pytest.raises(ConfigError, match=r"SMARTTAGS_BACKBONE__NAME: .* trained on fake, .* set it to fake"):
        tagger.handle(created("up/a.png", "01"))
    assert held(assets, "up/a.png").smart_ids == ()
    tagger = make_tagger(assets, store, index, "up/", embedder=OtherFile)
    with pytest.raises(ConfigError, match="SMARTTAGS_BACKBONE__ONNX_FILE"):
        tagger.active_model()


def test_a_re_tag_of_unchanged_bytes_runs_only_the_heads(world: Any) -> None:
    tagger, assets, store, _ = world
    store.put_bytes("up/a.png", b"red circle")
    tagger.handle(created("up/a.png", "01"))
    retag = events.ObjectEvent(events.TAG, BUCKET, "up/a.png", run_id="tag-1", trigger="on_demand")
    FakePicture.opened, PixelEmbedder.calls = 0, 0
    assert tagger.handle(retag).tags == ("shapes:red",)
    assert (FakePicture.opened, PixelEmbedder.calls) == (0, 0)  # no image read, no inference
    assert held(assets, "up/a.png").format == "PNG"  # the facts read before are kept
    # The same run's item again (a redelivery) finds it done: nothing read, not even the HEAD.
    assert tagger.handle(retag).status == TaggingStatus.TAGGED
    assert (FakePicture.opened, PixelEmbedder.calls) == (0, 0)
    store.put_bytes("up/a.png", b"blue square")  # changed bytes (their event not seen yet) are read
    tagger.handle(replace(retag, run_id="tag-2"))
    assert (FakePicture.opened, PixelEmbedder.calls) == (1, 1)


# --- a batch at once ---


def test_a_batch_is_tagged_in_four_index_requests_and_one_embedder_call(world: Any) -> None:
    tagger, assets, store, index = world
    keys = [f"up/{i}.png" for i in range(10)]
    for i, key in enumerate(keys):
        store.put_bytes(key, b"red circle" if i % 2 else b"blue square")
    PixelEmbedder.calls, index.round_trips = 0, 0
    answers = tagger.handle_many([(created(key, "01"), f"message-{i}") for i, key in enumerate(keys)])
    assert [a.status for a in answers] == ["tagged"] * 10  # type: ignore[union-attr]
    assert [a.tags for a in answers][:2] == [(), ("shapes:red",)]  # type: ignore[union-attr]
    # get_many, the folder flags, the claims, the writes
    assert (index.round_trips, PixelEmbedder.calls) == (4, 1)
    assert all(held(assets, key).tagging.claim is None for key in keys)
    # Delivered again, the same events are duplicates: one request, no work.
    index.round_trips = 0
    again = tagger.handle_many([(created(key, "01"), f"message-{i + 10}") for i, key in enumerate(keys)])
    assert {a.status for a in again} == {"duplicate"} and index.round_trips == 1  # type: ignore[union-attr]


def test_the_folder_flags_of_a_batch_are_read_at_once_and_each_picture_gets_its_own(world: Any) -> None:
    tagger, assets, store, index = world
    folders = FolderRegistry(index)
    folders.set_enabled(Folder(BUCKET, "up/off/"), False)  # inside the enabled up/
    folders.set_enabled(Folder(BUCKET, "up/off/on/"), True)  # and on again below it
    keys = ["up/a.png", "up/off/b.png", "up/off/on/c.png", "elsewhere/d.png", "up/off/x/e.png"]
    for key in keys:
        store.put_bytes(key, b"red circle")
    index.round_trips = 0
    answers = tagger.handle_many([(created(key, "01"), f"message-{i}") for i, key in enumerate(keys)])
    assert index.round_trips == 4  # the flags of five keys in three folders: one request
    assert [a.tags for a in answers] == [  # type: ignore[union-attr]
        ("shapes:red",),
        (),
        ("shapes:red",),
        (),
        (),
    ]
    on, off = TaggingStatus.TAGGED, TaggingStatus.NOT_ENABLED
    assert [held(assets, key).status for key in keys] == [on, off, on, off, off]


def test_each_event_of_a_batch_is_answered_alone(world: Any) -> None:
    tagger, assets, store, index = world
    for key in ("up/a.png", "up/b.png", "up/c.png"):
        store.put_bytes(key, b"red circle")
    tagger.handle(created("up/c.png", "01"))
    moderation = Moderation(assets, index)
    put_many = assets.put_many

    def writes_after_a_moderator(writes: Any) -> Any:
        if any(asset.status == TaggingStatus.TAGGED for asset, _ in writes):  # the batch's final writes
            assets.put_many = put_many
            moderation.promote(Asset(BUCKET, "up/a.png").id, "shapes:blue", user="mod")
        return put_many(writes)

    assets.put_many = writes_after_a_moderator
    store.put_bytes("up/c.png", b"red circle, retouched")
    answers = tagger.handle_many(
        [
            (created("up/a.png", "01"), "m1"),  # its write conflicts with the moderator: redone on top
            (created("up/gone.png", "01"), "m2"),  # deleted before it was read
            (created("up/b.png", "01"), "m3"),
            (created("up/b.png", "02"), "m4"),  # the same key twice: one at a time, in order
            (created("up/c.png", "01"), "m5"),  # older than what the index holds
            (events.ObjectEvent(events.REMOVED, BUCKET, "up/c.png", sequencer="00"), "m6"),
        ]
    )
    statuses = [a.status for a in answers]  # type: ignore[union-attr]
    assert statuses == ["tagged", "gone", "tagged", "tagged", "duplicate", "stale"]
    assert held(assets, "up/a.png").smart_ids == ("shapes:blue", "shapes:red")
    assert held(assets, "up/b.png").sequencer == "02"


def test_a_write_that_fails_in_a_batch_fails_that_event_alone(world: Any) -> None:
    from smarttags.errors import ServiceUnavailable

    tagger, assets, store, _ = world
    store.put_bytes("up/a.png", b"red circle")
    store.put_bytes("up/b.png", b"red circle")
    put_many = assets.put_many

    def second_write_refused(writes: Any) -> Any:
        answers = put_many(writes)
        if writes[0][0].status == TaggingStatus.TAGGED:
            answers[1] = ServiceUnavailable("opensearch", "shard not available")
        return answers

    assets.put_many = second_write_refused
    a, b = tagger.handle_many([(created("up/a.png", "01"), "m1"), (created("up/b.png", "01"), "m2")])
    assert a.status == "tagged" and isinstance(b, ServiceUnavailable)  # type: ignore[union-attr]
    assets.put_many = put_many
    # The retried message takes over its own claim.
    (b,) = tagger.handle_many([(created("up/b.png", "01"), "m2")])
    assert b.status == "tagged"  # type: ignore[union-attr]
