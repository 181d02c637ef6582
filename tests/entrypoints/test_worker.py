"""The local worker on the real S3 -> SQS wiring, tagging runs fanned out through the queue, and the
scheduler's once-only windows."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from smarttags.core import windows as scheduling
from smarttags.core.asset import asset_id
from smarttags.core.folders import Folder
from smarttags.core.runs import SCHEDULE
from smarttags.core.search import SearchRequest
from smarttags.core.taxonomy import Tag
from smarttags.entrypoints import scheduler
from smarttags.entrypoints.compose import Services
from smarttags.entrypoints.worker import Worker

from tests.images import picture

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def running_worker(services):
    worker = Worker(services.tagger, services.runs, services.queue, concurrency=2, wait_seconds=1)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    yield worker
    worker.stop.set()
    thread.join(timeout=10)


def _wait(predicate, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"not true within {timeout} s")


def test_an_upload_is_searchable_by_its_smart_tag_within_seconds(services, shape_model, running_worker):
    services.taxonomy.import_tags([Tag("shapes:red", {"en": "Red"}), Tag("shapes:any", {"en": "Shape"})])
    services.folders.set_enabled(Folder(services.settings.aws.bucket, "uploads/"), True)
    services.s3.put_object(Bucket=services.settings.aws.bucket, Key="uploads/a red one.jpg", Body=picture("red"))

    def found() -> bool:
        services.index.refresh()
        hits = services.searcher.search(SearchRequest(text="red")).hits
        return [h.key for h in hits] == ["uploads/a red one.jpg"]

    took = _wait(found, 10)
    print(f"upload to searchable: {took:.1f} s")
    # The hourly upload run counts it, says it succeeded, and is found by the upload's folder.
    bucket = services.settings.aws.bucket
    _wait(lambda: services.runs.latest("tag", f"s3://{bucket}/uploads/") is not None, 10)
    run = services.runs.latest("tag", f"s3://{bucket}/uploads/")
    assert run.status == "succeeded" and run.counts["tagged"] == 1 and run.trigger == "upload"


def test_every_still_format_is_tagged_end_to_end_by_its_bytes(services, shape_model, running_worker):
    # The key's extension says nothing: a HEIC stored as ".jpg" is still a HEIC.
    services.taxonomy.import_tags([Tag("shapes:red", {"en": "Red"}), Tag("shapes:any", {"en": "Shape"})])
    bucket = services.settings.aws.bucket
    services.folders.set_enabled(Folder(bucket, "formats/"), True)
    keys = {"formats/phone.jpg": "HEIF", "formats/web.avif": "AVIF", "formats/layers.psd": "PSD"}
    for key, fmt in keys.items():
        services.s3.put_object(Bucket=bucket, Key=key, Body=picture("red", size=(320, 240), fmt=fmt))
    docx = b"PK\x03\x04" + bytes(26) + b"[Content_Types].xml" + bytes(40) + b"word/document.xml"
    services.s3.put_object(Bucket=bucket, Key="formats/brief.docx", Body=docx)

    def found() -> bool:
        services.index.refresh()
        return {h.key for h in services.searcher.search(SearchRequest(text="red")).hits} == set(keys)

    _wait(found, 30)
    _wait(lambda: services.index.get("assets", asset_id(bucket, "formats/brief.docx")) is not None, 10)
    doc = services.index.get("assets", asset_id(bucket, "formats/brief.docx")).source
    assert doc["tagging"]["status"] == "unsupported", doc["tagging"]
    assert "wordprocessingml" in doc["tagging"]["reason"]


def test_a_poison_message_ends_in_the_dead_letter_queue(services):
    services.queue.send([{"neither": "an S3 event nor a work item"}])
    worker = Worker(services.tagger, services.runs, services.queue, wait_seconds=1)
    deadline = time.monotonic() + 40
    while services.dead_letter_queue.depth()["visible"] == 0 and time.monotonic() < deadline:
        worker.run_once()
    assert services.dead_letter_queue.depth()["visible"] == 1
    body = services.dead_letter_queue.receive(wait_seconds=1)[0].body
    assert json.loads(body) == {"neither": "an S3 event nor a work item"}


def test_an_outage_loses_no_event(services, settings, shape_model):
    services.folders.set_enabled(Folder(services.settings.aws.bucket, "o/"), True)
    services.s3.put_object(Bucket=services.settings.aws.bucket, Key="o/red.jpg", Body=picture("red"))
    down = Services(
        settings.model_copy(update={"opensearch": settings.opensearch.model_copy(update={"url": "http://127.0.0.1:9"})})
    )
    down.embedder = services.embedder
    broken = Worker(down.tagger, down.runs, services.queue, wait_seconds=2, backoff_first=1)
    assert broken.run_once() >= 1  # received, failed, left on the queue
    assert broken.circuit_open  # an outage: it stops receiving until the services answer

    def tagged() -> bool:
        hits = services.index.search("assets", {"query": {"term": {"key": "o/red.jpg"}}})["hits"]["hits"]
        return bool(hits) and hits[0]["_source"]["tagging"]["status"] == "tagged"

    assert not tagged()
    worker = Worker(services.tagger, services.runs, services.queue, wait_seconds=1)
    _wait(lambda: worker.run_once() >= 0 and tagged(), 20)


def test_a_daily_tagging_run_goes_through_the_queue_and_is_recorded(services, shape_model, running_worker):
    bucket = services.settings.aws.bucket
    # Assets that arrived while the folder was not enabled: registered, not tagged.
    for i in range(4):
        services.s3.put_object(
            Bucket=bucket, Key=f"daily/{i}.jpg", Body=picture("red" if i % 2 else "blue", size=(600 + i, 400))
        )
    _wait(lambda: services.index.count("assets", {"term": {"tagging.status": "not_enabled"}}) == 4, 20)
    services.folders.set_enabled(Folder(bucket, "daily/"), True)
    dispatch = services.dispatch_tagging(Folder(bucket, "daily/"), trigger=SCHEDULE)
    assert dispatch.run.counts["selected"] == 4 and dispatch.reasons == {"new": 4}
    _wait(lambda: (run := services.runs.get(dispatch.run.run_id)) is not None and run.status == "succeeded", 30)
    run = services.runs.get(dispatch.run.run_id)
    assert run.counts["processed"] == 4 and run.counts["tagged"] == 4 and run.trigger == SCHEDULE
    services.assets.refresh()  # the run counts right after its one batch's writes, within a refresh interval
    assert services.index.count("assets", {"term": {"tagging.status": "tagged"}}) == 4
    # Nothing changed: the next daily run selects nothing.
    assert services.dispatch_tagging(Folder(bucket, "daily/"), trigger=SCHEDULE).run.counts["selected"] == 0
    listed = services.runs.list(kind="tag")
    assert dispatch.run.run_id in [r.run_id for r in listed]


def test_two_schedulers_run_each_window_once(services):
    services.folders.set_enabled(Folder(services.settings.aws.bucket, "w/"), True)
    fire = datetime(2026, 12, 1, tzinfo=UTC)
    results: dict[str, object] = {}
    barrier = threading.Barrier(2)

    def replica(owner: str) -> None:
        barrier.wait()
        results[owner] = scheduling.run_window(services, scheduling.TAGGING_WINDOW, fire, owner=owner)

    threads = [threading.Thread(target=replica, args=(f"replica-{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ran = [owner for owner, run_ids in results.items() if run_ids is not None]
    assert len(ran) == 1
    assert len(services.runs.list(kind="tag")) == 1
    # Later, the same window never runs again.
    assert scheduling.run_window(services, scheduling.TAGGING_WINDOW, fire, owner="replica-late") is None


def test_a_window_missed_while_stopped_runs_once_on_restart(services):
    service = scheduler
    services.folders.set_enabled(Folder(services.settings.aws.bucket, "m/"), True)
    # The service was down at 00:00; it comes back at 03:00, inside the misfire grace time.
    now = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
    calls: list[tuple[str, datetime]] = []

    def run(kind: str, fire: datetime) -> list[str] | None:
        calls.append((kind, fire))
        return scheduling.run_window(services, kind, fire, owner="restarted")

    assert service.catch_up(services, now, run) == ["tagging"]
    assert calls == [("tagging", datetime(2026, 12, 1, tzinfo=UTC))]
    # A second restart finds the window done and does not run it again.
    assert service.catch_up(services, now, run) == []
    assert len(services.runs.list(kind="tag")) == 1


def test_pdf_svg_raw_and_psb_are_tagged_end_to_end_by_their_bytes(services, shape_model, running_worker):
    # Each is a red circle on white like the reference picture, stored under a misleading extension.
    from PIL import Image

    from tests import images

    services.taxonomy.import_tags([Tag("shapes:red", {"en": "Red"}), Tag("shapes:any", {"en": "Shape"})])
    bucket = services.settings.aws.bucket
    services.folders.set_enabled(Folder(bucket, "docs/"), True)
    reference = Image.open(io.BytesIO(picture("red", fmt="PNG")))
    circle_svg = (
        b'<svg xmlns="http://www.w3.org/2000/svg" width="640" height="480"><title>Brand mark</title>'
        b'<rect width="640" height="480" fill="white"/><ellipse cx="320" cy="240" rx="192" ry="144" fill="red"/></svg>'
    )
    bodies = {
        "docs/catalogue.png": images.pdf(title="Spring catalogue", text="", size=(640, 480), circle=True),
        "docs/logo.txt": circle_svg,
        "docs/shoot.jpg": images.dng(preview=reference, jpeg_preview=True),
        "docs/poster.psd": images.psb(reference),
    }
    for key, body in bodies.items():
        services.s3.put_object(Bucket=bucket, Key=key, Body=body)

    def found() -> bool:
        services.index.refresh()
        return {h.key for h in services.searcher.search(SearchRequest(text="red")).hits} == set(bodies)

    _wait(found, 30)
    doc = services.index.get("assets", asset_id(bucket, "docs/catalogue.png")).source
    assert doc["title"] == "Spring catalogue" and (doc["width"], doc["height"]) == (640, 480)
    assert services.searcher.search(SearchRequest(text="spring catalogue")).hits[0].key == "docs/catalogue.png"
    assert services.index.get("assets", asset_id(bucket, "docs/logo.txt")).source["title"] == "Brand mark"
    # The asset records the format detected from the bytes and the library that read it.
    formats = {key: services.assets.get(asset_id(bucket, key)).asset for key in bodies}
    assert {key: a.format for key, a in formats.items()} == {
        "docs/catalogue.png": "PDF",
        "docs/logo.txt": "SVG",
        "docs/shoot.jpg": "RAW",
        "docs/poster.psd": "PSB",
    }
    assert formats["docs/catalogue.png"].decoder == "pypdfium2" and formats["docs/logo.txt"].decoder == "resvg"


def test_a_window_left_running_by_a_dead_scheduler_runs_once_after_its_lease_expires(services):
    services.folders.set_enabled(Folder(services.settings.aws.bucket, "crash/"), True)
    fire = datetime(2026, 12, 1, tzinfo=UTC)  # the daily tagging window
    window = scheduling.window_id(scheduling.TAGGING_WINDOW, fire)
    leases = scheduling.Leases(services.index)
    lease_seconds = services.settings.scheduler.lease_seconds
    # A scheduler took the window and was killed in it: its lease says "running", nobody will finish it.
    assert leases.acquire(window, "replica-killed", seconds=lease_seconds)
    later = fire + timedelta(hours=3)  # inside the misfire grace

    def run(kind: str, fire: datetime) -> list[str] | None:
        return scheduling.run_window(services, kind, fire, owner="replica-live")

    # While the lease is young it may be a live, busy replica: nobody else runs the window.
    assert scheduler.catch_up(services, later, run) == []
    assert services.runs.list(kind="tag") == []
    assert not leases.renew(window, "replica-live", seconds=lease_seconds)  # not its lease to renew

    # Nobody renews it, and it expires: the next catch-up (every minute, on every replica) takes it over.
    held = services.index.get("leases", window)
    expired = {**held.source, "expires_at": (datetime.now(UTC) - timedelta(seconds=1)).isoformat()}
    services.index.put("leases", window, expired, expected=held, refresh=True)
    assert scheduler.catch_up(services, later, run) == ["tagging"]
    assert len(services.runs.list(kind="tag")) == 1
    lease = services.index.get("leases", window).source
    assert lease["owner"] == "replica-live" and lease["state"] == "done"
    # Once done, it never runs again: not by the catch-up, not by the dead replica coming back.
    assert scheduler.catch_up(services, later, run) == []
    assert scheduling.run_window(services, scheduling.TAGGING_WINDOW, fire, owner="replica-killed") is None
    assert len(services.runs.list(kind="tag")) == 1


def test_an_interrupted_window_is_taken_over_at_once_and_a_running_one_is_renewed(services):
    leases = scheduling.Leases(services.index)
    window = scheduling.window_id(scheduling.TRAINING_WINDOW, datetime(2026, 12, 5, 0, 30, tzinfo=UTC))
    assert leases.acquire(window, "replica-a", seconds=60)
    before = services.index.get("leases", window).source["expires_at"]
    assert leases.renew(window, "replica-a", seconds=600)
    assert services.index.get("leases", window).source["expires_at"] > before
    assert not leases.acquire(window, "replica-b", seconds=60)  # running, renewed: not expired
    leases.finish(window, "replica-a", "interrupted")  # stopped by SIGTERM mid-window, and said so
    assert leases.acquire(window, "replica-b", seconds=60)
    assert not leases.renew(window, "replica-a", seconds=600)  # replica-a lost it
    leases.finish(window, "replica-b")
    assert leases.state(window) == "done" and not leases.acquire(window, "replica-c", seconds=60)


def test_a_scheduler_killed_mid_window_leaves_it_to_the_next_one_which_runs_it_once(services, embedder):
    from smarttags import settings as settings_mod
    from smarttags.core.taxonomy import parse as parse_taxonomy
    from smarttags.devtools import sample

    sample_dir = ROOT / "var" / "sample"
    sample.build(sample_dir)
    services.taxonomy.import_tags(parse_taxonomy((sample_dir / "taxonomy.json").read_text(encoding="utf-8")))
    bucket = services.settings.aws.bucket
    for tag in ("flags", "vehicles"):
        for path in sorted((sample_dir / "train" / tag).glob("*.jpg"))[:30]:
            services.store.put_bytes(f"killed/{tag}/{path.name}", path.read_bytes(), content_type="image/jpeg")
    services.folders.set_enabled(Folder(bucket, "killed/"), True)

    # The training window fired a minute ago; the tagging window is far from its time.
    fire = (datetime.now(UTC) - timedelta(minutes=1)).replace(second=0, microsecond=0)
    later = fire + timedelta(hours=2)
    env = {
        **os.environ,
        **settings_mod.to_env(services.settings),
        "SMARTTAGS_SCHEDULER__TRAINING_CRON": f"{fire.minute} {fire.hour} * * *",
        "SMARTTAGS_SCHEDULER__TAGGING_CRON": f"{later.minute} {later.hour} * * *",
        "SMARTTAGS_SCHEDULER__MISFIRE_GRACE_SECONDS": "900",
        "SMARTTAGS_SCHEDULER__LEASE_SECONDS": "10",
        "SMARTTAGS_BACKBONE__ONNX_FILE": str(embedder.model_path),
    }
    window = scheduling.window_id(scheduling.TRAINING_WINDOW, fire)

    def lease() -> dict[str, Any] | None:
        found = services.index.get("leases", window)
        return found.source if found else None

    first = subprocess.Popen([sys.executable, "-m", "smarttags", "scheduler", "--once"], env=env)
    try:
        _wait(lambda: (lease() or {}).get("state") == "running", 120)
        first.send_signal(signal.SIGKILL)  # mid-window: no clean-up, no "interrupted"
        assert first.wait(30) == -signal.SIGKILL
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    killed = lease()
    assert killed is not None and killed["state"] == "running"
    assert services.models.active_version() is None  # it died before making a model

    # Its lease is no longer renewed; once it expires the next scheduler takes the window over.
    _wait(lambda: datetime.fromisoformat(lease()["expires_at"]) <= datetime.now(UTC), 30)
    second = subprocess.run(
        [sys.executable, "-m", "smarttags", "scheduler", "--once"], env=env, capture_output=True, text=True, timeout=300
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert "took over the running lease of" in second.stderr
    done = lease()
    assert done is not None and done["state"] == "done" and done["owner"] != killed["owner"]
    finished = [r for r in services.runs.list(kind="train") if r.status != "running"]
    assert len(finished) == 1 and services.models.active_version() is not None
    # And never again.
    third = subprocess.run(
        [sys.executable, "-m", "smarttags", "scheduler", "--once"], env=env, capture_output=True, text=True, timeout=300
    )
    assert third.returncode == 0 and lease() == done
    assert len([r for r in services.runs.list(kind="train") if r.status != "running"]) == 1


class _SlowTagger:
    """Our tagger's batch entry point, slower than the queue's visibility timeout; it records each key."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.keys: list[str] = []
        self._lock = threading.Lock()

    def handle_many(self, deliveries):
        from smarttags.core.tagging import Handled, Result

        with self._lock:
            self.keys += [event.key for event, _ in deliveries]
        time.sleep(self.seconds)
        return [Result(event.key, Handled.IGNORED) for event, _ in deliveries]


def test_a_batch_slower_than_the_visibility_timeout_is_not_delivered_again_meanwhile(services):
    from smarttags.core import events

    tagger = _SlowTagger(seconds=8)
    services.queue.send([events.work_item(services.settings.aws.bucket, ["slow/a.jpg"], run_id=None, trigger="t")])
    worker = Worker(tagger, services.runs, services.queue, concurrency=2, wait_seconds=1, visibility_seconds=2)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        _wait(lambda: not any(services.queue.depth().values()), 30)
    finally:
        worker.stop.set()
        thread.join(timeout=10)
    # Handled once, although it took 4 visibility timeouts: the heartbeat kept it from the other thread.
    assert tagger.keys == ["slow/a.jpg"]
