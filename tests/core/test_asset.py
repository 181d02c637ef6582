"""The asset value: moderation and re-tagging rules, run counting, folders."""

import numpy as np
import pytest
from smarttags.adapters.asset_index import to_document
from smarttags.core.asset import (
    Asset,
    Handled,
    SmartTag,
    TaggingStatus,
    asset_id,
    feature_name,
    run_counter,
)
from smarttags.core.folders import Folder
from smarttags.core.heads import Heads
from smarttags.core.model_registry import Manifest, Model, apply_thresholds, near_misses

TAGS = ("cars:sedan", "cars:suv", "cars:coupe", "people:woman")


def _asset() -> Asset:
    return Asset("b", "cars/red car.jpg", etag="e1", size=10, content_type="image/jpeg")


def test_thresholds_respect_moderation():
    scores = np.array([0.9, 0.2, 0.7, 0.6])
    thresholds = np.array([0.5, 0.5, 0.8, 0.5])
    chosen = apply_thresholds(
        TAGS, scores, thresholds, model_version="m1", rejected=["people:woman"], promoted=["cars:suv"]
    )
    # suv is promoted (kept whatever its score, listed first); woman was rejected; coupe is under threshold.
    assert [t.tag for t in chosen] == ["cars:suv", "cars:sedan"]
    assert apply_thresholds(TAGS, scores, thresholds, model_version="m1", max_tags=1) == [
        SmartTag("cars:sedan", 0.9, "m1", threshold=0.5)  # the threshold it cleared is kept
    ]


def _model(thresholds: list[float]) -> Model:
    heads = Heads(
        TAGS, np.zeros((2, 4), dtype=np.float32), np.zeros(4, dtype=np.float32), np.array(thresholds, np.float32)
    )
    manifest = Manifest("m1", "b", "0", list(TAGS), {}, {}, "f", "2026-01-01")
    return Model(manifest, heads)


def test_near_misses_are_the_scores_just_below_their_threshold_nearest_first():
    model = _model([0.5, 0.5, 0.75, 0.5])
    scores = {"cars:sedan": 0.9, "cars:suv": 0.45, "cars:coupe": 0.65, "people:woman": 0.2}
    near = near_misses(model, scores, chosen=["cars:sedan"], margin=0.15)
    # suv is 0.05 short, coupe 0.10; woman 0.30 short is no near miss; sedan was applied.
    assert [(t.tag, t.confidence, t.threshold) for t in near] == [("cars:suv", 0.45, 0.5), ("cars:coupe", 0.65, 0.75)]
    assert [t.tag for t in near_misses(model, scores, chosen=[], rejected=["cars:suv"], margin=0.15)] == ["cars:coupe"]
    assert len(near_misses(model, scores, chosen=[], margin=0.15, limit=1)) == 1


def test_near_misses_are_no_smart_tags_and_leave_when_ruled_on():
    near = [SmartTag("cars:suv", 0.45, "m1", threshold=0.5), SmartTag("cars:coupe", 0.7, "m1", threshold=0.8)]
    asset = _asset().with_smart_tags([SmartTag("cars:sedan", 0.62, "m1", threshold=0.5)]).with_near_misses(near)
    assert asset.smart_ids == ("cars:sedan",)
    doc = to_document(asset)
    assert set(doc["near_scores"]) == {"cars:suv", "cars:coupe"} and set(doc["smart_scores"]) == {"cars:sedan"}
    assert doc["review_margin"] == pytest.approx(0.05)  # suv, 0.05 below, is the least certain decision
    assert [t.tag for t in asset.open_decisions()] == ["cars:suv", "cars:coupe", "cars:sedan"]
    # Adding a near miss keeps the model's confidence; it leaves the near misses and the open decisions.
    added = asset.promote("cars:suv", reviewed=True)
    assert added.smart_tags[0] == near[0] and [t.tag for t in added.near_misses] == ["cars:coupe"]
    assert [t.tag for t in added.open_decisions()] == ["cars:coupe", "cars:sedan"]
    rejected = asset.reject("cars:coupe")
    assert [t.tag for t in rejected.near_misses] == ["cars:suv"]
    assert [t.tag for t in rejected.with_near_misses(near).near_misses] == ["cars:suv"]  # never back
    assert to_document(asset.reject("cars:suv").reject("cars:coupe").promote("cars:sedan"))["review_margin"] is None


