"""Search on the embedded OpenSearch: the tiers, the edge cases of query text, moderation, find similar."""

import itertools
import json
import random
from dataclasses import replace

import numpy as np
import pytest
from smarttags.core.asset import Asset, SmartTag, StoredEmbedding
from smarttags.core.search import COUNT_TO, SEARCH_TEMPLATE, SearchRequest
from smarttags.core.taxonomy import Tag
from smarttags.errors import RequestError

pytestmark = pytest.mark.slow

TAXONOMY = [
    Tag("people:woman", {"en": "Woman", "de": "Frau"}, {"en": ["lady"]}),
    Tag("people:man", {"en": "Man", "de": "Mann"}),
    Tag("activities:running", {"en": "Running", "de": "Laufen"}, {"en": ["jogging"]}),
    Tag("animals:dog", {"en": "Dog", "de": "Hund"}),
]


def _asset(services, key, *, title=None, description=None, keywords=(), smart=(), modified=None, embedding=None):
    asset = Asset(
        services.settings.aws.bucket,
        key,
        etag="e",
        size=1,
        content_type="image/jpeg",
        modified=modified,
        title=title,
        description=description,
        keywords=tuple(keywords),
        embedding=StoredEmbedding(tuple(embedding), "test", "e") if embedding is not None else None,
    ).with_smart_tags(SmartTag(tag, conf, "m1") for tag, conf in smart)
    services.assets.put(asset)
    return asset.id


@pytest.fixture
def corpus(services):
    services.taxonomy.import_tags(TAXONOMY)
    ids = {
        "meta_both": _asset(services, "a/meta_both.jpg", title="Woman running in the park"),
        "meta_w_only": _asset(services, "a/meta_w.jpg", title="A woman"),
        "smart_both": _asset(services, "a/smart_both.jpg", smart=[("people:woman", 0.9), ("activities:running", 0.8)]),
        "smart_w": _asset(services, "a/smart_w.jpg", smart=[("people:woman", 0.7)]),
        "smart_r": _asset(services, "b/smart_r.jpg", smart=[("activities:running", 0.95)]),
        "meta_w_smart_r": _asset(
            services, "b/mixed.jpg", title="Portrait of a woman", smart=[("activities:running", 0.5)]
        ),
        "dog": _asset(services, "b/dog.jpg", title="Dog", smart=[("animals:dog", 0.9)]),
    }
    services.index.refresh()
    return ids


def _keys(result):
    return [(hit.key.rsplit("/", 1)[-1].split(".")[0], hit.tier) for hit in result.hits]


def _search(services, text, **kwargs):
    return services.searcher.search(SearchRequest(text=text, **kwargs))


def test_woman_running_comes_in_tier_order(services, corpus):
    result = _search(services, "woman running")
    assert _keys(result) == [
        ("meta_both", 1),
        ("smart_both", 2),
        ("smart_r", 3),  # higher confidence first inside a tier
        ("smart_w", 3),
        ("mixed", 3),
    ]
    # Metadata matching only "woman" is not a hit: terms are ANDed over metadata.
    assert "meta_w" not in [k for k, _ in _keys(result)]
    first = result.hits[0]
    assert first.matched_fields == ["title"] and first.highlights == {}  # highlights only on request
    assert first.why == "metadata matches all terms; metadata: title"
    marked = _search(services, "woman running", highlight=True).hits[0]
    assert list(marked.highlights) == ["title"] and "<mark>" in marked.highlights["title"][0]
    # Tier 3: the fields holding some of the words are named (the title holds "woman").
    assert dict((h.key, h.matched_fields) for h in result.hits)["b/mixed.jpg"] == ["title"]
    assert 0 < result.hits[2].relevance < 1 < result.hits[2].score * 1e26 and result.hits[0].relevance > 0
    assert result.hits[1].matched_tags == ["people:woman", "activities:running"]
    assert "smart tags" in result.hits[1].why


@pytest.mark.parametrize("text", ["the woman is running", "WOMAN Running", "woman runs", "lady jogging"])
def test_stop_words_case_stemming_and_synonyms(services, corpus, text):
    tiers = dict(_keys(_search(services, text)))
    assert tiers["smart_both"] == 2 and tiers["smart_w"] == 3
    if "lady" not in text:
        assert tiers["meta_both"] == 1


