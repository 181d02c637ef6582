"""In-memory fakes of the core's ports (``smarttags.core.ports``), for unit tests of the core without
OpenSearch or S3. They keep the semantics the core relies on — sequence numbers and conflicts for
optimistic concurrency, create-only writes, NotFound for missing objects — and nothing else: queries
are matched on ``match_all``, ``term`` and ``exists`` filters only. Integration tests use the real services."""

from __future__ import annotations

import copy
import hashlib
import io
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from smarttags.core.ports import ObjectInfo, Versioned, Write
from smarttags.errors import ConflictError, NotFound, ServiceError


def _matches(source: Mapping[str, Any], query: Mapping[str, Any]) -> bool:
    if not query or "match_all" in query:
        return True
    if "exists" in query:
        return bool(source.get(query["exists"]["field"]))
    if "term" in query:
        ((field, value),) = query["term"].items()
        return source.get(field.removesuffix(".tree")) == value
    if "bool" in query:
        return all(_matches(source, q) for q in query["bool"].get("filter", []))
    raise NotImplementedError(f"the fake index does not match {query}")


class FakeIndex:
    def __init__(self, prefix: str = "fake") -> None:
        self.prefix = prefix
        self.docs: dict[tuple[str, str], tuple[dict[str, Any], int]] = {}
        self._seq = 0
        self.writes = 0
        self.round_trips = 0  # requests of the tagging path: get, put, get_many, put_many, mget
        self._lock = threading.Lock()  # a conditional write is atomic, as in OpenSearch

    def name(self, kind: str) -> str:
        return f"{self.prefix}-{kind}"

    def get(self, kind: str, doc_id: str) -> Versioned | None:
        self.round_trips += 1
        return self._get(kind, doc_id)

    def _get(self, kind: str, doc_id: str) -> Versioned | None:
        held = self.docs.get((kind, doc_id))
        return Versioned(doc_id, copy.deepcopy(held[0]), held[1], 1) if held else None

    def mget(self, kind: str, doc_ids: Sequence[str]) -> list[dict[str, Any] | None]:
        self.round_trips += 1
        return [(copy.deepcopy(self.docs[(kind, i)][0]) if (kind, i) in self.docs else None) for i in doc_ids]

    def get_many(self, refs: Sequence[tuple[str, str]]) -> list[Versioned | None]:
        self.round_trips += bool(refs)
        return [self._get(kind, i) for kind, i in refs]

    def put_many(self, writes: Sequence[Write]) -> list[tuple[int, int] | ServiceError]:
        self.round_trips += bool(writes)  # as the adapter: nothing to write is no request
        answers: list[tuple[int, int] | ServiceError] = []
        for write in writes:
            try:
                create = write.expected is None and write.create
                answers.append(self._put(write.kind, write.id, write.source, expected=write.expected, create=create))
            except ServiceError as exc:
                answers.append(exc)
        return answers

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
        self.round_trips += 1
        return self._put(kind, doc_id, source, expected=expected, create=create)

    def _put(
        self, kind: str, doc_id: str, source: Mapping[str, Any], *, expected: Versioned | None, create: bool
    ) -> tuple[int, int]:
        with self._lock:
            held = self.docs.get((kind, doc_id))
            if create and held is not None:
                raise ConflictError("opensearch", f"{doc_id} exists")
            if expected is not None and (held is None or held[1] != expected.seq_no):
                raise ConflictError("opensearch", f"{doc_id} changed")
            self._seq += 1
            self.writes += 1
            self.docs[(kind, doc_id)] = (copy.deepcopy(dict(source)), self._seq)
            return self._seq, 1

    def delete(self, kind: str, doc_id: str, *, expected: Versioned | None = None, refresh: bool = False) -> bool:
        held = self.docs.get((kind, doc_id))
        if held is None:
            return False
        if expected is not None and held[1] != expected.seq_no:
            raise ConflictError("opensearch", f"{doc_id} changed")
        del self.docs[(kind, doc_id)]
        return True

    def bulk(self, actions: Sequence[tuple[Mapping[str, Any], Mapping[str, Any] | None]]) -> None:
        """``index``, ``delete`` and ``update`` (partial ``doc``, optional ``upsert``) actions."""
        for meta, body in actions:
            ((op, target),) = meta.items()
            kind = target["_index"].removeprefix(f"{self.prefix}-")
            key = (kind, target["_id"])
            if op == "delete":
                self.docs.pop(key, None)
                continue
            assert body is not None
            if op == "index":
                source = dict(body)
            elif key in self.docs:
                source = {**self.docs[key][0], **copy.deepcopy(dict(body["doc"]))}
            elif "upsert" in body:
                source = copy.deepcopy(dict(body["upsert"]))
            else:
                continue  # OpenSearch answers document_missing for this item
            self._seq += 1
            self.writes += 1
            self.docs[key] = (source, self._seq)

    def update_scripted(self, kind: str, doc_id: str, script: str, params: Mapping[str, Any], **_: Any) -> None:
        # Painless does not run here: the fake records that the core asked, tests read ``scripted``.
        self.docs.setdefault(("scripted", doc_id), ({"calls": []}, 0))[0]["calls"].append(dict(params))

    def scan(self, kind: str, query: Mapping[str, Any], **_: Any) -> Iterator[dict[str, Any]]:
        for (k, doc_id), (source, _seq) in sorted(self.docs.items()):
            if k == kind and _matches(source, query):
                yield {"_id": doc_id, "_source": copy.deepcopy(source)}

    def scan_pages(
        self, kind: str, query: Mapping[str, Any], *, batch_size: int = 500, after: Any = None, **_: Any
    ) -> Iterator[tuple[list[dict[str, Any]], list[Any] | None]]:
        hits = [{**h, "sort": [h["_id"]]} for h in self.scan(kind, query) if after is None or h["_id"] > after[0]]
        for start in range(0, len(hits), batch_size):
            page = hits[start : start + batch_size]
            yield page, page[-1]["sort"]

    def count(self, kind: str, query: Mapping[str, Any] | None = None) -> int:
        return sum(1 for _ in self.scan(kind, query or {}))

    def refresh(self, kind: str = "assets") -> None:
        pass


