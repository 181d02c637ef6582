"""``refresh_fields`` on the real OpenSearch node: documents an older release wrote get this release's
derived fields in place; a moderator's concurrent edit wins and the asset is redone; a run resumes past
its checkpoint; the CLI command around it."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from smarttags.adapters.asset_index import AssetIndex, to_document
from smarttags.core.asset import Asset, SmartTag, StoredEmbedding
from smarttags.core.heads import Heads, TagFit
from smarttags.core.moderation import Moderation
from smarttags.core.refresh_fields import refresh_fields

pytestmark = pytest.mark.slow

VERSION = "20260101T000000Z"
NEW_FIELDS = ("smart_bands", "reviewed_tags", "near_scores", "near_misses", "review_margin")


def _model(services) -> None:
    tags = ("x:cat", "x:dog")
    heads = Heads(tags, np.zeros((4, 2), np.float32), np.zeros(2, np.float32), np.full(2, 0.5, np.float32))
    fits = [TagFit(t, 30, 1.0, 0.5, 0.9, 0.8, 0.85, 0.9) for t in heads.tags]
    services.models.save(
        heads, fits, backbone_id="t", backbone_sha256="0", training_fingerprint="f", folders=[], version=VERSION
    )
    services.models.activate(VERSION)


def _old_document(asset: Asset) -> dict:
    """The document as a release before these fields wrote it: none of them, no thresholds."""
    doc = to_document(asset)
    for name in NEW_FIELDS:
        del doc[name]
    for entry in doc["smart_tags"]:
        entry.pop("threshold", None)
    return doc


@pytest.fixture
def old_assets(services):
    _model(services)
    bucket = services.settings.aws.bucket
    assets = [
        Asset(bucket, f"old/{i}.jpg", etag="e").with_smart_tags(
            [SmartTag("x:cat", 0.55 + i / 100, VERSION), SmartTag("x:dog", 0.9, "a-model-deleted-since")]
        )
        for i in range(5)
    ]
    for asset in assets:
        services.index.put("assets", asset.id, _old_document(asset))
    services.index.refresh("assets")
    return sorted(a.id for a in assets)


def _source(services, asset_id: str) -> dict:
    return services.index.get("assets", asset_id).source


def test_old_documents_get_the_derived_fields_and_their_thresholds(services, old_assets):
    assert services.review.next() == []  # no threshold stored: nothing the queue can place
    pages: list[str] = []
    done = refresh_fields(services.assets, services.models, batch_size=2, checkpoint=pages.append)
    assert (done.written, done.retried, done.gone, done.thresholds) == (5, 0, 0, 5)
    assert pages == [old_assets[1], old_assets[3], old_assets[4]]  # each page's last id, in id order
    for asset_id in old_assets:
        source = _source(services, asset_id)
        assert all(name in source for name in NEW_FIELDS)
        assert source["smart_bands"] and source["reviewed_tags"] == []
        thresholds = {e["tag"]: e.get("threshold") for e in source["smart_tags"]}
        assert thresholds == {"x:cat": 0.5, "x:dog": None}  # the deleted model's tag keeps none
    services.index.refresh("assets")
    queue = services.review.next()
    assert {d.asset.id for d in queue} == set(old_assets) and {d.tag for d in queue} == {"x:cat"}  # now queued
    assert [round(d.margin, 2) for d in queue] == [0.05, 0.06, 0.07, 0.08, 0.09]
    # Resumed past the third asset, only the last two are written.
    again = refresh_fields(services.assets, services.models, after=old_assets[2])
    assert again.written == 2 and again.thresholds == 0


class _EditedDuringTheRefresh(AssetIndex):
    """The real assets index; a moderator removes a tag from one asset between our read and our write."""

    def __init__(self, index, asset_id: str) -> None:
        super().__init__(index)
        self._moderation = Moderation(AssetIndex(index), index)
        self._asset_id = asset_id
        self.writes = 0

    def put_many(self, writes):
        self.writes += 1
        if self.writes == 1:
            self._moderation.remove(self._asset_id, "x:cat", user="moderator")
        return super().put_many(writes)


def test_a_concurrent_moderator_edit_wins_and_the_asset_is_redone(services, old_assets):
    racing = _EditedDuringTheRefresh(services.index, old_assets[0])
    done = refresh_fields(racing, services.models)
    assert done.written == 5 and done.retried == 1 and racing.writes == 2
    source = _source(services, old_assets[0])
    assert source["rejected_tags"] == ["x:cat"] and "x:cat" not in source["smart_ids"]  # the edit stands
    assert "smart_bands" in source and source["smart_tags"][0].get("threshold") is None  # dog: model gone


def test_the_cli_command_resumes_and_clears_its_checkpoint(settings, services, old_assets, monkeypatch, capsys):
    from smarttags.entrypoints import cli
    from smarttags.entrypoints.cli.init import checkpoint_file

    monkeypatch.setattr(cli.settings_mod, "load", lambda *_: settings)
    saved = checkpoint_file(settings)
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps({"after": old_assets[3]}))
    assert cli.main(["index", "refresh-fields", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"resuming after asset {old_assets[3]}" in out and "1 assets rewritten" in out
    assert not saved.exists()
    assert "smart_bands" in _source(services, old_assets[4]) and "smart_bands" not in _source(services, old_assets[0])
    assert cli.main(["index", "refresh-fields", "--quiet"]) == 0
    assert "5 assets rewritten" in capsys.readouterr().out


def test_an_index_made_before_these_fields_learns_them_from_the_command(settings, services, os_client, monkeypatch):
    from smarttags.entrypoints import cli

    name = services.index.name("assets")
    body = services.index.index_body("assets")
    for field in ("near_misses", "near_scores", "review_margin"):
        del body["mappings"]["properties"][field]
    del body["mappings"]["properties"]["smart_tags"]["properties"]["threshold"]
    os_client.indices.delete(index=name)
    os_client.indices.create(index=name, body=body)
    _model(services)
    asset = Asset(settings.aws.bucket, "old/a.jpg", etag="e").with_smart_tags([SmartTag("x:cat", 0.55, VERSION)])
    services.index.put("assets", asset.id, _old_document(asset))  # the mapping is strict: it fits the old one
    monkeypatch.setattr(cli.settings_mod, "load", lambda *_: settings)
    assert cli.main(["index", "refresh-fields", "--quiet"]) == 0
    mapping = os_client.indices.get_mapping(index=name)[name]["mappings"]["properties"]
    assert mapping["review_margin"]["type"] == "float" and mapping["near_scores"]["type"] == "rank_features"
    assert _source(services, asset.id)["review_margin"] == pytest.approx(0.05)


def test_vectors_written_inside_the_asset_documents_move_to_the_vectors_index(services, os_client):
    """Before the vectors index, each asset's document held its k-NN vector: the refresh moves it, and a
    similar search finds the moved vectors."""
    name = services.index.name("assets")
    body = services.index.index_body("assets")
    body["settings"]["index"]["knn"] = True
    # As the assets mapping had it (lucene's HNSW: this node has no native k-NN libraries, faiss's
    # default engine would stop it at the first flush).
    method = {"name": "hnsw", "engine": "lucene", "space_type": "cosinesimil"}
    body["mappings"]["properties"]["embedding"] = {
        "type": "knn_vector",
        "dimension": services.embedding_dim,
        "method": method,
    }
    os_client.indices.delete(index=name)
    os_client.indices.create(index=name, body=body)
    _model(services)
    rng = np.random.default_rng(5)
    bucket = services.settings.aws.bucket
    vectors = {}
    for key in ("old/a.jpg", "old/b.jpg", "old/c.jpg"):
        vector = rng.normal(size=services.embedding_dim)
        vectors[key] = (vector / np.linalg.norm(vector)).tolist()
        asset = replace(Asset(bucket, key, etag="e"), embedding=StoredEmbedding(tuple(vectors[key]), "t", "e"))
        services.index.put("assets", asset.id, {**to_document(asset), "embedding": vectors[key]})
    services.index.refresh("assets")
    assert services.assets.get(Asset(bucket, "old/a.jpg").id).asset.embedding.vector == tuple(vectors["old/a.jpg"])
    done = refresh_fields(services.assets, services.models)
    assert done.written == 3
    services.assets.refresh()
    for key, vector in vectors.items():
        asset_id = Asset(bucket, key).id
        assert "embedding" not in _source(services, asset_id)
        moved = services.index.get("vectors", asset_id).source
        assert np.allclose(moved["embedding"], vector) and (moved["etag"], moved["backbone"]) == ("e", "t")
    assert {h.key for h in services.searcher.similar("old/a.jpg", size=2)} == {"old/b.jpg", "old/c.jpg"}