def test_locale_titles(services, corpus):
    # One term, matched by a German title: every term is covered by smart tags, so tier 2.
    assert dict(_keys(_search(services, "Frau", locale="de"))) == {"smart_both": 2, "smart_w": 2}
    assert dict(_keys(_search(services, "Hunde", locale="de"))) == {"dog": 2}


def test_tag_ids_do_not_leak_into_text_matching(services, corpus):
    # "people" and "animals" are namespaces of tag ids, not titles: no hit.
    assert _search(services, "people").total == 0
    assert _search(services, "animals").total == 0


def test_quoted_phrase_and_query_syntax_are_plain_text(services, corpus):
    assert _keys(_search(services, '"woman running"'))[:2] == [("meta_both", 1), ("smart_both", 2)]
    for text in ['wo"man', "back\\slash", "{{query}}", "}}]}}", "run*", "title:woman", '"}}, "size": 1000, {{"']:
        _search(services, text)  # no error, no injection


def test_template_escapes_every_parameter(services, corpus):
    nasty = '"}}]}, "size": 1000, "query": {"match_all": {}}, "x": [{{"'
    params = services.searcher.params(SearchRequest(text=nasty))
    rendered = services.index.render_template(SEARCH_TEMPLATE, params)["template_output"]
    assert rendered["size"] == 20
    tier1 = rendered["query"]["bool"]["must"][0]["dis_max"]["queries"][0]
    assert tier1["multi_match"]["query"] == nasty
    assert {q["match"][f]["query"] for q in rendered["post_filter"]["bool"]["should"] for f in q["match"]} == {nasty}


def test_tiers_are_a_dis_max_so_lucene_can_skip(services, corpus):
    # A bool of should clauses would sum the tiers: Lucene could then not hand the page's minimum score
    # to the BM25 terms, nor drop the 1e-26 tag clauses, and common words cost twice a plain query.
    params = services.searcher.params(SearchRequest(text="woman running"))
    rendered = services.index.render_template(SEARCH_TEMPLATE, params)["template_output"]
    tiers = rendered["query"]["bool"]["must"]
    assert len(tiers) == 1 and set(tiers[0]) == {"dis_max"}
    assert tiers[0]["dis_max"].get("tie_breaker", 0) == 0  # the maximum: the sum would need tie_breaker 1
    tier1, tags = tiers[0]["dis_max"]["queries"]
    assert tier1["multi_match"]["_name"] == "tier1_metadata_all_terms"
    # The own tags and the smart tags are summed among themselves (own tags stay above tier 2).
    names = [next(iter(q.values())).get("_name") for q in tags["bool"]["should"]]
    assert names == ["tier1_own_tags_all_terms", "tier3_smart_tags_any_term"]
    assert rendered["track_total_hits"] == COUNT_TO == 1000


def test_counting_stops_where_the_request_says(services, corpus):
    assert (full := _search(services, "woman")).total == 5 and full.total_exact
    assert (few := _search(services, "woman", count_to=2)).total == 2 and not few.total_exact
    assert len(few.hits) == 5  # counting less finds the same hits
    assert [h.asset_id for h in few.hits] == [h.asset_id for h in full.hits]
    assert (exact := _search(services, "woman", count_to=None)).total == 5 and exact.total_exact
    params = services.searcher.params(SearchRequest(text="woman", count_to=None))
    assert services.index.render_template(SEARCH_TEMPLATE, params)["template_output"]["track_total_hits"] is True
    with pytest.raises(RequestError, match="count_to"):
        _search(services, "woman", count_to=0)


def test_empty_and_very_long_queries(services, corpus):
    everything = _search(services, "   ")
    assert everything.total == 7 and {h.tier for h in everything.hits} == {0}
    long_text = ("woman running " * 80)[:1000]
    assert len(long_text) == 1000
    assert _keys(_search(services, long_text))[:2] == [("meta_both", 1), ("smart_both", 2)]


def test_filters_by_folder(services, corpus):
    assert {k for k, _ in _keys(_search(services, "woman running", folder="b"))} == {"smart_r", "mixed"}


