"""The OpenSearch side: our indices, stored templates, and the few request shapes everything else uses.

One small class around an ``opensearchpy.OpenSearch`` client. Errors come out as SmartTags errors;
``_bulk`` per-item failures are read and raised, never ignored.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from opensearchpy.exceptions import NotFoundError, OpenSearchException, RequestError, TransportError

from smarttags import resources
from smarttags.adapters.clients import translate_opensearch_error
from smarttags.core.ports import Versioned, Write
from smarttags.core.taxonomy import english_irregular_rules
from smarttags.errors import ConfigError, ConflictError, ServiceError
from smarttags.resources import TEMPLATES

log = logging.getLogger(__name__)

KINDS = ("assets", "vectors", "taxonomy", "runs", "folders", "audit", "leases", "users", "logins")
# A unique keyword per kind: the sort that makes ``search_after`` pages exact.
UNIQUE_FIELD = {
    "assets": "asset_id",
    "vectors": "asset_id",
    "taxonomy": "tag",
    "runs": "run_id",
    "folders": "folder",
    "leases": "window",
    "users": "username",
}


class BulkError(ServiceError):
    def __init__(self, failures: list[dict[str, Any]]) -> None:
        super().__init__("opensearch", f"{len(failures)} bulk items failed; first: {failures[0]}")
        self.failures = failures


class SearchIndex:
    def __init__(
        self,
        client: Any,
        prefix: str,
        *,
        replicas: int = 0,
        shards: int = 1,
        embedding_dim: int | Callable[[], int],
    ) -> None:
        self.client = client
        self.prefix = prefix
        self._replicas = replicas
        self._shards = shards
        self._embedding_dim = embedding_dim

    def name(self, kind: str) -> str:
        if kind not in KINDS:
            raise ValueError(f"unknown index kind {kind!r}")
        return f"{self.prefix}-{kind}"

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        target = self.client
        for part in method.split("."):
            target = getattr(target, part)
        try:
            return target(*args, **kwargs)
        except OpenSearchException as exc:
            raise translate_opensearch_error(exc) from exc

    # --- set-up ------------------------------------------------------------------------------------

    def index_body(self, kind: str) -> dict[str, Any]:
        """An index's settings and mappings from its file; the assets index's ``english_irregular`` filter
        gets its rules from the taxonomy's English analyzer (one list, ``tag_analyzers.json``)."""
        body = copy.deepcopy(resources.load_json(f"{kind}.index.json"))
        settings = body.setdefault("settings", {}).setdefault("index", {})
        settings["number_of_replicas"] = self._replicas
        settings["number_of_shards"] = self._shards
        if kind == "vectors":
            dim = self._embedding_dim
            body["mappings"]["properties"]["embedding"]["dimension"] = dim if isinstance(dim, int) else dim()
        if kind == "assets":
            body["settings"]["analysis"]["filter"]["english_irregular"]["rules"] = english_irregular_rules()
        return body

    def ensure(self) -> list[str]:
        """Create missing indices, add fields a newer mapping file has to existing ones, and install the
        stored templates; harmless to repeat. A field whose type changed is refused by OpenSearch: that
        needs a reindex, and the error says so."""
        created = []
        for kind in KINDS:
            name = self.name(kind)
            if self._call("indices.exists", index=name):
                body = self.index_body(kind)
                if kind == "vectors":
                    self._check_dimension(name, body["mappings"]["properties"]["embedding"]["dimension"])
                # Mappings only grow: new fields (a release adds one) are added in place.
                self._call("indices.put_mapping", index=name, body=body["mappings"])
                continue
            try:
                self.client.indices.create(index=name, body=self.index_body(kind))
                created.append(name)
            except RequestError as exc:
                # Another process created it between our check and our create: fine.
                if exc.error != "resource_already_exists_exception":
                    raise translate_opensearch_error(exc) from exc
            except OpenSearchException as exc:
                raise translate_opensearch_error(exc) from exc
        self.install_templates()
        if created:
            log.info("created indices %s", ", ".join(created))
        return created

    def _check_dimension(self, name: str, wanted: int) -> None:
        """The vectors index keeps the dimension it was made with: a backbone of another size says so
        in one line, not as OpenSearch's refusal of the mapping (nor as every vector write failing)."""
        mapping: dict[str, Any] = self._call("indices.get_mapping", index=name)
        index: dict[str, Any] = next(iter(mapping.values()), {})
        held: dict[str, Any] = index.get("mappings", {}).get("properties", {}).get("embedding", {})
        if held.get("dimension") not in (None, wanted):
            raise ConfigError(
                "SMARTTAGS_BACKBONE__NAME",
                f"index {name} holds {held['dimension']}-d vectors and this backbone makes {wanted}-d ones: "
                "set the backbone the vectors were made with, or delete the index and embed again",
            )

    def install_templates(self) -> None:
        for filename, script_id in TEMPLATES.items():
            source = resources.load_text(filename)
            self._call(
                "put_script",
                id=script_id,
                body={"script": {"lang": "mustache", "source": source}},
            )

    def missing_templates(self) -> list[str]:
        missing = []
        for script_id in TEMPLATES.values():
            try:
                self.client.get_script(id=script_id)
            except NotFoundError:
                missing.append(script_id)
            except OpenSearchException as exc:
                raise translate_opensearch_error(exc) from exc
        return missing

    def refresh(self, kind: str = "assets") -> None:
        self._call("indices.refresh", index=self.name(kind))

    # --- documents ---------------------------------------------------------------------------------

    def get(self, kind: str, doc_id: str) -> Versioned | None:
        try:
            hit = self.client.get(index=self.name(kind), id=doc_id)
        except NotFoundError:
            return None
        except OpenSearchException as exc:
            raise translate_opensearch_error(exc) from exc
        return Versioned(hit["_id"], hit["_source"], hit["_seq_no"], hit["_primary_term"])

    def mget(self, kind: str, doc_ids: Sequence[str]) -> list[dict[str, Any] | None]:
        """The sources of several documents in one round trip, None where one does not exist."""
        if not doc_ids:
            return []
        found = self._call("mget", index=self.name(kind), body={"ids": list(doc_ids)})
        return [doc["_source"] if doc.get("found") else None for doc in found["docs"]]

    def update_scripted(
        self,
        kind: str,
        doc_id: str,
        script: str,
        params: Mapping[str, Any],
        *,
        upsert: Mapping[str, Any] | None = None,
        refresh: str | None = None,
    ) -> None:
        """A painless update of one document, retried on version conflicts (many writers at once); with
        ``upsert`` a missing document is created from it first and the script runs on it."""
        body: dict[str, Any] = {"script": {"source": script, "lang": "painless", "params": dict(params)}}
        if upsert is not None:
            body.update(upsert=dict(upsert), scripted_upsert=True)
        extra: dict[str, Any] = {"refresh": refresh} if refresh else {}
        self._call("update", index=self.name(kind), id=doc_id, body=body, retry_on_conflict=10, **extra)

    def put(
        self,
        kind: str,
        doc_id: str,
        source: Mapping[str, Any],
        *,
        expected: Versioned | None = None,
        create: bool = False,
        refresh: bool | str = False,
    ) -> tuple[int, int]:
        """Write a whole document. With ``expected`` the write succeeds only if nobody wrote in between
        (raises ConflictError); with ``create`` only if the document does not exist yet. Returns the
        written version (seq_no, primary_term), for the next conditional write."""
        kwargs: dict[str, Any] = {"index": self.name(kind), "id": doc_id, "body": dict(source)}
        if expected is not None:
            kwargs.update(if_seq_no=expected.seq_no, if_primary_term=expected.primary_term)
        if create:
            kwargs["op_type"] = "create"
        if refresh:
            kwargs["refresh"] = "wait_for" if refresh is True else refresh
        response = self._call("index", **kwargs)
        return int(response["_seq_no"]), int(response["_primary_term"])

    def delete(self, kind: str, doc_id: str, *, expected: Versioned | None = None, refresh: bool = False) -> bool:
        kwargs: dict[str, Any] = {
            "index": self.name(kind),
            "id": doc_id,
            "refresh": "wait_for" if refresh else "false",
        }
        if expected is not None:
            kwargs.update(if_seq_no=expected.seq_no, if_primary_term=expected.primary_term)
        try:
            self.client.delete(**kwargs)
        except NotFoundError:
            return False
        except OpenSearchException as exc:
            raise translate_opensearch_error(exc) from exc
        return True

    def get_many(self, refs: Sequence[tuple[str, str]]) -> list[Versioned | None]:
        """Several (kind, id) documents, of one index or several, with their versions in one round trip;
        None where one does not exist."""
        if not refs:
            return []
        docs = [{"_index": self.name(kind), "_id": doc_id} for kind, doc_id in refs]
        found = self._call("mget", body={"docs": docs})
        return [
            Versioned(doc["_id"], doc["_source"], int(doc["_seq_no"]), int(doc["_primary_term"]))
            if doc.get("found")
            else None
            for doc in found["docs"]
        ]

    def put_many(self, writes: Sequence[Write]) -> list[tuple[int, int] | ServiceError]:
        """Whole-document writes (of one index or several) in one ``_bulk``, each conditional on its own
        ``expected`` version, or created, or written over. Each item answers alone: its new version, or a
        ConflictError / ServiceError of its own; a failure of the request itself raises."""
        if not writes:
            return []
        body: list[Mapping[str, Any]] = []
        for write in writes:
            meta: dict[str, Any] = {"_index": self.name(write.kind), "_id": write.id}
            if write.expected is not None:
                meta.update(if_seq_no=write.expected.seq_no, if_primary_term=write.expected.primary_term)
            op = "create" if write.expected is None and write.create else "index"
            body += [{op: meta}, dict(write.source)]
        response = self._call("bulk", body=body)
        answers: list[tuple[int, int] | ServiceError] = []
        for entry in response["items"]:
            (item,) = entry.values()
            if not item.get("error"):
                answers.append((int(item["_seq_no"]), int(item["_primary_term"])))
            elif item.get("status") == 409:
                answers.append(ConflictError("opensearch", f"{item.get('_id')} changed since it was read"))
            else:
                error = item["error"]
                reason = error.get("reason", error) if isinstance(error, Mapping) else error
                answers.append(ServiceError("opensearch", f"write of {item.get('_id')} failed: {reason}"))
        return answers

    def bulk(self, actions: Sequence[tuple[Mapping[str, Any], Mapping[str, Any] | None]]) -> None:
        """Send (action, source) pairs; raise BulkError listing every item that failed."""
        if not actions:
            return
        body: list[Mapping[str, Any]] = []
        for action, source in actions:
            body.append(action)
            if source is not None:
                body.append(source)
        response = self._call("bulk", body=body)
        if response.get("errors"):
            failures = [
                {"id": item.get("_id"), "status": item.get("status"), "error": item.get("error")}
                for entry in response["items"]
                for item in entry.values()
                if item.get("error")
            ]
            if failures:
                raise BulkError(failures)

    def count(self, kind: str, query: Mapping[str, Any] | None = None) -> int:
        body = {"query": query} if query else None
        return int(self._call("count", index=self.name(kind), body=body)["count"])

    def search(self, kind: str, body: Mapping[str, Any], **params: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._call("search", index=self.name(kind), body=dict(body), **params)
        return result

    def scan(
        self,
        kind: str,
        query: Mapping[str, Any],
        *,
        source: Sequence[str] | bool = True,
        batch_size: int = 500,
        keep_alive: str = "2m",
        after: Sequence[Any] | None = None,
        versions: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """Every matching hit, through a point in time and ``search_after`` (never deep ``from``), in the
        order of the kind's unique field; ``after`` resumes past that sort value, ``versions`` adds each
        hit's ``_seq_no`` and ``_primary_term`` (for writing it back conditionally)."""
        pages = self.scan_pages(
            kind, query, source=source, batch_size=batch_size, keep_alive=keep_alive, after=after, versions=versions
        )
        for hits, _ in pages:
            yield from hits

    def scan_pages(
        self,
        kind: str,
        query: Mapping[str, Any],
        *,
        source: Sequence[str] | bool = True,
        batch_size: int = 500,
        keep_alive: str = "2m",
        after: Sequence[Any] | None = None,
        versions: bool = False,
    ) -> Iterator[tuple[list[dict[str, Any]], list[Any] | None]]:
        """The matching hits a page at a time, each with its cursor (the sort key of its last hit, on the
        kind's unique field, so it holds across points in time): ``after`` a cursor, a scan goes on
        where an earlier one stopped."""
        pit = self._call("create_pit", index=self.name(kind), keep_alive=keep_alive)
        pit_id = pit["pit_id"]
        cursor: list[Any] | None = list(after) if after is not None else None
        try:
            while True:
                body: dict[str, Any] = {
                    "size": batch_size,
                    "query": dict(query),
                    "pit": {"id": pit_id, "keep_alive": keep_alive},
                    "sort": [{UNIQUE_FIELD[kind]: "asc"}],
                    "_source": source if isinstance(source, bool) else list(source),
                    "track_total_hits": False,
                    "seq_no_primary_term": versions,
                }
                if cursor is not None:
                    body["search_after"] = cursor
                page = self._call("search", body=body)
                hits = page["hits"]["hits"]
                if hits:
                    cursor = hits[-1]["sort"]
                    yield hits, cursor
                if len(hits) < batch_size:
                    return
                pit_id = page.get("pit_id", pit_id)
        finally:
            try:
                self.client.delete_pit(body={"pit_id": [pit_id]})
            except (OpenSearchException, TransportError) as exc:  # the PIT expires by itself anyway
                log.debug("could not delete point in time: %s", exc)

    def search_template(self, kind: str, template_id: str, params: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "search_template", index=self.name(kind), body={"id": template_id, "params": dict(params)}
        )
        return result

    def msearch_template(
        self, kind: str, template_id: str, params: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        """Several renderings of one stored template in one round trip; any failed search raises."""
        return self.msearch_templates(kind, [(template_id, one) for one in params])

    def msearch_templates(self, kind: str, searches: Sequence[tuple[str, Mapping[str, Any]]]) -> list[dict[str, Any]]:
        """Several (stored template, params) searches in one round trip; any failed search raises."""
        if not searches:
            return []
        body: list[dict[str, Any]] = []
        for template_id, one in searches:
            body += [{}, {"id": template_id, "params": dict(one)}]
        responses: list[dict[str, Any]] = self._call("msearch_template", index=self.name(kind), body=body)["responses"]
        failed = [r["error"] for r in responses if "error" in r]
        if failed:
            raise ServiceError("opensearch", f"{len(failed)} of {len(responses)} searches failed: {failed[0]}")
        return responses

    def render_template(self, template_id: str, params: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._call("render_search_template", id=template_id, body={"params": dict(params)})
        return result

    def analyze(self, text: str, analyzer: str | Mapping[str, Any], *, kind: str | None = None) -> list[str]:
        """Tokens of ``text`` under a named analyzer (an index's custom one when ``kind`` is given) or an
        analyzer defined inline (``{"tokenizer": ..., "filter": [...]}``)."""
        if not text.strip():
            return []
        spec = {"analyzer": analyzer} if isinstance(analyzer, str) else dict(analyzer)
        kwargs: dict[str, Any] = {"body": {**spec, "text": text}}
        if kind is not None:
            kwargs["index"] = self.name(kind)
        result = self._call("indices.analyze", **kwargs)
        return [token["token"] for token in result.get("tokens", [])]

    def server_version(self) -> str:
        return str(self._call("info")["version"]["number"])
