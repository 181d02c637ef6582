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


BAD = """\
tags:
  - id: vehicles:cars
    titles: {en: Cars}
  - id: Vehicles:trucks
  - id: vehicles:car/sedan
    titles: {en: Sedan}
  - id: vehicles:cars
  - id: people:woman
    title: {en: Woman}
  - id: people:man
    parent: people:adults
  - id: bikes
  - id: "vehicles:cars//x"
"""


def test_every_problem_is_one_line_with_its_line_and_the_whole_file_is_refused():
    with pytest.raises(taxonomy.TaxonomyFileError) as caught:
        taxonomy.read(BAD, source="t.yaml")
    error = caught.value
    assert error.summary == "t.yaml: 7 problem(s), nothing imported"
    assert error.problems == [
        "t.yaml line 4: id 'Vehicles:trucks' is not of the form namespace:path/leaf "
        "(the namespace 'Vehicles' takes lowercase letters, digits, '_' and '-')",
        "t.yaml line 7: id 'vehicles:cars' appears twice (first at line 2)",
        "t.yaml line 8: unknown field 'title' (did you mean 'titles'?)",
        "t.yaml line 10: no 'parent' field: a tag's parent is its id's path (write the id as namespace:parent/tag)",
        "t.yaml line 12: id 'bikes' is not of the form namespace:path/leaf (no namespace: write e.g. 'products:bikes')",
        "t.yaml line 13: id 'vehicles:cars//x' is not of the form namespace:path/leaf (a path level is empty)",
        "t.yaml line 5: parent 'vehicles:car' of 'vehicles:car/sedan' is not in the taxonomy "
        "(closest: vehicles:cars): fix the id, or add the parent",
    ]
    assert str(error).splitlines() == [error.summary, *error.problems]


def test_json_problems_name_their_lines_too():
    text = '{"tags": [\n  {"id": "a:b"},\n  {"id": "a:b"}\n]}'
    with pytest.raises(taxonomy.TaxonomyFileError, match=r"line 3: id 'a:b' appears twice \(first at line 2\)"):
        taxonomy.read(text, source="t.json")


def test_a_parent_may_be_imported_before_and_a_far_one_is_a_grouping_level():
    text = "tags: [{id: 'vehicles:cars/sedan'}, {id: 'clipart:animals/mammals'}]"
    checked = taxonomy.read(text, source="t.yaml", known={"vehicles:cars"})
    assert [t.id for t in checked.tags] == ["vehicles:cars/sedan", "clipart:animals/mammals"]
    assert checked.notes == [
        "t.yaml line 1: 'clipart:animals/mammals' has no parent tag 'clipart:animals' (a grouping level only)"
    ]
    # Misspelt against a tag imported before: refused, with that tag named.
    with pytest.raises(taxonomy.TaxonomyFileError, match=r"parent 'vehicles:car' .* \(closest: vehicles:cars\)"):
        taxonomy.read("tags: [{id: 'vehicles:car/sedan'}]", known={"vehicles:cars"})


def test_the_sample_taxonomy_is_valid():
    import json

    from smarttags.devtools.sample import taxonomy_document

    checked = taxonomy.read(json.dumps(taxonomy_document(), indent=2))
    assert len(checked.tags) == 9 and len(checked.notes) == 2  # animals and computer are grouping levels


class _Index:
    """FakeIndex with an analyzer, whose bulk can fail half-way as a real one may."""

    def __init__(self) -> None:
        from tests.fakes import FakeIndex

        self.inner = FakeIndex()
        self.fail_after: int | None = None

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def analyze(self, text, analyzer, *, kind=None):
        return text.lower().split()

    def bulk(self, actions):
        from smarttags.errors import ServiceError

        if self.fail_after is not None:
            self.inner.bulk(actions[: self.fail_after])
            self.fail_after = None
            raise ServiceError("opensearch", "1 bulk items failed")
        self.inner.bulk(actions)


def test_an_import_whose_write_fails_half_way_leaves_the_taxonomy_as_it_was():
    from smarttags.errors import ServiceError

    index = _Index()
    store = taxonomy.TaxonomyStore(index)
    store.import_tags(taxonomy.parse("tags: [{id: 'a:x', titles: {en: Old}}]"))
    before = dict(index.inner.docs)
    index.fail_after = 2  # writes a:x (new title) and a:y, then fails
    with pytest.raises(ServiceError, match="taxonomy import failed, nothing imported"):
        store.import_tags(taxonomy.parse("tags: [{id: 'a:x', titles: {en: New}}, {id: 'a:y'}, {id: 'a:z'}]"))
    assert {k: v[0] for k, v in index.inner.docs.items()} == {k: v[0] for k, v in before.items()}
    assert store.load().tags["a:x"].titles == {"en": "Old"}
