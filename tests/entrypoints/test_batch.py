"""The batch loop on the fakes: a tagging run's work item names many keys, all of a batch's events go
through the tagger as one batch, and a message fails (and is retried whole) when one of its keys did."""

from __future__ import annotations

import json
from typing import Any

from smarttags.adapters.asset_index import AssetIndex
from smarttags.core import events
from smarttags.core.asset import TaggingStatus
from smarttags.core.runs import RunLog
from smarttags.entrypoints.batch import handle_messages
from smarttags.errors import ServiceUnavailable

from tests.core.test_tagging_unit import BUCKET, PixelEmbedder, held, make_tagger
from tests.fakes import FakeIndex, FakeStore


def _counted(index: FakeIndex, run_id: str) -> list[str]:
    """The item ids the run was asked to count, over every batch."""
    calls = index.docs[("scripted", run_id)][0]["calls"]
    return [item["id"] for call in calls for item in call.get("items") or ()]


def test_a_work_item_of_many_keys_is_one_batch_and_is_retried_whole_when_one_key_fails() -> None:
    index, store = FakeIndex(), FakeStore(BUCKET)
    assets = AssetIndex(index)
    tagger = make_tagger(assets, store, index, "up/")
    for key in ("up/a.png", "up/b.png", "up/c.png"):
        store.put_bytes(key, b"red circle")
    runs = RunLog(index)
    first = json.dumps(events.work_item(BUCKET, ["up/a.png", "up/b.png"], run_id="tag-1", trigger="on-demand"))
    second = json.dumps(events.work_item(BUCKET, ["up/c.png"], run_id="tag-1", trigger="on-demand"))
    put_many = assets.put_many

    def b_answer_lost(writes: Any) -> Any:  # b's write lands, its answer is lost
        answers = put_many(writes)
        return [
            ServiceUnavailable("opensearch", "shard not available")
            if asset.key == "up/b.png" and asset.status == TaggingStatus.TAGGED
            else answer
            for (asset, _), answer in zip(writes, answers, strict=True)
        ]

    assets.put_many = b_answer_lost  # type: ignore[method-assign]
    calls = PixelEmbedder.calls
    failed = handle_messages(tagger, runs, [events.parse_message("m1", first), events.parse_message("m2", second)])
    assert PixelEmbedder.calls == calls + 1  # three keys of two messages: one embedder call
    assert [(f.message_id, f.transient) for f in failed] == [("m1", True)]
    assert held(assets, "up/a.png").status == TaggingStatus.TAGGED
    assert held(assets, "up/c.png").status == TaggingStatus.TAGGED

    assets.put_many = put_many  # type: ignore[method-assign]
    assert handle_messages(tagger, runs, [events.parse_message("m1", first, receive_count=2)]) == []
    assert held(assets, "up/b.png").status == TaggingStatus.TAGGED
    assert PixelEmbedder.calls == calls + 1  # the message came back whole: both keys found done
    # ... and a key sent to the run twice goes with the same item id, which the run counts once (its
    # painless script, on the real node in tests/entrypoints/test_faults.py).
    counted = _counted(index, "tag-1")
    assert len(set(counted)) == 3 and len(counted) == 4
