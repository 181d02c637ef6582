"""AWS Lambda entry point of the upload tagger (handler string ``handler.handler``).

Thin: configure JSON logs, build the services once per container (warm starts reuse the ONNX session and
the active model), hand the event to the batch loop the worker uses too. SQS batches get partial-batch failure reporting
(``ReportBatchItemFailures``); a direct S3 invocation raises on failure so Lambda retries it.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from typing import Any

from smarttags import settings as settings_mod
from smarttags.adapters.sqs import WorkQueue
from smarttags.core.tagging import RunTally
from smarttags.entrypoints.batch import handle_lambda_event
from smarttags.entrypoints.compose import Services

_services: Services | None = None
_tally = RunTally()  # counts a failed write kept, written with the container's next invocation


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"level": record.levelname, "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _configure_logging() -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global _services
    if _services is None:
        _configure_logging()
        _services = Services(settings_mod.load())
    return handle_lambda_event(
        _services.tagger,
        _services.runs,
        event,
        delay=_delay,
        backoff_first=_services.settings.tagging.retry_backoff_seconds,
        tally=_tally,
    )


def _delay(record: Mapping[str, Any], seconds: int) -> None:
    """Push a transiently failed record's next receive back (its queue is named by its event source)."""
    assert _services is not None
    queue_name = str(record.get("eventSourceARN", "")).rpartition(":")[2]
    WorkQueue.by_name(_services.sqs, queue_name).backoff(str(record["receiptHandle"]), seconds)
