from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from smarttags import settings
from smarttags.core import windows as scheduling
from smarttags.core.asset import Asset, Tagging, TaggingStatus
from smarttags.entrypoints import scheduler

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
DAY = timedelta(hours=24)
HALF_YEAR = timedelta(days=182)


def _doc(*, status="tagged", etag="e1", tagged_etag="e1", model="m2", tagged_at=NOW - timedelta(hours=1)):
    tagging = Tagging(TaggingStatus(status), None, model, tagged_etag, tagged_at.isoformat() if tagged_at else None)
    return Asset("b", "k.jpg", etag=etag, tagging=tagging)


@pytest.mark.parametrize(
    ("doc", "gap", "reason"),
    [
        (Asset("b", "k.jpg", etag="e1"), DAY, "new"),
        (_doc(status="not_enabled"), DAY, "new"),
        (_doc(etag="e2"), DAY, "modified"),
        (_doc(model="m1"), DAY, "model"),
        (_doc(tagged_at=NOW - timedelta(hours=23)), DAY, None),
        (_doc(tagged_at=NOW - timedelta(hours=25)), DAY, "gap"),  # on-demand: 24 hours
        (_doc(tagged_at=NOW - timedelta(days=100)), HALF_YEAR, None),  # periodic: 6 months
        (_doc(tagged_at=NOW - timedelta(days=200)), HALF_YEAR, "gap"),
        (_doc(status="failed"), DAY, None),  # the same bytes failed an hour ago: not again yet
        (_doc(status="failed", tagged_at=NOW - timedelta(days=2)), DAY, "gap"),
        (_doc(status="failed", etag="e2"), DAY, "new"),  # new bytes: try again
    ],
)
def test_selection_rules_with_a_controlled_clock(doc, gap, reason):
    assert scheduling.needs_tagging(doc, now=NOW, active_model="m2", gap=gap) == reason


@pytest.fixture(scope="module")
def service():
    return scheduler


def test_default_windows_fire_saturday_0030_and_daily_midnight(service):
    triggers = service.triggers(settings.load())
    monday = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    assert triggers["training"].get_next_fire_time(None, monday) == datetime(2026, 12, 5, 0, 30, tzinfo=UTC)
    assert triggers["tagging"].get_next_fire_time(None, monday) == datetime(2026, 12, 1, 0, 0, tzinfo=UTC)


def test_daily_window_across_a_dst_change(service):
    zone = ZoneInfo("Europe/Berlin")
    trigger = service.triggers(settings.load(scheduler={"timezone": "Europe/Berlin"}))["tagging"]
    first = trigger.get_next_fire_time(None, datetime(2026, 3, 28, 12, 0, tzinfo=zone))
    second = trigger.get_next_fire_time(first, first + timedelta(seconds=1))
    assert first == datetime(2026, 3, 29, 0, 0, tzinfo=zone) and first.utcoffset() == timedelta(hours=1)
    assert second == datetime(2026, 3, 30, 0, 0, tzinfo=zone) and second.utcoffset() == timedelta(hours=2)
    assert second.astimezone(UTC) - first.astimezone(UTC) == timedelta(hours=23)  # the short day


def test_last_fire_time_inside_the_grace(service):
    trigger = service.triggers(settings.load())["tagging"]
    now = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
    assert service.last_fire_time(trigger, now, timedelta(hours=6)) == datetime(2026, 12, 1, tzinfo=UTC)
    assert service.last_fire_time(trigger, now, timedelta(hours=2)) is None


def test_on_demand_cap(monkeypatch):
    from smarttags.errors import RequestError

    with pytest.raises(RequestError, match="at most 15"):
        scheduling.tag_assets(None, None, None, [f"k{i}" for i in range(16)], stores=None, bucket="b", limit=15)  # type: ignore[arg-type]