def test_moderation_is_reflected_in_the_next_search(services, corpus):
    services.moderation.remove(corpus["smart_r"], "activities:running", user="mod")
    assert "smart_r" not in [k for k, _ in _keys(_search(services, "running"))]
    services.moderation.promote(corpus["smart_w"], "people:woman", user="mod")
    tier3 = [k for k, t in _keys(_search(services, "woman running")) if t == 3]
    assert tier3[0] == "smart_w"
    audit = services.moderation.audit(asset_id=corpus["smart_w"])
    assert audit[0]["action"] == "promote_tag" and audit[0]["user"] == "mod"


def test_find_similar(services):
    rng = np.random.default_rng(3)
    base = rng.normal(size=services.embedding_dim)
    vectors = {}
    for name, noise in [("query", 0.0), ("near", 0.1), ("middle", 0.6), ("far", 3.0)]:
        v = base + noise * rng.normal(size=services.embedding_dim)
        vectors[name] = (v / np.linalg.norm(v)).tolist()
        _asset(services, f"sim/{name}.jpg", embedding=vectors[name])
    services.assets.refresh()
    hits = services.searcher.similar("sim/query.jpg", size=3)
    assert [h.key for h in hits] == ["sim/near.jpg", "sim/middle.jpg", "sim/far.jpg"]

    # New bytes not embedded yet: the old vector is no longer the asset's, so it is no match.
    bucket = services.settings.aws.bucket
    near = services.assets.get(Asset(bucket, "sim/near.jpg").id)
    services.assets.put(replace(near.asset, etag="e2", embedding=None), expected=near)
    # Another backbone's vector (a model change half done) is never compared with this one.
    other = Asset(bucket, "sim/other.jpg", etag="e", embedding=StoredEmbedding(tuple(vectors["query"]), "other", "e"))
    services.assets.put(other)
    services.assets.refresh()
    hits = services.searcher.similar("sim/query.jpg", size=3)
    assert [h.key for h in hits] == ["sim/middle.jpg", "sim/far.jpg"]


WORDS = ["red", "blue", "green", "car", "tree", "boat"]


def test_property_no_lower_tier_outranks_a_higher_one(services):
    """Random corpora and queries: every hit sits in the tier its fields say, tiers never interleave,
    and nothing that belongs in a tier is missing."""
    rng = random.Random(7)
    services.taxonomy.import_tags([Tag(f"c:{w}", {"en": w.title()}) for w in WORDS])
    docs = {}
    for i in range(60):
        meta = rng.sample(WORDS, rng.randint(0, 3))
        smart = {w: round(rng.uniform(0.05, 1.0), 3) for w in rng.sample(WORDS, rng.randint(0, 3))}
        key = f"p/{i}.jpg"
        _asset(services, key, title=" ".join(meta) or None, smart=[(f"c:{w}", c) for w, c in smart.items()])
        docs[key] = (set(meta), set(smart))
    services.index.refresh()
    for _ in range(25):
        terms = set(rng.sample(WORDS, rng.randint(1, 3)))
        result = _search(services, " ".join(terms), size=100)
        expected = {}
        for key, (meta, smart) in docs.items():
            tier = 1 if terms <= meta else 2 if terms <= smart else 3 if terms & smart else 0
            if tier:
                expected[key] = tier
        got = {hit.key: hit.tier for hit in result.hits}
        assert got == expected, json.dumps(sorted(terms))
        tiers = [hit.tier for hit in result.hits]
        assert tiers == sorted(tiers)


def test_property_tier1_is_in_bm25_order(services, os_client):
    """Random titles and descriptions: tier 1 follows the plain metadata BM25 score, whatever the smart tags."""
    rng = random.Random(11)
    services.taxonomy.import_tags([Tag(f"c:{w}", {"en": w.title()}) for w in WORDS])
    filler = ["old", "town", "sunny", "day", "photo", "street", "light"]
    for i in range(60):
        title = " ".join(rng.choices(WORDS + filler, k=rng.randint(1, 4)))
        description = " ".join(rng.choices(WORDS + filler, k=rng.randint(0, 30))) or None
        smart = [(f"c:{w}", round(rng.uniform(0.05, 1.0), 3)) for w in rng.sample(WORDS, rng.randint(0, 3))]
        _asset(services, f"bm/{i}.jpg", title=title, description=description, smart=smart)
    services.index.refresh()
    checked = 0
    for _ in range(20):
        text = " ".join(rng.sample(WORDS, rng.randint(1, 2)))
        result = _search(services, text, size=100)
        tier1 = [h for h in result.hits if h.tier == 1]
        plain = os_client.search(
            index=services.index.name("assets"),
            body={
                "size": 100,
                "query": {
                    "multi_match": {
                        "query": text,
                        "type": "cross_fields",
                        "operator": "and",
                        "fields": ["title^3", "keywords^2", "description", "file_name"],
                        "analyzer": "metadata_text",
                    }
                },
            },
        )
        bm25 = {h["_source"]["key"]: h["_score"] for h in plain["hits"]["hits"]}
        assert {h.key for h in tier1} == set(bm25), text
        # Tier 1 scores are that very BM25, unscaled: the same numbers, in order.
        assert [h.score for h in tier1] == [bm25[h.key] for h in tier1], text
        scores = [bm25[h.key] for h in tier1]
        assert all(b <= a for a, b in itertools.pairwise(scores)), (text, scores)
        assert all(h.score < 3e-26 for h in result.hits if h.tier > 1)
        checked += len(tier1) > 1
    assert checked >= 10  # the property was exercised on lists with an order to get wrong


