"""The tag page and the review queue on the real OpenSearch node: the two sides of a tag's threshold,
the queue's order on both sides (near misses too) with often-rejected tags first, and search untouched
by near misses."""

from __future__ import annotations

import numpy as np
import pytest
from smarttags.core.asset import Asset, SmartTag
from smarttags.core.heads import Heads, TagFit
from smarttags.core.search import SearchRequest
from smarttags.core.taxonomy import Tag

pytestmark = pytest.mark.slow

CAT, DOG = "x:cat", "x:dog"
THRESHOLDS = {CAT: 0.5, DOG: 0.6}


def _model(services) -> None:
    tags = (CAT, DOG)
    heads = Heads(tags, np.zeros((4, 2), np.float32), np.zeros(2, np.float32), np.array([0.5, 0.6], np.float32))
    fits = [TagFit(t, 30, 1.0, 0.5, 0.9, 0.8, 0.85, 0.9) for t in tags]
    manifest = services.models.save(
        heads,
        fits,
        backbone_id="t",
        backbone_sha256="0",
        training_fingerprint="f",
        folders=[],
        version="20260101T000000Z",
    )
    services.models.activate(manifest.version)


def _put(services, name: str, *, smart=(), near=(), change=lambda a: a) -> str:
    def tag(t: str, c: float) -> SmartTag:
        return SmartTag(t, c, "20260101T000000Z", threshold=THRESHOLDS[t])

    asset = (
        Asset(services.settings.aws.bucket, f"pics/{name}.jpg", etag="e", title=f"picture {name}")
        .with_smart_tags(tag(t, c) for t, c in smart)
        .with_near_misses(tag(t, c) for t, c in near)
    )
    services.assets.put(change(asset))
    return name


@pytest.fixture
def corpus(services):
    _model(services)
    services.taxonomy.import_tags([Tag(CAT, {"en": "Cat"}), Tag(DOG, {"en": "Dog"})])
    ids = {
        _put(services, "a1", smart=[(CAT, 0.93)]),
        _put(services, "a2", smart=[(CAT, 0.59)]),
        _put(services, "a3", smart=[(CAT, 0.51)]),
        _put(services, "a4", smart=[(CAT, 0.52)], change=lambda a: a.promote(CAT)),
        _put(services, "a5", near=[(CAT, 0.45)]),
        _put(services, "a6", near=[(CAT, 0.38)]),
        _put(services, "a7", near=[(CAT, 0.485)]),
        _put(services, "a8", smart=[(DOG, 0.675)]),
        _put(services, "a9", smart=[(CAT, 0.7)], change=lambda a: a.reject(CAT)),
        _put(services, "a11", smart=[(CAT, 0.8)], change=lambda a: a.reject(CAT)),
        # A tag applied under its own threshold (a child implied it): it carries the tag, but is no "above".
        _put(services, "a10", smart=[(CAT, 0.42)]),
    }
    services.index.refresh("assets")
    return ids


def _names(decisions) -> list[str]:
    return [d.asset.key.split("/")[-1].removesuffix(".jpg") for d in decisions]


def test_the_tag_page_shows_both_sides_of_the_threshold(services, corpus):
    page = services.review.tag_page(CAT, page_size=10)
    assert page.threshold == 0.5
    assert _names(page.above) == ["a3", "a2", "a1"]  # nearest the threshold first; promoted a4, a10 under it: out
    assert _names(page.below) == ["a7", "a5", "a6"]  # the near misses, nearest first
    assert [round(d.margin, 3) for d in page.below] == [0.015, 0.05, 0.12]
    assert (page.total, page.promoted, page.rejected, page.near_total, page.above_total) == (5, 1, 2, 3, 3)
    # All its assets by confidence, the promoted one first.
    assert [a.key.split("/")[-1] for a, _ in page.assets] == ["a4.jpg", "a1.jpg", "a2.jpg", "a3.jpg", "a10.jpg"]
    second = services.review.tag_page(CAT, page=1, page_size=2)
    assert [a.key.split("/")[-1] for a, _ in second.assets] == ["a2.jpg", "a3.jpg"]
    # A tag the active model does not know: no threshold, no sides.
    assert services.review.tag_page("x:bird").threshold is None


def test_near_misses_change_no_search(services, corpus):
    result = services.searcher.search(SearchRequest(text="cat", size=50))
    keys = {h.key.split("/")[-1] for h in result.hits}
    assert keys == {"a1.jpg", "a2.jpg", "a3.jpg", "a4.jpg", "a10.jpg"}  # no near miss is a hit
    facets = services.searcher.search(SearchRequest(size=1, facets=True)).facets["smart_tags"]
    assert {b.value: b.count for b in facets}[CAT] == 5


def test_adding_a_near_miss_moves_it_above(services, corpus):
    a7 = Asset(services.settings.aws.bucket, "pics/a7.jpg").id
    services.moderation.promote(a7, CAT, user="m", reviewed=True)
    page = services.review.tag_page(CAT)
    assert _names(page.below) == ["a5", "a6"]
    assert page.promoted == 2 and [a.key.split("/")[-1] for a, _ in page.assets[:3]] == ["a4.jpg", "a7.jpg", "a1.jpg"]
    assert page.assets[1][1].confidence == 0.485  # it keeps the model's confidence


def test_the_queue_orders_both_sides_with_often_rejected_tags_first(services, corpus):
    queue = services.review.next(size=20)
    # Cat was rejected twice: rate 2 / (2 + 3 carriers above + 5) = 0.2, so its margins count 0.8.
    assert _names(queue) == ["a3", "a7", "a5", "a10", "a2", "a8", "a6", "a1"]
    assert [d.applied for d in queue[:3]] == [True, False, False]
    assert queue[0].rejection_rate == pytest.approx(0.2) and queue[5].rejection_rate == 0.0
    # a2 (0.09 from its threshold) comes before a8 (0.075): its tag is the one moderators reject.
    assert queue[4].margin > queue[5].margin and queue[4].priority < queue[5].priority
    assert _names(services.review.next(size=2)) == ["a3", "a7"]
    a7 = Asset(services.settings.aws.bucket, "pics/a7.jpg").id
    services.moderation.remove(a7, CAT, user="m", reviewed=True)  # a near miss rejected: a negative
    services.index.refresh("assets")
    assert "a7" not in _names(services.review.next(size=20))
