"""Moderation: remove a wrong smart tag (it never comes back) or promote one (the asset ranks higher).

Every change is written with optimistic concurrency, so it never overwrites a tagger's concurrent write
(nor the other way round), is visible to the very next search, and leaves an audit record.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from smarttags.core import asset as assets
from smarttags.core.ports import Index
from smarttags.errors import ConflictError, NotFound

log = logging.getLogger(__name__)

REMOVE = "remove_tag"
PROMOTE = "promote_tag"
UNPROMOTE = "unpromote_tag"


def update_with_retry(
    index: Index,
    doc_id: str,
    change: Callable[[dict[str, Any]], bool],
    *,
    attempts: int = 8,
    refresh: bool | str = False,
) -> dict[str, Any] | None:
    """Read-modify-write an asset with ``if_seq_no``; re-read and re-apply on conflict, a bounded number
    of times. ``change`` edits the document in place and says whether anything changed. Returns the
    written document, or None when the asset does not exist."""
    for _ in range(attempts):
        current = index.get("assets", doc_id)
        if current is None:
            return None
        doc = current.source
        if not change(doc):
            return doc
        doc["updated_at"] = assets.now_iso()
        try:
            index.put("assets", doc_id, doc, expected=current, refresh=refresh)
            return doc
        except ConflictError:
            log.debug("asset %s changed while we wrote it; retrying", doc_id)
    raise ConflictError("opensearch", f"asset {doc_id} kept changing; gave up after {attempts} attempts")


class Moderation:
    def __init__(self, index: Index) -> None:
        self._index = index

    def _edit(
        self, asset_id: str, action: str, tag: str, user: str, change: Callable[[dict[str, Any]], bool]
    ) -> dict[str, Any]:
        changed: list[bool] = []

        def apply(doc: dict[str, Any]) -> bool:
            result = change(doc)
            changed.append(result)
            return result

        doc = update_with_retry(self._index, asset_id, apply, refresh="wait_for")
        if doc is None:
            raise NotFound(f"asset {asset_id} does not exist")
        if changed and changed[-1]:
            self._index.put(
                "audit",
                uuid.uuid4().hex,
                {
                    "at": assets.now_iso(),
                    "user": user,
                    "action": action,
                    "asset_id": asset_id,
                    "key": doc.get("key"),
                    "tag": tag,
                    "detail": f"{action} {tag} on {doc.get('key')}",
                },
                refresh=True,  # the trail is read right after an edit (Manage Tags page)
            )
            log.info("%s %s on asset %s by %s", action, tag, asset_id, user)
        return doc

    def remove(self, asset_id: str, tag: str, *, user: str) -> dict[str, Any]:
        return self._edit(asset_id, REMOVE, tag, user, lambda doc: assets.reject_tag(doc, tag))

    def promote(self, asset_id: str, tag: str, *, user: str) -> dict[str, Any]:
        return self._edit(asset_id, PROMOTE, tag, user, lambda doc: assets.promote_tag(doc, tag))

    def unpromote(self, asset_id: str, tag: str, *, user: str) -> dict[str, Any]:
        return self._edit(asset_id, UNPROMOTE, tag, user, lambda doc: assets.unpromote_tag(doc, tag))

    def audit(self, *, asset_id: str | None = None, size: int = 50) -> list[dict[str, Any]]:
        query: dict[str, Any] = {"term": {"asset_id": asset_id}} if asset_id else {"match_all": {}}
        body = {"size": size, "query": query, "sort": [{"at": {"order": "desc"}}]}
        return [h["_source"] for h in self._index.search("audit", body)["hits"]["hits"]]
