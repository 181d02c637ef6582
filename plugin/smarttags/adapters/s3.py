"""The S3 side: asset binaries, model files and thumbnails. One small class around a boto3 S3 client.

``ObjectStore.read`` is how the tagger reads a picture: a small object comes whole in one GET; a larger
one as ``RangedObject``, a seekable file over ranged GETs of that very version with a small block cache,
so decoders fetch and hold only what they read (a header, a JPEG's embedded preview, a stream decoded
at reduced scale), never the whole object in memory.
"""

from __future__ import annotations

import io
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from smarttags.adapters.clients import translate_aws_error
from smarttags.core.ports import ObjectInfo
from smarttags.errors import ImageTooLarge, NotFound, ServiceError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

log = logging.getLogger(__name__)

# Image decoding refuses bombs by pixel count; this refuses absurd downloads by byte count first.
DEFAULT_MAX_BYTES = 512 * 1024 * 1024
# ``read``'s first GET asks for this many bytes: a smaller object arrives whole in that one request
# (most photos: no more requests than a plain GET), a larger one is read on demand from there.
WHOLE_BYTES = 4 << 20
BLOCK_BYTES = 1 << 20  # the unit of the cache and of every later ranged GET
CACHE_BYTES = 16 << 20  # what a RangedObject holds at most: its memory bound
READ_AHEAD_BYTES = 8 << 20  # the longest GET while reads are sequential (the read-ahead doubles to it)


