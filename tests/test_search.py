"""Search on the embedded OpenSearch: the tiers, the edge cases of query text, moderation, find similar."""

import json
import random

import numpy as np
import pytest
from smarttags.core import asset as assets
from smarttags.core.model_registry import SmartTag
from smarttags.core.search import SearchRequest
from smarttags.core.taxonomy import Tag

pytestmark = pytest.mark.slow

TAXONOMY = [
    Tag("people:woman", {"en": "Woman", "de": "Frau"}, {"en": ["lady"]}),
    Tag("people:man", {"en": "Man", "de": "Mann"}),
    Tag("activities:running", {"en": "Running", "de": "Laufen"}, {"en": ["jogging"]}),
    Tag("animals:dog", {"en": "Dog", "de": "Hund"}),
]


def _asset(services, key, *, title=None, description=None, keywords=(), smart=(), modified=None, embedding=None):
    doc = assets.base_document(
        bucket=services.settings.aws.bucket, key=key, etag="e", size=1, content_type="image/jpeg", modified=modified
    )
    doc.update(title=title, description=description, keywords=list(keywords))
    assets.set_smart_tags(doc, [SmartTag(tag, conf) for tag, conf in smart], "m1")
    if embedding is not None:
        doc["embedding"] = embedding
    services.index.put("assets", doc["asset_id"], doc)
    return doc["asset_id"]


@pytest.fixture
def corpus(services):
    services.taxonomy.import_tags(TAXONOMY)
    ids = {
        "meta_both": _asset(services, "a/meta_both.jpg", title="Woman running in the park"),
        "meta_woman_only": _asset(services, "a/meta_woman.jpg", title="A woman"),
        "smart_both": _asset(services, "a/smart_both.jpg", smart=[("people:woman", 0.9), ("activities:running", 0.8)]),
        "smart_woman": _asset(services, "a/smart_woman.jpg", smart=[("people:woman", 0.7)]),
        "smart_running": _asset(services, "b/smart_running.jpg", smart=[("activities:running", 0.95)]),
        "meta_woman_smart_running": _asset(
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
        ("smart_running", 3),  # higher confidence first inside a tier
        ("smart_woman", 3),
        ("mixed", 3),
    ]
    # Metadata matching only "woman" is not a hit: terms are ANDed over metadata.
    assert "meta_woman" not in [k for k, _ in _keys(result)]
    first = result.hits[0]
    assert list(first.highlights) == ["title"] and "<mark>" in first.highlights["title"][0]
    assert _search(services, "woman running", highlight=False).hits[0].highlights == {}
    assert result.hits[1].matched_tags == ["people:woman", "activities:running"]
    assert "smart tags" in result.hits[1].why


@pytest.mark.parametrize("text", ["the woman is running", "WOMAN Running", "woman runs", "lady jogging"])
def test_stop_words_case_stemming_and_synonyms(services, corpus, text):
    tiers = dict(_keys(_search(services, text)))
    assert tiers["smart_both"] == 2 and tiers["smart_woman"] == 3
    if "lady" not in text:
        assert tiers["meta_both"] == 1


def test_locale_titles(services, corpus):
    # One term, matched by a German title: every term is covered by smart tags, so tier 2.
    assert dict(_keys(_search(services, "Frau", locale="de"))) == {"smart_both": 2, "smart_woman": 2}
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
    rendered = services.index.render_template("smarttags-search-v1", params)["template_output"]
    assert rendered["size"] == 20
    tier1 = rendered["query"]["bool"]["must"][0]["dis_max"]["queries"][0]["bool"]
    assert tier1["must"][0]["multi_match"]["query"] == nasty


def test_empty_and_very_long_queries(services, corpus):
    everything = _search(services, "   ")
    assert everything.total == 7 and {h.tier for h in everything.hits} == {0}
    long_text = ("woman running " * 80)[:1000]
    assert len(long_text) == 1000
    assert _keys(_search(services, long_text))[:2] == [("meta_both", 1), ("smart_both", 2)]


def test_filters_by_folder(services, corpus):
    assert {k for k, _ in _keys(_search(services, "woman running", folder="b"))} == {"smart_running", "mixed"}


def test_moderation_is_reflected_in_the_next_search(services, corpus):
    services.moderation.remove(corpus["smart_running"], "activities:running", user="mod")
    assert "smart_running" not in [k for k, _ in _keys(_search(services, "running"))]
    services.moderation.promote(corpus["smart_woman"], "people:woman", user="mod")
    tier3 = [k for k, t in _keys(_search(services, "woman running")) if t == 3]
    assert tier3[0] == "smart_woman"
    audit = services.moderation.audit(asset_id=corpus["smart_woman"])
    assert audit[0]["action"] == "promote_tag" and audit[0]["user"] == "mod"


def test_find_similar(services):
    rng = np.random.default_rng(3)
    base = rng.normal(size=1280)
    vectors = {}
    for name, noise in [("query", 0.0), ("near", 0.1), ("middle", 0.6), ("far", 3.0)]:
        v = base + noise * rng.normal(size=1280)
        vectors[name] = (v / np.linalg.norm(v)).tolist()
        _asset(services, f"sim/{name}.jpg", embedding=vectors[name])
    services.index.refresh()
    hits = services.searcher.similar("sim/query.jpg", size=3)
    assert [h.key for h in hits] == ["sim/near.jpg", "sim/middle.jpg", "sim/far.jpg"]


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
