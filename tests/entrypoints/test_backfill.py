"""Backfills through the fan-out on the real node and moto, with real `smarttags` processes: a worker
killed halfway, a dispatcher killed halfway and resumed, the CLI's progress bars, counts that add up."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from smarttags import settings as settings_mod
from smarttags.core import events
from smarttags.core.asset import Asset, StoredEmbedding, Tagging, TaggingStatus
from smarttags.core.folders import Folder
from smarttags.core.runs import ON_DEMAND, TAG, Run, outcomes_add_up

from tests.images import picture

pytestmark = pytest.mark.slow

EMBEDDED = re.compile(r"embedded (\d+) pictures in one call")


def _wait(predicate: Any, timeout: float, pause: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(pause)
    raise AssertionError(f"not true within {timeout} s")


def _plain_bucket(services: Any) -> str:
    """A bucket that notifies nothing: only the run's work items reach the queue."""
    bucket = f"{services.settings.aws.bucket}-plain"
    services.s3.create_bucket(Bucket=bucket)
    return bucket


def _register(services: Any, bucket: str, objects: dict[str, bytes], state: Any = None) -> None:
    """Put the objects and their assets (``state(asset) -> asset`` says what the index holds of each)."""

    def put(item: tuple[str, bytes]) -> Asset:
        key, body = item
        services.s3.put_object(Bucket=bucket, Key=key, Body=body)
        info = services.store_for(bucket).head(key)
        asset = Asset(bucket, key, etag=info.etag, size=info.size)
        return state(asset) if state else asset

    with ThreadPoolExecutor(8) as pool:
        assets = list(pool.map(put, objects.items()))
    for start in range(0, len(assets), 500):
        written = services.assets.put_many([(a, None) for a in assets[start : start + 500]])
        assert not [w for w in written if isinstance(w, Exception)]
    services.assets.refresh()


def _env(services: Any, embedder: Any, **tagging: Any) -> dict[str, str]:
    env = {**os.environ, **settings_mod.to_env(services.settings)}
    env["SMARTTAGS_BACKBONE__ONNX_FILE"] = str(embedder.model_path)
    env.update({f"SMARTTAGS_TAGGING__{name.upper()}": str(value) for name, value in tagging.items()})
    return env


def _smarttags(args: list[str], env: dict[str, str], log: Path, **kwargs: Any) -> subprocess.Popen[str]:
    """`python -m smarttags ARGS`, its standard error (the logs, the bars) in a file: never a full pipe."""
    with log.open("w") as stderr:  # the child holds its own copy
        return subprocess.Popen([sys.executable, "-m", "smarttags", *args], env=env, stderr=stderr, text=True, **kwargs)


def _run_of(services: Any, folder: str) -> Run:
    return _wait(lambda: next(iter(services.runs.list(kind=TAG, folder=folder, size=1)), None), 60)


def _kill(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)  # no clean-up: what a crash or a lost machine leaves
    assert process.wait(30) == -signal.SIGKILL


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _versions(services: Any, run_id: str) -> dict[str, int]:
    """The sequence number of every asset the run wrote, by key (a write of it since would raise it)."""
    body = {"query": {"term": {"tagging.run": run_id}}, "size": 10_000, "_source": ["key"], "seq_no_primary_term": True}
    return {hit["_source"]["key"]: hit["_seq_no"] for hit in services.index.search("assets", body)["hits"]["hits"]}


def _embedded(log: Path) -> int:
    return sum(int(n) for n in EMBEDDED.findall(log.read_text()))


