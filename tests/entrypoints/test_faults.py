"""The fault suite of upload tagging, on the embedded stack (S3 -> SQS -> worker -> OpenSearch): what a
release must survive. 0 lost, 0 doubled, 0 worker deaths, 0 in the dead-letter queue after an outage,
every bad file with exactly one status and reason."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import pytest
from smarttags.core.asset import asset_id
from smarttags.core.folders import Folder
from smarttags.core.taxonomy import Tag
from smarttags.entrypoints.compose import Services
from smarttags.entrypoints.worker import Worker

from tests.event_files import load_event
from tests.images import bomb_png, picture, truncated_jpeg
from tests.proxy import FlakyProxy

pytestmark = pytest.mark.slow

OUTAGE_SECONDS = 60


def _wait(predicate: Any, timeout: float, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"{what}: not true within {timeout} s")


@contextlib.contextmanager
def _worker(services: Services, **kwargs: Any) -> Iterator[Worker]:
    worker = Worker(
        services.tagger,
        services.runs,
        services.queue,
        healthy=services.services_answer,
        backoff_first=2,
        wait_seconds=1,
        **kwargs,
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop.set()
        thread.join(timeout=15)
    assert not thread.is_alive()


@pytest.fixture
def world(services: Services, shape_model: Any) -> Services:
    services.taxonomy.import_tags([Tag("shapes:red", {"en": "Red"}), Tag("shapes:any", {"en": "Shape"})])
    services.folders.set_enabled(Folder(services.settings.aws.bucket, "f/"), True)
    return services


def _status(services: Services, key: str) -> str | None:
    found = services.assets.get(asset_id(services.settings.aws.bucket, key))
    return found.asset.status.value if found else None


def _upload_counts(services: Services) -> dict[str, int]:
    """The counts of every upload run (hourly runs: a test may straddle an hour)."""
    total: dict[str, int] = {}
    for run in services.runs.list(kind="tag"):
        if run.trigger == "upload":
            for name, value in run.counts.items():
                total[name] = total.get(name, 0) + int(value)
    return total


def _dlq(services: Services) -> int:
    depth = services.dead_letter_queue.depth()
    return int(depth["visible"]) + int(depth.get("in_flight", 0))


def test_concurrent_deliveries_of_one_event_are_tagged_once(world: Services) -> None:
    bucket = world.settings.aws.bucket
    world.s3.put_object(Bucket=bucket, Key="f/one.jpg", Body=picture("red"))
    notification = None
    deadline = time.monotonic() + 10
    while notification is None and time.monotonic() < deadline:
        for message in world.queue.receive(wait_seconds=1):
            world.queue.delete([message.receipt_handle])
            if "one.jpg" in message.body:
                notification = json.loads(message.body)
    assert notification is not None
    world.queue.send([notification] * 4)  # S3 delivered it four times at once
    with _worker(world, concurrency=4) as worker:
        _wait(lambda: _status(world, "f/one.jpg") == "tagged" and world.queue.depth()["visible"] == 0, 30, "tagged")
        time.sleep(2)
        assert worker.circuit_open is False
    counts = _upload_counts(world)
    assert counts.get("tagged") == 1 and counts.get("processed") == 1, counts


def test_hostile_bodies_fail_one_record_each_and_the_worker_lives_on(world: Services) -> None:
    bucket = world.settings.aws.bucket
    hostile = [[], None, "text", {"Records": ["x"]}, {"Records": [{"eventName": "ObjectCreated:Put"}]}]
    world.queue.send(hostile)  # type: ignore[arg-type]
    with _worker(world, concurrency=2) as worker:
        world.s3.put_object(Bucket=bucket, Key="f/good.jpg", Body=picture("red"))
        _wait(lambda: _status(world, "f/good.jpg") == "tagged", 30, "the good upload tagged")
        # Each hostile message is retried max_receive_count times, then dead-lettered: none is lost.
        _wait(lambda: world.dead_letter_queue.depth()["visible"] == len(hostile), 60, "hostile messages in the DLQ")
        assert not worker.stop.is_set()
    bodies = sorted(json.dumps(json.loads(m.body)) for m in _drain(world.dead_letter_queue))
    assert bodies == sorted(json.dumps(b) for b in hostile)


def _drain(queue: Any) -> list[Any]:
    messages: list[Any] = []
    while batch := queue.receive(wait_seconds=1):
        messages += batch
        queue.delete(m.receipt_handle for m in batch)
    return messages


def test_bad_files_get_one_status_each_and_never_reach_the_dlq(world: Services) -> None:
    bucket = world.settings.aws.bucket
    bad = {
        "f/truncated.jpg": (truncated_jpeg(), "image/jpeg", "failed"),
        "f/empty.jpg": (b"", "image/jpeg", "failed"),
        "f/bomb.png": (bomb_png(), "image/png", "failed"),
        "f/notes.txt": (b"quarterly numbers", "", "unsupported"),
        "f/scan.jp2": (b"\x00\x00\x00\x0cjP  \r\n\x87\n" + bytes(64), "image/png", "unsupported"),
    }
    for key, (data, content_type, _) in bad.items():
        extra = {"ContentType": content_type} if content_type else {}
        world.s3.put_object(Bucket=bucket, Key=key, Body=data, **extra)
    world.s3.put_object(Bucket=bucket, Key="f/folder/", Body=b"")  # a folder marker is no asset
    with _worker(world, concurrency=2):
        _wait(lambda: all(_status(world, k) == s for k, (_, _, s) in bad.items()), 30, "every bad file recorded")
        _wait(lambda: world.queue.depth()["visible"] == 0, 20, "the queue drained")
        time.sleep(3)
    assert _dlq(world) == 0
    for key in bad:
        reason = world.assets.get(asset_id(bucket, key)).asset.tagging.reason  # type: ignore[union-attr]
        assert reason, key
    assert world.assets.get(asset_id(bucket, "f/folder/")) is None
    counts = _upload_counts(world)
    assert counts.get("failed") == 3 and counts.get("unsupported") == 2, counts


def test_an_object_over_the_size_cap_is_recorded(world: Services, settings: Any) -> None:
    capped = Services(
        settings.model_copy(update={"backbone": settings.backbone.model_copy(update={"max_object_bytes": 1000})})
    )
    capped.embedder = world.embedder  # type: ignore[method-assign]
    world.s3.put_object(Bucket=world.settings.aws.bucket, Key="f/huge.jpg", Body=picture("red", size=(900, 700)))
    with _worker(capped):
        _wait(lambda: _status(world, "f/huge.jpg") == "failed", 30, "the refusal recorded")
    reason = world.assets.get(asset_id(world.settings.aws.bucket, "f/huge.jpg")).asset.tagging.reason  # type: ignore[union-attr]
    assert "over the limit of 1000" in (reason or "")


def test_an_opensearch_outage_mid_backlog_drains_by_itself(world: Services, settings: Any) -> None:
    target = urlparse(settings.opensearch.url)
    proxy = FlakyProxy(target.hostname or "127.0.0.1", target.port or 9200)
    flaky = Services(
        settings.model_copy(update={"opensearch": settings.opensearch.model_copy(update={"url": proxy.url})})
    )
    flaky.embedder = world.embedder  # type: ignore[method-assign]
    bucket = world.settings.aws.bucket
    keys = [f"f/backlog-{i:02d}.jpg" for i in range(30)]
    try:
        with _worker(flaky, concurrency=2) as worker:
            for i, key in enumerate(keys):
                world.s3.put_object(
                    Bucket=bucket, Key=key, Body=picture("red" if i % 2 else "blue", size=(320 + i, 240))
                )
                if i == 5:
                    proxy.down()  # mid-backlog: the node goes away for a minute
            time.sleep(OUTAGE_SECONDS)
            assert worker.circuit_open
            proxy.up()
            _wait(lambda: all(_status(world, k) == "tagged" for k in keys), 180, "the backlog drained")
    finally:
        proxy.down()
    assert _dlq(world) == 0
    # Runs are read by search (near real time): the last batch's counts show within a refresh.
    _wait(lambda: _upload_counts(world).get("processed", 0) >= len(keys), 20, "every object counted")
    counts = _upload_counts(world)
    assert counts.get("tagged") == len(keys) and counts.get("processed") == len(keys), counts


def test_versioned_buckets_delete_only_what_is_gone(world: Services) -> None:
    bucket = world.settings.aws.bucket
    world.s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    first = world.s3.put_object(Bucket=bucket, Key="f/v.jpg", Body=picture("blue"))["VersionId"]
    with _worker(world):
        _wait(lambda: _status(world, "f/v.jpg") == "tagged", 30, "v1 tagged")
        second = world.s3.put_object(Bucket=bucket, Key="f/v.jpg", Body=picture("red", size=(700, 500)))
        _wait(lambda: world.assets.get(asset_id(bucket, "f/v.jpg")).asset.width == 700, 30, "v2 tagged")  # type: ignore[union-attr]
        # moto sends no ObjectRemoved notification for versioned deletes, so the test delivers the two
        # events S3 sends (tests/events/), on the real versioned bucket.
        # Deleting the old version leaves the current one: the asset stays, on the current bytes.
        world.s3.delete_object(Bucket=bucket, Key="f/v.jpg", VersionId=first)
        world.queue.send([_removed(bucket, "f/v.jpg", "ObjectRemoved:Delete", version_id=first)])
        _wait(lambda: world.queue.depth()["visible"] + world.queue.depth().get("in_flight", 0) == 0, 20, "handled")
        time.sleep(1)
        held = world.assets.get(asset_id(bucket, "f/v.jpg"))
        assert held is not None and held.asset.etag == second["ETag"].strip('"')
        # A delete marker hides the key: the asset goes.
        marker = world.s3.delete_object(Bucket=bucket, Key="f/v.jpg")["VersionId"]
        world.queue.send([_removed(bucket, "f/v.jpg", "ObjectRemoved:DeleteMarkerCreated", version_id=marker)])
        _wait(lambda: world.assets.get(asset_id(bucket, "f/v.jpg")) is None, 30, "the asset removed")


def _removed(bucket: str, key: str, name: str, *, version_id: str) -> dict[str, Any]:
    event = load_event("s3_object_removed.json")
    record = event["Records"][0]
    record["eventName"] = name
    record["s3"]["bucket"]["name"] = bucket
    record["s3"]["object"] = {"key": key, "versionId": version_id}
    return event