def test_paging_through_ties_returns_each_hit_once(services):
    services.taxonomy.import_tags(TAXONOMY)
    # 0.616 and 0.617 share a rank feature's 8 stored bits: many equal scores.
    keys = {_asset(services, f"tie/{i}.jpg", smart=[("people:woman", 0.616 + (i % 2) / 1000)]) for i in range(45)}
    services.index.refresh()
    by_page = []
    for page in range(7):
        by_page += [h.asset_id for h in _search(services, "woman", size=7, page=page).hits]
    assert sorted(by_page) == sorted(keys)
    by_cursor, after = [], None
    while True:
        hits = _search(services, "woman", size=7, search_after=after).hits
        if not hits:
            break
        by_cursor += [h.asset_id for h in hits]
        after = hits[-1].sort
    assert by_cursor == by_page


def test_too_many_distinct_words_is_a_clean_refusal(services, corpus):
    from smarttags.errors import RequestError

    chinese = "".join(chr(0x4E00 + i) for i in range(1000))
    with pytest.raises(RequestError, match="distinct words"):
        _search(services, chinese, locale="zh")
    words = " ".join(f"w{i}" for i in range(300))
    with pytest.raises(RequestError, match="distinct words"):
        _search(services, words)
    assert _search(services, " ".join(["woman running"] * 30)).total == 5  # repeats are not distinct


def test_a_word_matching_thousands_of_tags(services):
    """A 5,000-tag taxonomy in which 2,000 tags share the word "jacket": no maxClauseCount error."""
    tags = [Tag(f"wear:jacket/{i}", {"en": f"Jacket model {i}"}) for i in range(2000)]
    tags += [Tag(f"misc:item/{i}", {"en": f"Item {i}"}) for i in range(3000)]
    services.taxonomy.import_tags(tags)
    assert len(services.taxonomy.load()) == 5000
    _asset(services, "j/first.jpg", smart=[("wear:jacket/0", 0.9)])
    _asset(services, "j/last.jpg", smart=[("wear:jacket/1999", 0.8)])  # beyond the ranked tags: still found
    _asset(services, "j/meta.jpg", title="A red jacket")
    services.index.refresh()
    assert _keys(_search(services, "jacket")) == [("meta", 1), ("first", 2), ("last", 2)]


def test_folder_as_s3_url(services, corpus):
    bucket = services.settings.aws.bucket
    expected = {"smart_r", "mixed"}
    assert {k for k, _ in _keys(_search(services, "woman running", folder=f"s3://{bucket}/b/"))} == expected
    from smarttags.errors import RequestError

    with pytest.raises(RequestError, match="not in bucket"):
        _search(services, "woman", folder="s3://other-bucket/b/")


def test_minimal_http_call_uses_template_defaults(services, os_client, corpus):
    body = {
        "id": SEARCH_TEMPLATE,
        "params": {"query": "woman", "has_query": True, "bucket": services.settings.aws.bucket},
    }
    response = os_client.search_template(index=services.index.name("assets"), body=body)
    assert {h["_source"]["key"] for h in response["hits"]["hits"]} == {
        "a/meta_w.jpg",
        "a/meta_both.jpg",
        "b/mixed.jpg",
    }


