"""When the scheduler windows fire, computed from their cron expressions without APScheduler.

The scheduler service (``entrypoints/scheduler.py``) fires the windows with APScheduler 3.x
(``CronTrigger.from_crontab``, matched on the wall clock of ``scheduler.timezone``). The admin panel and
``smarttags validate`` only show the next fire times, so this pure evaluator reads the same dialect and
the web process never loads APScheduler; ``tests/core/test_cron.py`` checks that both agree. The
dialect is APScheduler's, quirks included:

* five fields, ``minute hour day month day_of_week``, and every field must match (a restricted day
  *and* day_of_week both apply, unlike Vixie cron's "either");
* day_of_week counts from Monday: ``0`` is Monday, ``6`` Sunday (``7`` is refused); names ``mon``..``sun``;
* ``*``, ``*/step``, ``a``, ``a-b``, ``a-b/step``, ``a/step`` (from a to the end), comma lists; month
  and weekday names and name ranges (``jan``, ``mon-fri``) take no step: what follows is ignored;
  ``last`` in the day field is the month's last day.

Wall-clock times the zone skips (the hour lost to DST) move on to the next match; a repeated hour fires
once, at its first occurrence.
"""

from __future__ import annotations

import re
from calendar import monthrange
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from smarttags.core.windows import TAGGING_WINDOW, TRAINING_WINDOW
from smarttags.errors import ConfigError
from smarttags.settings import SchedulerSettings

FIELDS = ("minute", "hour", "day", "month", "day_of_week")
BOUNDS = {"minute": (0, 59), "hour": (0, 23), "day": (1, 31), "month": (1, 12), "day_of_week": (0, 6)}
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
LAST_DAY = 0  # stands for "last" among the day field's values

# APScheduler's element patterns, matched from the start (the name and ``last`` patterns are not
# anchored at the end there either, hence "what follows is ignored").
_ALL = re.compile(r"\*(?:/(?P<step>\d+))?$")
_RANGE = re.compile(r"(?P<first>\d+)(?:-(?P<last>\d+))?(?:/(?P<step>\d+))?$")
_NAMES = re.compile(r"(?P<first>[a-z]+)(?:-(?P<last>[a-z]+))?", re.IGNORECASE)
_LAST = re.compile(r"last", re.IGNORECASE)

# The Gregorian calendar repeats every 400 years: a pattern with no match in that span never matches.
_MONTHS_SEARCHED = 400 * 12 + 1


def _step(text: str | None) -> int | None:
    if text is None:
        return None
    step = int(text)
    if step == 0:
        raise ValueError("the step must be higher than 0")
    return step


def _span(first: int, last: int | None, step: int | None, low: int, high: int) -> set[int]:
    """The values of ``first-last/step`` in a field of [low, high], checked as APScheduler checks them."""
    if last is None and step is None:
        last = first
    if last is not None and first > last:
        raise ValueError(f"the range {first}-{last} runs backwards")
    if first < low:
        raise ValueError(f"{first} is lower than the minimum {low}")
    if last is not None and last > high:
        raise ValueError(f"{last} is higher than the maximum {high}")
    if step and step > (last or high) - first:
        raise ValueError(f"the step {step} is larger than the range")
    return set(range(first, (high if last is None else last) + 1, step or 1))


def _name_index(name: str, names: tuple[str, ...], offset: int) -> int:
    try:
        return names.index(name.lower()) + offset
    except ValueError:
        raise ValueError(f"unknown name {name!r}") from None


def _element(text: str, field: str) -> set[int]:
    low, high = BOUNDS[field]
    if match := _ALL.match(text):
        step = _step(match["step"])
        if step and step > high - low:
            raise ValueError(f"the step {step} is larger than the range")
        return set(range(low, high + 1, step or 1))
    if match := _RANGE.match(text):
        last = None if match["last"] is None else int(match["last"])
        return _span(int(match["first"]), last, _step(match["step"]), low, high)
    if field == "day" and _LAST.match(text):
        return {LAST_DAY}
    if field in ("month", "day_of_week") and (match := _NAMES.match(text)):
        names, offset = (MONTHS, 1) if field == "month" else (WEEKDAYS, 0)
        first = _name_index(match["first"], names, offset)
        last = None if match["last"] is None else _name_index(match["last"], names, offset)
        return _span(first, last, None, low, high)
    raise ValueError(f"{text!r} is not a valid {field} value")


