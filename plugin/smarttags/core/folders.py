"""Folders (S3 prefixes) and their "Enable Smart Tags" flag. Enabling a folder covers its subfolders."""

from __future__ import annotations

import time
from dataclasses import dataclass

from smarttags.core.asset import now_iso
from smarttags.core.ports import Index


@dataclass(frozen=True)
class Folder:
    bucket: str
    prefix: str  # '' or ending in '/'
    enabled: bool

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def parse_uri(uri: str, default_bucket: str | None = None) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ('bucket', 'a/b/'); a bare prefix uses the default bucket."""
    if uri.startswith("s3://"):
        bucket, _, prefix = uri[5:].partition("/")
    elif default_bucket:
        bucket, prefix = default_bucket, uri
    else:
        raise ValueError(f"{uri!r} is not an s3:// URI")
    prefix = prefix.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    if not bucket:
        raise ValueError(f"{uri!r} names no bucket")
    return bucket, prefix


def _doc_id(bucket: str, prefix: str) -> str:
    return f"{bucket}/{prefix}"


class FolderRegistry:
    def __init__(self, index: Index, *, cache_seconds: float = 15.0) -> None:
        self._index = index
        self._cache_seconds = cache_seconds
        self._cache: tuple[float, list[Folder]] | None = None

    def set_enabled(self, bucket: str, prefix: str, enabled: bool, *, user: str = "system") -> Folder:
        folder = Folder(bucket, prefix, enabled)
        self._index.put(
            "folders",
            _doc_id(bucket, prefix),
            {
                "folder": folder.uri,
                "bucket": bucket,
                "prefix": prefix,
                "smart_tags_enabled": enabled,
                "updated_at": now_iso(),
                "updated_by": user,
            },
            refresh=True,
        )
        self._cache = None
        return folder

    def all(self) -> list[Folder]:
        if self._cache and time.monotonic() - self._cache[0] < self._cache_seconds:
            return self._cache[1]
        folders = sorted(
            (
                Folder(h["_source"]["bucket"], h["_source"]["prefix"], bool(h["_source"]["smart_tags_enabled"]))
                for h in self._index.scan("folders", {"match_all": {}})
            ),
            key=lambda f: (f.bucket, f.prefix),
        )
        self._cache = (time.monotonic(), folders)
        return folders

    def enabled(self) -> list[Folder]:
        return [f for f in self.all() if f.enabled]

    def is_enabled(self, bucket: str, key: str) -> bool:
        """The nearest registered folder above the key decides; unregistered means disabled.

        Read fresh on every call (one ``mget`` of the key's ancestor folders): a folder enabled a moment
        ago must govern the very next upload."""
        parts = key.split("/")[:-1]
        prefixes = [""] + ["/".join(parts[: i + 1]) + "/" for i in range(len(parts))]
        found = self._index.mget("folders", [_doc_id(bucket, p) for p in prefixes])
        flags = [doc["smart_tags_enabled"] for doc in found if doc is not None]
        return bool(flags and flags[-1])