@pytest.mark.parametrize("locale", ["fr", "pl", "it", "ja", "ru"])
def test_english_titles_are_the_fallback_in_every_locale(services, corpus, locale):
    assert {"smart_both", "smart_r"} <= {k for k, _ in _keys(_search(services, "running", locale=locale))}


def test_english_titles_and_synonyms_still_match_a_tag_with_a_german_title(services, corpus):
    assert dict(_keys(_search(services, "lady", locale="de"))) == {"smart_both": 2, "smart_w": 2}
    assert dict(_keys(_search(services, "woman", locale="de")))["smart_w"] == 2


def test_accents_fold_in_tag_titles_as_in_metadata(services):
    services.taxonomy.import_tags([Tag("food:creme-brulee", {"en": "Crème brûlée", "fr": "Crème brûlée"})])
    _asset(services, "f/dessert.jpg", smart=[("food:creme-brulee", 0.9)])
    _asset(services, "f/menu.jpg", title="Crème brûlée")
    services.index.refresh()
    for text, locale in [("creme brulee", "en"), ("crème brûlée", "en"), ("creme brulee", "fr")]:
        assert _keys(_search(services, text, locale=locale)) == [("menu", 1), ("dessert", 2)], (text, locale)


def test_facets_count_by_aggregations_and_filter_the_results(services, corpus):
    odd = 'x"}}, {"match_all": {}'
    _asset(services, "c/odd.jpg", title="Odd", keywords=[odd, "park"], smart=[("people:woman", 0.6)])
    services.index.refresh()
    result = services.searcher.search(SearchRequest(facets=True))
    assert result.total == 8
    tags = {b.value: b.count for b in result.facets["smart_tags"]}
    assert tags == {"people:woman": 3, "activities:running": 3, "animals:dog": 1}
    assert {b.value: b.count for b in result.facets["folders"]} == {"a": 4, "b": 3, "c": 1}
    assert {b.value: b.count for b in result.facets["statuses"]} == {"pending": 8}
    assert services.searcher.search(SearchRequest(folder="c")).total == 1  # a folder facet value is a folder
    assert {b.value for b in result.facets["keywords"]} == {odd, "park"}
    assert services.searcher.search(SearchRequest()).facets == {}  # only when asked

    both = services.searcher.search(SearchRequest(tags=["people:woman", "activities:running"], facets=True))
    assert [h.key for h in both.hits] == ["a/smart_both.jpg"]  # every chosen tag, not any
    assert {b.value: b.count for b in both.facets["smart_tags"]} == {"people:woman": 1, "activities:running": 1}
    # A hostile facet value stays one term: it matches its asset and changes nothing else.
    assert [h.key for h in services.searcher.search(SearchRequest(keywords=[odd])).hits] == ["c/odd.jpg"]
    assert services.searcher.search(SearchRequest(text="woman", statuses=["failed"])).total == 0
    with pytest.raises(RequestError, match="facet values"):
        services.searcher.search(SearchRequest(tags=["x"] * 21))


def test_confidence_filter_binds_to_the_chosen_tags(services, corpus):
    def keys(**kwargs):
        return sorted(h.key for h in services.searcher.search(SearchRequest(**kwargs)).hits)

    # No tag chosen: any smart tag at 0.9 or above.
    assert keys(min_confidence="0.9") == ["a/smart_both.jpg", "b/dog.jpg", "b/smart_r.jpg"]
    # A chosen tag: that tag's own confidence (smart_both has Woman at 0.9 but Running only at 0.8).
    assert keys(tags=["activities:running"], min_confidence="0.9") == ["b/smart_r.jpg"]
    assert keys(tags=["people:woman"], min_confidence="0.7") == ["a/smart_both.jpg", "a/smart_w.jpg"]
    assert keys(tags=["people:woman", "activities:running"], min_confidence="0.8") == ["a/smart_both.jpg"]
    assert keys(tags=["people:woman", "activities:running"], min_confidence="0.9") == []
    with pytest.raises(RequestError, match=r"confidence must be one of 0\.1"):
        services.searcher.search(SearchRequest(min_confidence="0.75"))


