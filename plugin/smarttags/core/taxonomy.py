"""The customer's business taxonomy: tag ids ``namespace:path/leaf`` with localized titles and synonyms.

A file (JSON or YAML) is imported into OpenSearch. Each tag keeps the analyzed tokens of its titles and
single-word synonyms per locale, made by the same analyzer that later reads the query, so "Running shoes"
and the query "run" meet on the token "run"; a multi-word synonym ("road running") is kept whole, as a
phrase that matches only where the query holds its words in that order. The analyzers per language are
data (``search_templates/tag_analyzers.json``). Tag ids never reach free-text matching.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
import time
import unicodedata
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from smarttags import resources
from smarttags.core.clock import now_iso
from smarttags.core.ports import Index
from smarttags.errors import ServiceError, TaxonomyError, TaxonomyFileError

log = logging.getLogger(__name__)

DEFAULT_LOCALE = "en"
TAG_ID = re.compile(r"^[a-z0-9][a-z0-9_\-]*:[^/\s][^/]*(/[^/]+)*$")
LOCALE = re.compile(r"^[a-z]{2}(-[A-Z]{2})?$")
# Per language: a built-in analyzer's name or an inline definition (English adds irregular forms such as
# "women" and "ran" to its stemmer); other locales fall back to the standard analyzer.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: a 5,000-tag file in a blink
ANALYZERS: dict[str, str | dict[str, Any]] = {
    locale: spec for locale, spec in resources.load_json("tag_analyzers.json").items() if not locale.startswith("_")
}


def english_irregular_rules() -> list[str]:
    """The English analyzer's ``stemmer_override`` rules (irregular and agent forms: "women => woman",
    "ran, runner, runners => run"); the assets index's metadata analyzer applies the same list."""
    spec = ANALYZERS[DEFAULT_LOCALE]
    assert isinstance(spec, dict)
    return [
        rule for f in spec["filter"] if isinstance(f, dict) and f["type"] == "stemmer_override" for rule in f["rules"]
    ]


def fold(token: str) -> str:
    """Accents folded before analysis, as the metadata analyzer folds them: "brûlée" and "brulee" are
    one word (the language analyzers stem before any folding, so folding afterwards is too late)."""
    return "".join(c for c in unicodedata.normalize("NFKD", token) if not unicodedata.combining(c))


def analyzer_for(locale: str) -> str | dict[str, Any]:
    return ANALYZERS.get(locale.split("-")[0], "standard")


@dataclass(frozen=True)
class Tag:
    id: str
    titles: dict[str, str]
    synonyms: dict[str, list[str]] = field(default_factory=dict)
    tokens: dict[str, list[str]] = field(default_factory=dict)
    # Multi-word synonyms per locale, each as its analysed tokens in order.
    phrases: dict[str, list[list[str]]] = field(default_factory=dict)

    @property
    def namespace(self) -> str:
        return self.id.split(":", 1)[0]

    @property
    def parent(self) -> str | None:
        namespace, _, path = self.id.partition(":")
        head, sep, _ = path.rpartition("/")
        return f"{namespace}:{head}" if sep else None

    def title(self, locale: str = DEFAULT_LOCALE) -> str:
        return (
            self.titles.get(locale)
            or self.titles.get(locale.split("-")[0])
            or self.titles.get(DEFAULT_LOCALE)
            or next(iter(self.titles.values()), self.id)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "tag": self.id,
            "namespace": self.namespace,
            "parent": self.parent,
            "titles": self.titles,
            "synonyms": self.synonyms,
            "tokens": self.tokens,
            "phrases": self.phrases,
            "updated_at": now_iso(),
        }


FIELDS = ("id", "titles", "synonyms")
MAX_SHOWN = 50  # problems listed in the error; the count names the rest
# A missing parent this close to an id that exists is taken for a misspelling (and refused); a farther one is
# a grouping level only (``clipart:animals`` above ``clipart:animals/mammals``), allowed as documented.
MISSPELT = 0.8


@dataclass(frozen=True)
class TaxonomyFile:
    """A valid taxonomy file: its tags, and a line for each tag whose parent is a grouping level only."""

    tags: list[Tag]
    notes: list[str]


