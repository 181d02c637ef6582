"""The dead-letter queue as the admin shows it: what each message was about, why it failed, how often it
was received; and redriving one message or all of them back to the tagging queue.

SQS cannot peek: listing receives the messages for a moment and releases them again at once, so a
listing never takes them away from a redrive (or from ``aws sqs start-message-move-task``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from smarttags.adapters.sqs import Received
from smarttags.core.asset import TaggingStatus, asset_id
from smarttags.core.events import parse_message
from smarttags.entrypoints.compose import Services

log = logging.getLogger(__name__)

MAX_LISTED = 100
_LOOK_SECONDS = 30  # how long a listed message stays hidden if releasing it fails


@dataclass(frozen=True)
class DeadLetter:
    message_id: str
    keys: list[str]  # s3://bucket/key of every object the message was about
    receive_count: int
    reason: str  # the asset's recorded failure, or why the message could not be read


def _receive_all(services: Services, limit: int) -> list[Received]:
    received: dict[str, Received] = {}
    while len(received) < limit:
        batch = services.dead_letter_queue.receive(max_messages=10, wait_seconds=0, visibility_seconds=_LOOK_SECONDS)
        fresh = [m for m in batch if m.message_id not in received]
        if not fresh:
            break
        received.update((m.message_id, m) for m in fresh)
    return list(received.values())[:limit]


def _reason(services: Services, message: Received) -> tuple[list[str], str]:
    parsed = parse_message(message.message_id, message.body, message.receive_count)
    if parsed.error:
        return [], parsed.error
    keys = [f"s3://{e.bucket}/{e.key}" for e in parsed.events]
    reasons = []
    for event in parsed.events:
        found = services.assets.get(asset_id(event.bucket, event.key))
        if found is not None and found.asset.status == TaggingStatus.FAILED and found.asset.tagging.reason:
            reasons.append(found.asset.tagging.reason)
    return keys, "; ".join(dict.fromkeys(reasons)) or "no failure recorded on the asset (see the worker's log)"


def list_dead_letters(services: Services, limit: int = MAX_LISTED) -> list[DeadLetter]:
    """Up to ``limit`` dead-lettered messages, released again right away."""
    received = _receive_all(services, limit)
    try:
        letters = []
        for message in received:
            keys, reason = _reason(services, message)
            letters.append(DeadLetter(message.message_id, keys, message.receive_count, reason))
        return letters
    finally:
        services.dead_letter_queue.release(m.receipt_handle for m in received)


def redrive(services: Services, message_id: str | None = None) -> int:
    """Move one message (by id) or every message (``None``) back to the tagging queue, body unchanged.
    Returns how many moved; a message is deleted from the dead-letter queue only once it was sent."""
    received = _receive_all(services, 10_000 if message_id is None else MAX_LISTED)
    chosen = [m for m in received if message_id is None or m.message_id == message_id]
    try:
        services.queue.send_raw(m.body for m in chosen)
        services.dead_letter_queue.delete(m.receipt_handle for m in chosen)
    finally:
        services.dead_letter_queue.release(m.receipt_handle for m in received if m not in chosen)
    log.info("redrove %d dead-lettered message(s)", len(chosen))
    return len(chosen)
