"""What the core needs from the outside world, as Protocols: the asset index, an object store, a work
queue, the embedder and the image reader. Adapters (``smarttags.adapters``) implement them against
OpenSearch, S3, SQS, onnxruntime and Pillow; unit tests hand in the in-memory fakes of ``tests/fakes.py``.

The core never builds an adapter: it is given one (or, for stores of other buckets, a factory).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any, Protocol

import numpy as np

from smarttags.errors import ImageError, ServiceError

if TYPE_CHECKING:
    from smarttags.core.asset import Asset
    from smarttags.core.folders import Folder


@dataclass(frozen=True)
class Versioned:
    """A document with what optimistic concurrency needs to write it back."""

    id: str
    source: dict[str, Any]
    seq_no: int
    primary_term: int


@dataclass(frozen=True)
class ObjectInfo:
    bucket: str
    key: str
    etag: str
    size: int
    last_modified: datetime | None = None
    content_type: str | None = None
    version_id: str | None = None


@dataclass(frozen=True)
class Write:
    """One whole-document write of a bulk: over ``expected`` (fails if it changed), else a new document
    (``create``: fails if one exists) or over whatever is there (``create=False``)."""

    kind: str
    id: str
    source: Mapping[str, Any]
    expected: Versioned | None = None
    create: bool = True


class Index(Protocol):
    """The OpenSearch indices of one deployment (``kind`` is assets, taxonomy, runs, folders, ...)."""

    def name(self, kind: str) -> str: ...
    def get(self, kind: str, doc_id: str) -> Versioned | None: ...
    def mget(self, kind: str, doc_ids: Sequence[str]) -> list[dict[str, Any] | None]: ...
    def put(
        self,
        kind: str,
        doc_id: str,
        source: Mapping[str, Any],
        *,
        expected: Versioned | None = None,
        create: bool = False,
        refresh: bool | str = False,
    ) -> tuple[int, int]: ...
    def delete(self, kind: str, doc_id: str, *, expected: Versioned | None = None, refresh: bool = False) -> bool: ...
    def get_many(self, refs: Sequence[tuple[str, str]]) -> list[Versioned | None]: ...
    def put_many(self, writes: Sequence[Write]) -> list[tuple[int, int] | ServiceError]: ...
    def bulk(self, actions: Sequence[tuple[Mapping[str, Any], Mapping[str, Any] | None]]) -> None: ...
    def update_scripted(
        self,
        kind: str,
        doc_id: str,
        script: str,
        params: Mapping[str, Any],
        *,
        upsert: Mapping[str, Any] | None = None,
        refresh: str | None = None,
    ) -> None: ...
    def count(self, kind: str, query: Mapping[str, Any] | None = None) -> int: ...
    def search(self, kind: str, body: Mapping[str, Any], **params: Any) -> dict[str, Any]: ...
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
    ) -> Iterator[dict[str, Any]]: ...
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
    ) -> Iterator[tuple[list[dict[str, Any]], list[Any] | None]]: ...
    def search_template(self, kind: str, template_id: str, params: Mapping[str, Any]) -> dict[str, Any]: ...
    def msearch_template(
        self, kind: str, template_id: str, params: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, Any]]: ...
    def msearch_templates(
        self, kind: str, searches: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> list[dict[str, Any]]: ...
    def render_template(self, template_id: str, params: Mapping[str, Any]) -> dict[str, Any]: ...
    def analyze(self, text: str, analyzer: str | Mapping[str, Any], *, kind: str | None = None) -> list[str]: ...
    def refresh(self, kind: str = "assets") -> None: ...


@dataclass(frozen=True)
class StoredAsset:
    """An asset as the index holds it, with what optimistic concurrency needs to write it back."""

    asset: Asset
    seq_no: int
    primary_term: int


class Assets(Protocol):
    """The assets index in terms of ``Asset`` values (``adapters.asset_index.AssetIndex``)."""

    def get(self, asset_id: str) -> StoredAsset | None: ...
    def put(self, asset: Asset, *, expected: StoredAsset | None = None, refresh: bool | str = False) -> StoredAsset: ...
    def get_many(self, asset_ids: Sequence[str]) -> list[StoredAsset | None]: ...
    def put_many(self, writes: Sequence[tuple[Asset, StoredAsset | None]]) -> list[StoredAsset | ServiceError]: ...
    def delete(self, expected: StoredAsset) -> bool: ...
    def scan(
        self, folder: Folder, *, attributes: Collection[str] | None = None, batch_size: int = 500
    ) -> Iterator[Asset]: ...
    def pages(
        self,
        folder: Folder,
        *,
        attributes: Collection[str] | None = None,
        page_size: int = 500,
        after: Sequence[Any] | None = None,
    ) -> Iterator[tuple[list[Asset], list[Any] | None]]: ...
    def count(self, folder: Folder | None = None) -> int: ...
    def scan_rejected(
        self, bucket: str, *, attributes: Collection[str] | None = None, batch_size: int = 500
    ) -> Iterator[Asset]: ...
    def merge(self, assets: Sequence[Asset], attributes: Collection[str], *, create: bool = True) -> None: ...
    def delete_many(self, asset_ids: Sequence[str]) -> None: ...
    def scan_stored(self, *, after: str | None = None, batch_size: int = 500) -> Iterator[StoredAsset]: ...
    def refresh(self) -> None: ...
    def from_source(self, source: Mapping[str, Any]) -> Asset: ...


class Store(Protocol):
    """The objects of one bucket."""

    @property
    def bucket(self) -> str: ...
    def head(self, key: str) -> ObjectInfo: ...
    def get_bytes(self, key: str, *, max_bytes: int = ...) -> tuple[bytes, ObjectInfo]: ...
    # The content to decode: whole when small, else a seekable reader that fetches what is read.
    def read(self, key: str, *, max_bytes: int = ...) -> tuple[bytes | IO[bytes], ObjectInfo]: ...
    def put_bytes(self, key: str, data: bytes, *, content_type: str = ...) -> str: ...
    def delete(self, key: str) -> None: ...
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...


# A store for any bucket: events name their bucket; the core asks for its store by name.
StoreFor = Callable[[str], Store]


class Queue(Protocol):
    """The tagging queue S3 notifications and tagging runs both feed."""

    def send(self, bodies: Iterable[Mapping[str, Any]]) -> int: ...
    def depth(self) -> dict[str, int]: ...  # messages "visible" and "in_flight" (received, not deleted)


class Embedder(Protocol):
    """Image bytes in, L2-normalised float32 embeddings out; one ImageError per bad item."""

    @property
    def backbone_id(self) -> str: ...
    @property
    def sha256(self) -> str: ...
    @property
    def input_size(self) -> int: ...
    def embed_arrays(self, pixels: Sequence[np.ndarray[Any, Any]]) -> np.ndarray[Any, Any]: ...
    def embed_bytes(self, items: Sequence[bytes]) -> list[np.ndarray[Any, Any] | ImageError]: ...
    def iter_embed(
        self, items: Sequence[Any], load: Callable[[Any], bytes]
    ) -> Iterator[np.ndarray[Any, Any] | ImageError]: ...


class ImageFacts(Protocol):
    """What an image says about itself (``adapters.imaging.ImageMetadata``)."""

    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def title(self) -> str | None: ...
    @property
    def description(self) -> str | None: ...
    @property
    def keywords(self) -> Sequence[str]: ...
    @property
    def content_type(self) -> str | None: ...
    @property
    def format(self) -> str: ...
    @property
    def decoder(self) -> str: ...
    @property
    def media(self) -> str: ...  # "image" or "video"
    @property
    def duration(self) -> float | None: ...  # a video's, in seconds (0.0 when the container does not say)


# Reads an image's facts from its bytes, refusing more than ``max_pixels``; raises ImageError.
ReadFacts = Callable[..., ImageFacts]


class Picture(Protocol):
    """An image opened once (``adapters.imaging.Picture``): its facts, and its pixels at a size."""

    @property
    def facts(self) -> ImageFacts: ...
    def pixels(self, size: int) -> np.ndarray[Any, Any]: ...


# Opens an image's bytes, refusing more than ``max_pixels``; raises ImageError.
OpenPicture = Callable[..., Picture]


class Clip(Protocol):
    """A video opened once (``adapters.videos``): its facts and its sampled keyframes (the first is the poster)."""

    @property
    def facts(self) -> ImageFacts: ...
    @property
    def duration(self) -> float: ...
    @property
    def times(self) -> Sequence[float]: ...  # of the sampled frames, seconds, ascending
    def frames(self, size: int) -> list[np.ndarray[Any, Any]]: ...  # each (size, size, 3) uint8, letterboxed


class Videos(Protocol):
    """Video sampling (``adapters.videos.Videos``): sniffs without PyAV, samples with it where installed."""

    @property
    def can_sample(self) -> bool: ...
    def is_video(self, data: bytes | IO[bytes]) -> bool: ...
    def open(self, data: bytes | IO[bytes], *, max_pixels: int, size: int | None = None) -> Clip: ...
    def keep_poster(self, clip: Clip, asset_id: str, etag: str) -> None: ...
