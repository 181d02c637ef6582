"""Omnisearch over assets through the stored search template.

Ranking, guaranteed by score bands in the template (``search_templates/search.mustache``):
    tier 1  metadata (title, keywords, description, file name) match all terms: their plain BM25,
            above 1e-17; or the asset's own taxonomy tags (manifest, keywords) do   4e-26
    tier 2  the asset's smart tags together match all terms                 in [2e-26, 3e-26)
    tier 3  its smart tags match any term                                   in [1e-26, 2e-26)
Tier 1 is the metadata match's own BM25, unscaled and alone (smart tags never reorder it; ties fall to
the asset id). A matching term scores idf * tf with idf > 2.3e-10 (up to 2^31 documents) and, in
Lucene's float32 arithmetic, tf > 6e-8 while a field is under ten million times the average length:
above 1e-17, far above the smart-tag tiers, which the template scales by 1e-26
(float32 keeps 24 bits at any magnitude, so their inner order is as exact as at 1). The tiers are a
``dis_max`` (tie breaker 0) of the metadata match and the tag clauses (the own tags and tiers 2-3 summed
among themselves, so an own-tags match stays above tier 2 whatever its smart tags add). Their maximum is
their sum to the bit: a BM25 above 1e-17 absorbs the at most 6e-26 the others could add (below half its
float32 ulp). The maximum is what lets Lucene skip: a disjunction taking the maximum hands the page's
minimum competitive score to each clause, so the BM25 terms skip their blocks that cannot reach the page
as in a plain ``multi_match``, and the tag clauses (at most 3e-26) drop out once the page holds tier-1
hits; a bool of should clauses (a sum) cannot do either, and cost common words twice a plain query.
Tier 2 is a clause inside tier 3 (its assets are tier 3's too): the tags' bonus is computed once. No
constant is added to the BM25 clause: a constant beside it would defeat Lucene's block-max skipping.
Totals are counted to ``COUNT_TO`` (1,000) unless the request asks for more: Lucene starts skipping only
once that many matches are counted. Tiers 2 and 3 put an asset with a promoted matching
tag first (+0.5), then order by the matched tags' confidences via ``rank_feature`` (their sum bounded
by 0.45, so no number of unpromoted tags reaches a promoted one). A hit's tier is read from the named
query it matched, not from its score; the metadata fields that hold a query word are named queries too,
in the post filter, which Lucene evaluates only for the hits of the page (no highlighting needed; ask
for highlights to see the words marked). A unique sort tiebreaker (asset id) keeps paging stable.
The bucket is a post filter unless facets are asked for (aggregations must see it): it matches nearly
every document, and as a query filter it would lead Lucene's conjunction and slow common words twofold.

Tags match through the taxonomy: the query is analyzed in its locale and each token is mapped to the
tags whose titles or synonyms contain it. That mapping is the only thing Python adds to the template's
parameters; any HTTP client can call the same template with the same parameters.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from smarttags.core.asset import Asset, asset_id, feature_name
from smarttags.core.folders import Folder
from smarttags.core.ports import Assets, Index
from smarttags.core.taxonomy import DEFAULT_LOCALE, TaxonomyStore, analyzer_for, fold
from smarttags.errors import NotFound, RequestError
from smarttags.resources import TEMPLATES

log = logging.getLogger(__name__)

SEARCH_TEMPLATE = TEMPLATES["search.mustache"]
SIMILAR_TEMPLATE = TEMPLATES["similar.mustache"]
MAX_QUERY_CHARS = 2000
# How far a search counts its matches by default: past it the total reads "at least" (``total_exact``
# false). Counting costs: Lucene may skip non-competitive hits only once this many are counted, so a
# bound of 10,000 (OpenSearch's default) kept common words near twice a plain query's cost. Callers that
# need more ask (``SearchRequest(count_to=N)``, ``None`` for an exact count): the admin's bulk change does.
COUNT_TO = 1000
MAX_COUNT_TO = 1_000_000
MAX_PAGE_SIZE = 100
MAX_WINDOW = 10_000
# Lucene refuses a query of more than 1024 clauses (maxClauseCount). The metadata match expands to
# tokens x 4 fields, the own tags and tier 2 have one terms clause per token each, tier 3 one
# rank_feature per ranked tag: 64 * 4 + 2 * 64 + 250 = 634 clauses at most (and a few fixed ones); the
# post filter's named field matches are a query of their own (64 * 4).
# Tags beyond the ranked ones still match (the terms filters take any number); they only add no
# confidence to the score.
MAX_QUERY_TOKENS = 64
MAX_RANKED_TAGS = 250
# The named queries of the template, by the tier they stand for.
TIER_OF_QUERY = {
    "tier1_metadata_all_terms": 1,
    "tier1_own_tags_all_terms": 1,
    "tier2_smart_tags_all_terms": 2,
    "tier3_smart_tags_any_term": 3,
}
# The template's scale of the smart-tag tiers (2 and 3) and the own-tags match's score (tier 1).
SMART_TAG_SCALE = 1e-26
# The post filter's named queries, one per metadata field: which fields hold a query word.
FIELD_QUERY = "field:"
TIER_NAMES = {
    1: "metadata matches all terms",
    2: "smart tags match all terms",
    3: "smart tags match some terms",
    0: "all assets",
}


@dataclass(frozen=True)
class SearchRequest:
    text: str = ""
    locale: str = DEFAULT_LOCALE
    folder: str | None = None
    content_types: Sequence[str] = ()
    modified_from: str | None = None
    modified_to: str | None = None
    page: int = 0
    size: int = 20
    # The last hit's ``sort`` values of the previous page: deep paging without a window limit.
    search_after: Sequence[Any] | None = None
    # The metadata fields' text with the matching words marked; which fields matched is always said.
    highlight: bool = False
    # Facet filters, each value required (AND): smart tag ids, keywords, formats, tagging statuses.
    tags: Sequence[str] = ()
    keywords: Sequence[str] = ()
    formats: Sequence[str] = ()
    statuses: Sequence[str] = ()
    # Keep assets with a smart tag at this confidence or above ("0.1" to "0.9"): the chosen tags (each
    # of them) when ``tags`` names some, else any of the asset's smart tags.
    min_confidence: str | None = None
    facets: bool = False  # count the matches per tag, keyword, folder, format, status and month
    # Count the matches up to this many (``SearchResult.total_exact`` says if the total is all of them);
    # None counts them all.
    count_to: int | None = COUNT_TO


@dataclass(frozen=True)
class Hit:
    asset: Asset
    score: float
    tier: int
    matched_tags: list[str]
    highlights: dict[str, list[str]]
    sort: list[Any] = field(default_factory=list)
    # The metadata fields holding a query word (title, keywords, description, file_name).
    matched_fields: list[str] = field(default_factory=list)

    @property
    def asset_id(self) -> str:
        return self.asset.id

    @property
    def key(self) -> str:
        return self.asset.key

    @property
    def relevance(self) -> float:
        """The score inside its tier: BM25 in tier 1 (0 for a match by own tags alone), in tiers 2 and 3
        the promoted bonus plus the matched tags' confidences (0 to 1)."""
        if self.tier in (2, 3):
            return self.score / SMART_TAG_SCALE - (4 - self.tier)  # bands [2, 3) and [1, 2)
        return self.score if self.tier == 1 and self.score > 1000 * SMART_TAG_SCALE else 0.0

    @property
    def why(self) -> str:
        parts = [TIER_NAMES[self.tier]]
        if self.matched_fields:
            parts.append("metadata: " + ", ".join(sorted(self.matched_fields)))
        if self.matched_tags:
            parts.append("smart tags: " + ", ".join(self.matched_tags))
        return "; ".join(parts)