def read(text: str, *, source: str = "taxonomy", known: Collection[str] = ()) -> TaxonomyFile:
    """Read and check a whole taxonomy file: ``{"tags": [{"id": ..., "titles": {locale: title},
    "synonyms": {...}}]}`` (a bare list of tags works too). ``known`` are the ids imported before. Every
    problem is one line with its line in the file (bad id, id twice, unknown field, bad titles or synonyms,
    a parent that looks misspelt, with the closest ids); any problem refuses the whole file, so an import is
    all or nothing. A tag's parent is its id's path, so the hierarchy cannot hold a cycle."""
    data, lines = _load(text, source)
    entries = data.get("tags") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not entries:
        raise TaxonomyError(f"{source}: expected a non-empty list under 'tags'")
    problems: list[str] = []
    tags: dict[str, Tag] = {}
    where: dict[str, str] = {}  # tag id -> where the file has it
    for position, entry in enumerate(entries, start=1):
        at = f"{source} line {lines[position - 1]}" if lines else f"{source} tag #{position}"
        found = _entry_problems(entry)
        if not found and entry["id"].strip() in tags:
            tag_id = entry["id"].strip()
            found = [f"id {tag_id!r} appears twice (first at {where[tag_id].removeprefix(source + ' ')})"]
        problems.extend(f"{at}: {p}" for p in found)
        if not found:
            tag_id = entry["id"].strip()
            titles = entry.get("titles") or {DEFAULT_LOCALE: tag_id.rsplit("/", 1)[-1].split(":")[-1]}
            synonyms = entry.get("synonyms") or {}
            tags[tag_id] = Tag(id=tag_id, titles=dict(titles), synonyms={k: list(v) for k, v in synonyms.items()})
            where[tag_id] = at
    ids = set(tags) | set(known)
    notes: list[str] = []
    for tag in tags.values():
        if tag.parent is None or tag.parent in ids:
            continue
        # Neither the tag itself nor what lies below it can be the parent it meant.
        others = sorted(i for i in ids if i != tag.id and not i.startswith(tag.id + "/"))
        close = difflib.get_close_matches(tag.parent, others, n=3, cutoff=MISSPELT)
        if close:
            problems.append(
                f"{where[tag.id]}: parent {tag.parent!r} of {tag.id!r} is not in the taxonomy "
                f"(closest: {', '.join(close)}): fix the id, or add the parent"
            )
        else:
            notes.append(f"{where[tag.id]}: {tag.id!r} has no parent tag {tag.parent!r} (a grouping level only)")
    if problems:
        shown = problems[:MAX_SHOWN] + (
            [f"... and {len(problems) - MAX_SHOWN} more"] if len(problems) > MAX_SHOWN else []
        )
        raise TaxonomyFileError(f"{source}: {len(problems)} problem(s), nothing imported", shown)
    return TaxonomyFile(list(tags.values()), notes)


def parse(text: str, *, source: str = "taxonomy", known: Collection[str] = ()) -> list[Tag]:
    """The tags of a valid taxonomy file (see ``read``)."""
    return read(text, source=source, known=known).tags


def _load(text: str, source: str) -> tuple[Any, list[int] | None]:
    """The file's data, and the line each tag entry starts on (None when they cannot be told)."""
    is_json = text.lstrip().startswith(("{", "["))
    try:
        data = json.loads(text) if is_json else yaml.load(text, Loader=_LOADER)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise TaxonomyError(f"{source}: not valid JSON or YAML ({' '.join(str(exc).split())})") from None
    try:
        node = yaml.compose(text, Loader=_LOADER)  # JSON is YAML here, for its lines
    except yaml.YAMLError:
        return data, None
    if isinstance(node, yaml.MappingNode):
        node = next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == "tags"), None)
    entries = data.get("tags") if isinstance(data, dict) else data
    if not isinstance(node, yaml.SequenceNode) or not isinstance(entries, list) or len(node.value) != len(entries):
        return data, None
    return data, [item.start_mark.line + 1 for item in node.value]


