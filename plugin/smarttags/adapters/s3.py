"""The S3 side: asset binaries, model files and thumbnails. One small class around a boto3 S3 client."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from smarttags.adapters.clients import translate_aws_error
from smarttags.core.ports import ObjectInfo
from smarttags.errors import ImageTooLarge, NotFound

log = logging.getLogger(__name__)

# Image decoding refuses bombs by pixel count; this refuses absurd downloads by byte count first.
DEFAULT_MAX_BYTES = 512 * 1024 * 1024


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
