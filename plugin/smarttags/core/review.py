"""Where the model is unsure: the decisions near a tag's threshold, on both sides, for a moderator to
rule on — across all tags (the review queue) and for one tag (the tag page).

A decision is the model putting a tag on an asset (a smart tag, above its threshold) or just failing to
(a near miss, ``Asset.near_misses``, at most ``model_registry.NEAR_MARGIN`` below). The nearer its
threshold, the more a moderator's answer teaches the next training: accepting promotes the tag (a
positive), rejecting removes it (a negative), as with any moderation. A ruled decision leaves by itself:
a promoted tag is no longer the model's guess, a removed one is gone.

The queue is two small round trips, whatever the size of the model: the tags moderators reject most
(one aggregation), then one ``_msearch`` of the assets whose least certain open decision is nearest its
threshold (``review_margin``, stored per asset, sorted) and, per often-rejected tag, its least certain
applied decisions. A tag's rejection rate discounts its decisions' margins (``priority``): a tag the
model often gets wrong is where a verdict teaches most. The tag page is one ``_msearch``: the assets
just above the threshold, just below it (the ``near_scores`` rank features), and all by confidence.
No query loads documents to score them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from smarttags.core.asset import Asset, SmartTag, feature_name
from smarttags.core.model_registry import ModelStore
from smarttags.core.ports import Assets, Index
from smarttags.errors import NotFound
from smarttags.resources import TEMPLATES

REVIEW_TEMPLATE = TEMPLATES["review.mustache"]
STATS_TEMPLATE = TEMPLATES["review_stats.mustache"]
ABOVE_TEMPLATE = TEMPLATES["tag_above.mustache"]
BELOW_TEMPLATE = TEMPLATES["tag_below.mustache"]
ASSETS_TEMPLATE = TEMPLATES["tag_assets.mustache"]
REJECTED_TAGS = 10  # the most rejected tags whose decisions the queue looks at besides the least margins
RATE_PRIOR = 5  # pseudo-decisions in a rejection rate's denominator: two rejections are no 100 % rate
# rank_features keep about 9 significant bits: a threshold's min_score is lowered by that much, and each
# hit's exact confidence (from its source) decides.
FEATURE_PRECISION = 2.0**-8
BOUNDARY_SIZE = 12  # assets per side on the tag page
MAX_PAGE = 400  # of the tag page's full list (24 a page): deeper pages are a search's job


@dataclass(frozen=True)
class Decision:
    asset: Asset
    tag: str
    confidence: float
    threshold: float
    rejection_rate: float = 0.0  # of this tag by moderators
    applied: bool = True  # the model put the tag on; False: a near miss

    @property
    def above(self) -> bool:
        return self.confidence >= self.threshold

    @property
    def margin(self) -> float:
        """How far from its threshold the model put the tag, either side: the smaller, the less certain."""
        return abs(self.confidence - self.threshold)

    @property
    def priority(self) -> float:
        """The queue's order (smallest first): the margin, discounted by how often moderators reject the tag."""
        return self.margin * (1.0 - self.rejection_rate)


def _decision(asset: Asset, tag: SmartTag, rate: float = 0.0) -> Decision:
    return Decision(asset, tag.tag, tag.confidence, float(tag.threshold or 0.0), rate, tag.tag in asset.smart_ids)


