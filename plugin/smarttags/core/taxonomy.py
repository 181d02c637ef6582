"""The customer's business taxonomy: tag ids ``namespace:path/leaf`` with localized titles and synonyms.

A file (JSON or YAML) is imported into OpenSearch. Each tag keeps the analyzed tokens of its titles and
single-word synonyms per locale, made by the same analyzer that later reads the query, so "Running shoes"
and the query "run" meet on the token "run"; a multi-word synonym ("road running") is kept whole, as a
phrase that matches only where the query holds its words in that order. The analyzers per language are
data (``search_templates/tag_analyzers.json``). Tag ids never reach free-text matching.
"""

from __future__ import annotations

import json
import logging
import re
import time
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from smarttags import resources
from smarttags.core.clock import now_iso
from smarttags.core.ports import Index
from smarttags.errors import TaxonomyError

log = logging.getLogger(__name__)

DEFAULT_LOCALE = "en"
TAG_ID = re.compile(r"^[a-z0-9][a-z0-9_\-]*:[^/\s][^/]*(/[^/]+)*$")
LOCALE = re.compile(r"^[a-z]{2}(-[A-Z]{2})?$")
# Per language: a built-in analyzer's name or an inline definition (English adds irregular forms such as
# "women" and "ran" to its stemmer); other locales fall back to the standard analyzer.
ANALYZERS: dict[str, str | dict[str, Any]] = {
    locale: spec for locale, spec in resources.load_json("tag_analyzers.json").items() if not locale.startswith("_")
}


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


def parse(text: str, *, source: str = "taxonomy") -> list[Tag]:
    """Read a taxonomy file: ``{"tags": [{"id": ..., "titles": {locale: title}, "synonyms": {...}}]}``
    (a bare list of tags works too). Every problem is reported with the tag's position."""
    try:
        data = yaml.safe_load(text) if not text.lstrip().startswith(("{", "[")) else json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise TaxonomyError(f"{source}: not valid JSON or YAML ({exc})") from None
    entries = data.get("tags") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not entries:
        raise TaxonomyError(f"{source}: expected a non-empty list under 'tags'")
    tags: dict[str, Tag] = {}
    for position, entry in enumerate(entries, start=1):
        where = f"{source}: tag #{position}"
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            raise TaxonomyError(f"{where}: needs an 'id' string")
        tag_id = entry["id"].strip()
        if not TAG_ID.match(tag_id):
            raise TaxonomyError(f"{where}: id {tag_id!r} is not of the form namespace:path/leaf")
        if tag_id in tags:
            raise TaxonomyError(f"{where}: id {tag_id!r} appears twice")
        titles = entry.get("titles") or {DEFAULT_LOCALE: tag_id.rsplit("/", 1)[-1].split(":")[-1]}
        synonyms = entry.get("synonyms") or {}
        if not isinstance(titles, dict) or not all(
            isinstance(k, str) and LOCALE.match(k) and isinstance(v, str) and v.strip() for k, v in titles.items()
        ):
            raise TaxonomyError(f"{where}: titles must map locales like 'en' or 'de-CH' to text")
        if not isinstance(synonyms, dict) or not all(
            isinstance(k, str) and LOCALE.match(k) and isinstance(v, list) and all(isinstance(s, str) for s in v)
            for k, v in synonyms.items()
        ):
            raise TaxonomyError(f"{where}: synonyms must map locales to lists of text")
        tags[tag_id] = Tag(id=tag_id, titles=dict(titles), synonyms={k: list(v) for k, v in synonyms.items()})
    return list(tags.values())


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
        actions: list[tuple[Mapping[str, Any], Mapping[str, Any] | None]] = []
        for tag in tags:
            analyzed = Tag(tag.id, tag.titles, tag.synonyms, *self.tokens_for(tag))
            actions.append(({"index": {"_index": self._index.name("taxonomy"), "_id": tag.id}}, analyzed.to_json()))
        self._index.bulk(actions)
        self._index.refresh("taxonomy")
        self._cache = None
        log.info("imported %d taxonomy tags", len(actions))
        return len(actions)

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
