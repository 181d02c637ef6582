import pytest
from smarttags.core import taxonomy
from smarttags.errors import TaxonomyError

YAML = """
tags:
  - id: vehicles:cars/sedan
    titles: {en: Sedan, de: Limousine}
    synonyms: {en: [saloon]}
  - id: vehicles:cars
    titles: {en: Cars, de: Autos}
  - id: people:woman
"""


def test_parse_yaml_and_json():
    tags = taxonomy.parse(YAML)
    assert [t.id for t in tags] == ["vehicles:cars/sedan", "vehicles:cars", "people:woman"]
    assert tags[0].title("de") == "Limousine" and tags[0].title("fr") == "Sedan"
    assert tags[0].parent == "vehicles:cars" and tags[1].parent is None
    assert tags[2].title() == "woman"  # a default title from the id's leaf
    assert taxonomy.parse('[{"id": "a:b", "titles": {"en": "B"}}]')[0].id == "a:b"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tags: []", "non-empty list"),
        ("tags: [{id: 'no namespace'}]", "namespace:path/leaf"),
        ("tags: [{id: 'a:b'}, {id: 'a:b'}]", "appears twice"),
        ("tags: [{id: 'a:b', titles: {english: B}}]", "titles must map locales"),
        ("tags: [{id: 'a:b', synonyms: {en: B}}]", "synonyms must map"),
        ("{not: valid: yaml", "not valid JSON or YAML"),
    ],
)
def test_bad_files_say_what_is_wrong(text, message):
    with pytest.raises(TaxonomyError, match=message):
        taxonomy.parse(text)


def test_unknown_training_tags_are_refused_and_ancestors_known():
    tax = taxonomy.Taxonomy(taxonomy.parse(YAML))
    with pytest.raises(TaxonomyError, match="not in the taxonomy: vehicles:trucks"):
        tax.require(["vehicles:cars", "vehicles:trucks"])
    assert tax.ancestors("vehicles:cars/sedan") == ["vehicles:cars"]


def test_tokens_map_query_terms_to_tags_per_locale():
    tags = [
        taxonomy.Tag(
            "vehicles:cars/sedan",
            {"en": "Sedan", "de": "Limousine"},
            tokens={"en": ["sedan", "saloon"], "de": ["limousin"]},
        ),
        taxonomy.Tag("people:runner", {"en": "Runner"}, tokens={"en": ["runner", "run"]}),
    ]
    tax = taxonomy.Taxonomy(tags)
    assert tax.tags_for_tokens(["saloon", "run", "xyz"], "en") == {
        "saloon": ["vehicles:cars/sedan"],
        "run": ["people:runner"],
        "xyz": [],
    }
    # A locale the tag has no title in falls back to English.
    assert tax.tags_for_tokens(["run"], "de") == {"run": ["people:runner"]}
    assert tax.tags_for_tokens(["limousin"], "de-CH") == {"limousin": ["vehicles:cars/sedan"]}


def test_multi_word_synonyms_cover_their_words_only_together():
    tag = taxonomy.Tag(
        "sport:marathon",
        {"en": "Marathon"},
        tokens={"en": ["marathon"]},
        phrases={"en": [["road", "run"]]},
    )
    tax = taxonomy.Taxonomy([tag])
    assert tax.tags_for_tokens(["road", "run"], "en") == {"road": ["sport:marathon"], "run": ["sport:marathon"]}
    assert tax.tags_for_tokens(["citi", "road", "run"], "en")["citi"] == []
    assert tax.tags_for_tokens(["run", "road"], "en") == {"run": [], "road": []}
    assert tax.tags_for_tokens(["road"], "en") == {"road": []}
    # Another locale's query reaches the English phrase through its English tokens.
    assert tax.tags_for_tokens(["strass", "lauf"], "de", ["road", "run"])["lauf"] == ["sport:marathon"]
