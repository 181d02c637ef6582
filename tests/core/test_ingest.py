"""Ingest on the in-memory fakes: a folder's objects become assets with their own tags, re-runs touch
only what changed, gone objects leave, and a sync never overwrites what the tagger or a moderator wrote."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from smarttags.adapters.asset_index import AssetIndex
from smarttags.core.asset import Asset, SmartTag, TaggingStatus
from smarttags.core.folders import Folder
from smarttags.core.ingest import read_manifest, sync_folder
from smarttags.core.taxonomy import Tag, Taxonomy
from smarttags.errors import CorruptImage, RequestError

from tests.fakes import FakeIndex, FakeStore

BUCKET = "assets"
TAXONOMY = Taxonomy([Tag("animals:cat", {"en": "Cat"}, {"en": ["kitten"]}), Tag("animals:dog", {"en": "Dog"})])


@dataclass(frozen=True)
class Facts:
    width: int = 800
    height: int = 600
    title: str | None = "a title"
    description: str | None = None
    keywords: tuple[str, ...] = ()
    content_type: str | None = "image/jpeg"
    format: str = "JPEG"
    decoder: str = "pillow"


def read_facts(data: bytes, *, max_pixels: int) -> Facts:
    """'kw:a,b' bytes carry keywords a and b; 'broken' bytes are not a picture."""
    if data.startswith(b"broken"):
        raise CorruptImage("truncated file")
    text = data.decode()
    return Facts(keywords=tuple(text[3:].split(",")) if text.startswith("kw:") else ())


@pytest.fixture
def world() -> Any:
    index, store = FakeIndex(), FakeStore(BUCKET)
    return AssetIndex(index), store


def sync(world: Any, prefix: str = "f/", **kwargs: Any) -> Any:
    assets, store = world
    return sync_folder(assets, store, Folder(BUCKET, prefix), TAXONOMY, read_facts=read_facts, **kwargs)


def held(world: Any, key: str) -> Asset | None:
    found = world[0].get(Asset(BUCKET, key).id)
    return found.asset if found else None


def test_keywords_naming_tags_become_own_tags_and_others_are_reported(world: Any) -> None:
    _, store = world
    store.put_bytes("f/cat.jpg", b"kw:kitten,animals:cow,sunset")
    store.put_bytes("f/bad.jpg", b"broken")
    store.put_bytes("_smarttags/models/x.json", b"{}")
    result = sync(world, "")
    assert (result.new, result.failed) == (1, [("f/bad.jpg", "corrupt: truncated file")])
    assert result.unknown_tags == {"animals:cow": ["f/cat.jpg"]}  # looks like a tag id, is not one
    cat = held(world, "f/cat.jpg")
    assert cat is not None and cat.tags == ("animals:cat",) and cat.format == "JPEG" and cat.title == "a title"
    assert cat.status == TaggingStatus.PENDING and held(world, "_smarttags/models/x.json") is None


def test_a_rerun_touches_only_what_changed_and_removes_what_is_gone(world: Any) -> None:
    _, store = world
    store.put_bytes("f/a.jpg", b"kw:Cat")
    store.put_bytes("f/b.jpg", b"kw:Dog")
    store.put_bytes("g/c.jpg", b"kw:Dog")
    sync(world)
    store.put_bytes("f/a.jpg", b"kw:Dog")
    store.delete("f/b.jpg")
    result = sync(world)
    assert (result.new, result.changed, result.unchanged, result.removed) == (0, 1, 0, 1)
    assert held(world, "f/a.jpg").tags == ("animals:dog",)  # type: ignore[union-attr]
    assert held(world, "f/b.jpg") is None and held(world, "g/c.jpg") is None  # g/ was never synced


def test_a_sync_keeps_smart_tags_moderation_and_tagging_state(world: Any) -> None:
    assets, store = world
    store.put_bytes("f/a.jpg", b"kw:Cat")
    sync(world)
    current = assets.get(Asset(BUCKET, "f/a.jpg").id)
    tagged = (
        current.asset.with_smart_tags([SmartTag("animals:dog", 0.8, "m1")])
        .reject("animals:cow")
        .with_status(TaggingStatus.TAGGED, model_version="m1", etag=current.asset.etag)
    )
    assets.put(tagged, expected=current)
    store.put_bytes("f/a.jpg", b"kw:Cat,Dog")  # new bytes: the sync updates the facts only
    sync(world)
    after = held(world, "f/a.jpg")
    assert after is not None and after.tags == ("animals:cat", "animals:dog")
    assert after.smart_ids == ("animals:dog",) and after.rejected == {"animals:cow"}
    assert after.status == TaggingStatus.TAGGED and after.etag != tagged.etag


def test_a_manifest_adds_tags_and_a_changed_manifest_is_applied(world: Any) -> None:
    _, store = world
    store.put_bytes("f/a.jpg", b"plain")
    sync(world, manifest={"f/a.jpg": ["Cat"]})
    assert held(world, "f/a.jpg").tags == ("animals:cat",)  # type: ignore[union-attr]
    result = sync(world, manifest={"f/a.jpg": ["animals:dog"]})
    assert result.changed == 1 and held(world, "f/a.jpg").tags == ("animals:dog",)  # type: ignore[union-attr]


def test_manifest_rows() -> None:
    assert read_manifest("key,tags\n/f/a.jpg, Cat ; animals:dog\n\nf/b.jpg,\n") == {
        "f/a.jpg": ["Cat", "animals:dog"],
        "f/b.jpg": [],
    }
    with pytest.raises(RequestError, match="line 2"):
        read_manifest("key,tags\nonly-a-key\n")