class FakeStore:
    """The objects of one bucket, in memory."""

    def __init__(self, bucket: str) -> None:
        self.bucket = bucket
        self.objects: dict[str, tuple[bytes, str]] = {}

    def _info(self, key: str) -> ObjectInfo:
        data, content_type = self.objects[key]
        etag = hashlib.md5(data).hexdigest()  # what S3 gives a single-part upload
        return ObjectInfo(self.bucket, key, etag, len(data), datetime.now(UTC), content_type)

    def head(self, key: str) -> ObjectInfo:
        if key not in self.objects:
            raise NotFound(f"s3://{self.bucket}/{key} does not exist")
        return self._info(key)

    def get_bytes(self, key: str, *, max_bytes: int = 1 << 30) -> tuple[bytes, ObjectInfo]:
        info = self.head(key)
        return self.objects[key][0], info

    def read(self, key: str, *, max_bytes: int = 1 << 30) -> tuple[bytes, ObjectInfo]:
        return self.get_bytes(key, max_bytes=max_bytes)

    def put_bytes(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> str:
        self.objects[key] = (data, content_type)
        return self._info(key).etag

    def delete(self, key: str) -> None:
        self.objects.pop(key, None)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        for key in sorted(self.objects):
            if key.startswith(prefix):
                yield self._info(key)


class FakeS3Client:
    """The few calls of a boto3 S3 client that ``adapters.s3.ObjectStore.read`` makes (``get_object``
    with ``Range``, ``IfMatch``), over bytes or files on disk, counting the bytes and requests served.
    For unit tests of the reader; its integration tests use moto."""

    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes | Path, str]] = {}
        self.served = 0
        self.requests = 0
        self.down = False  # S3 unreachable: every call fails as botocore fails it

    def put(self, key: str, data: bytes | Path) -> None:
        """Store (or replace: a new ETag) ``key``; a Path is read from disk on each GET."""
        self._puts = getattr(self, "_puts", 0) + 1
        self.objects[key] = (data, hashlib.md5(f"{key}:{self._puts}".encode()).hexdigest())

    def _size(self, data: bytes | Path) -> int:
        return len(data) if isinstance(data, bytes) else data.stat().st_size

    def get_object(
        self, *, Bucket: str, Key: str, Range: str | None = None, IfMatch: str | None = None, **_: Any
    ) -> dict[str, Any]:
        from botocore.exceptions import ClientError, EndpointConnectionError

        if self.down:
            raise EndpointConnectionError(endpoint_url="http://s3.fake")
        if Key not in self.objects:
            raise ClientError({"Error": {"Code": "NoSuchKey", "Message": "no such key"}}, "GetObject")
        data, tag = self.objects[Key]
        if IfMatch is not None and IfMatch.strip('"') != tag:
            raise ClientError({"Error": {"Code": "PreconditionFailed", "Message": "If-Match"}}, "GetObject")
        size = self._size(data)
        start, end = 0, size - 1
        if Range is not None:
            first, _, last = Range.removeprefix("bytes=").partition("-")
            start, end = int(first), min(int(last), size - 1)
            if start >= size:
                raise ClientError({"Error": {"Code": "InvalidRange", "Message": "not satisfiable"}}, "GetObject")
        if isinstance(data, bytes):
            body = data[start : end + 1]
        else:
            with data.open("rb") as f:
                f.seek(start)
                body = f.read(end + 1 - start)
        self.served += len(body)
        self.requests += 1
        answer: dict[str, Any] = {
            "Body": io.BytesIO(body),
            "ContentLength": len(body),
            "ETag": f'"{tag}"',
            "LastModified": datetime.now(UTC),
            "ContentType": "binary/octet-stream",
        }
        if Range is not None:
            answer["ContentRange"] = f"bytes {start}-{end}/{size}"
        return answer
