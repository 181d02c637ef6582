"""The review queue: the model's least certain decisions across all tags, for a moderator to accept or
reject one at a time.

A decision is the active model putting a tag on an asset; the nearer its confidence is to the tag's
threshold, the less sure the model was and the more a moderator's answer teaches the next training (an
accepted tag is promoted: a positive; a rejected one removed: a negative, as with any moderation).
Reviewed decisions leave the queue by themselves: a promoted tag is no longer the model's guess, and a
removed one is gone. Per tag the stored template ``review.mustache`` finds the lowest confidences
(a ``rank_feature`` scored linearly and sorted ascending), so no page loads more than it shows.
"""

from __future__ import annotations

from dataclasses import dataclass

from smarttags.core.asset import Asset, feature_name
from smarttags.core.model_registry import ModelStore
from smarttags.core.ports import Assets, Index
from smarttags.errors import NotFound
from smarttags.resources import TEMPLATES

REVIEW_TEMPLATE = TEMPLATES["review.mustache"]
MAX_TAGS = 200  # tags of the active model looked at, in its order


@dataclass(frozen=True)
class Decision:
    asset: Asset
    tag: str
    confidence: float
    threshold: float

    @property
    def margin(self) -> float:
        """How far above its threshold the model put the tag: the smaller, the less certain."""
        return self.confidence - self.threshold


class ReviewQueue:
    def __init__(self, index: Index, assets: Assets, models: ModelStore, bucket: str) -> None:
        self._index = index
        self._assets = assets
        self._models = models
        self._bucket = bucket

    def next(self, size: int = 20) -> list[Decision]:
        """The ``size`` least certain decisions of the active model, least certain first (none without a model)."""
        try:
            heads = self._models.load_active().heads
        except NotFound:
            return []
        decisions: list[Decision] = []
        tags = list(zip(heads.tags, heads.thresholds.tolist(), strict=True))[:MAX_TAGS]
        params = [{"size": size, "bucket": self._bucket, "tag": tag, "feature": feature_name(tag)} for tag, _ in tags]
        responses = self._index.msearch_template("assets", REVIEW_TEMPLATE, params)  # one round trip
        for (tag, threshold), response in zip(tags, responses, strict=True):
            for hit in response["hits"]["hits"]:
                asset = self._assets.from_source(hit["_source"])
                confidence = next((t.confidence for t in asset.smart_tags if t.tag == tag), None)
                if confidence is not None:
                    decisions.append(Decision(asset, tag, float(confidence), float(threshold)))
        decisions.sort(key=lambda d: (abs(d.margin), d.asset.id, d.tag))
        return decisions[:size]