def test_a_worker_killed_halfway_leaves_the_run_to_the_next_which_re_embeds_nothing_done(
    services, shape_model, embedder, tmp_path
):
    bucket = _plain_bucket(services)
    count = 60
    colours = ("red", "blue", "green", "orange", "purple")
    _register(
        services,
        bucket,
        {f"bf/{i:03d}.jpg": picture(colours[i % 5], size=(320 + i, 240)) for i in range(count)},
    )
    services.folders.set_enabled(Folder(bucket, "bf/"), True)
    # Two keys to a message: the killed worker holds some messages, not the whole run.
    env = _env(services, embedder, worker_visibility_seconds=6, keys_per_message=2)
    first = _smarttags(["worker", "--concurrency", "2"], env, tmp_path / "first.log")
    cli = _smarttags(
        ["tag", "--folder", f"s3://{bucket}/bf/", "--wait"], env, tmp_path / "cli.log", stdout=subprocess.PIPE
    )
    second = None
    try:
        run = _run_of(services, f"s3://{bucket}/bf/")
        _wait(lambda: services.runs.get(run.run_id).counts["processed"] >= 15, 120, pause=0.05)
        _kill(first)
        services.index.refresh()
        done = _versions(services, run.run_id)
        assert 0 < len(done) < count, done
        # Their work items again, as a redelivery would bring them: found done, nothing read or written.
        services.queue.send([events.work_item(bucket, sorted(done), run_id=run.run_id, trigger=ON_DEMAND)])
        # The next worker: the killed one's messages come back after their visibility timeout.
        # One thread: two threads could be handed the same message at once by moto's receive (which is
        # not atomic), and both would embed it, counted once; this test is about what the killed one did.
        second = _smarttags(["worker", "--concurrency", "1"], env, tmp_path / "second.log")
        out, _ = cli.communicate(timeout=240)
        assert cli.returncode == 0, (tmp_path / "cli.log").read_text()[-3000:]
        _wait(lambda: not any(services.queue.depth().values()), 120, pause=0.5)  # the copies too
    finally:
        for process in (first, cli, second):
            if process is not None:
                _stop(process)
    services.index.refresh()
    assert {key: v for key, v in _versions(services, run.run_id).items() if key in done} == done
    ended = services.runs.get(run.run_id)
    assert ended.status == "succeeded" and ended.ended_at
    assert {k: ended.counts[k] for k in ("selected", "processed", "tagged")} == {
        "selected": count,
        "processed": count,
        "tagged": count,
    }
    assert outcomes_add_up(ended.counts)
    # What the killed worker finished was not embedded again: the next one embedded exactly the rest.
    assert _embedded(tmp_path / "second.log") == count - len(done)
    assert _embedded(tmp_path / "first.log") >= len(done)
    # The CLI showed the dispatch and the run's processing as bars with rate and ETA, then the counts.
    bars = (tmp_path / "cli.log").read_text()
    assert re.search(rf"dispatch: 100%\|[^|]*\| {count}/{count} \[\d\d:\d\d<00:00, +[\d.]+img/s\]", bars), bars
    assert re.search(rf"tagging: +\d+%\|[^|]*\| \d+/{count} \[\d\d:\d\d<\d\d:\d\d, +[\d.]+img/s\]", bars), bars
    assert re.search(rf"tagging: 100%\|[^|]*\| {count}/{count} \[", bars), bars
    assert f"run {run.run_id}: succeeded selected={count} processed={count} tagged={count}" in out


