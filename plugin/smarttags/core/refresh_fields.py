"""Refresh the derived fields of every asset document in place: what an older release did not write
(``smart_bands``, ``reviewed_tags``, ``near_scores``, ``review_margin``, a smart tag's threshold) an asset
otherwise only gets on its next write.

One pass over the index in asset-id order (a point in time, ``search_after`` pages), each page written
back in one ``_bulk`` whose every item is conditional on the version read, so a moderator's or a tagger's
concurrent write wins: a conflicting asset is read again and redone. A smart tag written without its
threshold gets the one of the model that set it (``model_version``), when that model still loads; near
misses cannot be recovered (they need the scores): they come with the asset's next tagging. The pass
reports each page's last id (``checkpoint``), so an interrupted run resumes after it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import islice

from smarttags.core.asset import Asset, SmartTag
from smarttags.core.model_registry import ModelStore
from smarttags.core.ports import Assets, StoredAsset
from smarttags.errors import ConflictError, ModelError, NotFound, ServiceError

log = logging.getLogger(__name__)

ATTEMPTS = 5  # rounds of re-reading the assets that changed under us


@dataclass
class RefreshResult:
    written: int = 0
    retried: int = 0  # writes redone because the asset changed meanwhile (the other write won)
    gone: int = 0  # deleted meanwhile
    thresholds: int = 0  # smart tags given their model's threshold


class _Thresholds:
    """The thresholds of the models that set an asset's tags, each model loaded once (None if it is gone)."""

    def __init__(self, models: ModelStore) -> None:
        self._models = models
        self._cache: dict[str, dict[str, float] | None] = {}

    def of(self, version: str) -> dict[str, float] | None:
        if version not in self._cache:
            try:
                heads = self._models.load(version).heads
                self._cache[version] = dict(zip(heads.tags, (float(t) for t in heads.thresholds.tolist()), strict=True))
            except (NotFound, ModelError, ValueError):  # a moderator's tag, or a model deleted since
                self._cache[version] = None
        return self._cache[version]


def _with_thresholds(asset: Asset, thresholds: _Thresholds) -> tuple[Asset, int]:
    filled = 0
    tags: list[SmartTag] = []
    for tag in asset.smart_tags:
        known = thresholds.of(tag.model_version) if tag.threshold is None and tag.model_version else None
        if known is not None and tag.tag in known and tag.tag not in asset.promoted:
            tag = replace(tag, threshold=known[tag.tag])
            filled += 1
        tags.append(tag)
    return (replace(asset, smart_tags=tuple(tags)), filled) if filled else (asset, 0)


def _pages(stored: Iterator[StoredAsset], size: int) -> Iterator[list[StoredAsset]]:
    while page := list(islice(stored, size)):
        yield page


def refresh_fields(
    assets: Assets,
    models: ModelStore,
    *,
    after: str | None = None,
    batch_size: int = 500,
    progress: Callable[[str, int, int | None], None] | None = None,
    checkpoint: Callable[[str], None] | None = None,
) -> RefreshResult:
    """Rewrite every asset (past ``after``, an asset id) with its derived fields as this release computes
    them; ``checkpoint`` gets each finished page's last id, ``progress`` counts the assets done."""
    result = RefreshResult()
    thresholds = _Thresholds(models)
    assets.refresh()  # the scan sees only refreshed documents: one written a moment ago is an asset too
    if progress:
        progress("assets", 0, assets.count())
    for page in _pages(assets.scan_stored(after=after, batch_size=batch_size), batch_size):
        _write_page(assets, page, thresholds, result)
        if progress:
            progress("assets", len(page), None)
        if checkpoint:
            checkpoint(page[-1].asset.id)
    return result


def _write_page(assets: Assets, page: Sequence[StoredAsset], thresholds: _Thresholds, result: RefreshResult) -> None:
    pending: list[StoredAsset | None] = list(page)
    for attempt in range(ATTEMPTS):
        writes: list[tuple[Asset, StoredAsset]] = []
        for held in pending:
            if held is None:
                result.gone += 1
                continue
            asset, filled = _with_thresholds(held.asset, thresholds)
            writes.append((asset, held))
            if attempt == 0:
                result.thresholds += filled
        answers = assets.put_many(writes)
        again: list[str] = []
        for (asset, _), answer in zip(writes, answers, strict=True):
            if isinstance(answer, ConflictError):
                again.append(asset.id)  # someone wrote it since we read it: their write stands, ours is redone
            elif isinstance(answer, ServiceError):
                raise answer
            else:
                result.written += 1
        if not again:
            return
        result.retried += len(again)
        log.debug("%d assets changed while we refreshed them; reading them again", len(again))
        pending = list(assets.get_many(again))
    raise ConflictError("opensearch", f"assets kept changing during the refresh; gave up after {ATTEMPTS} rounds")
