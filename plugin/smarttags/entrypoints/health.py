"""Is this deployment configured and working? The checks behind the admin status page and
``smarttags validate`` (the seed's validateConfigs()): each is green (ok), yellow (warn) or red (fail)
with its reason. A check never raises; a failure becomes a red line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from smarttags.core import cron
from smarttags.entrypoints.compose import Services
from smarttags.errors import ModelError, NotFound, SmartTagsError

log = logging.getLogger(__name__)

OK = "ok"
WARN = "warn"
FAIL = "fail"


@dataclass(frozen=True)
class Check:
    name: str
    state: str  # ok | warn | fail
    detail: str

    @property
    def ok(self) -> bool:
        return self.state != FAIL


def _reason(exc: Exception) -> str:
    if isinstance(exc, SmartTagsError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def check_opensearch(services: Services) -> Check:
    version = services.index.server_version()
    missing = services.index.missing_templates()
    if missing:
        return Check(
            "OpenSearch",
            FAIL,
            f"version {version}; stored templates missing: {', '.join(missing)} (run `smarttags init`)",
        )
    return Check(
        "OpenSearch", OK, f"version {version} at {services.settings.opensearch.url}; stored templates installed"
    )


def check_bucket(services: Services) -> Check:
    next(iter(services.store.list("")), None)
    next(iter(services.own_store.list(services.settings.aws.models_prefix)), None)
    aws = services.settings.aws
    detail = f"s3://{aws.bucket} (assets) and s3://{aws.own_bucket} (models, thumbnails) are reachable"
    return Check("S3 bucket", OK, detail)


def check_queue(services: Services) -> Check:
    depth = services.queue.depth()
    return Check(
        "Tagging queue",
        OK,
        f"{services.settings.aws.queue_name}: {depth['visible']} waiting, {depth['in_flight']} in flight",
    )


def check_dead_letters(services: Services) -> Check:
    depth = services.dead_letter_queue.depth()
    waiting = depth["visible"] + depth["in_flight"]
    name = services.settings.aws.dead_letter_queue_name
    if waiting:
        return Check("Dead-letter queue", WARN, f"{name}: {waiting} failed work items to inspect")
    return Check("Dead-letter queue", OK, f"{name}: empty")


def check_model(services: Services) -> Check:
    active = services.models.active_version()
    if active is None:
        return Check("Active model", FAIL, "no model is active: train one (`smarttags train`) or activate one")
    try:
        model = services.models.load(active)
    except (ModelError, NotFound) as exc:
        return Check("Active model", FAIL, f"{active}: {exc}")
    return Check("Active model", OK, f"{active}: {len(model.manifest.tags)} tags, sha256 verified")


def check_schedule(services: Services, now: datetime) -> Check:
    """The windows' next fire times, from the settings' cron expressions (no APScheduler needed)."""
    times = cron.next_fire_times(services.settings.scheduler, now)
    detail = "; ".join(
        f"next {kind} window {when[0].isoformat() if when else 'never'}" for kind, when in sorted(times.items())
    )
    return Check("Scheduler", OK, detail or "no windows configured")


def validate(services: Services, *, now: datetime | None = None) -> list[Check]:
    """Every check, in order (``now`` is the clock the scheduler line counts from)."""
    moment = now or datetime.now(UTC)
    checks: list[tuple[str, Callable[[], Check]]] = [
        ("OpenSearch", lambda: check_opensearch(services)),
        ("S3 bucket", lambda: check_bucket(services)),
        ("Tagging queue", lambda: check_queue(services)),
        ("Dead-letter queue", lambda: check_dead_letters(services)),
        ("Active model", lambda: check_model(services)),
        ("Scheduler", lambda: check_schedule(services, moment)),
    ]
    results = []
    for name, run in checks:
        try:
            results.append(run())
        except Exception as exc:  # a status page reports every failure as a red line
            log.warning("status check %s failed: %s", name, _reason(exc))
            results.append(Check(name, FAIL, _reason(exc)))
    return results


def as_text(checks: list[Check]) -> str:
    marks = {OK: "ok  ", WARN: "warn", FAIL: "FAIL"}
    return "\n".join(f"[{marks[c.state]}] {c.name}: {c.detail}" for c in checks)
