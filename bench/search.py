"""Search latency: the stored three-tier template against a plain ``multi_match`` on the same fields.

Starts its own embedded OpenSearch node (or uses ``--opensearch-url``: its bench-search-* indices are
kept, and reused by the next run when they hold as many assets), indexes 100,000 synthetic assets
(``index_corpus``: titles, descriptions, keywords and smart tags drawn from a Zipf-distributed
vocabulary, a 5,000-tag taxonomy), then sends the same random 1-3 word queries three ways, alternating:
the template as the CLI calls it (tier, matched fields and tags), the template with highlights, and a
plain ``multi_match``; prints p50/p95 of each and the ratios to the plain one (goal: at most 1.5), then
the node's own CPU per query of each kind run alone (steadier than wall times on a busy machine).
Run: .venv/bin/python bench/search.py [--assets 100000] [--queries 300] [--port 7210 | --opensearch-url URL]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from smarttags import settings as settings_mod
from smarttags.adapters.asset_index import to_document
from smarttags.core.asset import Asset, SmartTag
from smarttags.core.search import SEARCH_TEMPLATE, SearchRequest
from smarttags.core.taxonomy import Tag
from smarttags.devtools import stack
from smarttags.entrypoints.compose import Services

VOCABULARY = 20_000
TAGS = 5000  # a taxonomy of 5,000 tags, each titled by one word of the vocabulary


def words(rng: np.random.Generator, n: int) -> list[str]:
    return [f"w{int(i)}" for i in np.minimum(rng.zipf(1.3, n), VOCABULARY)]


def corpus_key(i: int) -> str:
    """The key of the corpus's asset ``i``: 50 folders, for the admin's folder facet."""
    return f"f{i % 50}/{i}.jpg"


def index_corpus(
    services: Services, count: int, rng: np.random.Generator, *, tags: int = TAGS, threshold: float | None = None
) -> None:
    """The benchmark's taxonomy (``tags`` tags titled w1..wN) and ``count`` synthetic assets, refreshed.

    Titles, descriptions and keywords are Zipf-drawn words of the vocabulary; 0-4 smart tags each; two
    formats and twelve months of modification dates (the admin's facets). With ``threshold`` (the admin
    bench) every smart tag carries it as its model's threshold and each asset gets 0-3 near misses just
    below it, drawn by a generator of their own, so the rest of the corpus is the same either way.
    """
    services.taxonomy.import_tags([Tag(f"bench:w{i}", {"en": f"w{i}"}) for i in range(1, tags + 1)])
    near_rng = np.random.default_rng(count)
    batch: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for i in range(count):
        asset = Asset(
            services.settings.aws.bucket,
            corpus_key(i),
            etag="e",
            size=1000 + i,
            content_type="image/jpeg",
            format="JPEG" if i % 3 else "PNG",
            width=640,
            height=480,
            modified=f"2026-{1 + i % 12:02d}-15T00:00:00Z",
            title=" ".join(words(rng, 4)),
            description=" ".join(words(rng, 12)),
            keywords=tuple(words(rng, 2)),
        )
        chosen = {f"bench:{w}" for w in words(rng, int(rng.integers(0, 5))) if int(w[1:]) <= tags}
        asset = asset.with_smart_tags(
            SmartTag(t, round(float(rng.uniform(0.3, 1.0)), 3), "m", threshold=threshold) for t in chosen
        )
        if threshold is not None:
            near = {f"bench:{w}" for w in words(near_rng, int(near_rng.integers(0, 4))) if int(w[1:]) <= tags}
            asset = asset.with_near_misses(
                SmartTag(t, round(float(near_rng.uniform(threshold - 0.15, threshold)), 3), "m", threshold=threshold)
                for t in near - chosen
            )
        batch.append(({"index": {"_index": services.index.name("assets"), "_id": asset.id}}, to_document(asset)))
        if len(batch) == 2000:
            services.index.bulk(batch)
            batch = []
    services.index.bulk(batch)
    services.index.refresh()


def plain_body(text: str) -> dict[str, Any]:
    """The plain query as an outside client sends it: OpenSearch's defaults (best_fields, OR, totals
    counted to 10,000, ties in index order)."""
    return {
        "size": 20,
        "_source": {"excludes": ["embedding"]},
        "query": {"multi_match": {"query": text, "fields": ["title^3", "keywords^2", "description"]}},
    }


def node_cpu_ms(client: Any) -> int:
    stats = client.nodes.stats(metric="process")
    return sum(int(node["process"]["cpu"]["total_in_millis"]) for node in stats["nodes"].values())


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values) * 1000, q))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--port", type=int, default=7210, help="the node's HTTP port (transport: port + 1)")
    parser.add_argument(
        "--opensearch-url",
        help="use this running node (indices bench-search-*, kept and reused) instead of starting one",
    )
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="smarttags-bench-search-"))
    node = None
    if args.opensearch_url is None:
        node = stack.start_opensearch(home, args.port, transport_port=args.port + 1, heap_max="2g")
    url = args.opensearch_url or (node.url if node else "")
    try:
        settings = settings_mod.load(opensearch={"url": url, "index_prefix": "bench-search"}, data_dir=home)
        services = Services(settings)
        services.index.ensure()
        rng = np.random.default_rng(0)
        started = time.perf_counter()
        held = services.opensearch.count(index=services.index.name("assets"))["count"]
        if held != args.assets:
            services.opensearch.delete_by_query(
                index=services.index.name("assets"), body={"query": {"match_all": {}}}, refresh=True
            )
            index_corpus(services, args.assets, rng)
            services.opensearch.indices.forcemerge(index=services.index.name("assets"), max_num_segments=1)
            print(f"indexed {args.assets} assets in {time.perf_counter() - started:.0f} s")
        else:
            index_corpus(services, 0, rng)  # the taxonomy again; the assets are those of an earlier run
            print(f"reusing the {held} assets of an earlier run")
        rng = np.random.default_rng(1)  # the queries, the same whether the corpus is new or reused
        queries = [" ".join(words(rng, int(rng.integers(1, 4)))) for _ in range(args.queries)]
        t0 = time.perf_counter()
        params = [services.searcher.params(SearchRequest(text=q)) for q in queries]
        print(f"params (analysis + taxonomy lookup): {(time.perf_counter() - t0) / len(queries) * 1000:.1f} ms/query")
        marked = [services.searcher.params(SearchRequest(text=q, highlight=True)) for q in queries]
        client = services.opensearch
        index = services.index.name("assets")
        templated: list[float] = []
        highlighted: list[float] = []
        plain: list[float] = []
        for warm in (True, False):
            for q, p, m in zip(queries, params, marked, strict=True):
                t0 = time.perf_counter()
                client.search_template(index=index, body={"id": SEARCH_TEMPLATE, "params": p})
                t1 = time.perf_counter()
                client.search_template(index=index, body={"id": SEARCH_TEMPLATE, "params": m})
                tb = time.perf_counter()
                client.search(index=index, body=plain_body(q))
                t2 = time.perf_counter()
                if not warm:
                    templated.append(t1 - t0)
                    highlighted.append(tb - t1)
                    plain.append(t2 - tb)
        base50, base95 = percentile(plain, 50), percentile(plain, 95)
        print(f"plain multi_match: p50 {base50:.1f} ms, p95 {base95:.1f} ms ({len(plain)} queries)")
        ratios = []
        for name, times in (
            ("templated (tier, matched fields and tags)", templated),
            ("templated with highlights (on request)", highlighted),
        ):
            p50, p95 = percentile(times, 50), percentile(times, 95)
            print(f"{name}: p50 {p50:.1f} ms, p95 {p95:.1f} ms")
            ratios.append(f"{name} p50 {p50 / base50:.2f}, p95 {p95 / base95:.2f}")
        print("ratios to plain multi_match: " + "; ".join(ratios) + " (goal <= 1.5)")
        # The node's own CPU per query, each kind run alone: what the wall times hide on a busy machine.
        bodies = {
            "plain": [("search", plain_body(q)) for q in queries],
            "templated": [("template", {"id": SEARCH_TEMPLATE, "params": p}) for p in params],
            "highlighted": [("template", {"id": SEARCH_TEMPLATE, "params": m}) for m in marked],
        }
        cpu = {}
        for name, calls in bodies.items():
            before = node_cpu_ms(client)
            for kind, body in calls:
                (client.search_template if kind == "template" else client.search)(index=index, body=body)
            cpu[name] = (node_cpu_ms(client) - before) / len(calls)
        print(
            f"node CPU per query: plain {cpu['plain']:.1f} ms, templated {cpu['templated']:.1f} ms "
            f"({cpu['templated'] / cpu['plain']:.2f}), with highlights {cpu['highlighted']:.1f} ms "
            f"({cpu['highlighted'] / cpu['plain']:.2f})"
        )
    finally:
        if node is not None:
            node.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