@dataclass(frozen=True)
class Bucket:
    """One value of a facet and how many matching assets have it."""

    value: str
    count: int


@dataclass(frozen=True)
class SearchResult:
    total: int
    hits: list[Hit]
    params: dict[str, Any] = field(repr=False)
    # False when counting stopped at the request's ``count_to``: there are at least ``total`` matches.
    total_exact: bool = True
    # Facet name (smart_tags, keywords, folders, formats, statuses, months) -> its values, most first
    # (months newest first, as "YYYY-MM"); empty unless the request asked for facets.
    facets: dict[str, list[Bucket]] = field(default_factory=dict)


MAX_FACET_FILTERS = 20
# The confidence filter's steps, as ``adapters/asset_index.py`` writes them into ``smart_bands``.
CONFIDENCE_STEPS = tuple(f"0.{n}" for n in range(1, 10))


def _facets(aggregations: dict[str, Any]) -> dict[str, list[Bucket]]:
    out: dict[str, list[Bucket]] = {}
    for name, agg in aggregations.items():
        buckets = agg.get("buckets", [])
        if name == "months":
            out[name] = [Bucket(str(b["key_as_string"])[:7], int(b["doc_count"])) for b in buckets]
        else:
            out[name] = [Bucket(str(b["key"]), int(b["doc_count"])) for b in buckets]
    return out


