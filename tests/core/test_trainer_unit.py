"""The Trainer on the in-memory fakes: one model for the whole taxonomy (a folder's training keeps the
other tags' heads), every picture of a training folder an example (untagged ones and a moderator's
removals are negatives), the resolution guideline advising, and a report row for every taxonomy tag."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from smarttags import settings as settings_mod
from smarttags.adapters.asset_index import AssetIndex
from smarttags.core import ingest
from smarttags.core.asset import Asset
from smarttags.core.folders import Folder, FolderRegistry
from smarttags.core.model_registry import ModelStore, score_embedding
from smarttags.core.report import NOT_TRAINED, as_table
from smarttags.core.runs import RunLog
from smarttags.core.taxonomy import TaxonomyStore
from smarttags.core.training import Trainer, duplicate_groups
from smarttags.core.windows import TRAINING_WINDOW, run_window
from smarttags.errors import CorruptImage

from tests.fakes import FakeIndex, FakeStore

BUCKET = "assets"
DIM = 16
# What a fake picture shows -> its direction in the fake embedding space.
SUBJECTS = {"cat": 0, "dog": 1, "car": 2, "bus": 3, "tree": 4}
TAGS = {
    "animals:pet": "Pet",
    "animals:pet/cat": "Cat",
    "animals:pet/dog": "Dog",
    "vehicles:car": "Car",
    "vehicles:bus": "Bus",
    "plants:tree": "Tree",
}


@dataclass(frozen=True)
class Facts:
    width: int
    height: int
    keywords: tuple[str, ...]
    title: str | None = None
    description: str | None = None
    content_type: str | None = "image/jpeg"
    format: str = "JPEG"
    decoder: str = "pillow"
    media: str = "image"
    duration: float | None = None


def read_facts(data: bytes, *, max_pixels: int) -> Facts:
    """b'cat 3 kw:Cat small': shows a cat, carries the keyword Cat, 100 px (800 px without 'small')."""
    words = data.decode().split()
    keywords = tuple(w[3:] for w in words if w.startswith("kw:"))
    side = 100 if "small" in words else 800
    return Facts(side, side, keywords)


def vector(data: bytes) -> np.ndarray[Any, Any]:
    seed = int.from_bytes(hashlib.sha256(data).digest()[:4], "little")
    v = np.random.default_rng(seed).normal(scale=0.25, size=DIM)
    v[SUBJECTS[data.decode().split()[0]]] += 1.0
    return (v / np.linalg.norm(v)).astype(np.float32)


class SubjectEmbedder:
    backbone_id = "fake:1"
    sha256 = "0" * 64
    input_size = 4

    def __init__(self) -> None:
        self.embedded = 0

    def iter_embed(self, items: Sequence[Any], load: Callable[[Any], bytes]) -> Iterator[Any]:
        for item in items:
            data = load(item)
            self.embedded += 1
            yield CorruptImage("truncated") if data.startswith(b"broken") else vector(data)


@dataclass
class World:
    index: FakeIndex
    assets: AssetIndex
    store: FakeStore
    models: ModelStore
    runs: RunLog
    embedder: SubjectEmbedder

    def trainer(self, **training: Any) -> Trainer:
        settings = settings_mod.load(aws={"bucket": BUCKET}, training={"cv_folds": 3, **training})
        return Trainer(
            settings,
            self.assets,
            lambda bucket: self.store,
            lambda: self.embedder,
            read_facts=read_facts,
            models=self.models,
            taxonomy=TaxonomyStore(self.index),
            runs=self.runs,
        )

    def put(self, prefix: str, subject: str, count: int, extra: str = "") -> list[str]:
        keys = []
        for i in range(count):
            key = f"{prefix}{subject}-{i}.jpg"
            self.store.put_bytes(key, f"{subject} {i} {extra}".encode())
            keys.append(key)
        return keys


@pytest.fixture
def world() -> World:
    index, store = FakeIndex(), FakeStore(BUCKET)
    for tag, title in TAGS.items():
        index.put("taxonomy", tag, {"tag": tag, "titles": {"en": title}, "synonyms": {}})
    settings = settings_mod.load(aws={"bucket": BUCKET})
    return World(
        index, AssetIndex(index), store, ModelStore(store, settings.aws.models_prefix), RunLog(index), SubjectEmbedder()
    )


def _folder_a(world: World) -> None:
    world.put("a/", "cat", 8, "kw:Cat")
    world.put("a/", "dog", 8, "kw:Dog")
    world.put("a/", "tree", 4)  # untagged: negatives for every tag


def test_training_one_folder_keeps_the_other_tags_heads(world: World) -> None:
    _folder_a(world)
    world.put("b/", "car", 8, "kw:Car")
    world.put("b/", "bus", 8, "kw:Bus")
    first = world.trainer().train([Folder(BUCKET, "a/")], trigger="on_demand")
    assert first.retrained == ["animals:pet", "animals:pet/cat", "animals:pet/dog"] and first.carried_over == []
    before = world.models.load_active()

    second = world.trainer().train([Folder(BUCKET, "b/")], trigger="on_demand")
    assert second.retrained == ["vehicles:bus", "vehicles:car"]
    assert second.carried_over == ["animals:pet", "animals:pet/cat", "animals:pet/dog"]
    model = world.models.load_active()
    assert model.version == second.model_version
    assert model.heads.tags == ("animals:pet", "animals:pet/cat", "animals:pet/dog", "vehicles:bus", "vehicles:car")
    assert model.manifest.carried_over == dict.fromkeys(second.carried_over, first.model_version)
    # The carried heads are the first model's, unchanged, with its metrics.
    for tag in second.carried_over:
        i, j = before.heads.tags.index(tag), model.heads.tags.index(tag)
        np.testing.assert_array_equal(before.heads.weights[:, i], model.heads.weights[:, j])
        assert model.manifest.metrics[tag] == before.manifest.metrics[tag]
    # Both folders' pictures are tagged by the one active model.
    for subject, tag in [("cat", "animals:pet/cat"), ("bus", "vehicles:bus")]:
        chosen, _ = score_embedding(model, vector(f"{subject} 99 ".encode()))
        assert tag in [t.tag for t in chosen]
    rows = {row.tag: row for row in second.rows}
    assert set(rows) == set(TAGS)  # every taxonomy tag has a row
    assert rows["animals:pet/cat"].carried_from == first.model_version
    assert "carried over from model" in rows["animals:pet/cat"].advice[0]
    assert rows["plants:tree"].status == NOT_TRAINED and "no picture" in rows["plants:tree"].advice[0]
    run = world.runs.get(second.run_id)
    assert run is not None and run.report is not None and run.report["carried_over"] == second.carried_over
    # The run's counts say what it did (the runs page shows them), not 0/0/0.
    assert run.to_json()["counts"] == {
        "read": 16,
        "used": 16,
        "embedded": 16,
        "retrained": 2,
        "carried_over": 3,
        "not_trained": 1,
        "failed": 0,
    }

    # A third run carries the heads over again, still naming the model they were trained in.
    third = world.trainer().train([Folder(BUCKET, "b/")], trigger="on_demand")
    assert world.models.load_active().manifest.carried_over["animals:pet/cat"] == first.model_version
    assert third.carried_over == second.carried_over


def test_a_head_of_another_backbone_is_not_carried_over(world: World) -> None:
    _folder_a(world)
    world.put("b/", "car", 8, "kw:Car")
    world.put("b/", "bus", 8, "kw:Bus")
    world.trainer().train([Folder(BUCKET, "a/")], trigger="on_demand")
    world.embedder.backbone_id = "fake:2"  # type: ignore[misc]
    report = world.trainer().train([Folder(BUCKET, "b/")], trigger="on_demand")
    assert report.carried_over == [] and world.models.load_active().heads.tags == ("vehicles:bus", "vehicles:car")


def test_untagged_pictures_removals_and_siblings_are_negatives(world: World) -> None:
    _folder_a(world)
    trainer = world.trainer()
    ingest.sync_folder(
        world.assets, world.store, Folder(BUCKET, "a/"), TaxonomyStore(world.index).load(), read_facts=read_facts
    )
    # A moderator removed "Cat" from an untagged tree picture: a negative for Cat.
    stored = world.assets.get(Asset(BUCKET, "a/tree-0.jpg").id)
    assert stored is not None
    world.assets.put(stored.asset.reject("animals:pet/cat"), expected=stored)

    report = trainer.train([Folder(BUCKET, "a/")], trigger="on_demand")
    assert report.images_used == 20 and report.untagged_negatives == 4
    assert any("4 untagged picture(s)" in note for note in report.notes)
    rows = {row.tag: row for row in report.rows}
    assert rows["animals:pet/cat"].negatives == {"untagged": 3, "removed": 1, "siblings": 8, "other": 0}
    assert rows["animals:pet/dog"].negatives == {"untagged": 4, "removed": 0, "siblings": 8, "other": 0}
    # Without the untagged pictures every picture would carry "Pet", and it could not be trained.
    assert rows["animals:pet"].negatives == {"untagged": 4, "removed": 0, "siblings": 0, "other": 0}
    assert rows["animals:pet"].status != NOT_TRAINED


def test_the_report_counts_the_labels_that_came_from_the_review_queue(world: World) -> None:
    _folder_a(world)
    ingest.sync_folder(
        world.assets, world.store, Folder(BUCKET, "a/"), TaxonomyStore(world.index).load(), read_facts=read_facts
    )
    verdicts = [("a/tree-0.jpg", "animals:pet/cat", False), ("a/tree-1.jpg", "animals:pet/dog", True)]
    for key, tag, accept in verdicts:  # a reviewer rejected Cat on one tree picture, accepted Dog on another
        stored = world.assets.get(Asset(BUCKET, key).id)
        assert stored is not None
        changed = stored.asset.promote(tag, reviewed=True) if accept else stored.asset.reject(tag, reviewed=True)
        world.assets.put(changed, expected=stored)
    stored = world.assets.get(Asset(BUCKET, "a/tree-2.jpg").id)
    assert stored is not None
    world.assets.put(stored.asset.reject("animals:pet/cat"), expected=stored)  # plain moderation: not review
    report = world.trainer().train([Folder(BUCKET, "a/")], trigger="on_demand")
    rows = {row.tag: row for row in report.rows}
    assert rows["animals:pet/cat"].from_review == 1 and rows["animals:pet/dog"].from_review == 1
    assert rows["animals:pet"].from_review == 0 and report.from_review == 2
    assert "2 label(s) from the review queue" in as_table(report)
    # A later plain moderation of a reviewed tag takes the verdict over: no longer from review.
    assert not Asset(BUCKET, "k").reject("t", reviewed=True).promote("t").reviewed


def test_the_resolution_guideline_advises_and_a_strict_setting_excludes(world: World) -> None:
    world.put("a/", "cat", 6, "kw:Cat small")
    world.put("a/", "dog", 6, "kw:Dog")
    world.put("a/", "tree", 4)
    advised = world.trainer().train([Folder(BUCKET, "a/")], trigger="on_demand", activate=False)
    cat = {row.tag: row for row in advised.rows}["animals:pet/cat"]
    assert cat.images == 6 and cat.below_resolution == 6 and cat.excluded_low_resolution == 0
    assert cat.status != NOT_TRAINED
    assert any("training.min_resolution" in a and "training.strict_resolution" in a for a in cat.advice)
    assert any("SMARTTAGS_TRAINING__MIN_RESOLUTION" in note for note in advised.notes)

    strict = world.trainer(strict_resolution=True).train([Folder(BUCKET, "a/")], trigger="on_demand")
    cat = {row.tag: row for row in strict.rows}["animals:pet/cat"]
    assert cat.status == NOT_TRAINED and cat.images == 0 and cat.excluded_low_resolution == 6
    assert any("left out (training.strict_resolution)" in a for a in cat.advice)
    assert strict.images_used == 10 and len(strict.excluded_low_resolution) == 6


def test_nothing_trainable_makes_no_model_and_every_tag_has_a_row(world: World) -> None:
    world.put("a/", "cat", 3, "kw:Cat")
    report = world.trainer().train([Folder(BUCKET, "a/")], trigger="on_demand")
    assert report.model_version is None and world.models.active_version() is None
    rows = {row.tag: row for row in report.rows}
    assert set(rows) == set(TAGS) and all(row.status == NOT_TRAINED for row in rows.values())
    assert rows["animals:pet/cat"].advice == ["add 27 or more images with this tag (training needs at least 5)"]


def test_the_same_pictures_under_another_folder_make_the_same_model(world: World) -> None:
    for prefix in ("a/", "renamed/"):
        world.put(prefix, "cat", 8, "kw:Cat")
        world.put(prefix, "dog", 8, "kw:Dog")
        world.put(prefix, "tree", 4)
    one = world.trainer().train([Folder(BUCKET, "a/")], trigger="on_demand")
    two = world.trainer().train([Folder(BUCKET, "renamed/")], trigger="on_demand")
    first, second = world.models.load(one.model_version or ""), world.models.load(two.model_version or "")
    np.testing.assert_allclose(first.heads.weights, second.heads.weights, rtol=1e-5, atol=1e-6)
    assert [(r.tag, r.average_precision, r.threshold) for r in one.rows] == [
        (r.tag, r.average_precision, r.threshold) for r in two.rows
    ]


def test_duplicate_groups_join_connected_rows() -> None:
    assert duplicate_groups(["d", "b", "c", "a", "e"], [(0, 1), (1, 3)]) == ["a", "a", "c", "a", "e"]


@dataclass
class WindowServices:
    settings: settings_mod.Settings
    index: FakeIndex
    assets: AssetIndex
    runs: RunLog
    models: ModelStore
    queue: Any
    folders: FolderRegistry
    trainer: Trainer


def test_the_weekly_window_trains_once_over_every_enabled_folder(world: World) -> None:
    _folder_a(world)
    world.put("b/", "car", 8, "kw:Car")
    world.put("b/", "bus", 8, "kw:Bus")
    folders = FolderRegistry(world.index)
    for prefix in ("a/", "b/"):
        folders.set_enabled(Folder(BUCKET, prefix), True)
    trainer = world.trainer()
    services = WindowServices(
        settings_mod.load(aws={"bucket": BUCKET}),
        world.index,
        world.assets,
        world.runs,
        world.models,
        None,
        folders,
        trainer,
    )
    fire = datetime(2026, 12, 5, 0, 30, tzinfo=UTC)
    run_ids = run_window(services, TRAINING_WINDOW, fire, owner="test")
    assert run_ids is not None and len(run_ids) == 1
    run = world.runs.get(run_ids[0])
    assert run is not None and sorted(run.folders) == [f"s3://{BUCKET}/a/", f"s3://{BUCKET}/b/"]
    assert world.models.load_active().heads.tags == (
        "animals:pet",
        "animals:pet/cat",
        "animals:pet/dog",
        "vehicles:bus",
        "vehicles:car",
    )
    assert run_window(services, TRAINING_WINDOW, fire, owner="other") is None  # once per window


def test_a_removal_outside_the_training_folders_is_a_negative_for_that_tag_only(world: World) -> None:
    _folder_a(world)
    # A cat picture in an upload folder that a moderator said is not a dog: a negative for Dog only.
    world.store.put_bytes("up/x.jpg", b"cat 77")
    taxonomy = TaxonomyStore(world.index).load()
    ingest.sync_folder(world.assets, world.store, Folder(BUCKET, "up/"), taxonomy, read_facts=read_facts)
    stored = world.assets.get(Asset(BUCKET, "up/x.jpg").id)
    assert stored is not None
    world.assets.put(stored.asset.reject("animals:pet/dog"), expected=stored)
    report = world.trainer().train([Folder(BUCKET, "a/")], trigger="on_demand")
    rows = {row.tag: row for row in report.rows}
    assert rows["animals:pet/dog"].negatives["removed"] == 1
    assert rows["animals:pet/cat"].negative_total == 12 and rows["animals:pet"].negative_total == 4  # unknown there
    assert report.images_used == 21 and report.untagged_negatives == 4
    assert any("1 picture(s) outside these folders" in note for note in report.notes)


def test_nested_folders_count_each_picture_once(world: World) -> None:
    _folder_a(world)
    world.put("a/more/", "cat", 2, "kw:Cat")
    report = world.trainer().train([Folder(BUCKET, "a/"), Folder(BUCKET, "a/more/")], trigger="on_demand")
    assert report.images_used == 22


def test_a_manifest_over_several_folders_reports_only_keys_matching_none(world: World) -> None:
    world.put("a/", "cat", 6)
    world.put("b/", "dog", 6)
    manifest = ingest.read_manifest(
        "key,tags\n" + "".join(f"a/cat-{i}.jpg,Cat\n" for i in range(6)) + "dog-0.jpg,Dog\nnowhere.jpg,Dog\n"
    )
    report = world.trainer().train([Folder(BUCKET, "a/"), Folder(BUCKET, "b/")], trigger="on_demand", manifest=manifest)
    problems = [n for n in report.notes if n.startswith("manifest")]
    assert problems == [
        f"manifest line 9: no object under s3://{BUCKET}/b/ matches (tried 'nowhere.jpg' and 'b/nowhere.jpg')"
    ]
    rows = {row.tag: row for row in report.rows}
    assert rows["animals:pet/cat"].images == 6 and rows["animals:pet/dog"].images == 1