def test_a_promoted_match_outranks_any_number_of_unpromoted_ones(services):
    services.taxonomy.import_tags(
        [Tag(f"people:woman/{i}", {"en": f"Woman {i}"}) for i in range(4)] + [Tag("animals:dog", {"en": "Dog"})]
    )
    promoted = _asset(services, "p/promoted.jpg", smart=[("people:woman/0", 0.3)])
    services.moderation.promote(promoted, "people:woman/0", user="mod")
    _asset(services, "p/many.jpg", smart=[(f"people:woman/{i}", 0.99) for i in range(4)])
    _asset(services, "p/one.jpg", smart=[("people:woman/1", 0.99)])
    services.index.refresh()
    # Tier 2 (every term covered) and tier 3 ("dog" covered by no tag of theirs).
    assert _keys(_search(services, "woman")) == [("promoted", 2), ("many", 2), ("one", 2)]
    assert _keys(_search(services, "woman dog")) == [("promoted", 3), ("many", 3), ("one", 3)]


def test_multi_word_synonyms_match_as_a_whole(services):
    services.taxonomy.import_tags(
        [Tag("sport:marathon", {"en": "Marathon", "de": "Marathon"}, {"en": ["road running", "long-distance race"]})]
    )
    _asset(services, "s/a.jpg", smart=[("sport:marathon", 0.9)])
    services.index.refresh()
    for text in ["road running", "the road running", "Long-distance race", "marathon"]:
        assert _keys(_search(services, text)) == [("a", 2)], text
    assert _keys(_search(services, "road running", locale="de")) == [("a", 2)]  # the English fallback
    for text in ["road", "running", "running road", "long race"]:
        assert _search(services, text).total == 0, text
    # "road running" covers two terms, "city" none: some terms match.
    assert _keys(_search(services, "city road running")) == [("a", 3)]


def test_own_taxonomy_tags_rank_in_tier_1(services):
    services.taxonomy.import_tags(TAXONOMY)
    bucket = services.settings.aws.bucket
    own = Asset(bucket, "o/own.jpg", etag="e", size=1, tags=("people:woman", "activities:running"))
    services.assets.put(own)
    _asset(services, "o/meta.jpg", title="Woman running")
    _asset(services, "o/smart.jpg", smart=[("people:woman", 0.9), ("activities:running", 0.9)])
    services.index.refresh()
    # Metadata text first by BM25, then the own tags (no BM25), then smart tags.
    assert _keys(_search(services, "woman running")) == [("meta", 1), ("own", 1), ("smart", 2)]
    assert _keys(_search(services, "lady jogging")) == [("own", 1), ("smart", 2)]  # the tags' synonyms
    # An own tag covering only some terms is no tier-1 match (tier 3 is for smart tags only).
    assert "own" not in dict(_keys(_search(services, "woman dog")))


def test_assets_are_found_by_file_name(services):
    _asset(services, "shoot/2024/IMG_2041_beach-sunset.jpg")
    _asset(services, "shoot/2024/other.jpg", title="Studio")
    services.index.refresh()
    for text in ["beach sunset", "IMG_2041", "img_2041_beach-sunset.jpg", "sunsets"]:
        assert _keys(_search(services, text)) == [("IMG_2041_beach-sunset", 1)], text
    assert _search(services, "2024").total == 0  # the folder is not the name: use --folder
    first = _search(services, "beach", highlight=True).hits[0]
    assert first.highlights == {"file_name": ["IMG_2041_<mark>beach</mark>-sunset.jpg"]}
    assert first.why == "metadata matches all terms; metadata: file_name"


@pytest.mark.parametrize("text", ["women", "runner", "ran", "Runners", "woman's"])
def test_irregular_and_agent_forms_find_the_tags(services, corpus, text):
    woman = text.startswith("wom")
    expected = {"smart_both", "smart_w"} if woman else {"smart_both", "smart_r", "mixed"}
    tier2 = {k for k, tier in _keys(_search(services, text)) if tier == 2}
    assert tier2 == expected - ({"mixed"} if woman else set()), text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("women", {"one_woman", "two_women"}),
        ("woman", {"one_woman", "two_women"}),
        ("ran", {"running", "runner", "ran"}),
        ("runner", {"running", "runner", "ran"}),
        ("Runners", {"running", "runner", "ran"}),
        ("running", {"running", "runner", "ran"}),
        ("children", {"child"}),
    ],
)
def test_irregular_and_agent_forms_find_the_metadata(services, text, expected):
    """Titles and descriptions, no tags: the metadata analyzer knows the English irregular forms too."""
    _asset(services, "irr/one_woman.jpg", title="A woman on the beach")
    _asset(services, "irr/two_women.jpg", description="Two women by the sea")
    _asset(services, "irr/running.jpg", title="Running in the park")
    _asset(services, "irr/runner.jpg", description="A lone runner")
    _asset(services, "irr/ran.jpg", keywords=["ran"])
    _asset(services, "irr/child.jpg", title="Child with a kite")
    services.index.refresh()
    tier1 = {k for k, tier in _keys(_search(services, text)) if tier == 1}
    assert tier1 == expected, text


