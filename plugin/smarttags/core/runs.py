"""Run history: every training and tagging run, with its trigger, counts and error reasons."""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from smarttags.core.clock import now_iso
from smarttags.core.ports import Index

log = logging.getLogger(__name__)

TRAIN = "train"
TAG = "tag"
SCHEDULE = "schedule"
ON_DEMAND = "on-demand"
UPLOAD = "upload"
COUNTS = ("selected", "processed", "tagged", "skipped", "unsupported", "failed", "embedded")
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
        )


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
    ) -> None:
        """Add to a run's counts from any worker at once (a scripted update, retried on conflict).
        With ``create_as=(kind, trigger)`` a missing run is created first: an hourly upload run, which
        counts as it goes (status succeeded, or completed_with_errors once a file failed) and lists the
        ``folders`` its objects were in, so each folder finds its last tagging."""
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
            " for (e in params.counts.entrySet()) {"
            " ctx._source.counts[e.getKey()] = (ctx._source.counts[e.getKey()] ?: 0) + e.getValue(); }"
            " for (e in params.errors) { if (ctx._source.errors.size() < params.max_errors) {"
            " ctx._source.errors.add(e); } }"
            " for (f in params.folders) { if (!ctx._source.folders.contains(f)"
            " && ctx._source.folders.size() < params.max_folders) { ctx._source.folders.add(f); } }"
            " if (ctx._source.status == params.succeeded && params.errors.size() > 0) {"
            " ctx._source.status = params.with_errors; }"
            # A fanned-out run is done when its workers processed all it dispatched.
            " if (ctx._source.status == params.dispatched"
            " && ctx._source.counts.processed >= ctx._source.counts.selected) {"
            " ctx._source.status = params.succeeded; ctx._source.ended_at = params.now; }"
        )
        params = {
            "counts": counts,
            "errors": errors or [],
            "max_errors": MAX_ERRORS_KEPT,
            "folders": list(folders),
            "max_folders": MAX_FOLDERS_KEPT,
            "batch": batch_id,
            "max_applied": MAX_BATCHES_REMEMBERED,
            **_STATUSES,
        }
        self._scripted_update(run_id, script, params, **body)

    def mark_dispatched(self, run_id: str, selected: int) -> None:
        """A fanned-out run has enqueued all its work: record how much, without touching the counts the
        workers may already have added, and finish it if they already did everything."""
        script = (
            "ctx._source.counts.selected = params.selected;"
            " ctx._source.status = params.dispatched;"
            " if ((ctx._source.counts.processed ?: 0) >= params.selected) {"
            " ctx._source.status = params.succeeded; ctx._source.ended_at = params.now; }"
        )
        self._scripted_update(run_id, script, {"selected": selected, **_STATUSES}, refresh="wait_for")

    def _scripted_update(self, run_id: str, script: str, params: dict[str, Any], **extra: Any) -> None:
        """A painless update of one run, retried on version conflicts (many workers count at once)."""
        upsert = extra.pop("upsert", None)
        self._index.update_scripted(
            "runs", run_id, script, {**params, "now": now_iso()}, upsert=upsert, refresh=extra.pop("refresh", None)
        )

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
