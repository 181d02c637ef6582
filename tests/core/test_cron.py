"""The pure cron evaluator against APScheduler, the scheduler's own: same syntax, same fire times."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger
from smarttags import settings
from smarttags.core.cron import Cron, next_fire_times, window_crons
from smarttags.entrypoints import scheduler
from smarttags.errors import ConfigError

STARTS = [
    datetime(2026, 12, 3, 11, 42, 7, 250000, tzinfo=UTC),
    datetime(2026, 3, 28, 23, 59, tzinfo=UTC),  # before Europe's spring DST change
    datetime(2026, 10, 24, 22, 0, tzinfo=UTC),  # before Europe's autumn DST change
    datetime(2028, 2, 28, 0, 0, tzinfo=UTC),  # a leap year
    datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC),
]
EXPRESSIONS = [
    "30 0 * * sat",  # the training default
    "0 0 * * *",  # the tagging default
    "*/15 * * * *",
    "5/10 3-5 * * mon-fri",
    "0 0 last * *",
    "0 12 1,15 * 0",  # 0 is Monday in APScheduler's crontab
    "0 12 * * 6",  # and 6 is Sunday
    "30 2 * * *",  # a wall time the spring change skips and the autumn change repeats
    "0 0 29 2 fri",
    "0 0 * jan/2 *",  # a name takes no step: January only
    "0 0 * * mon/2",
    "0-0/5 * * * *",
    "0 0 13 * fri",  # day AND weekday, not either
    "59 23 31 12 *",
    "0 0 31 * *",
    "15,45 */6 1-7 */3 SUN",
]


def _apscheduler_times(expression: str, zone: str, start: datetime, count: int) -> list[datetime]:
    """What the scheduler service fires: its wall-clock trigger (UTC: APScheduler's own CronTrigger)."""
    trigger = (
        CronTrigger.from_crontab(expression, timezone="UTC")
        if zone == "UTC"
        else scheduler.WallClockCronTrigger(expression, zone)
    )
    times: list[datetime] = []
    fire = trigger.get_next_fire_time(None, start)
    while fire is not None and len(times) < count:
        times.append(fire)
        fire = trigger.get_next_fire_time(fire, fire + timedelta(seconds=1))
    return times


@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe"])
@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_the_evaluator_and_apscheduler_agree(expression: str, zone: str) -> None:
    cron = Cron.parse(expression)
    for start in STARTS:
        ours = cron.fire_times(start, ZoneInfo(zone), 6)
        theirs = _apscheduler_times(expression, zone, start, 6)
        assert [t.isoformat() for t in ours] == [t.isoformat() for t in theirs], (expression, zone, start)


def test_an_expression_that_never_fires_gives_nothing() -> None:
    assert Cron.parse("0 0 30 2 *").fire_times(STARTS[0], ZoneInfo("UTC"), 3) == []
    assert CronTrigger.from_crontab("0 0 30 2 *", timezone="UTC").get_next_fire_time(None, STARTS[0]) is None


@pytest.mark.parametrize(
    "expression",
    [
        "0 0 * * 7",
        "60 * * * *",
        "0 24 * * *",
        "*/0 * * * *",
        "*/60 * * * *",
        "0 0 0 * *",
        "0 0 L * *",
        "0 0 ? * *",
        "5-1 * * * *",
        "0 0 * * sat-mon",
        "0 0 * foo *",
        "0 0 * * 1#2",
        "1, * * * *",
        "0 0 * 13 *",
        "0-30/31 * * * *",
        "0 0 * *",
        "0 0 * * * *",
    ],
)
def test_what_apscheduler_refuses_is_refused(expression: str) -> None:
    with pytest.raises(ValueError):
        CronTrigger.from_crontab(expression, timezone="UTC")
    with pytest.raises(ValueError):
        Cron.parse(expression)


def _random_expression(rng: random.Random) -> str:
    def element(low: int, high: int, names: tuple[str, ...] = ()) -> str:
        # Mostly in range; now and then just outside it, which both must refuse.
        a, b = sorted(rng.randint(low - 1, high + 1) if rng.random() < 0.05 else rng.randint(low, high) for _ in "ab")
        step = rng.randint(0 if rng.random() < 0.05 else 1, max(1, (high - low) // 4))
        choice = rng.randrange(7 if names else 6)
        return [
            "*",
            f"*/{step}",
            str(a),
            f"{a}-{b}",
            f"{a}-{b}/{step}",
            f"{a}/{step}",
            rng.choice(names) if names else "",
        ][choice]

    def field(low: int, high: int, names: tuple[str, ...] = ()) -> str:
        return ",".join(element(low, high, names) for _ in range(rng.choice([1, 1, 1, 2, 3])))

    months = ("jan", "apr", "feb-mar", "Dec", "jun-may")
    weekdays = ("mon", "fri-sun", "SAT", "tue-wed", "sun-mon")
    day = field(1, 31) if rng.random() > 0.1 else "last"
    return " ".join([field(0, 59), field(0, 23), day, field(1, 12, months), field(0, 6, weekdays)])


def test_random_expressions_are_accepted_and_evaluated_alike() -> None:
    rng = random.Random(12)
    compared = 0
    for _ in range(500):
        expression = _random_expression(rng)
        try:
            CronTrigger.from_crontab(expression, timezone="UTC")
        except ValueError:
            with pytest.raises(ValueError):
                Cron.parse(expression)
            continue
        start, zone = rng.choice(STARTS), rng.choice(["UTC", "Europe/Berlin", "America/New_York"])
        ours = Cron.parse(expression).fire_times(start, ZoneInfo(zone), 3)
        assert ours == _apscheduler_times(expression, zone, start, 3), (expression, zone, start)
        compared += 1
    assert compared > 250  # the generator must give mostly valid expressions, or this compares little


def test_next_fire_times_of_the_default_windows() -> None:
    monday = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    times = next_fire_times(settings.load().scheduler, monday, count=2)
    assert times == {
        "training": [datetime(2026, 12, 5, 0, 30, tzinfo=UTC), datetime(2026, 12, 12, 0, 30, tzinfo=UTC)],
        "tagging": [datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 2, tzinfo=UTC)],
    }
    berlin = next_fire_times(settings.load(scheduler={"timezone": "Europe/Berlin"}).scheduler, monday)
    assert berlin["tagging"][0].isoformat() == "2026-12-01T00:00:00+01:00"


def test_a_wrong_expression_names_its_setting() -> None:
    wrong = settings.load().scheduler.model_copy(update={"tagging_cron": "0 0 L * *"})
    with pytest.raises(ConfigError, match="SMARTTAGS_SCHEDULER__TAGGING_CRON: day 'L'"):
        window_crons(wrong)