def test_the_metadata_analyzer_and_the_tag_analyzer_share_the_irregular_forms(services):
    from smarttags.core.taxonomy import analyzer_for, english_irregular_rules

    rules = services.index.index_body("assets")["settings"]["analysis"]["filter"]["english_irregular"]["rules"]
    assert rules == english_irregular_rules() and "women => woman" in rules
    text = "women ran runners fishermen children's"
    metadata = services.index.analyze(text, "metadata_text", kind="assets")
    assert metadata == ["woman", "run", "run", "fish", "child"]
    assert metadata == services.index.analyze(text, analyzer_for("en"))


def test_cli_searches_a_word_that_looks_like_an_option(services, corpus, tmp_path, capsys):
    from smarttags.entrypoints import cli

    aws = services.settings.aws
    config = tmp_path / "smarttags.toml"
    config.write_text(
        f'[opensearch]\nurl = "{services.settings.opensearch.url}"\n'
        f'index_prefix = "{services.settings.opensearch.index_prefix}"\n'
        f'[aws]\nendpoint_url = "{aws.endpoint_url}"\nbucket = "{aws.bucket}"\n'
        'access_key_id = "testing"\nsecret_access_key = "testing"\n'
    )
    assert cli.main(["--config", str(config), "search", "-woman", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert {h["key"] for h in hits} >= {"a/meta_w.jpg", "a/smart_w.jpg"}
    assert cli.main(["--config", str(config), "search", "--size", "1", "-woman", "running"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "5 result(s) for '-woman running'" and out[2].split()[1] == "a/meta_both.jpg"


def test_sixty_four_tagged_words_on_a_5000_tag_taxonomy(services):
    """The largest accepted query against a large taxonomy: every word a tag title, every tier built."""
    words = [f"word{i}" for i in range(64)]
    tags = [Tag(f"w:{w}", {"en": w}, {"en": [f"{w} alias"]}) for w in words]
    tags += [Tag(f"misc:item/{i}", {"en": f"Item {i} word{i % 64}"}) for i in range(5000 - len(tags))]
    services.taxonomy.import_tags(tags)
    _asset(services, "big/all.jpg", title=" ".join(words))
    _asset(services, "big/smart.jpg", smart=[(f"w:{w}", 0.5) for w in words])
    services.index.refresh()
    result = _search(services, " ".join(words))
    assert _keys(result)[:2] == [("all", 1), ("smart", 2)]


def test_property_paging_through_ties_returns_each_hit_once(services):
    """Random corpora full of equal scores, random page sizes: every page by number and every page by
    cursor together hold each hit exactly once, in the order of one request for the whole list."""
    rng = random.Random(5)
    services.taxonomy.import_tags([Tag(f"c:{w}", {"en": w.title()}) for w in WORDS])
    for i in range(120):
        smart = [(f"c:{w}", rng.choice([0.3, 0.616, 0.617, 0.9])) for w in rng.sample(WORDS, rng.randint(0, 2))]
        title = rng.choice(["", "red car", "red", "car", "blue boat"])
        _asset(services, f"pg/{i}.jpg", title=title or None, smart=smart)
    services.index.refresh()
    for _ in range(8):
        text = " ".join(rng.sample(WORDS, rng.randint(1, 2)))
        whole = [h.asset_id for h in _search(services, text, size=100).hits]
        assert len(whole) == len(set(whole)) > 20, text
        size = rng.randint(3, 17)
        by_page = []
        for page in range(len(whole) // size + 1):
            by_page += [h.asset_id for h in _search(services, text, size=size, page=page).hits]
        by_cursor, after = [], None
        while hits := _search(services, text, size=size, search_after=after).hits:
            by_cursor += [h.asset_id for h in hits]
            after = hits[-1].sort
        assert by_page == whole and by_cursor == whole, (text, size)
