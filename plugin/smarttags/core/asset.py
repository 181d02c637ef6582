"""The asset document: identity, the fields written from S3 and the image, and smart-tag fields.

Pure functions over plain dicts (the ``_source`` of a document in the assets index), so the tagger,
the trainer and moderation all write the same shape.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from smarttags.core.model_registry import SmartTag

# Tagging states an operator sees on an asset.
TAGGED = "tagged"
FAILED = "failed"
SKIPPED = "skipped"
PENDING = "pending"


def asset_id(bucket: str, key: str) -> str:
    """A stable document id; S3 keys may be 1,024 bytes but OpenSearch ids at most 512."""
    return hashlib.sha256(f"{bucket}\x00{key}".encode()).hexdigest()[:40]


def folder_path(key: str) -> str:
    """The folder of a key without the trailing slash: 'a/b/c.jpg' -> 'a/b'; top level -> ''."""
    return key.rpartition("/")[0]


def feature_name(tag: str) -> str:
    """A tag id as a ``rank_features`` key: dots would be read as object paths, so they are escaped."""
    return tag.replace("%", "%25").replace(".", "%2E")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def base_document(
    *,
    bucket: str,
    key: str,
    etag: str,
    size: int,
    content_type: str | None,
    version_id: str | None = None,
    sequencer: str | None = None,
    modified: datetime | str | None = None,
) -> dict[str, Any]:
    modified_iso = modified.isoformat() if isinstance(modified, datetime) else modified
    return {
        "asset_id": asset_id(bucket, key),
        "bucket": bucket,
        "key": key,
        "folder": folder_path(key),
        "etag": etag,
        "version_id": version_id,
        "sequencer": sequencer,
        "content_type": content_type,
        "size": size,
        "modified": modified_iso or now_iso(),
        "created": modified_iso or now_iso(),
        "tags": [],
        "smart_tags": [],
        "smart_ids": [],
        "smart_scores": {},
        "promoted_tags": [],
        "rejected_tags": [],
        "tagging": {"status": PENDING},
        "updated_at": now_iso(),
    }


def set_smart_tags(doc: dict[str, Any], tags: Iterable[SmartTag], model_version: str) -> None:
    """Replace the smart-tag fields. Rejected tags never appear; promoted ones rank higher."""
    rejected = set(doc.get("rejected_tags") or [])
    kept = [t for t in tags if t.tag not in rejected]
    promoted = set(doc.get("promoted_tags") or [])
    doc["smart_tags"] = [
        {
            "tag": t.tag,
            "confidence": t.confidence,
            "model_version": model_version,
            "promoted": t.promoted or t.tag in promoted,
        }
        for t in kept
    ]
    _sync_scores(doc)


def _sync_scores(doc: dict[str, Any]) -> None:
    """Derive the fields search uses from the structured list: ids and rank features.
    A promoted tag gets +1 on its feature, which lifts it above any unpromoted confidence."""
    promoted = set(doc.get("promoted_tags") or [])
    entries = doc.get("smart_tags") or []
    for entry in entries:
        entry["promoted"] = entry["tag"] in promoted
    doc["smart_ids"] = [e["tag"] for e in entries]
    doc["smart_scores"] = {
        feature_name(e["tag"]): max(float(e["confidence"]), 1e-4) + (1.0 if e["promoted"] else 0.0) for e in entries
    }


def reject_tag(doc: dict[str, Any], tag: str) -> bool:
    """A moderator removes a smart tag: gone now, and never re-added by a later run."""
    changed = tag not in (doc.get("rejected_tags") or [])
    doc["rejected_tags"] = sorted({*(doc.get("rejected_tags") or []), tag})
    doc["promoted_tags"] = [t for t in doc.get("promoted_tags") or [] if t != tag]
    before = len(doc.get("smart_tags") or [])
    doc["smart_tags"] = [e for e in doc.get("smart_tags") or [] if e["tag"] != tag]
    _sync_scores(doc)
    return changed or before != len(doc["smart_tags"])


def promote_tag(doc: dict[str, Any], tag: str, model_version: str | None = None) -> bool:
    """A moderator promotes a tag: the asset carries it (even if the model did not) and ranks higher."""
    if tag in (doc.get("promoted_tags") or []):
        return False
    doc["promoted_tags"] = sorted({*(doc.get("promoted_tags") or []), tag})
    doc["rejected_tags"] = [t for t in doc.get("rejected_tags") or [] if t != tag]
    entries = doc.setdefault("smart_tags", [])
    if not any(e["tag"] == tag for e in entries):
        entries.insert(
            0,
            {"tag": tag, "confidence": 1.0, "model_version": model_version or "moderator", "promoted": True},
        )
    _sync_scores(doc)
    return True


def unpromote_tag(doc: dict[str, Any], tag: str) -> bool:
    if tag not in (doc.get("promoted_tags") or []):
        return False
    doc["promoted_tags"] = [t for t in doc["promoted_tags"] if t != tag]
    _sync_scores(doc)
    return True


def set_status(
    doc: dict[str, Any],
    status: str,
    *,
    reason: str | None = None,
    model_version: str | None = None,
    etag: str | None = None,
) -> None:
    tagging = dict(doc.get("tagging") or {})
    tagging.update(status=status, reason=reason, tagged_at=now_iso())
    if model_version is not None:
        tagging["model_version"] = model_version
    if etag is not None:
        tagging["etag"] = etag
    doc["tagging"] = tagging
    doc["updated_at"] = now_iso()
