"""The one clock of the core: timestamps as the indices store them (ISO 8601, UTC, milliseconds)."""

from __future__ import annotations

from datetime import UTC, datetime


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def parse_iso(value: str | None) -> datetime | None:
    """A stored timestamp as an aware datetime (naive ones are UTC); None stays None."""
    if not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