def test_rejected_tag_never_comes_back_and_promoted_ranks_higher():
    asset = _asset().with_smart_tags([SmartTag("cars:sedan", 0.9, "m1"), SmartTag("cars:suv", 0.6, "m1")])
    assert asset.smart_ids == ("cars:sedan", "cars:suv")
    rejected = asset.reject("cars:sedan")
    assert rejected.smart_ids == ("cars:suv",) and rejected.rejected == {"cars:sedan"}
    # A later tagging run proposes it again: it stays out.
    again = rejected.with_smart_tags([SmartTag("cars:sedan", 0.95, "m2"), SmartTag("cars:suv", 0.6, "m2")])
    assert again.smart_ids == ("cars:suv",)
    promoted = again.promote("cars:suv")
    assert to_document(promoted)["smart_scores"][feature_name("cars:suv")] == 1.6
    retagged = promoted.with_smart_tags([SmartTag("cars:suv", 0.5, "m3"), SmartTag("cars:coupe", 0.9, "m3")])
    assert retagged.smart_ids == ("cars:suv", "cars:coupe")  # promoted first, whatever its confidence
    assert to_document(retagged)["smart_scores"]["cars:suv"] == 1.5
    assert to_document(retagged.unpromote("cars:suv"))["smart_scores"]["cars:suv"] == 0.5
    # Promoting restores a removed tag; a promoted tag the model does not give stays on the asset.
    restored = rejected.promote("cars:sedan")
    assert "cars:sedan" in restored.smart_ids and not restored.rejected
    assert "cars:sedan" in restored.with_smart_tags([]).smart_ids


def test_one_counting_rule_for_every_run():
    assert run_counter(TaggingStatus.TAGGED) == "tagged"
    assert run_counter(TaggingStatus.EMBEDDED) == "embedded"
    assert run_counter(TaggingStatus.FAILED) == "failed"
    assert run_counter(Handled.DELETED) == "deleted"
    assert run_counter(TaggingStatus.UNSUPPORTED) == "unsupported"
    for status in (TaggingStatus.NOT_ENABLED, Handled.STALE, Handled.DUPLICATE, Handled.GONE):
        assert run_counter(status) == "skipped"
    # Every outcome has one counter of the run's, so processed is their sum.
    from smarttags.core.runs import OUTCOMES

    assert {run_counter(s) for s in (*TaggingStatus, *Handled)} <= set(OUTCOMES)


def test_ids_and_feature_names():
    assert asset_id("b", "a/x.jpg") == asset_id("b", "a/x.jpg") != asset_id("c", "a/x.jpg")
    assert len(asset_id("b", "k" * 1024)) == 40
    assert feature_name("brand:v1.2/x%") == "brand:v1%2E2/x%25"


def test_folders_parse_print_and_query_one_way():
    assert Folder.parse("s3://b/a/b") == Folder("b", "a/b/") == Folder.parse("/a/b/", "b")
    assert Folder.parse("s3://b") == Folder("b", "") and Folder("b", "").uri == "s3://b/"
    assert Folder.of_key("b", "a/b/c.jpg") == Folder("b", "a/b/") and Folder.of_key("b", "c.jpg").path == ""
    assert Folder("b", "a/").query() == {
        "bool": {"filter": [{"term": {"bucket": "b"}}, {"term": {"folder.tree": "a"}}]}
    }
    assert Folder("b").query() == {"bool": {"filter": [{"term": {"bucket": "b"}}]}}
    for bad in ("s3:///x", "nobucket"):
        with pytest.raises(ValueError):
            Folder.parse(bad)
    with pytest.raises(ValueError):
        Folder("b", "no-slash")
