"""Moderation on the in-memory fakes: edits land with optimistic concurrency and leave an audit record."""

from __future__ import annotations

import pytest
from smarttags.adapters.asset_index import AssetIndex
from smarttags.core.asset import Asset, SmartTag
from smarttags.core.moderation import PROMOTE, REMOVE, Moderation
from smarttags.errors import ConflictError, NotFound, RequestError

from tests.fakes import FakeIndex


def _world() -> tuple[FakeIndex, AssetIndex, Moderation, str]:
    index = FakeIndex()
    assets = AssetIndex(index)
    asset = Asset("b", "a.jpg").with_smart_tags([SmartTag("x:cat", 0.9, "m1"), SmartTag("x:dog", 0.4, "m1")])
    assets.put(asset)
    return index, assets, Moderation(assets, index), asset.id


def test_remove_and_promote_are_audited_once() -> None:
    index, assets, moderation, asset_id = _world()
    assert moderation.remove(asset_id, "x:cat", user="mod").smart_ids == ("x:dog",)
    moderation.remove(asset_id, "x:cat", user="mod")  # nothing left to change: no second record
    promoted = moderation.promote(asset_id, "x:dog", user="lead")
    assert promoted.smart_ids == ("x:dog",) and promoted.promoted == {"x:dog"}
    trail = sorted(
        (doc["action"], doc["user"], doc["tag"]) for (kind, _), (doc, _) in index.docs.items() if kind == "audit"
    )
    assert trail == [(PROMOTE, "lead", "x:dog"), (REMOVE, "mod", "x:cat")]
    assert assets.get(asset_id).asset.rejected == {"x:cat"}  # type: ignore[union-attr]


def test_a_missing_asset_and_an_asset_that_keeps_changing() -> None:
    _, assets, moderation, asset_id = _world()
    with pytest.raises(NotFound):
        moderation.remove("0" * 40, "x:cat", user="mod")
    real_put = assets.put

    def always_conflict(asset: Asset, **kwargs: object) -> None:
        raise ConflictError("opensearch", "changed")

    assets.put = always_conflict  # type: ignore[method-assign]
    with pytest.raises(ConflictError, match="kept changing"):
        moderation.promote(asset_id, "x:cat", user="mod")
    assets.put = real_put  # type: ignore[method-assign]
    assert assets.get(asset_id).asset.promoted == frozenset()  # type: ignore[union-attr]


def test_bulk_changes_each_asset_once_with_its_own_audit_record() -> None:
    index, assets, moderation, asset_id = _world()
    other = Asset("b", "b.jpg").with_smart_tags([SmartTag("x:dog", 0.8, "m1")])
    assets.put(other)
    done = moderation.bulk([asset_id, other.id, other.id, "f" * 40], REMOVE, "x:dog", user="mod")
    assert (done.changed, done.unchanged, done.missing) == (2, 0, 1)
    assert moderation.bulk([asset_id], REMOVE, "x:dog", user="mod").unchanged == 1
    trail = [doc for (kind, _), (doc, _) in index.docs.items() if kind == "audit"]
    assert sorted(doc["asset_id"] for doc in trail) == sorted([asset_id, other.id])
    assert all(doc["action"] == REMOVE and doc["user"] == "mod" for doc in trail)
    assert moderation.bulk([other.id], PROMOTE, "x:cat", user="mod").changed == 1
    with pytest.raises(RequestError, match="at most 1000"):
        moderation.bulk(["a"] * 1001, REMOVE, "x:dog", user="mod")
    with pytest.raises(RequestError, match="bulk action"):
        moderation.bulk([asset_id], "unpromote_tag", "x:dog", user="mod")