def test_a_dispatcher_killed_halfway_is_resumed_and_each_asset_counts_once(services, shape_model, embedder, tmp_path):
    """A re-tag after a model change (heads only) of more assets than fit a page: the dispatcher dies
    after some pages, the worker goes on meanwhile; `tag --resume` finishes the run."""
    bucket = _plain_bucket(services)
    count = 1200
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(count, embedder.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    numbered = {f"re/{i:05d}.jpg": i for i in range(count)}

    def embedded_by_an_older_model(asset: Asset) -> Asset:
        vector = tuple(float(v) for v in vectors[numbered[asset.key]])
        return Asset(
            asset.bucket,
            asset.key,
            etag=asset.etag,
            size=asset.size,
            embedding=StoredEmbedding(vector, embedder.backbone_id, asset.etag),
            tagging=Tagging(
                TaggingStatus.TAGGED, model_version="older", etag=asset.etag, tagged_at=datetime.now(UTC).isoformat()
            ),
        )

    # The heads only read the stored embedding: the objects' bytes are never opened.
    _register(services, bucket, {key: f"bytes {i}".encode() for key, i in numbered.items()}, embedded_by_an_older_model)
    services.folders.set_enabled(Folder(bucket, "re/"), True)
    # Pages of 50, and one only when it fits under about 150 queued assets: the dispatch keeps pace.
    env = _env(services, embedder, dispatch_page_size=50, dispatch_max_queued=150)
    worker = _smarttags(["worker", "--concurrency", "2"], env, tmp_path / "worker.log")
    dispatcher = _smarttags(["tag", "--folder", f"s3://{bucket}/re/"], env, tmp_path / "first.log")
    resumed = None
    try:
        run = _run_of(services, f"s3://{bucket}/re/")
        depths: list[int] = []

        def scanned() -> bool:
            depths.append(sum(services.queue.depth().values()))
            return services.runs.get(run.run_id).dispatch.get("scanned", 0) >= 200

        _wait(scanned, 120, pause=0.02)
        _kill(dispatcher)
        assert max(depths) <= 150
        stopped = services.runs.get(run.run_id)
        assert stopped.status == "running" and 200 <= stopped.dispatch["scanned"] < count
        resumed = _smarttags(
            ["tag", "--folder", f"s3://{bucket}/re/", "--resume", run.run_id, "--wait"],
            env,
            tmp_path / "resumed.log",
            stdout=subprocess.PIPE,
        )
        resumed.communicate(timeout=300)
        assert resumed.returncode == 0, (tmp_path / "resumed.log").read_text()[-3000:]
    finally:
        for process in (worker, dispatcher, resumed):
            if process is not None:
                _stop(process)
    ended = services.runs.get(run.run_id)
    assert ended.status == "succeeded"
    assert {k: ended.counts[k] for k in ("selected", "processed", "tagged")} == {
        "selected": count,
        "processed": count,
        "tagged": count,
    }
    assert outcomes_add_up(ended.counts) and ended.dispatch["scanned"] >= count
    services.index.refresh()
    query = {
        "bool": {
            "filter": [{"term": {"tagging.run": run.run_id}}, {"term": {"tagging.model_version": shape_model.version}}]
        }
    }
    assert services.index.count("assets", query) == count
    assert _embedded(tmp_path / "worker.log") == 0  # heads only: no inference, for any asset
    # Resuming a run whose dispatch finished is refused.
    again = subprocess.run(
        [sys.executable, "-m", "smarttags", "tag", "--folder", f"s3://{bucket}/re/", "--resume", run.run_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 2 and "nothing to resume" in again.stderr


def test_a_tagging_window_taken_over_goes_on_with_its_stopped_dispatch(services):
    """A scheduler died mid-dispatch: the next one that takes the window over resumes that run, not a new one."""
    from datetime import timedelta

    from smarttags.core import windows
    from smarttags.core.runs import SCHEDULE

    bucket = services.settings.aws.bucket
    folder = Folder(bucket, "win/")
    services.folders.set_enabled(folder, True)
    for i in range(3):
        services.assets.put(Asset(bucket, f"win/{i}.jpg", etag=f"e{i}"))
    services.assets.refresh()
    fire = datetime.now(UTC) - timedelta(minutes=5)
    earlier = services.runs.start(TAG, folder.uri, SCHEDULE)  # an older window's, never finished
    earlier.started_at = (fire - timedelta(days=1)).isoformat()
    services.runs.save(earlier)
    stopped = services.runs.start(TAG, folder.uri, SCHEDULE)  # this window's: its dispatcher died
    assert windows.run_window(services, windows.TAGGING_WINDOW, fire, owner="replica-b") == [stopped.run_id]
    resumed = services.runs.get(stopped.run_id)
    assert resumed.counts["selected"] == 3 and resumed.status == "dispatched"
    assert services.runs.get(earlier.run_id).status == "running"  # not this window's to resume
    received = services.queue.receive(wait_seconds=1) + services.queue.receive(wait_seconds=1)
    work = [json.loads(m.body) for m in received if '"smarttags": "tag"' in m.body]  # not moto's test event
    assert sorted(key for w in work for key in w["keys"]) == [f"win/{i}.jpg" for i in range(3)]
    assert {w["run_id"] for w in work} == {stopped.run_id}