class RangedObject(io.RawIOBase):
    """A read-only, seekable file over one object's bytes, fetched by ``fetch(start, end)`` (a body
    with ``read(n)`` for bytes ``[start, end)``) in whole blocks. An LRU cache keeps the last
    ``cache_bytes``; while reads are sequential each GET is twice as long as the last, up to
    ``read_ahead``, so a decoder streaming the whole object costs a few dozen requests, not thousands."""

    def __init__(
        self,
        fetch: Callable[[int, int], Any],
        size: int,
        *,
        first: bytes = b"",
        block: int = BLOCK_BYTES,
        cache_bytes: int = CACHE_BYTES,
        read_ahead: int = READ_AHEAD_BYTES,
    ) -> None:
        super().__init__()
        if cache_bytes < read_ahead + block:
            raise ValueError("the cache must hold one read-ahead and a block")
        self._fetch = fetch
        self._size = size
        self._block = block
        self._cache_bytes = cache_bytes
        self._read_ahead = read_ahead
        self._pos = 0
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self._ahead = block
        whole = len(first) // block  # keep only whole blocks (and the last one): the rest is refetched
        for index in range(whole + (len(first) == size and len(first) % block > 0)):
            self._blocks[index] = first[index * block : (index + 1) * block]
        self._next = len(self._blocks)  # the block a sequential read asks for next

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: WriteableBuffer) -> int:
        out = memoryview(buffer).cast("B")
        done = 0
        while done < len(out) and self._pos < self._size:
            index, start = divmod(self._pos, self._block)
            data = self._get(index)
            n = min(len(out) - done, len(data) - start)
            out[done : done + n] = data[start : start + n]
            done += n
            self._pos += n
        return done

    def _get(self, index: int) -> bytes:
        cached = self._blocks.get(index)
        if cached is not None:
            self._blocks.move_to_end(index)
            return cached
        self._ahead = min(self._ahead * 2, self._read_ahead) if index == self._next else self._block
        start = index * self._block
        end = min(self._size, start + self._ahead)
        body = self._fetch(start, end)
        try:
            for at in range(start, end, self._block):
                self._blocks[at // self._block] = _read_exactly(body, min(self._block, end - at))
                self._blocks.move_to_end(at // self._block)
        finally:
            body.close()
        self._next = (end + self._block - 1) // self._block
        wanted = self._blocks[index]
        while len(self._blocks) * self._block > self._cache_bytes:
            self._blocks.popitem(last=False)
        return wanted


def _read_exactly(body: Any, n: int) -> bytes:
    parts: list[bytes] = []
    left = n
    while left > 0:
        try:
            chunk: bytes = body.read(left)
        except (BotoCoreError, OSError) as exc:  # the connection broke mid-body
            raise translate_aws_error(exc, "s3") from exc
        if not chunk:
            raise ServiceError("s3", f"a ranged GET ended {left} bytes short")
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


class ObjectStore:
    """Read and write objects of one bucket. Errors come out as SmartTags errors."""

    def __init__(self, s3_client: Any, bucket: str) -> None:
        self._s3 = s3_client
        self.bucket = bucket

    def _call(self, operation: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._s3, operation)(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound", "NoSuchVersion"):
                raise NotFound(f"s3://{self.bucket}/{kwargs.get('Key', '')} does not exist") from None
            if code == "InvalidRange" and str(kwargs.get("Range", "")).startswith("bytes=0-"):
                # A zero-byte object has no byte 0 to range over: read it plainly.
                return self._call(operation, **{k: v for k, v in kwargs.items() if k != "Range"})
            if code in ("PreconditionFailed", "412") and "IfMatch" in kwargs:
                # Replaced while being read: the version read is gone; the new upload has its own event.
                raise NotFound(f"s3://{self.bucket}/{kwargs.get('Key', '')} was replaced while being read") from None
            raise translate_aws_error(exc, "s3") from exc
        except BotoCoreError as exc:
            raise translate_aws_error(exc, "s3") from exc

    def presigned_url(self, key: str, *, expires_seconds: int = 300, version_id: str | None = None) -> str:
        """A short-lived GET link to the object, for a browser that has no AWS credentials."""
        params: dict[str, str] = {"Bucket": self.bucket, "Key": key}
        if version_id:
            params["VersionId"] = version_id
        try:
            url: str = self._s3.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_seconds)
        except (ClientError, BotoCoreError) as exc:
            raise translate_aws_error(exc, "s3") from exc
        return url

    def reachable(self) -> bool:
        """The bucket answers (raises a ServiceError when S3 does not)."""
        self._call("head_bucket")
        return True

    def head(self, key: str) -> ObjectInfo:
        meta = self._call("head_object", Key=key)
        return ObjectInfo(
            bucket=self.bucket,
            key=key,
            etag=str(meta.get("ETag", "")).strip('"'),
            size=int(meta.get("ContentLength", 0)),
            last_modified=meta.get("LastModified"),
            content_type=meta.get("ContentType"),
            version_id=meta.get("VersionId"),
        )

    def get_bytes(self, key: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[bytes, ObjectInfo]:
        response = self._call("get_object", Key=key)
        size = int(response.get("ContentLength", 0))
        if size > max_bytes:
            response["Body"].close()
            raise ImageTooLarge(f"{size} bytes is over the limit of {max_bytes} (backbone.max_object_bytes)")
        data: bytes = response["Body"].read()
        info = ObjectInfo(
            bucket=self.bucket,
            key=key,
            etag=str(response.get("ETag", "")).strip('"'),
            size=len(data),
            last_modified=response.get("LastModified"),
            content_type=response.get("ContentType"),
            version_id=response.get("VersionId"),
        )
        return data, info

    def read(self, key: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[bytes | IO[bytes], ObjectInfo]:
        """The object's content: whole when it is at most ``WHOLE_BYTES`` (one GET), else a
        ``RangedObject`` over ranged GETs of this version, holding at most ``CACHE_BYTES``."""
        response = self._call("get_object", Key=key, Range=f"bytes=0-{WHOLE_BYTES - 1}")
        content_range = str(response.get("ContentRange") or "")
        size = int(content_range.rpartition("/")[2]) if "/" in content_range else int(response["ContentLength"])
        info = ObjectInfo(
            bucket=self.bucket,
            key=key,
            etag=str(response.get("ETag", "")).strip('"'),
            size=size,
            last_modified=response.get("LastModified"),
            content_type=response.get("ContentType"),
            version_id=response.get("VersionId"),
        )
        if size > max_bytes:
            response["Body"].close()
            raise ImageTooLarge(f"{size} bytes is over the limit of {max_bytes} (backbone.max_object_bytes)")
        try:
            first = _read_exactly(response["Body"], min(size, WHOLE_BYTES))
        finally:
            response["Body"].close()
        if size <= WHOLE_BYTES:
            return first, info
        # Every later GET reads this very version: pinned by id, or by ETag in an unversioned bucket.
        pin = {"VersionId": info.version_id} if info.version_id else {"IfMatch": f'"{info.etag}"'}

        def fetch(start: int, end: int) -> Any:
            return self._call("get_object", Key=key, Range=f"bytes={start}-{end - 1}", **pin)["Body"]

        return io.BufferedReader(RangedObject(fetch, size, first=first), buffer_size=64 << 10), info

    def put_bytes(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> str:
        response = self._call("put_object", Key=key, Body=data, ContentType=content_type)
        return str(response.get("ETag", "")).strip('"')

    def delete(self, key: str) -> None:
        self._call("delete_object", Key=key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Prefix": prefix}
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call("list_objects_v2", **kwargs)
            for item in page.get("Contents", []):
                yield ObjectInfo(
                    bucket=self.bucket,
                    key=item["Key"],
                    etag=str(item.get("ETag", "")).strip('"'),
                    size=int(item.get("Size", 0)),
                    last_modified=item.get("LastModified"),
                )
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")
