"""Run history: every training and tagging run, with its trigger, counts and error reasons."""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from smarttags.core.clock import now_iso
from smarttags.core.ports import Index
from smarttags.errors import NotFound

log = logging.getLogger(__name__)

TRAIN = "train"
TAG = "tag"
SCHEDULE = "schedule"
ON_DEMAND = "on-demand"
UPLOAD = "upload"
# What every outcome adds to besides "processed" (``asset.run_counter``): processed is their sum.
OUTCOMES = ("tagged", "skipped", "unsupported", "failed", "embedded", "deleted")
COUNTS = ("selected", "processed", *OUTCOMES)
# A training run counts assets read (from the folders, and removals elsewhere), used (embedded pictures)
# and embedded now, and the tags retrained, carried over from the active model and not trained.
TRAIN_COUNTS = ("read", "used", "embedded", "retrained", "carried_over", "not_trained", "failed")


class RunStatus(StrEnum):
    RUNNING = "running"
    DISPATCHED = "dispatched"  # a fanned-out run: all work is queued, workers are counting it in
    SUCCEEDED = "succeeded"
    COMPLETED_WITH_ERRORS = "completed_with_errors"
    NO_MODEL = "no_model"  # a training run that had nothing to learn from
    FAILED = "failed"


MAX_ERRORS_KEPT = 50
MAX_FOLDERS_KEPT = 500
MAX_BATCHES_REMEMBERED = 200
# The items a run counted last (hashed keys): an item counted again within this window (a redelivery
# after a crash, the page a resumed dispatch sends again) counts once. Larger than a dispatch page
# (windows.PAGE_SIZE) and than what all consumers hold in flight.
MAX_ITEMS_REMEMBERED = 2000


def outcomes_add_up(counts: Mapping[str, int]) -> bool:
    """The one rule of a tagging run's counts: every processed item has exactly one outcome."""
    return int(counts.get("processed", 0)) == sum(int(counts.get(name, 0)) for name in OUTCOMES)


@dataclass
class Run:
    run_id: str
    kind: str
    folder: str | None  # a label: one folder's URI, or several joined for a multi-folder training
    trigger: str
    started_at: str
    status: RunStatus = RunStatus.RUNNING
    ended_at: str | None = None
    model_version: str | None = None
    counts: Counter[str] = field(default_factory=Counter)
    errors: list[dict[str, str]] = field(default_factory=list)
    report: dict[str, Any] | None = None
    folders: list[str] = field(default_factory=list)
    # Why named assets were skipped (an on-demand run: a key with no object): the operator asked for them.
    skips: list[dict[str, str]] = field(default_factory=list)
    # A fanned-out run's dispatch: ``after`` (the sort key of the last page sent, where a resumed
    # dispatch goes on), ``scanned`` (assets looked at) and the selection ``reasons``.
    dispatch: dict[str, Any] = field(default_factory=dict)

    def error(self, key: str, reason: str) -> None:
        self.counts["failed"] += 1
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append({"key": key, "reason": reason})

    def skip(self, key: str, reason: str) -> None:
        self.counts["skipped"] += 1
        if len(self.skips) < MAX_ERRORS_KEPT:
            self.skips.append({"key": key, "reason": reason})

    @property
    def count_names(self) -> tuple[str, ...]:
        return TRAIN_COUNTS if self.kind == TRAIN else COUNTS

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "kind": self.kind,
            "folder": self.folder,
            "folders": self.folders,
            "trigger": self.trigger,
            "status": self.status.value,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "model_version": self.model_version,
            "counts": {name: int(self.counts.get(name, 0)) for name in self.count_names},
            "errors": self.errors,
            "skips": self.skips,
            "report": self.report,
            "dispatch": self.dispatch,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Run:
        return cls(
            run_id=data["run_id"],
            kind=data["kind"],
            folder=data.get("folder"),
            folders=list(data.get("folders") or ([data["folder"]] if data.get("folder") else [])),
            trigger=data["trigger"],
            started_at=data["started_at"],
            status=RunStatus(data.get("status") or RunStatus.RUNNING),
            ended_at=data.get("ended_at"),
            model_version=data.get("model_version"),
            counts=Counter(data.get("counts") or {}),
            errors=list(data.get("errors") or []),
            skips=list(data.get("skips") or []),
            report=data.get("report"),
            dispatch=dict(data.get("dispatch") or {}),
        )

    @property
    def finished(self) -> bool:
        return self.status not in (RunStatus.RUNNING, RunStatus.DISPATCHED)


