"""S3 event notifications and our own work items, as they arrive directly or through SQS.

S3 URL-encodes keys ('+' for a space, %XX for the rest); one notification can hold many records;
delivery is at least once and out of order, so every record carries its ``sequencer``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
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


def _s3_record(record: Any) -> ObjectEvent | None:
    if not isinstance(record, Mapping):
        raise ValueError(f"an S3 record must be an object, not {type(record).__name__}")
    name = str(record.get("eventName", ""))
    s3 = record.get("s3") or {}
    obj = s3.get("object") or {}
    if name.startswith("ObjectCreated") or name == "ObjectRestore:Completed":
        action = CREATED  # a restored archive is readable again: (re)tag it
    elif name.startswith("ObjectRemoved"):
        action = REMOVED
    else:
        return None  # replication, lifecycle, tagging, ACL...: nothing for the tagger
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


# S3 -> EventBridge -> SQS: one event per message, in EventBridge's own shape.
_EVENTBRIDGE_ACTIONS = {"Object Created": CREATED, "Object Restore Completed": CREATED, "Object Deleted": REMOVED}


def _eventbridge(body: Mapping[str, Any]) -> list[ObjectEvent]:
    action = _EVENTBRIDGE_ACTIONS.get(str(body.get("detail-type")))
    if action is None:
        return []
    detail = body["detail"]
    obj = detail["object"]
    return [
        ObjectEvent(
            action=action,
            bucket=str(detail["bucket"]["name"]),
            key=unquote_plus(str(obj["key"])),
            etag=str(obj["etag"]).strip('"') if obj.get("etag") else None,
            size=int(obj["size"]) if obj.get("size") is not None else None,
            version_id=obj.get("version-id") or None,
            sequencer=obj.get("sequencer"),
            event_time=body.get("time"),
        )
    ]


def _work_items(body: Mapping[str, Any]) -> list[ObjectEvent]:
    """The events of one work item: its ``keys`` (a message of an older release names one ``key``)."""
    keys = body["keys"] if "keys" in body else [body["key"]]
    if not isinstance(keys, list) or not keys:
        raise ValueError("a work item names a non-empty list of keys")
    return [
        ObjectEvent(
            action=TAG,
            bucket=str(body["bucket"]),
            key=str(key),
            run_id=body.get("run_id"),
            trigger=str(body.get("trigger", "on-demand")),
        )
        for key in keys
    ]


def parse_body(body: Any) -> list[ObjectEvent]:
    """The events in one S3 notification (direct, or wrapped by SNS or EventBridge) or one work item.
    Raises ValueError (or KeyError/TypeError) for anything else."""
    if not isinstance(body, Mapping):
        raise ValueError(f"a message body must be a JSON object, not {type(body).__name__}")
    if body.get("smarttags") == "tag":
        return _work_items(body)
    if body.get("Type") == "Notification" and isinstance(body.get("Message"), str):
        return parse_body(json.loads(body["Message"]))  # S3 -> SNS -> SQS (raw delivery off)
    if body.get("source") == "aws.s3" and "detail-type" in body:
        return _eventbridge(body)
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


def work_item(bucket: str, keys: Sequence[str], *, run_id: str | None, trigger: str) -> dict[str, Any]:
    """One queue message of a tagging run: several keys of one bucket (a run's messages are few: the
    queue's cost is per message, the tagger handles the keys as one batch)."""
    return {"smarttags": "tag", "bucket": bucket, "keys": list(keys), "run_id": run_id, "trigger": trigger}


def parse_message(message_id: str | None, body: str, receive_count: int = 1) -> Message:
    """One SQS message's body (a JSON S3 notification or work item); an unreadable one is kept as an
    error so its message is retried and then dead-lettered, not lost."""
    try:
        return Message(message_id, parse_body(json.loads(body or "")), receive_count)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        return Message(message_id, [], receive_count, error=f"unreadable message: {type(exc).__name__}: {exc}")


def parse_invocation(event: Mapping[str, Any]) -> Iterator[Message]:
    """Messages of a Lambda invocation: an SQS batch, or an S3 notification delivered directly."""
    records = event.get("Records") if isinstance(event, Mapping) else None
    if isinstance(records, list) and records and all(_is_sqs(r) for r in records):
        for record in records:
            try:
                receive_count = int((record.get("attributes") or {}).get("ApproximateReceiveCount", 1))
            except (TypeError, ValueError):
                receive_count = 1
            body = record.get("body")
            yield parse_message(record.get("messageId"), body if isinstance(body, str) else "", receive_count)
        return
    try:
        yield Message(None, parse_body(event))
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        yield Message(None, [], error=f"unreadable event: {type(exc).__name__}: {exc}")


def _is_sqs(record: Any) -> bool:
    return isinstance(record, Mapping) and record.get("eventSource") == "aws:sqs"
