import numpy as np
from smarttags.core import asset as assets
from smarttags.core.model_registry import SmartTag, apply_thresholds

TAGS = ("cars:sedan", "cars:suv", "cars:coupe", "people:woman")


def _doc():
    return assets.base_document(bucket="b", key="cars/red car.jpg", etag="e1", size=10, content_type="image/jpeg")


def test_thresholds_respect_moderation():
    scores = np.array([0.9, 0.2, 0.7, 0.6])
    thresholds = np.array([0.5, 0.5, 0.8, 0.5])
    chosen = apply_thresholds(TAGS, scores, thresholds, rejected=["people:woman"], promoted=["cars:suv"])
    # suv is promoted (kept whatever its score, listed first); woman was rejected; coupe is under threshold.
    assert [(t.tag, t.promoted) for t in chosen] == [("cars:suv", True), ("cars:sedan", False)]
    assert apply_thresholds(TAGS, scores, thresholds, max_tags=1) == [SmartTag("cars:sedan", 0.9)]


def test_rejected_tag_never_comes_back_and_promoted_ranks_higher():
    doc = _doc()
    assets.set_smart_tags(doc, [SmartTag("cars:sedan", 0.9), SmartTag("cars:suv", 0.6)], "m1")
    assert doc["smart_ids"] == ["cars:sedan", "cars:suv"]
    assert assets.reject_tag(doc, "cars:sedan")
    assert doc["smart_ids"] == ["cars:suv"] and doc["rejected_tags"] == ["cars:sedan"]
    # A later tagging run proposes it again: it stays out.
    assets.set_smart_tags(doc, [SmartTag("cars:sedan", 0.95), SmartTag("cars:suv", 0.6)], "m2")
    assert doc["smart_ids"] == ["cars:suv"]
    assert assets.promote_tag(doc, "cars:suv")
    assert doc["smart_scores"][assets.feature_name("cars:suv")] == 1.6
    assets.set_smart_tags(doc, [SmartTag("cars:suv", 0.5)], "m3")
    assert doc["smart_tags"][0]["promoted"] and doc["smart_scores"]["cars:suv"] == 1.5
    assert not assets.promote_tag(doc, "cars:suv")
    assert assets.unpromote_tag(doc, "cars:suv") and doc["smart_scores"]["cars:suv"] == 0.5


def test_ids_folders_and_feature_names():
    assert assets.asset_id("b", "a/x.jpg") == assets.asset_id("b", "a/x.jpg") != assets.asset_id("c", "a/x.jpg")
    assert len(assets.asset_id("b", "k" * 1024)) == 40
    assert assets.folder_path("a/b/c.jpg") == "a/b" and assets.folder_path("c.jpg") == ""
    assert assets.feature_name("brand:v1.2/x%") == "brand:v1%2E2/x%25"
