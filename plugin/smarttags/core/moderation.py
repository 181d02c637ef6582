"""Moderation: remove a wrong smart tag (it never comes back) or promote one (the asset ranks higher).

Every change is written with optimistic concurrency, so it never overwrites a tagger's concurrent write
(nor the other way round), is visible to the very next search, and leaves an audit record.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from smarttags.core.asset import Asset, changed
from smarttags.core.clock import now_iso
from smarttags.core.ports import Assets, Index
from smarttags.errors import ConflictError, NotFound, RequestError

log = logging.getLogger(__name__)

REMOVE = "remove_tag"
PROMOTE = "promote_tag"
UNPROMOTE = "unpromote_tag"


def update_with_retry(
    assets: Assets,
    asset_id: str,
    change: Callable[[Asset], Asset],
    *,
    attempts: int = 8,
    refresh: bool | str = False,
) -> tuple[Asset, Asset] | None:
    """Read-modify-write an asset with ``if_seq_no``; re-read and re-apply on conflict, a bounded number
    of times. Returns (before, after) — the same value twice when the change changed nothing — or None
    when the asset does not exist."""
    for _ in range(attempts):
        current = assets.get(asset_id)
        if current is None:
            return None
        after = change(current.asset)
        if not changed(current.asset, after):
            return current.asset, current.asset
        after = after.touched()
        try:
            assets.put(after, expected=current, refresh=refresh)
            return current.asset, after
        except ConflictError:
            log.debug("asset %s changed while we wrote it; retrying", asset_id)
    raise ConflictError("opensearch", f"asset {asset_id} kept changing; gave up after {attempts} attempts")


MAX_BULK = 1000


@dataclass
class BulkResult:
    changed: int = 0
    unchanged: int = 0  # already so (a removed tag, a promoted one)
    missing: int = 0  # deleted meanwhile


class Moderation:
    def __init__(self, assets: Assets, index: Index) -> None:
        self._assets = assets
        self._index = index  # the audit trail

    def _edit(self, asset_id: str, action: str, tag: str, user: str, change: Callable[[Asset], Asset]) -> Asset:
        return self._change(asset_id, action, tag, user, change)[0]

    def _change(
        self,
        asset_id: str,
        action: str,
        tag: str,
        user: str,
        change: Callable[[Asset], Asset],
        *,
        refresh: bool = True,
    ) -> tuple[Asset, bool]:
        """The asset after ``change`` and whether it changed (only then is there an audit record)."""
        done = update_with_retry(self._assets, asset_id, change, refresh="wait_for" if refresh else False)
        if done is None:
            raise NotFound(f"asset {asset_id} does not exist")
        before, after = done
        if after is not before:
            self._index.put(
                "audit",
                uuid.uuid4().hex,
                {
                    "at": now_iso(),
                    "user": user,
                    "action": action,
                    "asset_id": asset_id,
                    "key": after.key,
                    "tag": tag,
                    "detail": f"{action} {tag} on {after.key}",
                },
                refresh=refresh,  # the trail is read right after an edit (Manage Tags page)
            )
            log.info("%s %s on asset %s by %s", action, tag, asset_id, user)
        return after, after is not before

    def remove(self, asset_id: str, tag: str, *, user: str, reviewed: bool = False) -> Asset:
        """``reviewed``: the verdict came from the review queue (the training report counts those)."""
        return self._edit(asset_id, REMOVE, tag, user, lambda asset: asset.reject(tag, reviewed=reviewed))

    def promote(self, asset_id: str, tag: str, *, user: str, reviewed: bool = False) -> Asset:
        return self._edit(asset_id, PROMOTE, tag, user, lambda asset: asset.promote(tag, reviewed=reviewed))

    def unpromote(self, asset_id: str, tag: str, *, user: str) -> Asset:
        return self._edit(asset_id, UNPROMOTE, tag, user, lambda asset: asset.unpromote(tag))

    def bulk(self, asset_ids: Sequence[str], action: str, tag: str, *, user: str) -> BulkResult:
        """Remove or promote ``tag`` on many assets: each change is its own concurrency-safe write with
        its own audit record; one refresh at the end makes them all visible."""
        if action not in (REMOVE, PROMOTE):
            raise RequestError(f"a bulk action is {REMOVE} or {PROMOTE}")
        if len(asset_ids) > MAX_BULK:
            raise RequestError(f"at most {MAX_BULK} assets at once; narrow the search")
        result = BulkResult()
        change: Callable[[Asset], Asset] = (lambda a: a.reject(tag)) if action == REMOVE else (lambda a: a.promote(tag))
        for asset_id in dict.fromkeys(asset_ids):
            try:
                _, did = self._change(asset_id, action, tag, user, change, refresh=False)
            except NotFound:
                result.missing += 1
                continue
            if did:
                result.changed += 1
            else:
                result.unchanged += 1
        self._assets.refresh()
        self._index.refresh("audit")
        return result

    def audit(self, *, asset_id: str | None = None, size: int = 50) -> list[dict[str, Any]]:
        query: dict[str, Any] = {"term": {"asset_id": asset_id}} if asset_id else {"match_all": {}}
        body = {"size": size, "query": query, "sort": [{"at": {"order": "desc"}}]}
        return [h["_source"] for h in self._index.search("audit", body)["hits"]["hits"]]
