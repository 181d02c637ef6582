"""A batch of queue messages through the tagger, one event at a time, with partial-batch failures: the
one batch loop of the Lambda handler and the local worker (the powertools style — the core sees single
events; only this module knows messages, receive counts and which of them to retry)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from smarttags.core import events
from smarttags.core.runs import RunLog
from smarttags.core.tagging import RecordFailed, RunTally, Tagger, handle_logged

log = logging.getLogger(__name__)


def handle_messages(tagger: Tagger, runs: RunLog, messages: Iterable[events.Message]) -> list[str]:
    """Handle every message; returns the ids of those that failed (they stay on the queue and are
    received again, and after ``max_receive_count`` receives go to the dead-letter queue)."""
    failed: list[str] = []
    tally = RunTally()
    try:
        for message in messages:
            reason = _handle_message(tagger, message, tally)
            if reason is not None:
                if message.message_id is None:  # a direct invocation: Lambda retries it when we raise
                    raise RecordFailed(reason)
                failed.append(message.message_id)
    finally:
        tally.flush(runs)
    return failed


def _handle_message(tagger: Tagger, message: events.Message, tally: RunTally) -> str | None:
    if message.error:
        log.error("message %s: %s", message.message_id, message.error)
        return message.error
    for event in message.events:
        reason = handle_logged(tagger, event, tally, message.receive_count)
        if reason is not None:
            return reason  # the message is retried whole; its handled events are duplicates then
    return None


def handle_lambda_event(tagger: Tagger, runs: RunLog, event: Mapping[str, Any]) -> dict[str, Any]:
    """A Lambda invocation: an SQS batch (answered with ``batchItemFailures``, the
    ``ReportBatchItemFailures`` response) or an S3 notification delivered directly (raises on failure)."""
    failed = handle_messages(tagger, runs, events.parse_invocation(event))
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failed]}
