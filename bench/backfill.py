"""A backfill through the fan-out, then the re-tag after a model change, in the same run.

N synthetic pictures (small smooth-noise JPEGs, each different, made at set-up) go into a bucket of their
own (no notifications: only the run's work items reach the queue) with their assets registered, never
tagged. A tagging run (``dispatch_tagging``: pages of the folder -> SQS work items, ten per
SendMessageBatch) is drained by the local worker (``entrypoints.worker.Worker``, in this process, the
same batch loop as Lambda) until the run ends with its last item: the full backfill (S3 GET, decode,
backbone, OpenSearch) in images/s. Then another model over the same backbone is activated and a second
run re-tags the same assets: the stored embeddings fit, so only the heads run (one multi-get and one bulk
per batch, no S3 request, no inference). Prints both rates, the ratio (goal: >= 20), each run's counts,
and CPU ms per image of this process (worker + dispatch), the OpenSearch node and moto, read from /proc
(found by their listening ports), with the load average: what bounds each rate.

Starts its own OpenSearch node and moto server on --port and the ports after it (so their CPU is this
bench's alone), or uses those named by --opensearch-url / --aws-url (e.g. a shared node), under an index
prefix, bucket and queues of its own, deleted at the end.
Run: nice -n 10 .venv/bin/python bench/backfill.py [--assets 20000] [--concurrency 2] [--side 96]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
from bench_model import activate_model
from PIL import Image
from smarttags import settings as settings_mod
from smarttags.adapters import clients
from smarttags.adapters.asset_index import to_document
from smarttags.adapters.embedder import load_embedder
from smarttags.core.asset import Asset, TaggingStatus
from smarttags.core.folders import Folder
from smarttags.core.runs import ON_DEMAND, Run, outcomes_add_up
from smarttags.devtools import stack
from smarttags.entrypoints.compose import Services
from smarttags.entrypoints.worker import Worker

ROOT = Path(__file__).resolve().parents[1]
GOAL = 20.0  # heads-only re-tag rate / full backfill rate


def picture(rng: np.random.Generator, side: int) -> bytes:
    """A small photo-like JPEG: smooth noise upsampled, so every picture differs and compresses as a photo."""
    pixels = rng.integers(0, 255, size=(6, 6, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).resize((side, side), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def listening_pid(url: str) -> int | None:
    """The process listening on the URL's port (from /proc/net/tcp and the processes' sockets)."""
    port = urlparse(url).port
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in inodes for fd in os.listdir(f"/proc/{pid}/fd")):
                return int(pid)
        except OSError:
            continue
    return None


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU of a process and its reaped children so far (0 when it is not ours to read)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=2, help="worker threads")
    parser.add_argument("--side", type=int, default=96, help="the pictures' width and height in pixels")
    # moto's SQS walks every queued message on each call (a receive with 2,000 queued: ~1.8 s of its CPU),
    # so the bench keeps the queue short; on AWS the defaults (pages of 500, 2,000 queued) are cheap.
    parser.add_argument("--page-size", type=int, default=500, help="tagging.dispatch_page_size")
    parser.add_argument("--max-queued", type=int, default=2000, help="tagging.dispatch_max_queued (assets)")
    parser.add_argument("--keys-per-message", type=int, default=25, help="tagging.keys_per_message")
    parser.add_argument("--port", type=int, default=7300, help="moto's port; the node's HTTP and transport: +1, +2")
    parser.add_argument("--opensearch-url", help="an OpenSearch node to use instead of starting one")
    parser.add_argument("--aws-url", help="a moto server to use instead of starting one")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="smarttags-bench-backfill-"))
    started_here = []
    if not args.aws_url:
        started_here.append(stack.start_moto(args.port, home))
        args.aws_url = started_here[-1].url
    if not args.opensearch_url:
        node = stack.start_opensearch(home / "opensearch", args.port + 1, transport_port=args.port + 2, heap_max="1g")
        started_here.append(node)
        args.opensearch_url = node.url
    try:
        return backfill_twice(args)
    finally:
        for process in started_here:
            process.stop()
        shutil.rmtree(home, ignore_errors=True)


def backfill_twice(args: argparse.Namespace) -> int:
    unique = "backfill" + uuid.uuid4().hex[:8]
    settings = settings_mod.load(
        opensearch={"url": args.opensearch_url, "index_prefix": unique},
        aws={
            "endpoint_url": args.aws_url,
            "access_key_id": "testing",
            "secret_access_key": "testing",
            "bucket": f"{unique}-uploads",
            "queue_name": f"{unique}-tagging",
            "dead_letter_queue_name": f"{unique}-tagging-dlq",
        },
        tagging={
            "dispatch_page_size": args.page_size,
            "dispatch_max_queued": args.max_queued,
            "keys_per_message": args.keys_per_message,
        },
        data_dir=ROOT / "var",  # the built backbone lives there
    )
    clients.ensure_bucket_and_queue(settings)
    services = Services(settings)
    services.index.ensure()
    embedder = load_embedder(settings)
    services.embedder = lambda: embedder  # type: ignore[method-assign]
    bucket = f"{unique}-assets"  # notifies nothing: only work items reach the queue
    services.s3.create_bucket(Bucket=bucket)
    folder = Folder(bucket, "bf/")
    node_pid, moto_pid = listening_pid(args.opensearch_url), listening_pid(args.aws_url)
    worker = Worker(services.tagger, services.runs, services.queue, concurrency=args.concurrency, wait_seconds=1)
    thread = threading.Thread(target=worker.run, daemon=True)
    try:
        started = time.perf_counter()
        rng = np.random.default_rng(0)
        pictures = [picture(rng, args.side) for _ in range(args.assets)]

        def put(i: int) -> Asset:
            key = f"bf/{i // 1000:03d}/{i:06d}.jpg"
            answer = services.s3.put_object(Bucket=bucket, Key=key, Body=pictures[i], ContentType="image/jpeg")
            return Asset(bucket, key, etag=answer["ETag"].strip('"'), size=len(pictures[i]))

        with ThreadPoolExecutor(8) as pool:
            registered = list(pool.map(put, range(args.assets)))
        name = services.index.name("assets")
        for start in range(0, len(registered), 2000):
            page = registered[start : start + 2000]
            services.index.bulk([({"index": {"_index": name, "_id": a.id}}, to_document(a)) for a in page])
        services.index.refresh()
        pictures.clear()  # the set-up's memory back before the runs
        services.folders.set_enabled(folder, True)
        first = activate_model(services, embedder, tags=20, seed=0)
        print(
            f"set-up: {args.assets} pictures of {args.side}x{args.side} px made, put into moto and registered "
            f"in {time.perf_counter() - started:.0f} s; worker threads: {args.concurrency}; OpenSearch "
            f"{args.opensearch_url}, moto {args.aws_url}; dispatch pages of {settings.tagging.dispatch_page_size}, "
            f"at most {settings.tagging.dispatch_max_queued} assets queued, "
            f"{settings.tagging.keys_per_message} to a message"
        )
        thread.start()

        def backfill(label: str) -> tuple[float, Run]:
            """One tagging run, from its dispatch until its last item is counted: (images/s, the run)."""
            load = os.getloadavg()[0]
            cpu = (time.process_time(), cpu_seconds(node_pid), cpu_seconds(moto_pid))
            t0 = time.perf_counter()
            dispatch = services.dispatch_tagging(folder, trigger=ON_DEMAND)
            dispatched = time.perf_counter() - t0
            run = services.runs.follow(dispatch.run.run_id, poll_seconds=0.5, timeout=7200)
            elapsed = time.perf_counter() - t0
            used = [
                (b - a) * 1000 / args.assets
                for a, b in zip(cpu, (time.process_time(), cpu_seconds(node_pid), cpu_seconds(moto_pid)), strict=True)
            ]
            counts = {k: v for k, v in run.to_json()["counts"].items() if v}
            print(
                f"{label}: {args.assets / elapsed:.1f} images/s ({elapsed:.1f} s; the dispatch alone "
                f"{dispatched:.1f} s), run {run.status} {counts}, adds up: {outcomes_add_up(run.counts)}; "
                f"load average {load:.1f} -> {os.getloadavg()[0]:.1f}"
            )
            print(
                "  CPU ms per image: this process (worker + dispatch) {:.2f}, OpenSearch {:.2f}, moto {:.2f}".format(
                    *used
                )
                + ("" if node_pid and moto_pid else " (a service's process not found: 0)")
            )
            if run.counts["processed"] != args.assets or run.counts["tagged"] != args.assets:
                raise SystemExit(f"{label}: the run did not tag every asset: {counts}")
            return args.assets / elapsed, run

        full, _ = backfill("full backfill (read, decode, embed, heads)")
        second = activate_model(services, embedder, tags=20, seed=1)
        services.tagger.forget_model()
        heads_only, _ = backfill("re-tag after a model change (heads only)")
        services.index.refresh()
        query = {"bool": {"filter": [{"term": {"tagging.model_version": second}}, {"prefix": {"key": "bf/"}}]}}
        moved = services.index.count("assets", query)
        print(f"assets on the new model: {moved} of {args.assets} (first model {first[:12]}, second {second[:12]})")
        ratio = heads_only / full
        verdict = "meets" if ratio >= GOAL else "misses"
        print(f"ratio: heads-only re-tag / full backfill {ratio:.1f} ({verdict} the goal of >= {GOAL:.0f})")
        statuses = services.index.count("assets", {"term": {"tagging.status": TaggingStatus.TAGGED.value}})
        assert statuses == args.assets, statuses
    finally:
        worker.stop.set()
        if thread.is_alive():
            thread.join(timeout=15)
        services.index.client.indices.delete(index=f"{unique}-*", ignore_unavailable=True)
        for name in {bucket, settings.aws.bucket, settings.aws.own_bucket}:
            keys = [o.key for o in services.store_for(name).list("")]
            for start in range(0, len(keys), 1000):
                chunk = [{"Key": k} for k in keys[start : start + 1000]]
                services.s3.delete_objects(Bucket=name, Delete={"Objects": chunk, "Quiet": True})  # type: ignore[typeddict-item]
            services.s3.delete_bucket(Bucket=name)
        for queue in (settings.aws.queue_name, settings.aws.dead_letter_queue_name):
            services.sqs.delete_queue(QueueUrl=services.sqs.get_queue_url(QueueName=queue)["QueueUrl"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