class Searcher:
    def __init__(self, index: Index, assets: Assets, taxonomy: TaxonomyStore, bucket: str) -> None:
        self._index = index
        self._assets = assets
        self._taxonomy = taxonomy
        self._bucket = bucket

    def params(self, request: SearchRequest) -> dict[str, Any]:
        """The stored template's parameters for a request (validated; the query text stays data)."""
        text = request.text.strip()
        if len(text) > MAX_QUERY_CHARS:
            raise RequestError(f"the query has {len(text)} characters; at most {MAX_QUERY_CHARS} are allowed")
        if not 1 <= request.size <= MAX_PAGE_SIZE:
            raise RequestError(f"page size must be between 1 and {MAX_PAGE_SIZE}")
        if request.page < 0 or (request.page + 1) * request.size > MAX_WINDOW:
            raise RequestError(f"pages reach at most {MAX_WINDOW} results; use search_after for deeper pages")
        if request.count_to is not None and not 1 <= request.count_to <= MAX_COUNT_TO:
            raise RequestError(f"count_to must be between 1 and {MAX_COUNT_TO} (None counts every match)")
        if request.search_after is not None and (request.page or len(request.search_after) != 2):
            raise RequestError("search_after takes the previous page's last [score, asset_id] and no page number")
        filters = {
            "filter_tags": request.tags,
            "filter_keywords": request.keywords,
            "filter_formats": request.formats,
            "filter_statuses": request.statuses,
        }
        for values in filters.values():
            if len(values) > MAX_FACET_FILTERS or any(not v or len(v) > 512 for v in values):
                raise RequestError(f"at most {MAX_FACET_FILTERS} facet values of 1 to 512 characters each")
        band = request.min_confidence
        if band is not None and band not in CONFIDENCE_STEPS:
            raise RequestError(f"confidence must be one of {', '.join(CONFIDENCE_STEPS)}")
        tokens = self._index.analyze(fold(text), analyzer_for(request.locale)) if text else []
        metadata_tokens = set(self._index.analyze(text, "metadata_text", kind="assets")) if text else set()
        distinct = max(len(set(tokens)), len(metadata_tokens))
        if distinct > MAX_QUERY_TOKENS:
            raise RequestError(f"the query has {distinct} distinct words; at most {MAX_QUERY_TOKENS} are allowed")
        # Tags titled only in the fallback locale match the query analysed with the fallback's analyzer.
        fallback = (
            self._index.analyze(fold(text), analyzer_for(DEFAULT_LOCALE))
            if tokens and analyzer_for(request.locale) != analyzer_for(DEFAULT_LOCALE)
            else None
        )
        by_token = self._taxonomy.load().tags_for_tokens(tokens, request.locale, fallback) if tokens else {}
        union = sorted({tag for tags in by_token.values() for tag in tags})
        # Implies a non-empty union: the template puts the own-tags clause in the branch of the tag clauses.
        every_token_tagged = bool(by_token) and all(by_token.values())
        ranked = union[:MAX_RANKED_TAGS]
        # Below the promoted bonus (0.5): saturated rank features are each < 1.
        share = 0.45 / max(len(ranked), 1)
        return {
            "query": text,
            "has_query": bool(text),
            "highlight": request.highlight,
            "bucket": self._bucket,
            "folder": self._folder(request.folder),
            "content_types": list(request.content_types),
            "has_content_types": bool(request.content_types),
            "modified_from": request.modified_from,
            "modified_to": request.modified_to,
            "from": request.page * request.size,
            "size": request.size,
            "search_after": list(request.search_after or []),
            "has_search_after": request.search_after is not None,
            # For each term, the tags it matches: the asset's own tags (tier 1) or its smart tags (tier 2)
            # must hold one of them for every term.
            "tags_per_term": [{"tags": tags} for tags in by_token.values()] if every_token_tagged else [],
            "every_term_tagged": every_token_tagged,
            "smart_any": union,
            "has_smart_any": bool(union),
            "features": [{"feature": feature_name(tag), "boost": round(share, 6)} for tag in ranked],
            **{name: list(dict.fromkeys(values)) for name, values in filters.items()},
            "confidence_range": band if band and not request.tags else None,
            "confidence_bands": [f"{tag}@{band}" for tag in dict.fromkeys(request.tags)] if band else [],
            "facets": request.facets,
            "count_to": "true" if request.count_to is None else request.count_to,
        }

    def search(self, request: SearchRequest) -> SearchResult:
        params = self.params(request)
        response = self._index.search_template("assets", SEARCH_TEMPLATE, params)
        wanted = set(params["smart_any"])
        hits = []
        for raw in response["hits"]["hits"]:
            asset = self._assets.from_source(raw["_source"])
            score = float(raw.get("_score") or 0.0)
            # The best tier whose named query matched; no query means no tiers.
            names = raw.get("matched_queries") or ()
            tier = min((TIER_OF_QUERY[name] for name in names if name in TIER_OF_QUERY), default=0)
            hits.append(
                Hit(
                    asset=asset,
                    score=score,
                    tier=tier,
                    matched_tags=[t for t in asset.smart_ids if t in wanted],
                    highlights=raw.get("highlight") or {},
                    sort=list(raw.get("sort") or []),
                    matched_fields=[n[len(FIELD_QUERY) :] for n in names if n.startswith(FIELD_QUERY)],
                )
            )
        total = response["hits"]["total"]
        return SearchResult(
            total=int(total["value"] if isinstance(total, dict) else total),
            hits=hits,
            params=params,
            facets=_facets(response.get("aggregations") or {}),
            total_exact=not isinstance(total, dict) or total.get("relation", "eq") == "eq",
        )

    def _folder(self, folder: str | None) -> str | None:
        """A folder as a prefix ("seed") or as a URL of this bucket ("s3://bucket/seed/")."""
        if not (folder or "").strip():
            return None
        assert folder is not None
        try:
            parsed = Folder.parse(folder, self._bucket)
        except ValueError as exc:
            raise RequestError(f"folder: {exc}") from None
        if parsed.bucket != self._bucket:
            raise RequestError(f"folder {folder} is not in bucket {self._bucket!r}, the one this store searches")
        return parsed.path or None

    def similar(self, key: str, *, folder: str | None = None, size: int = 10) -> list[Hit]:
        """The assets that look most like ``key`` (k-NN on embeddings, Lucene engine, cosine)."""
        if not 1 <= size <= MAX_PAGE_SIZE:
            raise RequestError(f"size must be between 1 and {MAX_PAGE_SIZE}")
        doc_id = asset_id(self._bucket, key)
        found = self._assets.get(doc_id)
        if found is None:
            raise NotFound(f"no asset s3://{self._bucket}/{key}")
        if found.asset.embedding is None:
            raise NotFound(f"s3://{self._bucket}/{key} has no embedding yet (tag or train first)")
        embedding = found.asset.embedding
        params = {
            "vector": list(embedding.vector),
            "k": size,
            "size": size,
            "bucket": self._bucket,
            "backbone": embedding.backbone,
            "folder": self._folder(folder),
            "exclude_ids": [doc_id],
        }
        response = self._index.search_template("vectors", SIMILAR_TEMPLATE, params)
        raw_hits = response["hits"]["hits"]
        sources = self._index.mget("assets", [raw["_id"] for raw in raw_hits])
        return [
            Hit(
                asset=self._assets.from_source(source),
                score=float(raw.get("_score") or 0.0),
                tier=0,
                matched_tags=[],
                highlights={},
            )
            for raw, source in zip(raw_hits, sources, strict=True)
            # A vector its asset no longer names (new bytes, not embedded yet) is no match.
            if source is not None and source.get("embedding_etag") == raw["_source"]["etag"]
        ]
