"""The composition root: every entry point (CLI, Lambda, worker, scheduler, admin) builds one ``Services``
from the settings, and hands each use case the collaborators it takes. Each adapter and store is built
once per process and shared (one model cache, one taxonomy cache)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import opensearchpy

from smarttags.adapters import backbone as backbone_mod
from smarttags.adapters import clients, imaging, videos
from smarttags.adapters.asset_index import AssetIndex
from smarttags.adapters.embedder import Embedder
from smarttags.adapters.opensearch import SearchIndex
from smarttags.adapters.s3 import ObjectStore
from smarttags.adapters.sqs import WorkQueue
from smarttags.core import events, windows
from smarttags.core.folders import Folder, FolderRegistry
from smarttags.core.model_registry import ModelStore
from smarttags.core.moderation import Moderation
from smarttags.core.review import ReviewQueue
from smarttags.core.runs import Run, RunLog
from smarttags.core.search import Searcher
from smarttags.core.tagging import Tagger
from smarttags.core.taxonomy import TaxonomyStore
from smarttags.core.training import Trainer
from smarttags.errors import NotFound
from smarttags.settings import BackboneSettings, Settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient


@dataclass
class Services:
    settings: Settings

    @cached_property
    def opensearch(self) -> opensearchpy.OpenSearch:
        return clients.opensearch_client(self.settings)

    @cached_property
    def s3(self) -> S3Client:
        return clients.s3_client(self.settings)

    @cached_property
    def sqs(self) -> SQSClient:
        return clients.sqs_client(self.settings)

    @cached_property
    def index(self) -> SearchIndex:
        return SearchIndex(
            self.opensearch,
            self.settings.opensearch.index_prefix,
            replicas=self.settings.opensearch.replicas,
            shards=self.settings.opensearch.shards,
            # Asked only when an index is created: other commands never read the active model for it.
            embedding_dim=lambda: self.embedding_dim,
        )

    @cached_property
    def assets(self) -> AssetIndex:
        return AssetIndex(self.index)

    @cached_property
    def store(self) -> ObjectStore:
        return ObjectStore(self.s3, self.settings.aws.bucket)

    @cached_property
    def own_store(self) -> ObjectStore:
        """The bucket of SmartTags' own files (models, thumbnails), which notifies nothing."""
        return ObjectStore(self.s3, self.settings.aws.own_bucket)

    def store_for(self, bucket: str) -> ObjectStore:
        """The store of any bucket (events name theirs); the configured buckets' are shared."""
        if bucket == self.settings.aws.bucket:
            return self.store
        return self.own_store if bucket == self.settings.aws.own_bucket else ObjectStore(self.s3, bucket)

    @cached_property
    def queue(self) -> WorkQueue:
        return WorkQueue.by_name(self.sqs, self.settings.aws.queue_name)

    @cached_property
    def dead_letter_queue(self) -> WorkQueue:
        return WorkQueue.by_name(self.sqs, self.settings.aws.dead_letter_queue_name)

    @cached_property
    def taxonomy(self) -> TaxonomyStore:
        return TaxonomyStore(self.index)

    @cached_property
    def folders(self) -> FolderRegistry:
        return FolderRegistry(self.index)

    @cached_property
    def runs(self) -> RunLog:
        return RunLog(self.index)

    @cached_property
    def models(self) -> ModelStore:
        return ModelStore(self.own_store, self.settings.aws.models_prefix)

    @cached_property
    def moderation(self) -> Moderation:
        return Moderation(self.assets, self.index)

    @cached_property
    def review(self) -> ReviewQueue:
        return ReviewQueue(self.index, self.assets, self.models, self.settings.aws.bucket)

    @cached_property
    def searcher(self) -> Searcher:
        return Searcher(self.index, self.assets, self.taxonomy, self.settings.aws.bucket)

    @cached_property
    def backbone(self) -> BackboneSettings:
        """The backbone this deployment embeds with: ``backbone.name`` when set, else the active model's
        (``backbone.for_model``: an existing deployment keeps its backbone when the default changes)."""
        configured = self.settings.backbone
        if "name" in configured.model_fields_set:
            return configured
        try:
            version = self.models.active_version()
            model_backbone = self.models.manifest(version).backbone_id if version else None
        except NotFound:  # no bucket of our own yet (a first `init`): no model
            model_backbone = None
        return backbone_mod.for_model(configured, model_backbone)

    @property
    def embedding_dim(self) -> int:
        """The size of the embeddings this deployment stores (the vector mapping's dimension)."""
        return backbone_mod.embedding_dim_for(self.backbone)

    def embedder(self) -> Embedder:
        """A new embedder (loading the backbone is slow: the tagger and trainer call this lazily)."""
        from smarttags.adapters.embedder import load_embedder

        return load_embedder(self.settings.model_copy(update={"backbone": self.backbone}))

    @cached_property
    def videos(self) -> videos.Videos:
        """Video sampling (PyAV, where the ``video`` extra is installed); posters go with the thumbnails."""
        return videos.Videos(self.own_store, self.settings.aws.thumbnails_prefix)

    def forward_video(self) -> Callable[[events.ObjectEvent], None] | None:
        """Without PyAV, videos go to the video function's queue when one is configured."""
        name = self.settings.aws.video_queue_name
        if not name or self.videos.can_sample:
            return None
        queues: list[WorkQueue] = []  # looked up at the first video, not at every cold start

        def forward(event: events.ObjectEvent) -> None:
            queues[:] = queues or [WorkQueue.by_name(self.sqs, name)]
            queues[0].send([events.work_item(event.bucket, [event.key], run_id=event.run_id, trigger=event.trigger)])

        return forward

    @cached_property
    def tagger(self) -> Tagger:
        return Tagger(
            self.settings,
            self.assets,
            self.store_for,
            embedder=self.embedder,
            open_picture=imaging.open_picture,
            models=self.models,
            taxonomy=self.taxonomy,
            folders=self.folders,
            videos=self.videos,
            forward_video=self.forward_video(),
        )

    @cached_property
    def trainer(self) -> Trainer:
        return Trainer(
            self.settings,
            self.assets,
            self.store_for,
            self.embedder,
            read_facts=videos.read_facts,
            videos=self.videos,
            models=self.models,
            taxonomy=self.taxonomy,
            runs=self.runs,
        )

    def services_answer(self) -> bool:
        """OpenSearch and the bucket both answer: the worker's probe before it receives again."""
        return bool(self.opensearch.ping()) and self.store.reachable()

    # --- the windows' use cases, with the collaborators they take ---

    def dispatch_tagging(
        self,
        folder: Folder,
        *,
        trigger: str,
        resume: str | None = None,
        progress: windows.Progress | None = None,
        max_queued: int | None = None,
    ) -> windows.Dispatch:
        return windows.dispatch_tagging(
            self.assets,
            self.queue,
            self.runs,
            self.models,
            folder,
            tagging=self.settings.tagging,
            trigger=trigger,
            batch_size=self.settings.tagging.dispatch_page_size,
            max_queued=self.settings.tagging.dispatch_max_queued if max_queued is None else max_queued,
            resume=resume,
            progress=progress,
        )

    def tag_now(self, keys: Sequence[str], *, user: str) -> Run:
        return windows.tag_assets(
            self.tagger,
            self.runs,
            self.models,
            keys,
            stores=self.store_for,
            bucket=self.settings.aws.bucket,
            limit=self.settings.tagging.max_assets_on_demand,
            user=user,
        )
