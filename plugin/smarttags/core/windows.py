"""Training and tagging windows, on-demand runs, and the fan-out of tagging work to the queue.

The APScheduler service (``scheduler/``) only decides *when*; this module decides *what*: which folders,
which assets, and that a window runs once across all scheduler replicas (a lease document per window).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from smarttags.core import events
from smarttags.core.asset import Asset, TaggingStatus, run_counter
from smarttags.core.clock import parse_iso
from smarttags.core.folders import Folder, FolderRegistry
from smarttags.core.model_registry import ModelStore
from smarttags.core.ports import Assets, Index, Queue, StoreFor
from smarttags.core.runs import ON_DEMAND, SCHEDULE, TAG, Run, RunLog, RunStatus
from smarttags.core.tagging import Tagger
from smarttags.core.training import Trainer
from smarttags.errors import ConflictError, NotFound, RequestError
from smarttags.settings import Settings, TaggingSettings

log = logging.getLogger(__name__)

TRAINING_WINDOW = "training"
TAGGING_WINDOW = "tagging"
SELECT_ATTRIBUTES = ["etag", "tagging"]


class Services(Protocol):
    """What a scheduled window uses, and nothing more (``entrypoints.compose.Services`` provides it); the
    other use cases here take their collaborators one by one."""

    @property
    def settings(self) -> Settings: ...
    @property
    def index(self) -> Index: ...
    @property
    def assets(self) -> Assets: ...
    @property
    def runs(self) -> RunLog: ...
    @property
    def models(self) -> ModelStore: ...
    @property
    def queue(self) -> Queue: ...
    @property
    def folders(self) -> FolderRegistry: ...
    @property
    def trainer(self) -> Trainer: ...


def needs_tagging(asset: Asset, *, now: datetime, active_model: str | None, gap: timedelta) -> str | None:
    """Why an asset must be tagged in this run, or None. The rules: never tagged; modified since it was
    tagged (ETag); tagged by another model than the active one; unaltered but last tagged longer ago
    than the gap (24 hours for on-demand runs, 6 months for periodic ones)."""
    tagging = asset.tagging
    tagged_at = parse_iso(tagging.tagged_at)
    if tagging.status != TaggingStatus.TAGGED or tagged_at is None:
        if tagging.status in (TaggingStatus.FAILED, TaggingStatus.UNSUPPORTED) and tagging.etag == asset.etag:
            # The same bytes failed or are not an image: only the gap rule retries them.
            return "gap" if tagged_at is None or now - tagged_at > gap else None
        return "new"
    if tagging.etag != asset.etag:
        return "modified"
    if active_model and tagging.model_version != active_model:
        return "model"
    if now - tagged_at > gap:
        return "gap"
    return None


@dataclass(frozen=True)
class Dispatch:
    run: Run
    reasons: dict[str, int]


# Assets looked at per page of a dispatch: one search, up to 50 SendMessageBatch calls of ten, one update
# of the run (its selection and cursor). A dispatch holds one page in memory, never the whole folder.
PAGE_SIZE = 500
Progress = Callable[[str, int, int | None], None]


def dispatch_tagging(
    assets: Assets,
    queue: Queue,
    runs: RunLog,
    models: ModelStore,
    folder: Folder,
    *,
    tagging: TaggingSettings,
    trigger: str,
    now: datetime | None = None,
    batch_size: int = PAGE_SIZE,
    resume: str | None = None,
    progress: Progress | None = None,
    max_queued: int = 0,
    pause_seconds: float = 0.1,
) -> Dispatch:
    """Select the folder's assets that need tagging and enqueue one work item each (the queue's consumers,
    Lambda or the local worker, do the work in parallel and count it on the run, which ends with its last
    item). Assets are enumerated through a point in time with ``search_after``, a page at a time; after
    each page is sent the run records how many it selected and the page's cursor.

    ``resume`` names a run whose dispatch stopped (its process died): the scan goes on after the last
    page the run recorded, with the run's own clock and model. The page that was being sent is sent
    again: its assets this run already did are selected again (so the selection counts them), and their
    work items find them done (``tagging.decide``) and count once.

    A work item (one message) names up to ``tagging.keys_per_message`` assets: the queue's cost (SQS requests,
    Lambda invocations) is per message, and its consumer handles the keys as one batch.

    With ``max_queued`` a page waits until the queue then holds at most about that many assets (its
    messages times ``keys_per_message``): the consumers drain a short queue (live uploads are not queued
    behind the whole backfill), and the dispatch lasts as long as the run, a page ahead of it."""
    if resume is not None:
        run = _unfinished(runs, resume, folder)
        now = parse_iso(run.started_at) or datetime.now(UTC)
        active = run.model_version
        after = run.dispatch.get("after")
    else:
        now = now or datetime.now(UTC)
        active = models.active_version()
        run = runs.start(TAG, folder.uri, trigger, model_version=active)
        after = None
    gap = (
        timedelta(hours=tagging.on_demand_gap_hours)
        if run.trigger == ON_DEMAND
        else timedelta(days=tagging.periodic_gap_days)
    )
    reasons: dict[str, int] = dict(run.dispatch.get("reasons") or {})
    selected = int(run.counts.get("selected", 0))
    if progress:
        progress("dispatch", int(run.dispatch.get("scanned", 0)), assets.count(folder))
    for page, cursor in assets.pages(folder, attributes=SELECT_ATTRIBUTES, page_size=batch_size, after=after):
        keys: list[str] = []
        chosen: dict[str, int] = {}
        for asset in page:
            reason = needs_tagging(asset, now=now, active_model=active, gap=gap)
            if reason is None and resume is not None and asset.tagging.run == run.run_id:
                reason = "resumed"  # done by this run before the dispatch stopped: part of its selection
            if reason is None:
                continue
            chosen[reason] = chosen.get(reason, 0) + 1
            keys.append(asset.key)
        keys_per_item = tagging.keys_per_message
        items = [
            events.work_item(folder.bucket, keys[start : start + keys_per_item], run_id=run.run_id, trigger=run.trigger)
            for start in range(0, len(keys), keys_per_item)
        ]
        # The bound is in assets (a message of this run holds up to keys_per_item); a page larger than
        # the bound goes once the queue is empty.
        while items and max_queued and (queued := sum(queue.depth().values())):
            if (queued + len(items)) * keys_per_item <= max_queued:
                break
            time.sleep(pause_seconds)
        queue.send(items)
        runs.add_dispatched(run.run_id, len(keys), after=cursor, scanned=len(page), reasons=chosen)
        selected += len(keys)
        for reason, n in chosen.items():
            reasons[reason] = reasons.get(reason, 0) + n
        if progress:
            progress("dispatch", len(page), None)
    runs.mark_dispatched(run.run_id)
    run = runs.get(run.run_id) or run
    log.info("tagging run %s: %d assets selected %s", run.run_id, selected, reasons)
    return Dispatch(run, reasons)


def _unfinished(runs: RunLog, run_id: str, folder: Folder | None) -> Run:
    """The run a resumed dispatch goes on with: a tagging run whose dispatch did not finish."""
    run = runs.get(run_id)
    if run is None or run.kind != TAG:
        raise RequestError(f"no tagging run {run_id}")
    if run.status != RunStatus.RUNNING:
        raise RequestError(f"run {run_id} is {run.status}: its dispatch finished, nothing to resume")
    if folder is not None and run.folder != folder.uri:
        raise RequestError(f"run {run_id} tags {run.folder}, not {folder.uri}")
    return run


def tag_assets(
    tagger: Tagger,
    runs: RunLog,
    models: ModelStore,
    keys: Sequence[str],
    *,
    stores: StoreFor,
    bucket: str,
    limit: int,
    user: str = "cli",
) -> Run:
    """Tag the named assets (keys of ``bucket``, or s3:// URIs) now, in this process (at most ``limit``).
    A key with no object is skipped with its reason on the run: the operator named it and must see why."""
    if not keys:
        raise RequestError("name at least one asset to tag")
    if len(keys) > limit:
        raise RequestError(f"{len(keys)} assets asked for; on-demand tagging takes at most {limit} at a time")
    run = runs.start(TAG, None, ON_DEMAND, model_version=models.active_version())
    run.counts["selected"] = len(keys)
    for key in keys:
        b, _, k = key[5:].partition("/") if key.startswith("s3://") else (bucket, "/", key)
        run.counts["processed"] += 1
        try:
            # Checked first: the tagger would take a missing key for an object deleted meanwhile.
            stores(b).head(k)
        except NotFound:
            run.skip(k, f"no such object: s3://{b}/{k}")
            continue
        except Exception as exc:
            run.error(k, str(exc))
            continue
        try:
            outcome = tagger.handle(events.ObjectEvent(events.TAG, b, k, run_id=run.run_id, trigger=ON_DEMAND))
        except Exception as exc:
            run.error(k, str(exc))
            continue
        if outcome.status == TaggingStatus.FAILED:
            run.error(k, outcome.reason or "failed")
        elif (counter := run_counter(outcome.status)) == "skipped":
            run.skip(k, outcome.reason or str(outcome.status))
        elif counter:
            run.counts[counter] += 1
    log.info("on-demand tagging by %s: %s", user, dict(run.counts))
    return runs.finish(run, RunStatus.SUCCEEDED if not run.errors else RunStatus.COMPLETED_WITH_ERRORS)


# --- windows and leases ---------------------------------------------------------------------------


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Leases:
    """One document per window occurrence (``training@2026-12-05T00:30:00+00:00``). Whoever creates it,
    or takes over an unfinished one, runs the window; a finished one is never run again. "Unfinished" is
    a lease whose holder stopped it ("interrupted") or one still "running" past its expiry: its holder
    died (a crash, SIGKILL, a lost machine) without saying so, since a live holder keeps renewing it."""

    def __init__(self, index: Index) -> None:
        self._index = index

    def acquire(self, window: str, owner: str, *, seconds: int, now: datetime | None = None) -> bool:
        now = now or datetime.now(UTC)
        doc = {
            "window": window,
            "owner": owner,
            "acquired_at": now.isoformat(),
            "expires_at": (now + timedelta(seconds=seconds)).isoformat(),
            "state": "running",
        }
        current = self._index.get("leases", window)
        try:
            if current is None:
                self._index.put("leases", window, doc, create=True, refresh=True)
                return True
            held = current.source
            expired = (parse_iso(held.get("expires_at")) or now) <= now
            if held.get("state") == "done" or (held.get("state") == "running" and not expired):
                return False
            # expected=current: of two replicas taking over at once, one wins.
            self._index.put("leases", window, doc, expected=current, refresh=True)
            log.warning("window %s: took over the %s lease of %s", window, held.get("state"), held.get("owner"))
            return True
        except ConflictError:
            return False

    def renew(self, window: str, owner: str, *, seconds: int, now: datetime | None = None) -> bool:
        """Push a running lease's expiry on, if it is still ours; False if someone took it over."""
        now = now or datetime.now(UTC)
        current = self._index.get("leases", window)
        if current is None or current.source.get("owner") != owner or current.source.get("state") != "running":
            return False
        renewed = {**current.source, "expires_at": (now + timedelta(seconds=seconds)).isoformat()}
        try:
            self._index.put("leases", window, renewed, expected=current, refresh=True)
        except ConflictError:
            return False
        return True

    def finish(self, window: str, owner: str, state: str = "done") -> None:
        current = self._index.get("leases", window)
        if current is None or current.source.get("owner") != owner:
            return
        self._index.put("leases", window, {**current.source, "state": state}, expected=current, refresh=True)

    def state(self, window: str) -> str | None:
        current = self._index.get("leases", window)
        return None if current is None else str(current.source.get("state"))


class _Renewal:
    """Renews a lease every third of its length while the window runs, so only a dead holder's expires."""

    def __init__(self, leases: Leases, window: str, owner: str, seconds: int) -> None:
        self._stop = threading.Event()

        def renew() -> None:
            while not self._stop.wait(seconds / 3):
                try:
                    if not leases.renew(window, owner, seconds=seconds):
                        log.warning("window %s: the lease is no longer ours", window)
                        return
                except Exception:  # the index may be briefly away; the next renewal tries again
                    log.exception("window %s: could not renew the lease", window)

        self._thread = threading.Thread(target=renew, name=f"lease {window}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _stopped_dispatch(runs: RunLog, folder: Folder, fire_time: datetime) -> str | None:
    """The folder's tagging run of this window whose dispatch stopped (a scheduler that died mid-window:
    the window is ours now, so no live dispatch holds it): the window goes on with it, not a new run."""
    for run in runs.list(kind=TAG, folder=folder.uri, size=5):
        started = parse_iso(run.started_at)
        if run.trigger == SCHEDULE and run.status == RunStatus.RUNNING and started and started >= fire_time:
            return run.run_id
    return None


def window_id(kind: str, fire_time: datetime) -> str:
    return f"{kind}@{fire_time.astimezone(UTC).isoformat()}"


def run_window(services: Services, kind: str, fire_time: datetime, *, owner: str | None = None) -> list[str] | None:
    """Run one scheduled window for every folder with Smart Tags enabled, unless another replica has
    it. Returns the ids of the runs it started, or None when the window was not ours to run."""
    owner = owner or default_owner()
    leases = Leases(services.index)
    window = window_id(kind, fire_time)
    if not leases.acquire(window, owner, seconds=services.settings.scheduler.lease_seconds):
        log.info("window %s is run by another scheduler (or already ran)", window)
        return None
    run_ids: list[str] = []
    state = "done"
    renewal = _Renewal(leases, window, owner, services.settings.scheduler.lease_seconds)
    try:
        enabled = services.folders.enabled()
        if kind == TRAINING_WINDOW and enabled:
            # One model for the whole taxonomy: one training over every enabled folder, not one per folder.
            try:
                run_ids.append(services.trainer.train([f.folder for f in enabled], trigger=SCHEDULE).run_id)
            except Exception:  # recorded on its run
                log.exception("training window failed")
        for folder in enabled if kind != TRAINING_WINDOW else []:
            try:
                dispatch = dispatch_tagging(
                    services.assets,
                    services.queue,
                    services.runs,
                    services.models,
                    folder.folder,
                    tagging=services.settings.tagging,
                    trigger=SCHEDULE,
                    batch_size=services.settings.tagging.dispatch_page_size,
                    max_queued=services.settings.tagging.dispatch_max_queued,
                    resume=_stopped_dispatch(services.runs, folder.folder, fire_time),
                )
                run_ids.append(dispatch.run.run_id)
            except Exception:  # one folder's failure is recorded on its run; the others go on
                log.exception("%s window: folder %s failed", kind, folder.uri)
    except BaseException:
        state = "interrupted"
        raise
    finally:
        renewal.stop()
        leases.finish(window, owner, state)
    return run_ids
