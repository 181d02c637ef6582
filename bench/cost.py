"""Cost of tagging 1,000 images on AWS Lambda, from the Lambda handler measured in this process.

Configures ``lambda/handler.py`` through SMARTTAGS_* variables as the SAM template does (backbone pinned
to one thread: ``backbone.threads=1`` for onnxruntime, threadpoolctl's limit of 1 for numpy's BLAS; a
1,769 MB Lambda has one vCPU), on the shared OpenSearch node and moto server (or any named by
--opensearch-url / --aws-url). Uploads N generated pictures per batch size into a bucket whose S3
notifications feed the SQS queue, receives the queue's messages in batches of that size, hands each
batch to ``handler.handler`` as the SQS event Lambda sends, and checks every picture came out tagged.

Prints, per batch size, wall and CPU milliseconds per image (CPU: this process's, all threads; the rest
is waiting for S3, SQS and OpenSearch, which here are local moto and OpenSearch on the same two cores),
the peak RSS, and the Lambda cost of 1,000 images for several memory sizes: the CPU part scales with the
vCPU share (memory / 1,769 MB, at most 1: one thread), the waiting part does not; billed per invocation in
whole milliseconds at the x86 price per GB-second plus the per-request price. Goal: <= $0.01 per 1,000.
Run: .venv/bin/python bench/cost.py [--images 60] [--batch-sizes 1,5,10] [--width 4000 --height 3000]
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import logging
import math
import os
import re
import resource
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import unquote_plus

import numpy as np
from PIL import Image
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]

# AWS Lambda, us-east-1, x86: the published price list (unchanged since 2020-12-01, when billing went to
# 1 ms). Not re-read from aws.amazon.com/lambda/pricing in this run (no internet here): check it there.
PRICE_DATE = "2020-12-01 (AWS Lambda pricing page, current as of 2026-12-03)"
PRICE_GB_SECOND = 0.0000166667  # first 6 billion GB-s a month
PRICE_REQUEST = 0.20 / 1_000_000
ONE_VCPU_MB = 1769
GOAL = 0.01  # $ per 1,000 images (Rekognition DetectLabels lists $1.00)


def picture(rng: np.random.Generator, width: int, height: int) -> bytes:
    """A photo-like JPEG: smooth noise upsampled (compresses as a photograph does, unlike white noise)."""
    pixels = rng.integers(0, 255, size=(max(1, height // 32), max(1, width // 32), 3), dtype=np.uint8)
    image = Image.fromarray(pixels).resize((width, height), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def template_defaults() -> tuple[int, int]:
    """The SAM template's MemorySize and BatchSize parameter defaults."""
    text = (ROOT / "lambda" / "template.yaml").read_text()

    def default(name: str) -> int:
        found = re.search(rf"^  {name}:\n(?:    .*\n)*?    Default: (\d+)", text, re.M)
        if not found:
            raise SystemExit(f"lambda/template.yaml has no default for {name}")
        return int(found.group(1))

    return default("MemorySize"), default("BatchSize")


