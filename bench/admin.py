"""Admin page times at scale: the search grid with its facets (aggregations), a facet chosen, the review
queue, a tag's page and an asset page, rendered by the Flask app over N synthetic assets (the corpus of
``bench/search.py: index_corpus``, with thresholds and near misses; 20 removals on each of 10 tags).

Each page's time is printed with its ratio to the same run's baseline, the bare search request the page
is built on (the stored template without facets, straight to OpenSearch): what the page adds (facets,
taxonomy titles, rendering) is the ratio. The issue's bar is < 500 ms per page at 100,000 assets.
Point it at running services (``--opensearch-url``, ``--aws-url``: moto or S3 for the review queue's
model) or let it start its own OpenSearch node (``--port``; then the review page is left out).
With a model (``--aws-url``) it also times the queue's library call against the design it replaced
(one search per model tag, 200 in one ``_msearch``).
Run: .venv/bin/python bench/admin.py [--assets 100000] [--rounds 30] [--opensearch-url URL --aws-url URL]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from smarttags import settings as settings_mod
from smarttags.adapters import clients
from smarttags.core.asset import Asset, feature_name
from smarttags.core.heads import Heads, TagFit
from smarttags.core.moderation import REMOVE
from smarttags.core.search import SearchRequest
from smarttags.core.users import UserStore
from smarttags.devtools import stack
from smarttags.entrypoints.admin import create_app
from smarttags.entrypoints.compose import Services

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the corpus is bench/search.py's, run as a script too
from bench.search import corpus_key, index_corpus

MODEL_TAGS = 200  # tags of the benchmark's active model (the old review queue sent one search per tag)
THRESHOLD = 0.3  # every model tag's threshold: the corpus's confidences are drawn from 0.3 to 1.0
REJECTED = 10  # tags moderators removed from some assets (the queue's rejection rates)
PASSWORD = "bench password"


def ms(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values) * 1000, q))


def reject_some(services: Services) -> int:
    """Moderators remove each of REJECTED tags from 20 of its assets (the queue weighs those tags)."""
    removed = 0
    for i in range(1, REJECTED + 1):
        tag = f"bench:w{i}"
        hits = services.searcher.search(SearchRequest(tags=[tag], size=20)).hits
        removed += services.moderation.bulk([h.asset_id for h in hits], REMOVE, tag, user="bench").changed
    return removed


def save_model(services: Services) -> None:
    tags = tuple(f"bench:w{i}" for i in range(1, MODEL_TAGS + 1))
    heads = Heads(
        tags=tags,
        weights=np.zeros((4, len(tags)), dtype=np.float32),
        bias=np.zeros(len(tags), dtype=np.float32),
        thresholds=np.full(len(tags), THRESHOLD, dtype=np.float32),
    )
    fits = [TagFit(t, 30, 1.0, 0.5, 0.8, 0.7, 0.75, 0.8) for t in tags]
    manifest = services.models.save(
        heads, fits, backbone_id="bench", backbone_sha256="0", training_fingerprint="f", folders=[]
    )
    services.models.activate(manifest.version)


def old_queue(services: Services, size: int = 20) -> list[tuple[float, str, str]]:
    """The review queue as it was (``smarttags-review-v1``): one search per model tag in one ``_msearch``,
    each the tag's ``size`` least confident unpromoted carriers, every hit read into an asset, then sorted."""
    heads = services.models.load_active().heads
    bucket, index = services.settings.aws.bucket, services.index.name("assets")
    body: list[dict[str, Any]] = []
    for tag in heads.tags:
        query = {
            "bool": {
                "filter": [{"term": {"bucket": bucket}}, {"term": {"smart_ids": tag}}],
                "must_not": [{"term": {"promoted_tags": tag}}],
                "must": [{"rank_feature": {"field": f"smart_scores.{feature_name(tag)}", "linear": {}}}],
            }
        }
        sort = [{"_score": {"order": "asc"}}, {"asset_id": {"order": "asc"}}]
        body += [{"index": index}, {"size": size, "_source": {"excludes": ["embedding"]}, "query": query, "sort": sort}]
    decisions = []
    responses = services.opensearch.msearch(body=body)["responses"]
    for tag, threshold, response in zip(heads.tags, heads.thresholds.tolist(), responses, strict=True):
        for hit in response["hits"]["hits"]:
            asset = services.assets.from_source(hit["_source"])
            confidence = next(t.confidence for t in asset.smart_tags if t.tag == tag)
            decisions.append((abs(confidence - threshold), asset.id, tag))
    return sorted(decisions)[:size]