def _hits(response: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    hits: list[Mapping[str, Any]] = response["hits"]["hits"]
    return hits


def _total(response: Mapping[str, Any]) -> int:
    return int(response["hits"]["total"]["value"])


@dataclass(frozen=True)
class TagPage:
    """One tag's assets: the boundary (``above`` nearest the threshold first, ``below`` likewise) and
    the page ``page`` of all its assets by confidence (promoted first)."""

    tag: str
    threshold: float | None  # the active model's; None when it has no head for the tag
    model_version: str | None
    above: list[Decision]
    below: list[Decision]
    assets: list[tuple[Asset, SmartTag]]
    total: int  # assets carrying the tag
    promoted: int
    rejected: int  # assets a moderator removed it from
    near_total: int  # near misses
    above_total: int  # unpromoted carriers at or above the threshold
    page: int
    page_size: int
    notes: list[str] = field(default_factory=list)


class ReviewQueue:
    def __init__(self, index: Index, assets: Assets, models: ModelStore, bucket: str) -> None:
        self._index = index
        self._assets = assets
        self._models = models
        self._bucket = bucket

    def _read(self, hit: Mapping[str, Any]) -> Asset:
        return self._assets.from_source(hit["_source"])

    # --- across all tags ---

    def next(self, size: int = 20) -> list[Decision]:
        """The ``size`` open decisions of the active model's tags that would teach most, first first."""
        try:
            heads = self._models.load_active().heads
        except NotFound:
            return []
        known = set(heads.tags)
        threshold_of = dict(zip(heads.tags, (float(t) for t in heads.thresholds.tolist()), strict=True))
        stats = self._index.search_template("assets", STATS_TEMPLATE, {"bucket": self._bucket, "size": REJECTED_TAGS})
        rejected = {
            b["key"]: int(b["doc_count"]) for b in stats["aggregations"]["rejected"]["buckets"] if b["key"] in known
        }
        # Enough candidates that filtering out other models' tags still leaves ``size`` decisions.
        searches: list[tuple[str, Mapping[str, Any]]] = [(REVIEW_TEMPLATE, {"bucket": self._bucket, "size": 2 * size})]
        for tag in rejected:
            params = {"bucket": self._bucket, "tag": tag, "feature": feature_name(tag), "size": size}
            searches.append((ABOVE_TEMPLATE, {**params, "min_score": threshold_of[tag] * (1 - FEATURE_PRECISION)}))
        responses = self._index.msearch_templates("assets", searches)
        rates = {
            tag: count / (count + _total(response) + RATE_PRIOR)
            for (tag, count), response in zip(rejected.items(), responses[1:], strict=True)
        }
        found: dict[tuple[str, str], Decision] = {}
        for response in responses:
            for hit in _hits(response):
                asset = self._read(hit)
                for tag in asset.open_decisions():
                    if tag.tag in known:
                        found[(asset.id, tag.tag)] = _decision(asset, tag, rates.get(tag.tag, 0.0))
        ranked = sorted(found.values(), key=lambda d: (d.priority, d.margin, d.asset.id, d.tag))
        return ranked[:size]

    # --- one tag ---

    def tag_page(self, tag: str, *, page: int = 0, page_size: int = 24, boundary: int = BOUNDARY_SIZE) -> TagPage:
        """One tag's boundary and one page of its assets by confidence, in one round trip."""
        page = min(max(page, 0), MAX_PAGE)
        try:
            model = self._models.load_active()
        except NotFound:
            model = None
        threshold = None
        if model is not None and tag in model.heads.tags:
            threshold = float(model.heads.thresholds[model.heads.tags.index(tag)])
        params = {"bucket": self._bucket, "tag": tag, "feature": feature_name(tag)}
        searches: list[tuple[str, Mapping[str, Any]]] = [
            (ASSETS_TEMPLATE, {**params, "from": page * page_size, "size": page_size}),
            (BELOW_TEMPLATE, {**params, "size": boundary}),
        ]
        if threshold is not None:
            searches.append(
                (ABOVE_TEMPLATE, {**params, "size": boundary, "min_score": threshold * (1 - FEATURE_PRECISION)})
            )
        responses = self._index.msearch_templates("assets", searches)
        listed, below_response = responses[0], responses[1]
        assets = []
        for hit in _hits(listed):
            asset = self._read(hit)
            smart = next((t for t in asset.smart_tags if t.tag == tag), None)
            if smart is not None:
                assets.append((asset, smart))
        below = []
        for hit in _hits(below_response):
            asset = self._read(hit)
            below += [_decision(asset, t) for t in asset.near_misses if t.tag == tag]
        below.sort(key=lambda d: (d.margin, d.asset.id))
        above: list[Decision] = []
        notes = []
        if threshold is not None:
            for hit in _hits(responses[2]):
                asset = self._read(hit)
                smart = next((t for t in asset.smart_tags if t.tag == tag), None)
                if smart is not None and smart.confidence >= threshold:
                    above.append(Decision(asset, tag, smart.confidence, threshold))
            above.sort(key=lambda d: (d.margin, d.asset.id))  # exact: the stored features are rounded
        else:
            notes.append("The active model has no head for this tag, so it has no threshold to show either side of.")
        aggs = listed["aggregations"]
        return TagPage(
            tag=tag,
            threshold=threshold,
            model_version=model.version if model is not None else None,
            above=above,
            below=below,
            assets=assets,
            total=_total(listed),
            promoted=int(aggs["promoted"]["doc_count"]),
            rejected=int(aggs["everywhere"]["rejected"]["doc_count"]),
            near_total=_total(below_response),
            above_total=_total(responses[2]) if threshold is not None else 0,
            page=page,
            page_size=page_size,
            notes=notes,
        )