def _entry_problems(entry: Any) -> list[str]:
    """What is wrong with one tag entry, one line each (nothing when it is a valid tag)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
        return ["needs an 'id' string"]
    problems = []
    tag_id = entry["id"].strip()
    if not TAG_ID.match(tag_id):
        problems.append(f"id {tag_id!r} is not of the form namespace:path/leaf ({_id_fault(tag_id)})")
    for name in entry:
        if name == "parent":
            problems.append("no 'parent' field: a tag's parent is its id's path (write the id as namespace:parent/tag)")
        elif name not in FIELDS:
            close = difflib.get_close_matches(str(name), FIELDS, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else f"the fields are {', '.join(FIELDS)}"
            problems.append(f"unknown field {name!r} ({hint})")
    titles = entry.get("titles") or {}
    synonyms = entry.get("synonyms") or {}
    if not isinstance(titles, dict) or not all(
        isinstance(k, str) and LOCALE.match(k) and isinstance(v, str) and v.strip() for k, v in titles.items()
    ):
        problems.append("titles must map locales like 'en' or 'de-CH' to text")
    if not isinstance(synonyms, dict) or not all(
        isinstance(k, str) and LOCALE.match(k) and isinstance(v, list) and all(isinstance(s, str) for s in v)
        for k, v in synonyms.items()
    ):
        problems.append("synonyms must map locales to lists of text")
    return problems


def _id_fault(tag_id: str) -> str:
    namespace, colon, path = tag_id.partition(":")
    if not colon:
        return "no namespace: write e.g. 'products:" + tag_id + "'"
    if not re.fullmatch(r"[a-z0-9][a-z0-9_\-]*", namespace):
        return f"the namespace {namespace!r} takes lowercase letters, digits, '_' and '-'"
    if not path or any(not level for level in path.split("/")):
        return "a path level is empty"
    return "the path must not start with a space"


class Taxonomy:
    """The imported tags, with the lookups search and training need."""

    def __init__(self, tags: Iterable[Tag]) -> None:
        self.tags: dict[str, Tag] = {t.id: t for t in tags}
        self._order = {tag_id: i for i, tag_id in enumerate(self.tags)}
        self._lookups: dict[str, tuple[dict[str, list[str]], dict[str, list[tuple[str, list[str]]]]]] = {}

    def __contains__(self, tag_id: object) -> bool:
        return tag_id in self.tags

    def __len__(self) -> int:
        return len(self.tags)

    def unknown(self, tag_ids: Iterable[str]) -> list[str]:
        return sorted({t for t in tag_ids if t not in self.tags})

    def require(self, tag_ids: Iterable[str]) -> None:
        unknown = self.unknown(tag_ids)
        if unknown:
            shown = ", ".join(unknown[:10]) + (" ..." if len(unknown) > 10 else "")
            raise TaxonomyError(
                f"{len(unknown)} training tag(s) are not in the taxonomy: {shown}. "
                "Add them to the taxonomy file and run `smarttags taxonomy import`, or fix the assets' tags."
            )

    def ancestors(self, tag_id: str) -> list[str]:
        """Tags above this one that exist in the taxonomy (a child tag implies its parents)."""
        found = []
        parent = self.tags[tag_id].parent if tag_id in self.tags else None
        while parent:
            if parent in self.tags:
                found.append(parent)
            parent = Tag(parent, {}).parent
        return found

    def tags_for_tokens(
        self, tokens: Sequence[str], locale: str, fallback_tokens: Sequence[str] | None = None
    ) -> dict[str, list[str]]:
        """For each query token (in query order), the tags whose title words or single-word synonyms in
        that locale contain it, or whose English ones contain the same word analysed in English
        (``fallback_tokens``, position by position; the token itself when not given). A multi-word
        synonym covers the tokens of each place where the query holds its words in order, and no
        token alone."""
        fallback = list(fallback_tokens) if fallback_tokens is not None else list(tokens)
        if len(fallback) != len(tokens):
            fallback = list(tokens)
        own, english = self._lookup(locale), self._lookup(DEFAULT_LOCALE)
        covered: dict[int, set[str]] = {i: set() for i in range(len(tokens))}
        for sequence, lookup in ((tokens, own), (fallback, english)):
            words, phrases = lookup
            for i, token in enumerate(sequence):
                covered[i].update(words.get(token, ()))
                for tag_id, phrase in phrases.get(token, ()):
                    if list(sequence[i : i + len(phrase)]) == phrase:
                        for position in range(i, i + len(phrase)):
                            covered[position].add(tag_id)
        order = self._order
        found: dict[str, list[str]] = {token: [] for token in tokens}
        for i, token in enumerate(tokens):
            found[token] = sorted(set(found[token]) | covered[i], key=order.__getitem__)
        return found

    def _lookup(self, locale: str) -> tuple[dict[str, list[str]], dict[str, list[tuple[str, list[str]]]]]:
        """Per locale, built once: token -> the tags holding it, and a phrase's first token -> (tag,
        phrase); a tag without that locale's titles is looked up under the base language's."""
        if locale not in self._lookups:
            base = locale.split("-")[0]
            words: dict[str, list[str]] = {}
            phrases: dict[str, list[tuple[str, list[str]]]] = {}
            for tag in self.tags.values():
                for token in tag.tokens.get(locale) or tag.tokens.get(base) or []:
                    words.setdefault(token, []).append(tag.id)
                for phrase in tag.phrases.get(locale) or tag.phrases.get(base) or []:
                    phrases.setdefault(phrase[0], []).append((tag.id, phrase))
            self._lookups[locale] = (words, phrases)
        return self._lookups[locale]


class TaxonomyStore:
    def __init__(self, index: Index, *, cache_seconds: float = 30.0) -> None:
        self._index = index
        self._cache: tuple[float, Taxonomy] | None = None
        self._cache_seconds = cache_seconds

    def tokens_for(self, tag: Tag) -> tuple[dict[str, list[str]], dict[str, list[list[str]]]]:
        """Per locale: the tokens of the titles and single-word synonyms, and each multi-word synonym's
        tokens in order (accents folded first: the language analyzers stem before any folding)."""
        tokens: dict[str, list[str]] = {}
        phrases: dict[str, list[list[str]]] = {}
        for locale in sorted(set(tag.titles) | set(tag.synonyms)):
            analyzer = analyzer_for(locale)
            words = set(self._index.analyze(fold(tag.titles.get(locale, "")), analyzer))
            for synonym in tag.synonyms.get(locale, []):
                analysed = self._index.analyze(fold(synonym), analyzer)
                if len(analysed) == 1:
                    words.update(analysed)
                elif analysed and analysed not in phrases.setdefault(locale, []):
                    phrases[locale].append(analysed)
            tokens[locale] = sorted(words)
        return tokens, phrases

    def import_tags(self, tags: Iterable[Tag]) -> int:
        """Write the tags (a tag imported before keeps its id and takes the new titles): all or nothing.
        Every tag is analysed before the first write; a write that fails puts back what was there."""
        actions: list[tuple[Mapping[str, Any], Mapping[str, Any] | None]] = []
        for tag in tags:
            analyzed = Tag(tag.id, tag.titles, tag.synonyms, *self.tokens_for(tag))
            actions.append(({"index": {"_index": self._index.name("taxonomy"), "_id": tag.id}}, analyzed.to_json()))
        before = {hit["_id"]: hit["_source"] for hit in self._index.scan("taxonomy", {"match_all": {}})}
        self._cache = None
        try:
            self._index.bulk(actions)
        except ServiceError as exc:
            self._undo([str(action["index"]["_id"]) for action, _ in actions], before, exc)
            raise ServiceError(exc.service, f"taxonomy import failed, nothing imported ({exc.reason})") from exc
        self._index.refresh("taxonomy")
        log.info("imported %d taxonomy tags", len(actions))
        return len(actions)

    def _undo(self, ids: list[str], before: Mapping[str, Mapping[str, Any]], cause: ServiceError) -> None:
        """Put back the documents an import overwrote and delete the ones it added."""
        name = self._index.name("taxonomy")
        undo: list[tuple[Mapping[str, Any], Mapping[str, Any] | None]] = [
            ({"index": {"_index": name, "_id": i}}, before[i])
            if i in before
            else ({"delete": {"_index": name, "_id": i}}, None)
            for i in ids
        ]
        try:
            self._index.bulk(undo)
            self._index.refresh("taxonomy")
        except ServiceError as exc:
            raise ServiceError(
                exc.service,
                f"taxonomy import failed ({cause.reason}) and was not undone ({exc.reason}): import it again",
            ) from exc

    def load(self) -> Taxonomy:
        if self._cache and time.monotonic() - self._cache[0] < self._cache_seconds:
            return self._cache[1]
        tags = [
            Tag(
                id=hit["_source"]["tag"],
                titles=hit["_source"].get("titles") or {},
                synonyms=hit["_source"].get("synonyms") or {},
                tokens=hit["_source"].get("tokens") or {},
                phrases=hit["_source"].get("phrases") or {},
            )
            for hit in self._index.scan("taxonomy", {"match_all": {}})
        ]
        taxonomy = Taxonomy(tags)
        self._cache = (time.monotonic(), taxonomy)
        return taxonomy
