"""Upload-to-searchable: N pictures put into the local bucket, tagged by the worker through S3 -> SQS.

Starts its own embedded OpenSearch node and moto server, wires the bucket's notifications to the queue,
activates a model (random heads over the real backbone: tagging costs the same whatever the weights),
runs the upload worker in this process, uploads N 640x480 JPEGs and waits until every one is tagged.
Prints the worker's cold start (backbone load and first inference), throughput, p50/p95 latency from
upload to searchable, and throughput divided by the backbone-only throughput measured in the same run
(goal: at least 0.6, although S3, SQS and OpenSearch share the same two cores). Also the CPU per
picture of the worker, OpenSearch and moto, what the node did per picture, and two CPU ratios that the
machine's load does not move much: the backbone's CPU over the worker's, and the worker's share of all.
Run: .venv/bin/python bench/upload.py [--images 120] [--concurrency 2]
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_model import activate_model
from PIL import Image
from smarttags import settings as settings_mod
from smarttags.adapters import clients
from smarttags.adapters.embedder import clear_sessions, load_embedder
from smarttags.core import asset as assets
from smarttags.core.folders import Folder
from smarttags.devtools import stack
from smarttags.entrypoints.compose import Services
from smarttags.entrypoints.worker import Worker

ROOT = Path(__file__).resolve().parents[1]


def picture(rng: np.random.Generator) -> bytes:
    pixels = rng.integers(0, 255, size=(30, 40, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).resize((640, 480), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used (from /proc: the node and moto are children of this run)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def node_work(services: Services, kind: str) -> dict[str, float]:
    """One index's work so far: writes, reads, searches, refreshes, and the node's wall time in
    refreshes and merges (for the vectors index, the HNSW graph is built and merged there)."""
    index = services.index.name(kind)
    total = services.opensearch.indices.stats(index=index)["indices"][index]["total"]
    return {
        "writes": total["indexing"]["index_total"],
        "reads": total["get"]["total"],
        "searches": total["search"]["query_total"],
        "refreshes": total["refresh"]["total"],
        "refresh ms": total["refresh"]["total_time_in_millis"],
        "merge ms": total["merges"]["total_time_in_millis"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="smarttags-bench-upload-"))
    node = stack.start_opensearch(
        home / "opensearch", stack.free_port(), transport_port=stack.free_port(), heap_max="1g"
    )
    moto = stack.start_moto(stack.free_port(), home)
    try:
        settings = settings_mod.load(
            opensearch={"url": node.url, "index_prefix": "bench"},
            aws={"endpoint_url": moto.url, "bucket": "bench-assets"},
            data_dir=ROOT / "var",  # the built backbone lives there
        )
        clients.ensure_bucket_and_queue(settings)
        services = Services(settings)
        services.index.ensure()
        services.folders.set_enabled(Folder(settings.aws.bucket, "up/"), True)

        clear_sessions()
        started = time.perf_counter()
        embedder = load_embedder(settings)
        embedder.embed_bytes([picture(np.random.default_rng(1))])
        cold_start = time.perf_counter() - started
        services.embedder = lambda: embedder

        rng = np.random.default_rng(0)
        activate_model(services, embedder, tags=20)

        # Backbone alone, on the same machine in the same run: batches of 32 decoded pictures.
        pixels = [embedder.decode(picture(rng)) for _ in range(64)]
        embedder.embed_arrays(pixels[:32])
        t0, c0 = time.perf_counter(), time.process_time()
        embedder.embed_arrays(pixels[:32])
        embedder.embed_arrays(pixels[32:])
        backbone_rate = 64 / (time.perf_counter() - t0)
        backbone_cpu_ms = (time.process_time() - c0) * 1000 / 64

        def tagged(prefix: str) -> dict[str, Any]:
            return {
                "bool": {
                    "filter": [
                        {"term": {"tagging.status": assets.TaggingStatus.TAGGED.value}},
                        {"prefix": {"key": prefix}},
                    ]
                }
            }

        def drained_at(prefix: str, count: int) -> float:
            """When ``count`` objects were searchable: a count (no forced refresh, no hits fetched) twice a
            second, so the measuring costs the node next to nothing."""
            deadline = time.monotonic() + 1800
            while services.index.count("assets", tagged(prefix)) < count and time.monotonic() < deadline:
                time.sleep(0.5)
            return time.time()

        def wait_for(prefix: str, count: int, seen: dict[str, float]) -> None:
            """Each object's first searchable time (30 live uploads: fetching their keys is cheap)."""
            deadline = time.monotonic() + 600
            while len(seen) < count and time.monotonic() < deadline:
                keys = [hit["_source"]["key"] for hit in services.index.scan("assets", tagged(prefix), source=["key"])]
                found_by = time.time()  # the search's answer is in: no earlier than when they were searchable
                for key in keys:
                    seen.setdefault(key, found_by)
                time.sleep(0.1)

        # Throughput: a backlog of N uploads already queued, then the worker drains it.
        for i in range(args.images):
            services.s3.put_object(Bucket=settings.aws.bucket, Key=f"up/backlog/{i:05d}.jpg", Body=picture(rng))
        worker = Worker(services.tagger, services.runs, services.queue, concurrency=args.concurrency, wait_seconds=1)
        thread = threading.Thread(target=worker.run, daemon=True)
        node_before = {kind: node_work(services, kind) for kind in ("assets", "vectors")}
        cpu_before = (time.process_time(), cpu_seconds(node.pid), cpu_seconds(moto.pid))
        started = time.time()
        thread.start()
        rate = args.images / (drained_at("up/backlog/", args.images) - started)
        cpu_after = (time.process_time(), cpu_seconds(node.pid), cpu_seconds(moto.pid))
        node_after = {kind: node_work(services, kind) for kind in ("assets", "vectors")}
        cpu_ms = [(after - before) * 1000 / args.images for before, after in zip(cpu_before, cpu_after, strict=True)]

        # Latency: uploads arriving one at a time while the worker runs, watched by search from before
        # the first one (a watcher started after the last upload would add the upload time to each).
        uploaded_at: dict[str, float] = {}
        live: dict[str, float] = {}
        watcher = threading.Thread(target=wait_for, args=("up/live/", 30, live), daemon=True)
        watcher.start()
        for i in range(30):
            key = f"up/live/{i:05d}.jpg"
            uploaded_at[key] = time.time()
            services.s3.put_object(Bucket=settings.aws.bucket, Key=key, Body=picture(rng))
            time.sleep(0.2)
        watcher.join()
        worker.stop.set()
        thread.join(timeout=10)
        latencies = sorted(live[k] - uploaded_at[k] for k in live)
        print(f"cold start (backbone load + first inference): {cold_start * 1000:.0f} ms")
        print(f"backlog of {args.images}: tagged at {rate:.1f} pictures/s with {args.concurrency} worker threads")
        print(
            f"upload to searchable ({len(live)} live uploads, 5 per second): "
            f"p50 {np.percentile(latencies, 50):.2f} s, p95 {np.percentile(latencies, 95):.2f} s"
        )
        print(
            "CPU per picture while draining: worker (and this script's polling) {:.1f} ms, OpenSearch {:.1f} ms, "
            "moto (S3 + SQS) {:.1f} ms".format(*cpu_ms)
        )
        for kind, after in node_after.items():
            print(
                f"{kind} index per picture while draining: "
                + ", ".join(f"{name} {(after[name] - node_before[kind][name]) / args.images:.2f}" for name in after)
            )
        print(f"backbone alone: {backbone_rate:.1f} pictures/s, {backbone_cpu_ms:.1f} ms CPU per picture")
        print(
            f"ratios: end-to-end / backbone-only throughput {rate / backbone_rate:.2f} (goal >= 0.6); "
            f"backbone CPU / the worker's CPU per picture {backbone_cpu_ms / cpu_ms[0]:.2f}; "
            f"the worker's share of all CPU per picture {cpu_ms[0] / sum(cpu_ms):.2f}"
        )
    finally:
        moto.stop()
        node.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
