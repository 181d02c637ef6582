"""The tagger's decisions on the in-memory fakes: no OpenSearch, no S3, no ONNX — milliseconds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from smarttags import settings as settings_mod
from smarttags.core import asset as assets
from smarttags.core import events
from smarttags.core.folders import FolderRegistry
from smarttags.core.heads import Heads, TagFit
from smarttags.core.model_registry import ModelStore
from smarttags.core.moderation import Moderation
from smarttags.core.runs import RunLog
from smarttags.core.tagging import RecordFailed, Tagger
from smarttags.core.taxonomy import TaxonomyStore
from smarttags.errors import CorruptImage

from tests.fakes import FakeIndex, FakeStore

BUCKET = "assets"


@dataclass(frozen=True)
class Facts:
    width: int = 800
    height: int = 600
    title: str | None = None
    description: str | None = None
    keywords: tuple[str, ...] = ()
    content_type: str | None = "image/png"


def read_facts(data: bytes, *, max_pixels: int) -> Facts:
    if data.startswith(b"broken"):
        raise CorruptImage("truncated file")
    return Facts()


class ByteEmbedder:
    """'red...' bytes embed along axis 0, anything else along axis 1."""

    model_id = "fake:1"
    sha256 = "0" * 64

    def embed_bytes(self, items: Any) -> list[Any]:
        return [np.eye(4, dtype=np.float32)[0 if data.startswith(b"red") else 1] for data in items]

    def iter_embed(self, items: Any, load: Any) -> Any:
        return iter(self.embed_bytes([load(i) for i in items]))


@pytest.fixture
def world() -> Any:
    index, store = FakeIndex(), FakeStore(BUCKET)
    settings = settings_mod.load(aws={"bucket": BUCKET})
    models = ModelStore(store, settings.aws.models_prefix)
    heads = Heads(
        ("shapes:red",),
        np.array([[20.0], [0], [0], [0]], np.float32),
        np.array([-10.0], np.float32),
        np.array([0.5], np.float32),
    )
    manifest = models.save(
        heads,
        [TagFit("shapes:red", 30, 1, 0.5, 1, 1, 1, 1)],
        backbone_id="fake:1",
        backbone_sha256="0" * 64,
        training_fingerprint="t",
        folders=[],
    )
    models.activate(manifest.version)
    folders = FolderRegistry(index)
    folders.set_enabled(BUCKET, "up/", True)
    tagger = Tagger(
        settings,
        index,
        lambda bucket: store,
        embedder=ByteEmbedder,
        read_facts=read_facts,
        models=models,
        taxonomy=TaxonomyStore(index),
        folders=folders,
        runs=RunLog(index),
    )
    return tagger, index, store


def created(key: str, sequencer: str) -> events.ObjectEvent:
    return events.ObjectEvent(events.CREATED, BUCKET, key, sequencer=sequencer)


def doc(index: FakeIndex, key: str) -> dict[str, Any]:
    found = index.get("assets", assets.asset_id(BUCKET, key))
    assert found is not None
    return found.source


def test_an_upload_in_an_enabled_folder_is_tagged(world: Any) -> None:
    tagger, index, store = world
    store.put_bytes("up/a.png", b"red circle")
    outcome = tagger.handle(created("up/a.png", "01"))
    assert (outcome.status, outcome.tags) == ("tagged", ("shapes:red",))
    assert doc(index, "up/a.png")["smart_scores"]["shapes:red"] > 0.99


def test_duplicates_and_older_events_change_nothing(world: Any) -> None:
    tagger, index, store = world
    store.put_bytes("up/a.png", b"red circle")
    tagger.handle(created("up/a.png", "02"))
    writes = index.writes
    assert tagger.handle(created("up/a.png", "02")).status == "duplicate"
    assert tagger.handle(created("up/a.png", "01")).status == "stale"
    assert index.writes == writes


def test_a_removed_tag_never_comes_back(world: Any) -> None:
    tagger, index, store = world
    store.put_bytes("up/a.png", b"red circle")
    tagger.handle(created("up/a.png", "01"))
    Moderation(index).remove(assets.asset_id(BUCKET, "up/a.png"), "shapes:red", user="mod")
    store.put_bytes("up/a.png", b"red circle, retouched")
    assert tagger.handle(created("up/a.png", "02")).tags == ()
    assert doc(index, "up/a.png")["rejected_tags"] == ["shapes:red"]


def test_folders_not_enabled_and_broken_files_are_recorded(world: Any) -> None:
    tagger, index, store = world
    store.put_bytes("other/a.png", b"red circle")
    assert tagger.handle(created("other/a.png", "01")).status == "not_enabled"
    store.put_bytes("up/bad.png", b"broken bytes", content_type="image/png")
    with pytest.raises(RecordFailed, match="truncated file"):
        tagger.handle(created("up/bad.png", "01"))
    assert doc(index, "up/bad.png")["tagging"]["status"] == "failed"


def test_the_nearest_registered_folder_decides() -> None:
    folders = FolderRegistry(FakeIndex())
    folders.set_enabled(BUCKET, "a/", True)
    folders.set_enabled(BUCKET, "a/b/", False)
    assert folders.is_enabled(BUCKET, "a/x.png") and not folders.is_enabled(BUCKET, "a/b/x.png")
    assert folders.is_enabled(BUCKET, "a/c/d/x.png") and not folders.is_enabled(BUCKET, "z/x.png")
