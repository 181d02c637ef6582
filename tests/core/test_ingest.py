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
    media: str = "image"
    duration: float | None = None


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
    # New bytes add their keywords' tags; the tags the asset held stay (only a manifest row changes them).
    assert held(world, "f/a.jpg").tags == ("animals:cat", "animals:dog")  # type: ignore[union-attr]
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


def test_a_resync_after_new_bytes_keeps_the_manifest_tags(world: Any) -> None:
    """Issue 13, item 4: ingest with a manifest, a retouched file, ingest again without it."""
    _, store = world
    store.put_bytes("f/a.jpg", b"plain")
    sync(world, manifest={"f/a.jpg": ["Cat"]})
    store.put_bytes("f/a.jpg", b"plain, retouched")
    result = sync(world)
    assert result.changed == 1 and held(world, "f/a.jpg").tags == ("animals:cat",)  # type: ignore[union-attr]
    assert held(world, "f/a.jpg").etag == store.head("f/a.jpg").etag  # type: ignore[union-attr]


def test_a_manifest_row_with_no_tags_clears_them_but_keywords_stay(world: Any) -> None:
    _, store = world
    store.put_bytes("f/a.jpg", b"kw:Dog")
    sync(world, manifest={"f/a.jpg": ["Cat"]})
    assert held(world, "f/a.jpg").tags == ("animals:cat", "animals:dog")  # type: ignore[union-attr]
    sync(world, manifest={"f/a.jpg": []})
    assert held(world, "f/a.jpg").tags == ("animals:dog",)  # type: ignore[union-attr]


TREE = Taxonomy(
    [
        Tag("nature:animals", {"en": "Animals"}),
        Tag("nature:animals/birds", {"en": "Birds"}),
        Tag("nature:animals/cats", {"en": "Cats"}),
        Tag("food:animals/birds", {"en": "Poultry"}),
        Tag("food:fruit", {"en": "Fruit"}),
    ]
)


def test_manifest_mistakes_are_reported_with_their_line_and_nothing_is_dropped(world: Any) -> None:
    assets, store = world
    store.put_bytes("photos/a.jpg", b"plain")
    store.put_bytes("photos/b.jpg", b"plain")
    manifest = read_manifest(
        "key,tags\n"
        "a.jpg,animals/cats\n"  # relative to the folder; a tag without its namespace, unique
        "photos/b.jpg,nature:animals/cat;animals/birds\n"  # a typo; a path two namespaces share
        "c.jpg,fruit\n"  # no such object
    )
    result = sync_folder(assets, store, Folder(BUCKET, "photos/"), TREE, read_facts=read_facts, manifest=manifest)
    assert held(world, "photos/a.jpg").tags == ("nature:animals/cats",)  # type: ignore[union-attr]
    assert held(world, "photos/b.jpg").tags == ()  # type: ignore[union-attr]
    assert result.messages() == [
        "manifest line 4: no object under s3://assets/photos/ matches (tried 'c.jpg' and 'photos/c.jpg')",
        "manifest line 3: tag 'nature:animals/cat' is not in the taxonomy (closest: nature:animals/cats, "
        "nature:animals, nature:animals/birds)",
        "manifest line 3: tag 'animals/birds' matches several taxonomy ids (food:animals/birds, nature:animals/birds): "
        "write the full id",
    ]
    assert result.unknown_tags == {"nature:animals/cat": ["photos/b.jpg"], "animals/birds": ["photos/b.jpg"]}


class Interleaved:
    """The assets index, but ``meanwhile`` runs once just before the first write through this view: the
    other writer's work lands between this one's read and its write."""

    def __init__(self, inner: AssetIndex, meanwhile: Any) -> None:
        self._inner, self._meanwhile = inner, meanwhile

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _first(self) -> None:
        meanwhile, self._meanwhile = self._meanwhile, None
        if meanwhile:
            meanwhile()

    def put(self, *args: Any, **kwargs: Any) -> Any:
        self._first()
        return self._inner.put(*args, **kwargs)

    def merge(self, *args: Any, **kwargs: Any) -> None:
        self._first()
        self._inner.merge(*args, **kwargs)


def _tagger(assets: Any, store: FakeStore, index: FakeIndex) -> Any:
    from tests.core.test_tagging_unit import make_tagger

    return make_tagger(assets, store, index, "f/")


@pytest.mark.parametrize("first", ["sync", "tagger"])
def test_a_resync_racing_the_upload_event_loses_nothing(first: str) -> None:
    """The retouched file's upload event and a sync without the manifest run at once, each read before
    the other writes: the manifest's tag, the new facts and the smart tags all survive."""
    from smarttags.core import events

    index, store = FakeIndex(), FakeStore(BUCKET)
    assets = AssetIndex(index)
    store.put_bytes("f/a.jpg", b"red picture")
    sync_folder(assets, store, Folder(BUCKET, "f/"), TAXONOMY, read_facts=read_facts, manifest={"f/a.jpg": ["Cat"]})
    store.put_bytes("f/a.jpg", b"red picture, retouched")
    event = events.ObjectEvent(events.TAG, BUCKET, "f/a.jpg")

    def resync(view: Any) -> None:
        sync_folder(view, store, Folder(BUCKET, "f/"), TAXONOMY, read_facts=read_facts)

    if first == "sync":  # the sync has read the folder; the tagger writes before it does
        tagger = _tagger(assets, store, index)
        resync(Interleaved(assets, lambda: tagger.handle(event)))
    else:  # the tagger has read the asset; the sync writes before it does (its write then conflicts)
        tagger = _tagger(Interleaved(assets, lambda: resync(assets)), store, index)
        tagger.handle(event)
    after = held((assets, store), "f/a.jpg")
    assert after is not None and after.tags == ("animals:cat",)
    assert after.smart_ids == ("shapes:red",) and after.status == TaggingStatus.TAGGED
    assert after.etag == store.head("f/a.jpg").etag and after.tagging.etag == after.etag
