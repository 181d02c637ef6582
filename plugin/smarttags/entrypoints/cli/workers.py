"""``smarttags worker`` and ``scheduler``: the two background processes (upload tagging, the windows)."""

from __future__ import annotations

import argparse
from typing import Any

from smarttags.entrypoints.cli.common import services
from smarttags.settings import Settings


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    import signal

    from smarttags.entrypoints.worker import Worker

    built = services(settings)
    built.index.ensure()  # never let a first write auto-create an index without our mapping
    worker = Worker(
        built.tagger,
        built.runs,
        built.queue,
        healthy=built.services_answer,
        backoff_first=settings.tagging.retry_backoff_seconds,
        concurrency=args.concurrency or settings.tagging.worker_concurrency,
        visibility_seconds=settings.tagging.worker_visibility_seconds,
    )
    signal.signal(signal.SIGTERM, lambda *_: worker.stop.set())
    try:
        worker.run()
    except KeyboardInterrupt:
        worker.stop.set()
    return 0


def _scheduler(settings: Settings, args: argparse.Namespace) -> int:
    from smarttags.entrypoints import scheduler

    return scheduler.main(settings, once=args.once)


def add_commands(sub: Any) -> None:
    p = sub.add_parser("worker", help="tag uploads from the local queue (the Lambda handler, locally)")
    p.add_argument("--concurrency", type=int)
    p.set_defaults(handler=_worker)

    p = sub.add_parser("scheduler", help="run the weekly training and daily tagging windows")
    p.add_argument("--once", action="store_true", help="catch up on a missed window, then exit")
    p.set_defaults(handler=_scheduler)