def queue_queries(services: Services, rounds: int) -> None:
    """The review queue's library call against the design it replaced, on the same corpus."""
    for name, call in (
        ("queue: ReviewQueue.next", lambda: services.review.next(20)),
        (f"queue before: {MODEL_TAGS} searches", lambda: old_queue(services)),
    ):
        times = []
        for round_ in range(rounds + 3):
            t0 = time.perf_counter()
            call()
            if round_ >= 3:
                times.append(time.perf_counter() - t0)
        print(f"{name:<24} {ms(times, 50):8.1f} {ms(times, 95):8.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--opensearch-url")
    parser.add_argument("--aws-url")
    parser.add_argument("--port", type=int, default=7220, help="the own node's HTTP port (transport: port + 1)")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="smarttags-bench-admin-"))
    node = None if args.opensearch_url else stack.start_opensearch(home, args.port, transport_port=args.port + 1)
    prefix = "bench" + uuid.uuid4().hex[:8]
    aws: dict[str, Any] = {"bucket": f"{prefix}-assets", "queue_name": prefix}
    aws["dead_letter_queue_name"] = f"{prefix}-dlq"
    if args.aws_url:
        aws.update(endpoint_url=args.aws_url, access_key_id="bench", secret_access_key="bench")
    settings = settings_mod.load(
        opensearch={"url": args.opensearch_url or (node.url if node else ""), "index_prefix": prefix},
        aws=aws,
        data_dir=home,
        admin={"secret_key": "b" * 32, "secure_cookies": False},
    )
    services = Services(settings)
    try:
        services.index.ensure()
        rng = np.random.default_rng(0)
        started = time.perf_counter()
        index_corpus(services, args.assets, rng, threshold=THRESHOLD)
        first = Asset(settings.aws.bucket, corpus_key(0)).id
        print(f"indexed {args.assets} assets in {time.perf_counter() - started:.0f} s")
        print(f"{reject_some(services)} smart tags removed by moderators")
        if args.aws_url:
            clients.ensure_bucket_and_queue(settings)
            save_model(services)
        UserStore(services.index).create("bench", PASSWORD, "admin")
        app = create_app(settings, services)
        app.config.update(WTF_CSRF_ENABLED=False)
        client = app.test_client()
        assert client.post("/login", data={"username": "bench", "password": PASSWORD}).status_code == 302
        pages = {
            "grid with facets": ("/search", SearchRequest(size=24)),
            "text query with facets": ("/search?q=w1+w2", SearchRequest(text="w1 w2", size=24)),
            "a facet chosen": ("/search?tag=bench:w1", SearchRequest(size=24)),
            "asset page": (f"/assets/{first}", SearchRequest(size=24)),
            "tag page (w1)": ("/tags?tag=bench:w1", SearchRequest(size=24)),  # the commonest tag
            "tag page (w150)": ("/tags?tag=bench:w150", SearchRequest(size=24)),
        }
        if args.aws_url:
            pages["review queue"] = ("/review", SearchRequest(size=24))
        print(f"{'page':<24} {'p50 ms':>8} {'p95 ms':>8} {'p50 / bare search':>18}")
        for name, (path, request) in pages.items():
            page_times: list[float] = []
            bare_times: list[float] = []
            for round_ in range(args.rounds + 3):
                t0 = time.perf_counter()
                response = client.get(path)
                t1 = time.perf_counter()
                services.searcher.search(request)
                t2 = time.perf_counter()
                assert response.status_code == 200, (path, response.status_code)
                if round_ >= 3:  # warm-up rounds left out
                    page_times.append(t1 - t0)
                    bare_times.append(t2 - t1)
            ratio = ms(page_times, 50) / ms(bare_times, 50)
            print(f"{name:<24} {ms(page_times, 50):8.1f} {ms(page_times, 95):8.1f} {ratio:18.2f}")
        if args.aws_url:
            queue_queries(services, args.rounds)
    finally:
        services.opensearch.indices.delete(index=f"{prefix}-*", ignore_unavailable=True)
        if node is not None:
            node.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
