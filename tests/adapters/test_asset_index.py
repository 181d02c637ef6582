"""The asset's one document form: ``Asset`` <-> OpenSearch document (the mapping is the contract), and the
reads and writes of ``AssetIndex`` on the in-memory fake of the index."""

from dataclasses import replace

import pytest
from smarttags.adapters.asset_index import AssetIndex, from_document, to_document, vector_document
from smarttags.core.asset import Asset, SmartTag, StoredEmbedding, TaggingStatus
from smarttags.core.folders import Folder

from tests.fakes import FakeIndex


def _asset() -> Asset:
    return Asset("b", "cars/red car.jpg", etag="e1", size=10, content_type="image/jpeg")


def test_promotion_is_stored_once():
    doc = to_document(_asset().with_smart_tags([SmartTag("cars:suv", 0.6, "m1")]).promote("cars:suv"))
    assert doc["promoted_tags"] == ["cars:suv"]
    assert all(set(entry) == {"tag", "confidence", "model_version"} for entry in doc["smart_tags"])


def test_the_document_round_trips():
    asset = (
        Asset(
            "b",
            "a/b/c.jpg",
            etag="e",
            size=3,
            content_type="image/heic",
            sequencer="00AB",
            modified="2026-01-02T03:04:05.000+00:00",
            created="2026-01-01T00:00:00.000+00:00",
            title="T",
            keywords=("k1", "k2"),
            format="HEIF",
            decoder="pillow-heif",
            tags=("cars:suv",),
            embedding=StoredEmbedding((0.5, 0.25), "lite0:abc", "e"),
        )
        .with_smart_tags([SmartTag("cars:sedan", 0.7, "m1", threshold=0.5)])
        .with_near_misses([SmartTag("cars:suv", 0.4, "m1", threshold=0.5)])
        .reject("people:woman")
        .with_status(TaggingStatus.TAGGED, model_version="m1", etag="e")
        .touched()
    )
    doc = to_document(asset)
    assert doc["asset_id"] == asset.id and doc["folder"] == "a/b" and doc["smart_ids"] == ["cars:sedan"]
    assert doc["tagging"]["status"] == "tagged" and doc["embedding_model"] == "lite0:abc"
    assert "embedding" not in doc  # the vector has a document of its own
    assert from_document(doc, vector_document(asset)) == asset
    assert from_document(doc) == replace(asset, embedding=None)


def _vector_writes(index: FakeIndex) -> int:
    return sum(1 for (kind, _), _ in index.docs.items() if kind == "vectors")


def test_the_vector_is_written_only_when_it_changes() -> None:
    index = FakeIndex()
    assets = AssetIndex(index)
    embedded = replace(_asset(), embedding=StoredEmbedding((0.6, 0.8), "lite0:abc", "e1"))
    stored = assets.put(embedded)
    vector_seq = index.docs[("vectors", embedded.id)][1]
    # A claim, a re-tag, a moderator's edit: the asset's document only, the vector stays as written.
    stored = assets.put(stored.asset.with_smart_tags([SmartTag("cars:suv", 0.6, "m1")]), expected=stored)
    (stored,) = assets.put_many([(stored.asset.reject("cars:suv"), stored)])
    assert index.docs[("vectors", embedded.id)][1] == vector_seq
    assert assets.get(embedded.id).asset.embedding == embedded.embedding  # type: ignore[union-attr]
    # New bytes, a new embedding: written again, with the ETag it belongs to.
    newer = replace(stored.asset, etag="e2", embedding=StoredEmbedding((1.0, 0.0), "lite0:abc", "e2"))  # type: ignore[union-attr]
    (stored,) = assets.put_many([(newer, stored)])
    assert index.docs[("vectors", embedded.id)][0]["etag"] == "e2"
    assert assets.get_many([embedded.id])[0].asset.embedding == newer.embedding  # type: ignore[union-attr]
    assert assets.delete(stored) and ("vectors", embedded.id) not in index.docs  # type: ignore[arg-type]


def test_a_vector_that_is_not_the_one_its_asset_names_is_no_embedding() -> None:
    index = FakeIndex()
    assets = AssetIndex(index)
    embedded = replace(_asset(), embedding=StoredEmbedding((0.6, 0.8), "lite0:abc", "e1"))
    assets.put(embedded)
    index.put("vectors", embedded.id, {**vector_document(embedded), "etag": "e0"})  # an older bytes' vector
    assert assets.get(embedded.id).asset.embedding is None  # type: ignore[union-attr]
    index.put("vectors", embedded.id, {**vector_document(embedded), "backbone": "lite2:def"})
    assert assets.get(embedded.id).asset.embedding is None  # type: ignore[union-attr]