def load_handler() -> ModuleType:
    """lambda/handler.py loaded by path, as Lambda loads it (``handler.handler``)."""
    spec = importlib.util.spec_from_file_location("handler", ROOT / "lambda" / "handler.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sqs_event(messages: list[Any], queue_arn: str) -> dict[str, Any]:
    """The event Lambda's SQS event source hands the function for these received messages."""
    return {
        "Records": [
            {
                "messageId": m.message_id,
                "receiptHandle": m.receipt_handle,
                "body": m.body,
                "attributes": {"ApproximateReceiveCount": str(m.receive_count)},
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": "us-east-1",
            }
            for m in messages
        ]
    }


def lambda_cost(wall_ms: float, cpu_ms: float, batch: int, memory_mb: int) -> float:
    """$ per 1,000 images: each invocation's duration (CPU slowed to the memory's vCPU share, waiting
    unchanged) billed in whole ms at memory_mb, plus one request per invocation."""
    share = min(1.0, memory_mb / ONE_VCPU_MB)
    per_image_ms = cpu_ms / share + max(0.0, wall_ms - cpu_ms)
    invocations = 1000 / batch
    billed_ms = math.ceil(per_image_ms * batch)
    return invocations * (billed_ms / 1000 * memory_mb / 1024 * PRICE_GB_SECOND + PRICE_REQUEST)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=60, help="pictures per batch size")
    parser.add_argument("--batch-sizes", default="1,5,10")
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--tags", type=int, default=200, help="heads of the active model")
    parser.add_argument(
        "--opensearch-url", default=os.environ.get("SMARTTAGS_TEST_OPENSEARCH_URL", "http://127.0.0.1:9700")
    )
    parser.add_argument("--aws-url", default=os.environ.get("SMARTTAGS_TEST_AWS_URL", "http://127.0.0.1:5700"))
    args = parser.parse_args()
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    if any(not 1 <= b <= 10 for b in batch_sizes):
        raise SystemExit("--batch-sizes: each between 1 and 10 (Lambda's SQS batch without a batching window)")
    unique = "cost" + uuid.uuid4().hex[:8]
    # The function's configuration, as lambda/template.yaml sets it (endpoints local instead of AWS).
    os.environ.update(
        {
            "SMARTTAGS_DATA_DIR": str(ROOT / "var"),  # the built backbone lives there
            "SMARTTAGS_OPENSEARCH__URL": args.opensearch_url,
            "SMARTTAGS_OPENSEARCH__INDEX_PREFIX": unique,
            "SMARTTAGS_AWS__ENDPOINT_URL": args.aws_url,
            "SMARTTAGS_AWS__ACCESS_KEY_ID": "testing",
            "SMARTTAGS_AWS__SECRET_ACCESS_KEY": "testing",
            "SMARTTAGS_AWS__BUCKET": f"{unique}-assets",
            "SMARTTAGS_AWS__QUEUE_NAME": f"{unique}-tagging",
            "SMARTTAGS_AWS__DEAD_LETTER_QUEUE_NAME": f"{unique}-tagging-dlq",
            "SMARTTAGS_BACKBONE__THREADS": "1",
        }
    )
    from bench_model import activate_model
    from smarttags import settings as settings_mod
    from smarttags.adapters import clients
    from smarttags.adapters.embedder import clear_sessions
    from smarttags.core.asset import TaggingStatus
    from smarttags.core.folders import Folder
    from smarttags.entrypoints.compose import Services

    settings = settings_mod.load()
    wiring = clients.ensure_bucket_and_queue(settings)
    setup = Services(settings)
    setup.index.ensure()
    setup.folders.set_enabled(Folder(settings.aws.bucket, "up/"), True)
    embedder = setup.embedder()
    rng = np.random.default_rng(0)
    activate_model(setup, embedder, tags=args.tags)
    queue = setup.queue
    queue_arn = f"arn:aws:sqs:{settings.aws.region}:000000000000:{settings.aws.queue_name}"
    del wiring
    clear_sessions()  # the handler's cold start loads its own ONNX session
    handler = load_handler()
    sample = picture(rng, args.width, args.height)
    print(f"pictures: {args.width}x{args.height} JPEG, about {len(sample) / 1e6:.1f} MB each; {args.tags} heads")

    def upload(prefix: str, count: int) -> None:
        for i in range(count):
            setup.s3.put_object(
                Bucket=settings.aws.bucket, Key=f"up/{prefix}/{i:05d}.jpg", Body=picture(rng, args.width, args.height)
            )

    def records(body: str, prefix: str) -> int:
        """The S3 records of a message under the prefix (moto's s3:TestEvent has none)."""
        return sum(
            unquote_plus(r["s3"]["object"]["key"]).startswith(prefix) for r in json.loads(body).get("Records", [])
        )

    def drain(batch: int, prefix: str, count: int) -> tuple[float, float, int]:
        """Receive and hand batches to the handler until ``count`` records under the prefix were handled:
        (wall s, CPU s, invocations), timing only the handler."""
        wall = cpu = 0.0
        handled = invocations = 0
        deadline = time.monotonic() + 600
        while handled < count and time.monotonic() < deadline:
            messages = queue.receive(max_messages=batch, wait_seconds=1)
            if not messages:
                continue
            event = sqs_event(messages, queue_arn)
            w0, c0 = time.perf_counter(), time.process_time()
            answer = handler.handler(event, None)
            wall += time.perf_counter() - w0
            cpu += time.process_time() - c0
            if answer.get("batchItemFailures"):
                raise SystemExit(f"the handler failed items: {answer}")
            queue.delete(m.receipt_handle for m in messages)  # as Lambda does after a success
            handled += sum(records(m.body, prefix) for m in messages)
            invocations += 1
        if handled < count:
            raise SystemExit(f"only {handled} of {count} messages arrived in 10 minutes")
        return wall, cpu, invocations

    def tagged(prefix: str) -> int:
        setup.index.refresh()
        query = {
            "bool": {"filter": [{"term": {"tagging.status": TaggingStatus.TAGGED.value}}, {"prefix": {"key": prefix}}]}
        }
        return setup.index.count("assets", query)

    results: dict[int, tuple[float, float]] = {}
    devnull = open(os.devnull, "w")  # noqa: SIM115 (open for the whole run)
    try:
        with threadpool_limits(limits=1):
            upload("cold", 1)
            cold_wall, _, _ = drain(1, "up/cold/", 1)  # builds the services, loads the backbone and the model
            print(f"cold start (services, backbone, model) + first image: {cold_wall * 1000:.0f} ms")
            # The handler's JSON log lines are still formatted and written, as to CloudWatch, but not here.
            for log_handler in logging.getLogger().handlers:
                if isinstance(log_handler, logging.StreamHandler):
                    log_handler.setStream(devnull)
            for batch in batch_sizes:
                count = args.images - args.images % batch or batch
                upload(f"b{batch}", count)
                wall, cpu, invocations = drain(batch, f"up/b{batch}/", count)
                done = tagged(f"up/b{batch}/")
                if done != count:
                    raise SystemExit(f"batch size {batch}: {done} of {count} pictures tagged")
                results[batch] = (wall * 1000 / count, cpu * 1000 / count)
                print(
                    f"batch size {batch:2}: {count} images in {invocations} invocations, "
                    f"{results[batch][0]:.0f} ms wall / {results[batch][1]:.0f} ms CPU per image"
                )
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS of this process (handler, boto3, generated pictures): {rss:.0f} MiB")
        memory, batch_default = template_defaults()
        print(
            f"\nAWS Lambda x86 us-east-1, prices of {PRICE_DATE}: ${PRICE_GB_SECOND} per GB-s, "
            f"${PRICE_REQUEST * 1e6:.2f} per 1M requests; CPU slowed by memory/{ONE_VCPU_MB} MB below one vCPU"
        )
        sizes = sorted({512, 1024, ONE_VCPU_MB, 2048, memory})
        print("$ per 1,000 images   " + "".join(f"{m:>9} MB" for m in sizes))
        for batch, (wall_ms, cpu_ms) in results.items():
            row = "".join(f"{lambda_cost(wall_ms, cpu_ms, batch, m):12.5f}" for m in sizes)
            print(f"batch size {batch:2}        {row}")
        if batch_default in results:
            wall_ms, cpu_ms = results[batch_default]
            cost = lambda_cost(wall_ms, cpu_ms, batch_default, memory)
            verdict = "meets" if cost <= GOAL else "misses"
            print(
                f"template (MemorySize {memory} MB, BatchSize {batch_default}): ${cost:.5f} per 1,000 images, "
                f"{verdict} the goal of <= ${GOAL} (Lambda only: S3 GETs, SQS requests and the domain are extra)"
            )
    finally:
        setup.index.client.indices.delete(index=f"{unique}-*", ignore_unavailable=True)
        logging.getLogger().handlers.clear()
        devnull.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
