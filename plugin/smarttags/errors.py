"""The one error tree of SmartTags.

    SmartTagsError
    ├── ConfigError                 a setting is missing or wrong (names the setting)
    ├── PrerequisiteError           a program the embedded stack needs is missing (says how to install it)
    ├── ServiceError                an outside service failed; retrying later may succeed
    │   ├── ServiceUnavailable      OpenSearch, S3 or SQS cannot be reached
    │   ├── CredentialsRejected     the service answered, but refused our credentials
    │   └── ConflictError           an optimistic-concurrency write lost, after bounded retries
    ├── NotFound                    an asset, model, run or object that does not exist
    ├── ImageError                  one input could not become an embedding (never retried)
    │   ├── UnsupportedImage        a format we do not decode (video, Office, JPEG 2000...)
    │   ├── CorruptImage            truncated, zero bytes, not an image at all
    │   └── ImageTooLarge           over the decompression-bomb limit, refused before allocating
    ├── ModelError                  a model or backbone file is missing or fails its checksum
    ├── TaxonomyError               a tag is not in the taxonomy, or the taxonomy file is invalid
    │   └── TaxonomyFileError       a taxonomy file refused whole, with one line per problem
    └── RequestError                a caller asked for something we refuse (e.g. more than 15 assets)

Adapters translate botocore and opensearch-py exceptions into this tree at the boundary
(``store.py``, ``queue.py``, ``index.py``); nothing classifies errors by their message text.
"""

from __future__ import annotations


class SmartTagsError(Exception):
    """Base of every error SmartTags raises on purpose."""


class ConfigError(SmartTagsError):
    def __init__(self, setting: str, reason: str) -> None:
        super().__init__(f"setting {setting}: {reason}")
        self.setting = setting
        self.reason = reason


class PrerequisiteError(SmartTagsError):
    """A program the embedded stack needs is missing; the message says how to install it."""


class ServiceError(SmartTagsError):
    """An outside service failed; the operation may succeed when retried."""

    def __init__(self, service: str, reason: str) -> None:
        super().__init__(f"{service}: {reason}")
        self.service = service
        self.reason = reason


class ServiceUnavailable(ServiceError):
    pass


class CredentialsRejected(ServiceError):
    pass


class ConflictError(ServiceError):
    pass


class NotFound(SmartTagsError):
    pass


class ImageError(SmartTagsError):
    """One input could not become an embedding. ``reason`` is a short machine-readable word."""

    reason_code = "image_error"

    def __init__(self, detail: str, *, content_type: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.content_type = content_type

    @property
    def reason(self) -> str:
        return f"{self.reason_code}: {self.detail}"


class UnsupportedImage(ImageError):
    reason_code = "unsupported"


class CorruptImage(ImageError):
    reason_code = "corrupt"


class ImageTooLarge(ImageError):
    reason_code = "too_large"


class ModelError(SmartTagsError):
    pass


class TaxonomyError(SmartTagsError):
    pass


class TaxonomyFileError(TaxonomyError):
    """A taxonomy file with problems; the message is a summary line and then one line per problem."""

    def __init__(self, summary: str, problems: list[str]) -> None:
        super().__init__("\n".join([summary, *problems]))
        self.summary = summary
        self.problems = problems


class RequestError(SmartTagsError):
    pass