def test_a_document_written_before_the_vectors_index_moves_its_vector_on_the_next_write() -> None:
    index = FakeIndex()
    assets = AssetIndex(index)
    embedded = replace(_asset(), embedding=StoredEmbedding((0.6, 0.8), "lite0:abc", "e1"))
    index.put("assets", embedded.id, {**to_document(embedded), "embedding": [0.6, 0.8]})  # the old shape
    stored = assets.get(embedded.id)
    assert stored is not None and stored.asset.embedding == embedded.embedding
    assert [a.embedding for a in assets.scan(Folder("b", "cars/"), attributes=["embedding"])] == [embedded.embedding]
    assets.put(stored.asset.reject("cars:suv"), expected=stored)
    assert "embedding" not in index.docs[("assets", embedded.id)][0]
    assert index.docs[("vectors", embedded.id)][0]["embedding"] == [0.6, 0.8]
    assert assets.get(embedded.id).asset.embedding == embedded.embedding  # type: ignore[union-attr]


def test_a_partial_read_fills_defaults():
    asset = from_document({"bucket": "b", "key": "k.jpg", "tagging": {"status": "failed", "etag": "e"}})
    assert asset.status == TaggingStatus.FAILED and asset.smart_tags == () and asset.embedding is None


def test_merge_writes_only_the_named_attributes_and_scan_reads_a_folder() -> None:
    assets = AssetIndex(FakeIndex())
    tagged = _asset().with_smart_tags([SmartTag("cars:suv", 0.6, "m1")]).with_status(TaggingStatus.TAGGED)
    assets.put(tagged)
    synced = Asset("b", tagged.key, etag="e2", title="New title")
    assets.merge([synced, Asset("b", "cars/new.jpg", etag="e3")], ["etag", "title"])
    after = assets.get(tagged.id).asset  # type: ignore[union-attr]
    assert (after.etag, after.title, after.smart_ids, after.status) == ("e2", "New title", ("cars:suv",), "tagged")
    assert {a.key for a in assets.scan(Folder("b", "cars/"), attributes=["etag"])} == {tagged.key, "cars/new.jpg"}
    assert list(assets.scan(Folder("b", "boats/"))) == []
    embedded = Asset("b", "cars/new.jpg", etag="e3", embedding=StoredEmbedding((1.0,), "lite0:abc", "e3"))
    assets.merge([embedded], ["embedding"], create=False)  # training writes back what it embedded
    assert [a.embedding for a in assets.scan(Folder("b", "cars/"), attributes=["embedding"]) if a.embedding] == [
        embedded.embedding
    ]
    assets.delete_many([tagged.id, embedded.id])
    assert assets.get(tagged.id) is None and ("vectors", embedded.id) not in assets._index.docs  # type: ignore[attr-defined]


@pytest.mark.slow
def test_scan_rejected_on_opensearch(services) -> None:
    """The real index answers the ``exists`` filter the fake imitates: only assets with a removal."""
    assets = services.assets
    bucket = services.settings.aws.bucket
    plain = Asset(bucket, "up/plain.jpg", etag="e1")
    removed = Asset(bucket, "up/removed.jpg", etag="e2").reject("cars:suv")
    assets.merge([plain, removed, Asset("other-bucket", "x.jpg").reject("cars:suv")], ["etag"], create=True)
    assets.refresh()
    found = list(assets.scan_rejected(bucket, attributes=["rejected"]))
    assert [(a.key, a.rejected) for a in found] == [("up/removed.jpg", frozenset({"cars:suv"}))]


@pytest.mark.slow
def test_bulk_writes_on_opensearch_answer_each_asset_alone(services) -> None:
    from smarttags.errors import ConflictError

    assets = services.assets
    bucket = services.settings.aws.bucket
    first = assets.put(Asset(bucket, "up/a.jpg", etag="e1"))
    found, missing = assets.get_many([first.asset.id, Asset(bucket, "up/none.jpg").id])
    assert (found.asset.etag, found.seq_no, found.primary_term, missing) == (
        "e1",
        first.seq_no,
        first.primary_term,
        None,
    )
    changed = assets.put(Asset(bucket, "up/a.jpg", etag="e2"), expected=first)  # someone wrote in between
    answers = assets.put_many(
        [
            (Asset(bucket, "up/a.jpg", etag="e3"), first),  # a stale version: conflicts
            (Asset(bucket, "up/a.jpg", etag="e3"), None),  # created, but it exists: conflicts
            (Asset(bucket, "up/b.jpg", etag="e1"), None),  # a new asset
        ]
    )
    assert isinstance(answers[0], ConflictError) and isinstance(answers[1], ConflictError)
    assert assets.get_many([changed.asset.id])[0].asset.etag == "e2"  # the conflicting writes changed nothing
    (later,) = assets.put_many([(Asset(bucket, "up/b.jpg", etag="e2"), answers[2])])  # its version is usable
    assert later.asset.etag == "e2" and later.seq_no > answers[2].seq_no
