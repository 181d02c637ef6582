"""Loading the S3 event files in tests/events/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

EVENTS = Path(__file__).parent / "events"


def load_event(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EVENTS / name).read_text(encoding="utf-8"))
    return data


def s3_event(name: str, *, bucket: str, key: str, sequencer: str, etag: str = "", size: int = 0) -> dict[str, Any]:
    """One of the S3 notification files with its placeholders filled; the key URL-encoded as S3 does."""
    from urllib.parse import quote_plus

    event = load_event(name)
    record = event["Records"][0]
    record["s3"]["bucket"]["name"] = bucket
    obj = record["s3"]["object"]
    obj["key"] = quote_plus(key, safe="/")
    obj["sequencer"] = sequencer
    if "eTag" in obj:
        obj["eTag"] = etag
        obj["size"] = size
    return event


def via_sqs(*bodies: dict[str, Any], receive_count: int = 1) -> dict[str, Any]:
    """S3 notifications wrapped as Lambda receives them from SQS."""
    return {
        "Records": [
            {
                "messageId": f"m{i}",
                "receiptHandle": f"r{i}",
                "body": json.dumps(body),
                "attributes": {"ApproximateReceiveCount": str(receive_count)},
                "eventSource": "aws:sqs",
            }
            for i, body in enumerate(bodies)
        ]
    }
