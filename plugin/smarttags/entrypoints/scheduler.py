"""The APScheduler service: the weekly training window and the daily tagging window.

Thin: APScheduler decides *when*; ``smarttags.core.windows.run_window`` decides *what* and makes sure each
window runs once across replicas (a lease in OpenSearch). Run it as ONE process (``smarttags scheduler``),
never inside web workers, or every job would run once per worker.

A window missed while the service was down runs once when it returns, if it is not older than the misfire
grace time: at start, and every minute after, the most recent fire time of each window is checked against
its lease document. A window whose scheduler died mid-way (its lease still "running", no longer renewed)
is taken over once the lease expires (``scheduler.lease_seconds``), by whichever replica looks first.

The admin panel and ``smarttags validate`` show the next fire times through ``smarttags.core.cron``, a
pure evaluator of the same crontab dialect, so the web process never loads APScheduler.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger

from smarttags.core import windows as scheduling
from smarttags.entrypoints.compose import Services
from smarttags.settings import Settings

log = logging.getLogger("smarttags.scheduler")
CATCH_UP_SECONDS = 60  # how often a running scheduler looks for windows left unfinished


class WallClockCronTrigger(BaseTrigger):  # type: ignore[misc]  # APScheduler ships no type hints
    """A cron trigger evaluated on the wall clock of its time zone.

    APScheduler 3.x's CronTrigger adds 24-hour days to zone-aware times, so right after a DST change it
    can skip a whole day (agronholm/apscheduler#606: a daily 00:00 window in Europe/Berlin goes from
    29 March straight to 31 March). Here the cron fields are matched on naive wall-clock time (as if it
    were UTC, which has no DST) and the result is placed back in the zone; a wall time that does not
    exist (the skipped hour) moves on to the next match.
    """

    def __init__(self, crontab: str, timezone: str) -> None:
        self.timezone = ZoneInfo(timezone)
        self._wall = CronTrigger.from_crontab(crontab, timezone="UTC")

    def _to_wall(self, moment: datetime) -> datetime:
        return moment.astimezone(self.timezone).replace(tzinfo=UTC, fold=0)

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        previous = self._to_wall(previous_fire_time) if previous_fire_time else None
        candidate: datetime | None = self._wall.get_next_fire_time(previous, self._to_wall(now))
        while candidate is not None:
            local = candidate.replace(tzinfo=self.timezone)
            if local.astimezone(UTC).astimezone(self.timezone).replace(tzinfo=None) == local.replace(tzinfo=None):
                return local
            candidate = self._wall.get_next_fire_time(candidate, candidate + timedelta(seconds=1))
        return None

    def __str__(self) -> str:
        return f"wall-clock {self._wall} in {self.timezone.key}"


def triggers(settings: Settings) -> dict[str, WallClockCronTrigger]:
    """The cron trigger of each window, from the settings."""
    zone = settings.scheduler.timezone
    return {
        scheduling.TRAINING_WINDOW: WallClockCronTrigger(settings.scheduler.training_cron, zone),
        scheduling.TAGGING_WINDOW: WallClockCronTrigger(settings.scheduler.tagging_cron, zone),
    }


def last_fire_time(trigger: WallClockCronTrigger, now: datetime, grace: timedelta) -> datetime | None:
    """The latest fire time in (now - grace, now], if any."""
    fire: datetime | None = trigger.get_next_fire_time(None, now - grace)
    latest = None
    while fire is not None and fire <= now:
        latest = fire
        fire = trigger.get_next_fire_time(fire, fire + timedelta(seconds=1))
    return latest


def catch_up(services: Services, now: datetime, run: Callable[[str, datetime], Any]) -> list[str]:
    """Run, once, each window whose latest fire time passed and that did not finish: no scheduler ran it,
    or the one that did was stopped or died mid-window (``run`` takes its lease over only once it expired,
    and returns None when the window was not its to run). Returns the kinds it ran."""
    grace = timedelta(seconds=services.settings.scheduler.misfire_grace_seconds)
    leases = scheduling.Leases(services.index)
    caught = []
    for kind, trigger in triggers(services.settings).items():
        fire = last_fire_time(trigger, now, grace)
        if fire is None:
            continue
        state = leases.state(scheduling.window_id(kind, fire))
        if state == "done":
            continue
        log.info("window %s at %s is %s; running it if it is ours", kind, fire.isoformat(), state or "missed")
        if run(kind, fire) is not None:
            caught.append(kind)
    return caught


def build(services: Services, owner: str) -> BackgroundScheduler:
    settings = services.settings.scheduler

    def job(kind: str, trigger: WallClockCronTrigger) -> None:
        # The window's identity is its scheduled fire time, the same on every replica.
        fire = last_fire_time(
            trigger, datetime.now(trigger.timezone), timedelta(seconds=settings.misfire_grace_seconds)
        )
        if fire is not None:
            scheduling.run_window(services, kind, fire, owner=owner)

    scheduler = BackgroundScheduler(timezone=settings.timezone)
    # A window whose scheduler died mid-way is taken over by any live replica once its lease expires.
    scheduler.add_job(
        lambda: catch_up(
            services, datetime.now(UTC), lambda kind, fire: scheduling.run_window(services, kind, fire, owner=owner)
        ),
        trigger="interval",
        seconds=CATCH_UP_SECONDS,
        id="smarttags-catch-up",
        name="SmartTags catch-up of unfinished windows",
        replace_existing=True,
        max_instances=1,
        coalesce=True,
    )
    for kind, trigger in triggers(services.settings).items():
        scheduler.add_job(
            job,
            trigger=trigger,
            args=(kind, trigger),
            id=f"smarttags-{kind}",
            name=f"SmartTags {kind} window",
            replace_existing=True,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=settings.misfire_grace_seconds,
        )
    return scheduler


def main(settings: Settings, *, once: bool = False) -> int:
    services = Services(settings)
    owner = scheduling.default_owner()
    stop = threading.Event()
    now = datetime.now().astimezone()
    catch_up(services, now, lambda kind, fire: scheduling.run_window(services, kind, fire, owner=owner))
    if once:
        return 0
    scheduler = build(services, owner)
    scheduler.start()
    for job in scheduler.get_jobs():
        log.info("%s: next run %s", job.name, job.next_run_time)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()
    # Let a running window finish; its lease records it as done (or interrupted if it raised).
    scheduler.shutdown(wait=True)
    return 0
