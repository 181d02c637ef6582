"""The dispatch of a tagging run on the fakes: a page at a time, the queue's backpressure, the resume."""

from __future__ import annotations

from typing import Any

import pytest
from smarttags import settings as settings_mod
from smarttags.adapters.asset_index import AssetIndex
from smarttags.core.asset import Asset
from smarttags.core.folders import Folder
from smarttags.core.model_registry import ModelStore
from smarttags.core.runs import ON_DEMAND, RunLog, RunStatus
from smarttags.core.windows import dispatch_tagging
from smarttags.errors import RequestError

from tests.fakes import FakeIndex, FakeStore


class Queue:
    """A queue that drains a page's worth each time its depth is asked, recording what it holds."""

    def __init__(self) -> None:
        self.sent: list[list[dict[str, Any]]] = []
        self.held = 0
        self.highest = 0

    def send(self, bodies: Any) -> int:
        page = list(bodies)
        self.sent.append(page)
        self.held += len(page)
        self.highest = max(self.highest, self.held)
        return len(page)

    def depth(self) -> dict[str, int]:
        held, self.held = self.held, max(0, self.held - 10)  # the consumers took ten meanwhile
        return {"visible": held, "in_flight": 0}


def _world(count: int) -> tuple[FakeIndex, AssetIndex, RunLog, ModelStore]:
    index = FakeIndex()
    assets = AssetIndex(index)
    for i in range(count):
        assets.put(Asset("b", f"f/{i:03d}.jpg", etag=f"e{i}"))
    models = ModelStore(FakeStore("own"), settings_mod.load().aws.models_prefix)
    return index, assets, RunLog(index), models


def _dispatch(world: tuple[Any, AssetIndex, RunLog, ModelStore], queue: Queue, **options: Any) -> Any:
    """A dispatch of folder f/ of bucket b (``options``: the settings and arguments a test changes)."""
    _, assets, runs, models = world
    options.setdefault("tagging", settings_mod.load().tagging)
    return dispatch_tagging(assets, queue, runs, models, Folder("b", "f/"), trigger=ON_DEMAND, **options)


def _keys(queue: Queue) -> list[str]:
    return [key for page in queue.sent for item in page for key in item["keys"]]


def test_a_dispatch_sends_a_page_at_a_time_and_waits_for_room_on_the_queue() -> None:
    world = _world(95)
    index = world[0]
    queue = Queue()
    seen: list[tuple[str, int, int | None]] = []
    dispatch = _dispatch(
        world,
        queue,
        tagging=settings_mod.load().tagging.model_copy(update={"keys_per_message": 3}),
        batch_size=20,
        max_queued=30,
        pause_seconds=0,
        progress=lambda *call: seen.append(call),
    )
    # Pages of 20 assets, 3 to a message (the queue's cost is per message).
    assert [len(page) for page in queue.sent] == [7, 7, 7, 7, 5]
    assert all(1 <= len(item["keys"]) <= 3 for page in queue.sent for item in page)
    assert queue.highest * 3 <= 30  # a page went only when it fitted: the bound counts assets
    assert sorted(_keys(queue)) == [f"f/{i:03d}.jpg" for i in range(95)]
    assert {item["run_id"] for page in queue.sent for item in page} == {dispatch.run.run_id}
    assert dispatch.reasons == {"new": 95}
    # The run recorded each page (selection and cursor) once it was sent; the bar knew the total first.
    pages = [c for c in index.docs[("scripted", dispatch.run.run_id)][0]["calls"] if "after" in c]
    assert [c["selected"] for c in pages] == [20, 20, 20, 20, 15] and pages[-1]["after"] is not None
    assert seen[0] == ("dispatch", 0, 95) and sum(advance for _, advance, _ in seen) == 95


def test_a_page_larger_than_the_bound_goes_once_the_queue_is_empty() -> None:
    world = _world(40)
    queue = Queue()
    _dispatch(world, queue, batch_size=20, max_queued=5, pause_seconds=0)
    assert [len(page) for page in queue.sent] == [1, 1] and len(_keys(queue)) == 40  # 25 keys to a message


def test_a_resumed_dispatch_goes_on_after_the_recorded_cursor() -> None:
    world = _world(50)
    _, _, runs, _ = world
    run = runs.start("tag", Folder("b", "f/").uri, ON_DEMAND)
    ids = sorted(Asset("b", f"f/{i:03d}.jpg").id for i in range(50))
    run.dispatch = {"after": [ids[29]], "scanned": 30, "reasons": {"new": 30}}
    run.counts["selected"] = 30
    runs.save(run)  # as the stopped dispatch left it: 30 assets looked at and sent
    queue = Queue()
    dispatch = _dispatch(world, queue, resume=run.run_id)
    sent = sorted(Asset("b", key).id for key in _keys(queue))
    assert sent == ids[30:] and dispatch.reasons == {"new": 50}
    assert dispatch.run.run_id == run.run_id
    run.status = RunStatus.SUCCEEDED
    runs.save(run)
    with pytest.raises(RequestError, match="nothing to resume"):
        _dispatch(world, queue, resume=run.run_id)
