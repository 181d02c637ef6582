"""S3 event notifications and our own work items, as they arrive directly or through SQS.

S3 URL-encodes keys ('+' for a space, %XX for the rest); one notification can hold many records;
delivery is at least once and out of order, so every record carries its ``sequencer``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

CREATED = "created"
REMOVED = "removed"
TAG = "tag"  # a work item from a tagging run (fan-out), not from S3


@dataclass(frozen=True)
class ObjectEvent:
    """One thing to do to one object."""

    action: str  # CREATED, REMOVED or TAG
    bucket: str
    key: str
    etag: str | None = None
    size: int | None = None
    version_id: str | None = None
    sequencer: str | None = None
    event_time: str | None = None
    run_id: str | None = None
    trigger: str = "upload"


@dataclass(frozen=True)
class Message:
    """An SQS message (or a direct invocation) and the object events it carries."""

    message_id: str | None
    events: list[ObjectEvent]
    receive_count: int = 1
    error: str | None = None  # set when the body could not be read at all


def sequencer_newer(candidate: str | None, current: str | None) -> bool:
    """True when ``candidate`` is a later S3 event than ``current`` for the same key.

    S3's rule: right-pad the shorter sequencer with zeros, then compare lexicographically.
    A missing sequencer (work items, some event types) never counts as older.
    """
    if not candidate or not current:
        return True
    width = max(len(candidate), len(current))
    return candidate.upper().ljust(width, "0") > current.upper().ljust(width, "0")


def same_sequencer(a: str | None, b: str | None) -> bool:
    if not a or not b:
        return False
    width = max(len(a), len(b))
    return a.upper().ljust(width, "0") == b.upper().ljust(width, "0")


def _s3_record(record: Mapping[str, Any]) -> ObjectEvent | None:
    name = str(record.get("eventName", ""))
    s3 = record.get("s3") or {}
    obj = s3.get("object") or {}
    if name.startswith("ObjectCreated"):
        action = CREATED
    elif name.startswith("ObjectRemoved"):
        action = REMOVED
    else:
        return None  # replication, lifecycle, restore...: nothing for the tagger
    return ObjectEvent(
        action=action,
        bucket=str((s3.get("bucket") or {})["name"]),
        key=unquote_plus(str(obj["key"])),
        etag=(str(obj["eTag"]).strip('"') if obj.get("eTag") else None),
        size=int(obj["size"]) if obj.get("size") is not None else None,
        version_id=obj.get("versionId") or None,
        sequencer=obj.get("sequencer"),
        event_time=record.get("eventTime"),
    )


def _work_item(body: Mapping[str, Any]) -> ObjectEvent:
    return ObjectEvent(
        action=TAG,
        bucket=str(body["bucket"]),
        key=str(body["key"]),
        run_id=body.get("run_id"),
        trigger=str(body.get("trigger", "on-demand")),
    )


def parse_body(body: Mapping[str, Any]) -> list[ObjectEvent]:
    """The events in one S3 notification or one work item."""
    if body.get("smarttags") == "tag":
        return [_work_item(body)]
    if body.get("Event") == "s3:TestEvent":
        return []
    records = body.get("Records")
    if not isinstance(records, list):
        raise ValueError("not an S3 notification or a SmartTags work item")
    events = []
    for record in records:
        event = _s3_record(record)
        if event is not None:
            events.append(event)
    return events


def work_item(bucket: str, key: str, *, run_id: str | None, trigger: str) -> dict[str, Any]:
    return {"smarttags": "tag", "bucket": bucket, "key": key, "run_id": run_id, "trigger": trigger}


def parse_message(message_id: str | None, body: str, receive_count: int = 1) -> Message:
    """One SQS message's body (a JSON S3 notification or work item); an unreadable one is kept as an
    error so its message is retried and then dead-lettered, not lost."""
    try:
        return Message(message_id, parse_body(json.loads(body or "")), receive_count)
    except (ValueError, KeyError, TypeError) as exc:
        return Message(message_id, [], receive_count, error=f"unreadable message: {exc}")


def parse_invocation(event: Mapping[str, Any]) -> Iterator[Message]:
    """Messages of a Lambda invocation: an SQS batch, or an S3 notification delivered directly."""
    records = event.get("Records")
    if isinstance(records, list) and records and records[0].get("eventSource") == "aws:sqs":
        for record in records:
            receive_count = int((record.get("attributes") or {}).get("ApproximateReceiveCount", 1))
            yield parse_message(record.get("messageId"), record.get("body") or "", receive_count)
        return
    try:
        yield Message(None, parse_body(event))
    except (ValueError, KeyError, TypeError) as exc:
        yield Message(None, [], error=f"unreadable event: {exc}")
