"""Folders (S3 prefixes) and their "Enable Smart Tags" flag. Enabling a folder covers its subfolders."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from smarttags.core.clock import now_iso
from smarttags.core.ports import Index


@dataclass(frozen=True, order=True)
class Folder:
    """A folder of a bucket: the one way to parse, print and query one. ``prefix`` is '' (the whole
    bucket) or ends in '/'; the asset document stores ``path`` (the prefix without its slash)."""

    bucket: str
    prefix: str = ""

    def __post_init__(self) -> None:
        if not self.bucket:
            raise ValueError("a folder needs a bucket")
        if self.prefix and not self.prefix.endswith("/"):
            raise ValueError(f"folder prefix {self.prefix!r} must end in '/'")

    @classmethod
    def parse(cls, uri: str, default_bucket: str | None = None) -> Folder:
        """``s3://bucket/a/b`` -> Folder('bucket', 'a/b/'); a bare prefix uses the default bucket."""
        uri = uri.strip()
        if uri.startswith("s3://"):
            bucket, _, prefix = uri[5:].partition("/")
        elif default_bucket:
            bucket, prefix = default_bucket, uri
        else:
            raise ValueError(f"{uri!r} is not an s3:// URI")
        if not bucket:
            raise ValueError(f"{uri!r} names no bucket")
        prefix = prefix.strip("/")
        return cls(bucket, f"{prefix}/" if prefix else "")

    @classmethod
    def of_key(cls, bucket: str, key: str) -> Folder:
        """The folder an object is in: 'a/b/c.jpg' -> 'a/b/'."""
        path = key.rpartition("/")[0]
        return cls(bucket, f"{path}/" if path else "")

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    @property
    def path(self) -> str:
        return self.prefix.rstrip("/")

    def contains(self, key: str) -> bool:
        return key.startswith(self.prefix)

    def query(self) -> dict[str, Any]:
        """The assets-index filter for everything in this folder and its subfolders."""
        filters: list[dict[str, Any]] = [{"term": {"bucket": self.bucket}}]
        if self.path:
            filters.append({"term": {"folder.tree": self.path}})
        return {"bool": {"filter": filters}}

    def __str__(self) -> str:
        return self.uri


@dataclass(frozen=True)
class FolderSetting:
    """A registered folder and its "Enable Smart Tags" flag."""

    folder: Folder
    enabled: bool

    @property
    def uri(self) -> str:
        return self.folder.uri


def _doc_id(bucket: str, prefix: str) -> str:
    return f"{bucket}/{prefix}"


class FolderRegistry:
    def __init__(self, index: Index, *, cache_seconds: float = 15.0) -> None:
        self._index = index
        self._cache_seconds = cache_seconds
        self._cache: tuple[float, list[FolderSetting]] | None = None

    def set_enabled(self, folder: Folder, enabled: bool, *, user: str = "system") -> FolderSetting:
        self._index.put(
            "folders",
            _doc_id(folder.bucket, folder.prefix),
            {
                "folder": folder.uri,
                "bucket": folder.bucket,
                "prefix": folder.prefix,
                "smart_tags_enabled": enabled,
                "updated_at": now_iso(),
                "updated_by": user,
            },
            refresh=True,
        )
        self._cache = None
        return FolderSetting(folder, enabled)

    def all(self) -> list[FolderSetting]:
        if self._cache and time.monotonic() - self._cache[0] < self._cache_seconds:
            return self._cache[1]
        folders = sorted(
            (
                FolderSetting(
                    Folder(h["_source"]["bucket"], h["_source"]["prefix"]), bool(h["_source"]["smart_tags_enabled"])
                )
                for h in self._index.scan("folders", {"match_all": {}})
            ),
            key=lambda f: f.folder,
        )
        self._cache = (time.monotonic(), folders)
        return folders

    def enabled(self) -> list[FolderSetting]:
        return [f for f in self.all() if f.enabled]

    def is_enabled(self, bucket: str, key: str) -> bool:
        """The nearest registered folder above the key decides; unregistered means disabled."""
        return self.are_enabled([(bucket, key)])[0]

    def are_enabled(self, objects: Sequence[tuple[str, str]]) -> list[bool]:
        """``is_enabled`` for each (bucket, key), in one ``mget`` of all their ancestor folders.

        Read fresh on every call, not cached: a folder enabled a moment ago must govern the very next
        upload, and one request per batch of uploads costs next to nothing."""
        chains = [[_doc_id(bucket, p) for p in _prefixes(key)] for bucket, key in objects]
        ids = sorted({doc_id for chain in chains for doc_id in chain})
        found = dict(zip(ids, self._index.mget("folders", ids), strict=True)) if ids else {}
        flags = []
        for chain in chains:
            set_here = [doc["smart_tags_enabled"] for doc in map(found.__getitem__, chain) if doc is not None]
            flags.append(bool(set_here and set_here[-1]))
        return flags


def _prefixes(key: str) -> list[str]:
    """The folders above a key, outermost first: the bucket's root, then each level."""
    parts = key.split("/")[:-1]
    return [""] + ["/".join(parts[: i + 1]) + "/" for i in range(len(parts))]
