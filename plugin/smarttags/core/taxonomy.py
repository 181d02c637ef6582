"""The customer's business taxonomy: tag ids ``namespace:path/leaf`` with localized titles and synonyms.

A file (JSON or YAML) is imported into OpenSearch. Each tag keeps the analyzed tokens of its titles and
synonyms per locale, made by the same analyzer that later reads the query, so "Running shoes" and the
query "run" meet on the token "run". Tag ids never reach free-text matching.
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

from smarttags.core.clock import now_iso
from smarttags.core.ports import Index
from smarttags.errors import TaxonomyError

log = logging.getLogger(__name__)

DEFAULT_LOCALE = "en"
TAG_ID = re.compile(r"^[a-z0-9][a-z0-9_\-]*:[^/\s][^/]*(/[^/]+)*$")
LOCALE = re.compile(r"^[a-z]{2}(-[A-Z]{2})?$")
# OpenSearch's built-in language analyzers; other locales fall back to the standard analyzer.
ANALYZERS = {
    "en": "english",
    "de": "german",
    "fr": "french",
    "es": "spanish",
    "it": "italian",
    "nl": "dutch",
    "pt": "portuguese",
    "sv": "swedish",
    "da": "danish",
    "fi": "finnish",
    "no": "norwegian",
    "ja": "cjk",
    "zh": "cjk",
    "ko": "cjk",
}


def fold(token: str) -> str:
    """Accents folded before analysis, as the metadata analyzer folds them: "brûlée" and "brulee" are
    one word (the language analyzers stem before any folding, so folding afterwards is too late)."""
    return "".join(c for c in unicodedata.normalize("NFKD", token) if not unicodedata.combining(c))


def analyzer_for(locale: str) -> str:
    return ANALYZERS.get(locale.split("-")[0], "standard")


@dataclass(frozen=True)
class Tag:
    id: str
    titles: dict[str, str]
    synonyms: dict[str, list[str]] = field(default_factory=dict)
    tokens: dict[str, list[str]] = field(default_factory=dict)

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
        """For each query token, the tags whose title or synonyms in that locale contain it, or whose
        English titles and synonyms contain the same word analysed in English (``fallback_tokens``,
        position by position; the token itself when not given)."""
        base = locale.split("-")[0]
        fallback = list(fallback_tokens) if fallback_tokens is not None else list(tokens)
        if len(fallback) != len(tokens):
            fallback = list(tokens)
        found: dict[str, list[str]] = {token: [] for token in tokens}
        alternatives: dict[str, set[str]] = {token: set() for token in tokens}
        for token, english in zip(tokens, fallback, strict=True):
            alternatives[token].add(english)
        for tag in self.tags.values():
            own = set(tag.tokens.get(locale) or tag.tokens.get(base) or [])
            english_tokens = set(tag.tokens.get(DEFAULT_LOCALE) or [])
            for token in found:
                if token in own or alternatives[token] & english_tokens:
                    found[token].append(tag.id)
        return found


class TaxonomyStore:
    def __init__(self, index: Index, *, cache_seconds: float = 30.0) -> None:
        self._index = index
        self._cache: tuple[float, Taxonomy] | None = None
        self._cache_seconds = cache_seconds

    def tokens_for(self, tag: Tag) -> dict[str, list[str]]:
        locales = set(tag.titles) | set(tag.synonyms)
        tokens: dict[str, list[str]] = {}
        for locale in sorted(locales):
            text = " \n ".join([tag.titles.get(locale, ""), *tag.synonyms.get(locale, [])])
            tokens[locale] = sorted(set(self._index.analyze(fold(text), analyzer_for(locale))))
        return tokens

    def import_tags(self, tags: Iterable[Tag]) -> int:
        actions: list[tuple[Mapping[str, Any], Mapping[str, Any] | None]] = []
        for tag in tags:
            analyzed = Tag(tag.id, tag.titles, tag.synonyms, self.tokens_for(tag))
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
            )
            for hit in self._index.scan("taxonomy", {"match_all": {}})
        ]
        taxonomy = Taxonomy(tags)
        self._cache = (time.monotonic(), taxonomy)
        return taxonomy