@dataclass(frozen=True)
class Cron:
    """A parsed 5-field cron expression; ``next_fire`` finds when it fires next in a time zone."""

    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]  # LAST_DAY for "last"
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Monday

    @classmethod
    def parse(cls, expression: str) -> Cron:
        """The expression, or ValueError saying which part is wrong."""
        parts = expression.split()
        if len(parts) != len(FIELDS):
            raise ValueError(f"{len(parts)} fields; a cron expression has 5: {' '.join(FIELDS)}")
        values: dict[str, set[int]] = {}
        for field, part in zip(FIELDS, parts, strict=True):
            values[field] = set()
            for element in re.split(" *, *", part):
                try:
                    values[field] |= _element(element, field)
                except ValueError as exc:
                    raise ValueError(f"{field} {part!r}: {exc}") from None
        return cls(
            minutes=tuple(sorted(values["minute"])),
            hours=tuple(sorted(values["hour"])),
            days=frozenset(values["day"]),
            months=frozenset(values["month"]),
            weekdays=frozenset(values["day_of_week"]),
        )

    def _days_of(self, year: int, month: int) -> list[int]:
        length = monthrange(year, month)[1]
        days = {d for d in self.days if d <= length} | ({length} if LAST_DAY in self.days else set())
        return sorted(d for d in days - {LAST_DAY} if date(year, month, d).weekday() in self.weekdays)

    def _clock_from(self, hour: int, minute: int) -> tuple[int, int] | None:
        """The first (hour, minute) of a day at or after the given one."""
        for h in self.hours:
            if h > hour:
                return h, self.minutes[0]
            if h == hour:
                later = [m for m in self.minutes if m >= minute]
                if later:
                    return h, later[0]
        return None

    def next_wall_time(self, start: datetime) -> datetime | None:
        """The first matching wall-clock minute at or after ``start`` (naive), or None if there is none."""
        moment = start.replace(second=0, microsecond=0)
        if moment < start:
            moment += timedelta(minutes=1)
        year, month, day, clock = moment.year, moment.month, moment.day, (moment.hour, moment.minute)
        for _ in range(_MONTHS_SEARCHED):
            if month in self.months:
                for d in self._days_of(year, month):
                    if d < day:
                        continue
                    found = self._clock_from(*clock) if d == day else (self.hours[0], self.minutes[0])
                    if found is not None:
                        return datetime(year, month, d, *found)
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
            day, clock = 1, (0, 0)
            if year > 9999:
                break
        return None

    def next_fire(self, now: datetime, zone: ZoneInfo) -> datetime | None:
        """The first fire time at or after ``now`` (aware), matched on the wall clock of ``zone``."""
        candidate = self.next_wall_time(now.astimezone(zone).replace(tzinfo=None))
        while candidate is not None:
            local = candidate.replace(tzinfo=zone)
            if local.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == candidate:
                return local
            candidate = self.next_wall_time(candidate + timedelta(seconds=1))  # a wall time the zone skips
        return None

    def fire_times(self, now: datetime, zone: ZoneInfo, count: int) -> list[datetime]:
        """The next ``count`` fire times from ``now`` (fewer if the expression stops matching)."""
        times: list[datetime] = []
        fire = self.next_fire(now, zone)
        while fire is not None and len(times) < count:
            times.append(fire)
            fire = self.next_fire(fire + timedelta(seconds=1), zone)
        return times


def window_crons(settings: SchedulerSettings) -> dict[str, Cron]:
    """Each window's parsed expression; a wrong one is a ConfigError naming its setting."""
    crons = {}
    for kind, setting, expression in (
        (TRAINING_WINDOW, "SMARTTAGS_SCHEDULER__TRAINING_CRON", settings.training_cron),
        (TAGGING_WINDOW, "SMARTTAGS_SCHEDULER__TAGGING_CRON", settings.tagging_cron),
    ):
        try:
            crons[kind] = Cron.parse(expression)
        except ValueError as exc:
            raise ConfigError(setting, str(exc)) from None
    return crons


def next_fire_times(settings: SchedulerSettings, now: datetime, count: int = 1) -> dict[str, list[datetime]]:
    """The next ``count`` fire times of each window, in the scheduler's time zone."""
    zone = ZoneInfo(settings.timezone)
    return {kind: cron.fire_times(now, zone, count) for kind, cron in window_crons(settings).items()}
