"""A batch of queue messages through the tagger, with partial-batch failures: the one batch loop of the
Lambda handler and the local worker (the powertools style — the core sees events and deliveries; only
this module knows messages, receive counts and which of them to retry). Every event of a
batch's messages (S3 records, and the keys of a tagging run's work items) goes through
``Tagger.handle_many`` together, each answered alone; a message fails when one of its events did.

A message fails in two ways. *Unreadable* (not JSON, not an S3 event): it is retried like any failure
and after ``aws.max_receive_count`` receives SQS moves it to the dead-letter queue, where an operator
sees it. *Transient* (OpenSearch or S3 down, a write that kept conflicting): the system, not the
message, is at fault, so its next receive is pushed back (``backoff_seconds``) and the local worker
stops receiving until the services answer again, so an outage burns no receives. A file that cannot
be read is neither: the tagger records it on its asset and the message succeeds.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from smarttags.core import events
from smarttags.core.runs import RunLog
from smarttags.core.tagging import RecordFailed, Result, RunTally, Tagger, handle_logged, record
from smarttags.errors import ServiceError, SmartTagsError

log = logging.getLogger(__name__)

# The delay before a message that failed on a transient error is received again grows 4x per receive
# from ``tagging.retry_backoff_seconds`` (30 s, 2 min, 5 min by default), capped, with jitter so a
# backlog does not come back all at once.
BACKOFF_MAX_SECONDS = 300


@dataclass(frozen=True)
class Failure:
    message_id: str
    reason: str
    transient: bool
    receive_count: int = 1


def backoff_seconds(receive_count: int, first: int, *, rng: random.Random | None = None) -> int:
    """How long a transiently failed message stays invisible before its next receive."""
    base = min(BACKOFF_MAX_SECONDS, first * 4 ** max(0, receive_count - 1))
    return int(base * (0.8 + 0.4 * (rng or random).random()))


def handle_messages(
    tagger: Tagger, runs: RunLog, messages: Iterable[events.Message], *, tally: RunTally | None = None
) -> list[Failure]:
    """Handle every message; returns those that failed (they stay on the queue). A long-lived ``tally``
    (one per worker thread, one per Lambda container) carries counts a failed flush kept to the next."""
    failed: list[Failure] = []
    tally = tally if tally is not None else RunTally()
    messages = list(messages)
    # Every event of the batch's readable messages (an S3 record, or a run's work item of many keys)
    # goes through the tagger together; a message fails if one of its events failed (retried whole:
    # its handled events are found done then, and count once).
    queued = [m for m in messages if not m.error and m.message_id is not None]
    try:
        pairs = [(m, e) for m in queued for e in m.events]
        answers = tagger.handle_many([(e, str(m.message_id)) for m, e in pairs])
        failures: dict[int, tuple[str, bool]] = {}
        for (message, event), answer in zip(pairs, answers, strict=True):
            failure = _answered(message, event, answer, tally)
            if failure is not None and id(message) not in failures:
                failures[id(message)] = failure
        for message in queued:
            if id(message) in failures:
                reason, transient = failures[id(message)]
                failed.append(Failure(str(message.message_id), reason, transient, message.receive_count))
        for message in (m for m in messages if not any(m is q for q in queued)):
            failure = _handle_message(tagger, message, tally)
            if failure is not None:
                reason, transient = failure
                if message.message_id is None:  # a direct invocation: Lambda retries it when we raise
                    raise RecordFailed(reason)
                failed.append(Failure(message.message_id, reason, transient, message.receive_count))
    finally:
        tally.flush(runs)
    return failed


def _answered(
    message: events.Message, event: events.ObjectEvent, answer: Result | Exception, tally: RunTally
) -> tuple[str, bool] | None:
    """Log and count one batched event's answer; a failure as (reason, transient)."""
    if isinstance(answer, Result):
        record(event, answer, tally, owner=message.message_id)
        return None
    if isinstance(answer, SmartTagsError):
        log.warning(
            "s3://%s/%s will be retried (receive %d): %s", event.bucket, event.key, message.receive_count, answer
        )
        return str(answer), True
    log.error("s3://%s/%s: unexpected error", event.bucket, event.key, exc_info=answer)
    return f"unexpected error: {type(answer).__name__}: {answer}", False


def _handle_message(tagger: Tagger, message: events.Message, tally: RunTally) -> tuple[str, bool] | None:
    if message.error:
        log.error("message %s (receive %d): %s", message.message_id, message.receive_count, message.error)
        return message.error, False
    for event in message.events:
        try:
            handle_logged(tagger, event, tally, message.receive_count, owner=message.message_id)
        except SmartTagsError as exc:  # a service down, a model that does not load: the system's fault
            return str(exc), True  # the message is retried whole; its handled events are duplicates then
        except Exception as exc:  # a bug: this message fails (and is dead-lettered), the batch goes on
            log.exception("s3://%s/%s: unexpected error", event.bucket, event.key)
            return f"unexpected error: {type(exc).__name__}: {exc}", False
    return None


def handle_lambda_event(
    tagger: Tagger,
    runs: RunLog,
    event: Mapping[str, Any],
    *,
    delay: Callable[[Mapping[str, Any], int], None] | None = None,
    backoff_first: int = 30,
    tally: RunTally | None = None,
) -> dict[str, Any]:
    """A Lambda invocation: an SQS batch (answered with ``batchItemFailures``, the
    ``ReportBatchItemFailures`` response) or an S3 notification delivered directly (raises on failure).
    ``delay(record, seconds)`` pushes a transiently failed record's next receive back."""
    records = {r.get("messageId"): r for r in event.get("Records") or [] if isinstance(r, Mapping)}
    failed = handle_messages(tagger, runs, events.parse_invocation(event), tally=tally)
    for failure in failed:
        if failure.transient and delay is not None and failure.message_id in records:
            try:
                delay(records[failure.message_id], backoff_seconds(failure.receive_count, backoff_first))
            except ServiceError as exc:  # the message still comes back, only sooner
                log.warning("could not delay message %s: %s", failure.message_id, exc)
    return {"batchItemFailures": [{"itemIdentifier": f.message_id} for f in failed]}