# The statuses the painless scripts set, as parameters: the enum is their one spelling.
_STATUSES = {
    "dispatched": RunStatus.DISPATCHED.value,
    "succeeded": RunStatus.SUCCEEDED.value,
    "with_errors": RunStatus.COMPLETED_WITH_ERRORS.value,
}


class RunLog:
    def __init__(self, index: Index) -> None:
        self._index = index

    def start(
        self,
        kind: str,
        folder: str | None,
        trigger: str,
        *,
        model_version: str | None = None,
        folders: list[str] | None = None,
    ) -> Run:
        run = Run(
            run_id=f"{kind}-{uuid.uuid4().hex[:12]}",
            kind=kind,
            folder=folder,
            folders=folders if folders is not None else ([folder] if folder else []),
            trigger=trigger,
            started_at=now_iso(),
            model_version=model_version,
        )
        self.save(run)
        return run

    def save(self, run: Run, *, refresh: bool = True) -> None:
        self._index.put("runs", run.run_id, run.to_json(), refresh=refresh)

    def finish(self, run: Run, status: RunStatus = RunStatus.SUCCEEDED) -> Run:
        run.status = status
        run.ended_at = now_iso()
        self.save(run)
        return run

    def add_counts(
        self,
        run_id: str,
        counts: dict[str, int],
        errors: list[dict[str, str]] | None = None,
        *,
        create_as: tuple[str, str] | None = None,
        folders: Sequence[str] = (),
        batch_id: str | None = None,
        items: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        """Add to a run's counts from any worker at once (a scripted update, retried on conflict).
        With ``items`` (``{"id", "counter", "error"}`` each, from ``tagging.RunTally``) each item adds to
        "processed" and its counter unless the run counted its id lately (``MAX_ITEMS_REMEMBERED``);
        without, ``counts`` and ``errors`` are added as they are.
        With ``create_as=(kind, trigger)`` a missing run is created first: an hourly upload run, which
        counts as it goes (status succeeded, or completed_with_errors once a file failed) and lists the
        ``folders`` its objects were in, so each folder finds its last tagging. A fanned-out run ends
        (succeeded, or completed_with_errors when an item failed) with the count of its last item."""
        body: dict[str, Any] = {}
        if create_as is not None:
            created = Run(run_id, create_as[0], None, create_as[1], now_iso(), status=RunStatus.SUCCEEDED)
            body["upsert"] = created.to_json()
        # ``batch_id`` makes a retried write count once: a write whose answer was lost (a cut connection)
        # may have landed; the run remembers the last batches it applied and skips a repeat.
        script = (
            "if (params.batch != null) { if (ctx._source.applied == null) { ctx._source.applied = []; }"
            " if (ctx._source.applied.contains(params.batch)) { ctx.op = 'none'; return; }"
            " ctx._source.applied.add(params.batch);"
            " if (ctx._source.applied.size() > params.max_applied) { ctx._source.applied.remove(0); } }"
            " def c = ctx._source.counts; List errs = new ArrayList();"
            " if (params.items != null) {"
            " if (ctx._source.counted == null) { ctx._source.counted = []; }"
            " def seen = new HashSet(ctx._source.counted);"
            " for (item in params.items) { if (seen.contains(item.id)) { continue; }"
            " seen.add(item.id); ctx._source.counted.add(item.id);"
            " c.processed = (c.processed ?: 0) + 1; c[item.counter] = (c[item.counter] ?: 0) + 1;"
            " if (item.error != null) { errs.add(item.error); } }"
            " int over = ctx._source.counted.size() - params.max_items;"
            " if (over > 0) { ctx._source.counted.subList(0, over).clear(); }"
            " } else { for (e in params.counts.entrySet()) { c[e.getKey()] = (c[e.getKey()] ?: 0) + e.getValue(); }"
            " errs.addAll(params.errors); }"
            " for (e in errs) { if (ctx._source.errors.size() < params.max_errors) {"
            " ctx._source.errors.add(e); } }"
            " for (f in params.folders) { if (!ctx._source.folders.contains(f)"
            " && ctx._source.folders.size() < params.max_folders) { ctx._source.folders.add(f); } }"
            " if (ctx._source.status == params.succeeded && errs.size() > 0) {"
            " ctx._source.status = params.with_errors; }"
            # A fanned-out run is done when its workers processed all it dispatched.
            " if (ctx._source.status == params.dispatched && (c.processed ?: 0) >= (c.selected ?: 0)) {"
            " ctx._source.status = (c.failed ?: 0) > 0 ? params.with_errors : params.succeeded;"
            " ctx._source.ended_at = params.now; }"
        )
        params = {
            "counts": counts,
            "errors": errors or [],
            "items": [dict(item) for item in items] if items is not None else None,
            "max_items": MAX_ITEMS_REMEMBERED,
            "max_errors": MAX_ERRORS_KEPT,
            "folders": list(folders),
            "max_folders": MAX_FOLDERS_KEPT,
            "batch": batch_id,
            "max_applied": MAX_BATCHES_REMEMBERED,
            **_STATUSES,
        }
        self._scripted_update(run_id, script, params, **body)

    def add_dispatched(
        self, run_id: str, selected: int, *, after: Sequence[Any] | None, scanned: int, reasons: Mapping[str, int]
    ) -> None:
        """One page of a fanned-out run was sent: add its selected items and move the dispatch's cursor
        past it, in one update (a resumed dispatch starts after the last page recorded here)."""
        script = (
            "def c = ctx._source.counts; c.selected = (c.selected ?: 0) + params.selected;"
            " if (ctx._source.dispatch == null) { ctx._source.dispatch = [:]; }"
            " def d = ctx._source.dispatch; d.after = params.after;"
            " d.scanned = (d.scanned ?: 0) + params.scanned;"
            " if (d.reasons == null) { d.reasons = [:]; }"
            " for (e in params.reasons.entrySet()) {"
            " d.reasons[e.getKey()] = (d.reasons[e.getKey()] ?: 0) + e.getValue(); }"
        )
        params = {"selected": selected, "after": list(after) if after is not None else None, "scanned": scanned}
        self._scripted_update(run_id, script, {**params, "reasons": dict(reasons), **_STATUSES})

    def mark_dispatched(self, run_id: str) -> None:
        """A fanned-out run has enqueued all its work (its pages counted the selection): from now its
        workers end it with the count of its last item; it ends now if they already counted everything."""
        script = (
            "def c = ctx._source.counts; ctx._source.status = params.dispatched;"
            " if ((c.processed ?: 0) >= (c.selected ?: 0)) {"
            " ctx._source.status = (c.failed ?: 0) > 0 ? params.with_errors : params.succeeded;"
            " ctx._source.ended_at = params.now; }"
        )
        self._scripted_update(run_id, script, dict(_STATUSES), refresh="wait_for")

    def _scripted_update(self, run_id: str, script: str, params: dict[str, Any], **extra: Any) -> None:
        """A painless update of one run, retried on version conflicts (many workers count at once)."""
        upsert = extra.pop("upsert", None)
        self._index.update_scripted(
            "runs", run_id, script, {**params, "now": now_iso()}, upsert=upsert, refresh=extra.pop("refresh", None)
        )

    def follow(
        self,
        run_id: str,
        *,
        progress: Callable[[str, int, int | None], None] | None = None,
        poll_seconds: float = 1.0,
        timeout: float | None = None,
    ) -> Run:
        """Wait for a fanned-out run to end, reporting its processed count against its selection as
        ``progress("tagging", advance, selected)``; returns the run as it ended (or as it was when
        ``timeout`` seconds passed)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        shown = 0
        while True:
            run = self.get(run_id)
            if run is None:
                raise NotFound("opensearch", f"no run {run_id}")
            processed = int(run.counts.get("processed", 0))
            if progress:
                progress("tagging", max(0, processed - shown), int(run.counts.get("selected", 0)))
                shown = max(shown, processed)
            if run.finished or (deadline is not None and time.monotonic() >= deadline):
                return run
            time.sleep(poll_seconds)

    def get(self, run_id: str) -> Run | None:
        found = self._index.get("runs", run_id)
        return Run.from_json(found.source) if found else None

    def list(self, *, kind: str | None = None, folder: str | None = None, size: int = 50) -> list[Run]:
        filters: list[dict[str, Any]] = []
        if kind:
            filters.append({"term": {"kind": kind}})
        if folder:
            # Every folder a run covered finds it, a multi-folder training run too.
            filters.append({"bool": {"should": [{"term": {"folders": folder}}, {"term": {"folder": folder}}]}})
        body = {
            "size": size,
            "query": {"bool": {"filter": filters}},
            "sort": [{"started_at": {"order": "desc"}}],
        }
        return [Run.from_json(h["_source"]) for h in self._index.search("runs", body)["hits"]["hits"]]

    def latest(self, kind: str, folder: str) -> Run | None:
        runs = self.list(kind=kind, folder=folder, size=1)
        return runs[0] if runs else None
