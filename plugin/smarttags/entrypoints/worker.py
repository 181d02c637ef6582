"""The local worker: long-polls the tagging queue and runs the batch loop the Lambda handler runs.

Like Lambda's SQS integration: a batch of up to ten messages goes through ``batch.handle_messages``;
the messages it reports as failed stay on the queue, the rest are deleted. After ``max_receive_count``
receives SQS moves a failing message to the dead-letter queue.

An outage is not a poison message: when a message fails because OpenSearch or S3 is down, its next
receive is pushed back (``batch.backoff_seconds``) and the worker stops receiving (the circuit opens)
until ``healthy()`` answers again, so a backlog burns no receives while a service is away and drains by
itself when it returns. Threads are supervised: one that dies is logged and replaced. While a batch is
handled its messages' visibility is extended (a heartbeat every half timeout), as a Lambda function's
messages stay invisible for the whole invocation.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from smarttags.adapters.sqs import WorkQueue
from smarttags.core import events
from smarttags.core.runs import RunLog
from smarttags.core.tagging import RunTally, Tagger
from smarttags.entrypoints.batch import backoff_seconds, handle_messages

log = logging.getLogger(__name__)

RETRY_BACKOFF_SECONDS = 2  # an unreadable message comes back soon: it is on its way to the DLQ
PROBE_SECONDS = (1, 2, 5, 10)  # how often an open circuit asks the services again


class Worker:
    def __init__(
        self,
        tagger: Tagger,
        runs: RunLog,
        queue: WorkQueue,
        *,
        healthy: Callable[[], bool] = lambda: True,
        backoff_first: int = 30,
        concurrency: int = 2,
        wait_seconds: int = 5,
        visibility_seconds: int = 120,
    ) -> None:
        self._tagger = tagger
        self._runs = runs
        self._queue = queue
        self._healthy = healthy
        self._backoff_first = backoff_first
        self._concurrency = concurrency
        self._wait = wait_seconds
        self._visibility = visibility_seconds
        self.stop = threading.Event()
        self._circuit_closed = threading.Event()
        self._circuit_closed.set()
        self._probe_lock = threading.Lock()

    @property
    def circuit_open(self) -> bool:
        return not self._circuit_closed.is_set()

    def run_once(self, tally: RunTally | None = None) -> int:
        """Receive and handle one batch; returns how many messages it received."""
        messages = self._queue.receive(wait_seconds=self._wait, visibility_seconds=self._visibility)
        if not messages:
            return 0
        parsed = [events.parse_message(m.message_id, m.body, m.receive_count) for m in messages]
        with self._heartbeat([m.receipt_handle for m in messages]):
            failed = {f.message_id: f for f in handle_messages(self._tagger, self._runs, parsed, tally=tally)}
        self._queue.delete(m.receipt_handle for m in messages if m.message_id not in failed)
        for message in messages:
            failure = failed.get(message.message_id)
            if failure is not None:
                delay = (
                    backoff_seconds(message.receive_count, self._backoff_first)
                    if failure.transient
                    else RETRY_BACKOFF_SECONDS
                )
                self._queue.backoff(message.receipt_handle, delay)
        if any(f.transient for f in failed.values()):
            self._open_circuit()
        return len(messages)

    @contextmanager
    def _heartbeat(self, receipt_handles: list[str]) -> Iterator[None]:
        """While a batch is handled, keep its messages invisible: a batch slower than the visibility
        timeout (a busy machine, a run's many keys) is not delivered to another thread meanwhile, whose
        copy would do the same work again. A worker that dies stops beating, and its messages return."""
        done = threading.Event()

        def beat() -> None:
            while not done.wait(self._visibility / 2):
                try:
                    self._queue.extend(receipt_handles, self._visibility)
                except Exception as exc:  # the messages may come back early: their work is done once anyway
                    log.warning("worker: could not extend the messages' visibility: %s", exc)

        thread = threading.Thread(target=beat, name="smarttags-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

    def _open_circuit(self) -> None:
        if self._circuit_closed.is_set():
            log.warning("worker: a service is failing; receiving stops until it answers again")
            self._circuit_closed.clear()

    def _wait_for_services(self) -> None:
        """While the circuit is open, one thread probes the services with growing pauses."""
        attempt = 0
        while not self.stop.is_set() and self.circuit_open:
            if not self._probe_lock.acquire(blocking=False):
                self._circuit_closed.wait(1)
                continue
            try:
                if self._probe():
                    log.info("worker: services answer again; receiving resumes")
                    self._circuit_closed.set()
                    return
            finally:
                self._probe_lock.release()
            self.stop.wait(PROBE_SECONDS[min(attempt, len(PROBE_SECONDS) - 1)])
            attempt += 1

    def _probe(self) -> bool:
        try:
            return bool(self._healthy())
        except Exception as exc:  # a probe that raises says "not yet"
            log.debug("worker: services not back yet: %s", exc)
            return False

    def _loop(self) -> None:
        tally = RunTally()  # this thread's counts that could not be written yet
        while not self.stop.is_set():
            self._wait_for_services()
            try:
                self.run_once(tally)
            except Exception as exc:
                # The queue itself is down (nothing was deleted, so nothing is lost), or a bug: wait, retry.
                log.warning("worker: %s: %s; retrying in 5 s", type(exc).__name__, exc)
                self.stop.wait(5)
        tally.flush(self._runs)  # what is still owed, if OpenSearch answers now

    def run(self) -> None:
        """Run until ``stop`` is set (Ctrl-C in the CLI); a thread that dies is replaced."""
        threads = [self._start(i) for i in range(self._concurrency)]
        log.info("worker polling %s with %d threads", self._queue.url, self._concurrency)
        try:
            while not self.stop.is_set():
                for i, thread in enumerate(threads):
                    thread.join(timeout=0.5 / len(threads))
                    if not thread.is_alive() and not self.stop.is_set():
                        log.error("worker thread %s died; starting a new one", thread.name)
                        threads[i] = self._start(i)
        finally:
            self.stop.set()
            for thread in threads:
                thread.join(timeout=self._wait + 5)

    def _start(self, number: int) -> threading.Thread:
        thread = threading.Thread(target=self._loop, name=f"smarttags-worker-{number}", daemon=True)
        thread.start()
        return thread
