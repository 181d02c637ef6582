"""The local worker: long-polls the tagging queue and runs the very handler Lambda runs.

Like Lambda's SQS integration: a batch of up to ten messages goes through ``batch.handle_messages``
(the loop the Lambda handler uses); the messages it reports as failed stay on the queue and come back
after a short back-off, the rest are deleted. After ``max_receive_count`` receives SQS moves a failing
message to the dead-letter queue.
"""

from __future__ import annotations

import logging
import threading

from smarttags.adapters.sqs import WorkQueue
from smarttags.core import events
from smarttags.core.runs import RunLog
from smarttags.core.tagging import Tagger
from smarttags.entrypoints.batch import handle_messages
from smarttags.errors import ServiceError

log = logging.getLogger(__name__)

RETRY_BACKOFF_SECONDS = 2


class Worker:
    def __init__(
        self,
        tagger: Tagger,
        runs: RunLog,
        queue: WorkQueue,
        *,
        concurrency: int = 2,
        wait_seconds: int = 5,
        visibility_seconds: int = 120,
    ) -> None:
        self._tagger = tagger
        self._runs = runs
        self._queue = queue
        self._concurrency = concurrency
        self._wait = wait_seconds
        self._visibility = visibility_seconds
        self.stop = threading.Event()

    def run_once(self) -> int:
        """Receive and handle one batch; returns how many messages it received."""
        messages = self._queue.receive(wait_seconds=self._wait, visibility_seconds=self._visibility)
        if not messages:
            return 0
        parsed = (events.parse_message(m.message_id, m.body, m.receive_count) for m in messages)
        failed = set(handle_messages(self._tagger, self._runs, parsed))
        self._queue.delete(m.receipt_handle for m in messages if m.message_id not in failed)
        for message in messages:
            if message.message_id in failed:
                self._queue.backoff(message.receipt_handle, RETRY_BACKOFF_SECONDS)
        return len(messages)

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                self.run_once()
            except ServiceError as exc:
                # The queue or the index is down: nothing was deleted, so nothing is lost. Wait, retry.
                log.warning("worker: %s; retrying in 5 s", exc)
                self.stop.wait(5)

    def run(self) -> None:
        """Run until ``stop`` is set (Ctrl-C in the CLI)."""
        threads = [
            threading.Thread(target=self._loop, name=f"smarttags-worker-{i}", daemon=True)
            for i in range(self._concurrency)
        ]
        for thread in threads:
            thread.start()
        log.info("worker polling %s with %d threads", self._queue.url, self._concurrency)
        try:
            while any(t.is_alive() for t in threads):
                for thread in threads:
                    thread.join(timeout=0.5)
        finally:
            self.stop.set()
