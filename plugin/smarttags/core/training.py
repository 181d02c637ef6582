"""A training run: sync the folders' assets, check the guidelines, embed what changed, fit, report.

Embeddings are kept on the asset documents with the ETag and backbone they were made from, so a retrain
embeds only new or modified assets; assets whose objects are gone leave the training set.

One active model serves the whole taxonomy: a run retrains the tags its folders' pictures carry (enough
of them to learn) and carries every other tag's head over from the active model (same backbone). Every
picture of the folders is an example: its own and promoted tags (with their ancestors) are positives,
everything else a negative, untagged pictures and a moderator's removals included. A video is an
example too: each of its sampled frames is a row, weighing 1/n, so its frames together weigh one
picture and a long video does not drown the rest of its tag (its frames share one fold).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from smarttags.core import guidelines, ingest, video
from smarttags.core.asset import Asset, StoredEmbedding
from smarttags.core.clock import now_iso
from smarttags.core.folders import Folder
from smarttags.core.heads import combine, select, train_heads
from smarttags.core.model_registry import Model, ModelStore
from smarttags.core.ports import Assets, Embedder, ReadFacts, StoreFor, Videos
from smarttags.core.report import (
    MIN_TO_LEARN,
    NEGATIVE_KINDS,
    NOT_TRAINED,
    TagRow,
    TrainingReport,
    status_for,
)
from smarttags.core.runs import TRAIN, RunLog, RunStatus
from smarttags.core.taxonomy import Taxonomy, TaxonomyStore
from smarttags.errors import ImageError, ModelError, NotFound, TaxonomyError, UnsupportedImage
from smarttags.settings import Settings

log = logging.getLogger(__name__)

# What training reads of each asset.
ATTRIBUTES = ["tags", "promoted", "rejected", "reviewed", "width", "height", "embedding", "etag", "media"]


@dataclass(frozen=True)
class Example:
    asset_id: str
    key: str
    positives: frozenset[str]
    negatives: frozenset[str]
    # A picture of the training folders: every tag it does not carry is a negative. A picture from
    # elsewhere is only known not to carry the tags a moderator removed from it.
    closed: bool = True

    def knows(self, tag: str) -> bool:
        return self.closed or tag in self.negatives


def labels_for(asset: Asset, taxonomy: Taxonomy) -> tuple[frozenset[str], frozenset[str]]:
    """(positive, explicit negative) tags of one training asset. The asset's own tags and promoted smart
    tags are positives, with their taxonomy ancestors (a child tag implies its parents); smart tags a
    moderator rejected are negatives unless the asset's own tags say otherwise."""
    own = {t for t in asset.tags if t in taxonomy}
    positive = own | {t for t in asset.promoted if t in taxonomy}
    for tag in list(positive):
        positive.update(taxonomy.ancestors(tag))
    negative = {t for t in asset.rejected if t in taxonomy} - own
    return frozenset(positive - negative), frozenset(negative)


def fingerprint(rows: Sequence[tuple[str, str, Sequence[str]]]) -> str:
    digest = hashlib.sha256()
    for asset, etag, tags in sorted(rows):
        digest.update(f"{asset}\x00{etag}\x00{';'.join(sorted(tags))}\n".encode())
    return digest.hexdigest()


class Trainer:
    def __init__(
        self,
        settings: Settings,
        assets: Assets,
        stores: StoreFor,
        embedder: Callable[[], Embedder],
        *,
        read_facts: ReadFacts,
        models: ModelStore,
        taxonomy: TaxonomyStore,
        runs: RunLog,
        videos: Videos | None = None,
    ) -> None:
        self._settings = settings
        self._videos = videos  # None: videos are refused as examples ("unreadable")
        self._assets = assets
        self._stores = stores
        self._embedder_factory = embedder
        self._read_facts = read_facts
        self._runs = runs
        self._taxonomy = taxonomy
        self.models = models

    def train(
        self,
        folders: Sequence[Folder],
        *,
        trigger: str,
        manifest: dict[str, list[str]] | None = None,
        activate: bool = True,
        progress: Callable[[str, int, int | None], None] | None = None,
    ) -> TrainingReport:
        """Train the tags the folders' pictures carry into a new model that keeps the active model's other
        heads (one model for the whole taxonomy); record the run and its report."""
        label = ", ".join(f.uri for f in folders)
        run = self._runs.start(TRAIN, label, trigger, folders=[f.uri for f in folders])
        try:
            report = self._train(run.run_id, folders, manifest, activate, progress, run.counts)
        except Exception as exc:
            run.error(label, str(exc))
            self._runs.finish(run, RunStatus.FAILED)
            raise
        run.counts.update(
            used=report.images_used,
            retrained=len(report.retrained),
            carried_over=len(report.carried_over),
            not_trained=report.counts()[NOT_TRAINED],
        )
        run.model_version = report.model_version
        run.report = report.to_json()
        self._runs.finish(run, RunStatus.SUCCEEDED if report.model_version else RunStatus.NO_MODEL)
        return report

    def _train(
        self,
        run_id: str,
        folders: Sequence[Folder],
        manifest: dict[str, list[str]] | None,
        activate: bool,
        progress: Callable[[str, int, int | None], None] | None,
        counts: Any,
    ) -> TrainingReport:
        settings = self._settings.training
        taxonomy = self._taxonomy.load()
        if not len(taxonomy):
            raise TaxonomyError("no taxonomy is imported yet: run `smarttags taxonomy import FILE` first")
        unknown_tags: dict[str, list[str]] = {}
        notes: list[str] = []
        held: list[Asset] = []
        unmatched: dict[str, str] | None = None  # manifest keys that match no object in any folder
        for folder in folders:
            synced = ingest.sync_folder(
                self._assets,
                self._stores(folder.bucket),
                folder,
                taxonomy,
                read_facts=self._read_facts,
                manifest=manifest,
                max_pixels=self._settings.backbone.max_pixels,
                progress=(lambda n: progress("sync", n, None)) if progress else None,
            )
            for tag, keys in synced.unknown_tags.items():
                unknown_tags.setdefault(tag, []).extend(keys)
            notes.extend(p for p in synced.problems if p not in notes)
            unmatched = {k: m for k, m in synced.unmatched.items() if unmatched is None or k in unmatched}
            notes.extend(f"unreadable: {key} ({reason})" for key, reason in synced.failed)
            page = settings.read_page_size
            held.extend(_read(self._assets.scan(folder, attributes=ATTRIBUTES, batch_size=page), progress))
        held = list({a.id: a for a in held}.values())  # nested folders hold some assets twice
        notes.extend((unmatched or {}).values())
        examples: list[tuple[Asset, Example]] = []
        below: list[str] = []
        below_by_tag: dict[str, int] = {}
        for asset in held:
            positives, negatives = labels_for(asset, taxonomy)
            if max(asset.width or 0, asset.height or 0) < settings.min_resolution:
                below.append(asset.key)
                for tag in positives:
                    below_by_tag[tag] = below_by_tag.get(tag, 0) + 1
                if settings.strict_resolution:
                    continue
            # Every picture of a training folder counts: an untagged one is a negative for every tag.
            examples.append((asset, Example(asset.id, asset.key, positives, negatives)))
        # A moderator's removal anywhere in the buckets is a negative for the removed tag.
        inside = {a.id for a in held}
        elsewhere = 0
        for bucket in sorted({f.bucket for f in folders}):
            rejected = self._assets.scan_rejected(bucket, attributes=ATTRIBUTES, batch_size=settings.read_page_size)
            for asset in _read(rejected, progress):
                removed = frozenset(t for t in asset.rejected if t in taxonomy) - set(asset.tags)
                if asset.id in inside or not removed:
                    continue
                if settings.strict_resolution and max(asset.width or 0, asset.height or 0) < settings.min_resolution:
                    continue
                examples.append((asset, Example(asset.id, asset.key, frozenset(), removed, closed=False)))
                elsewhere += 1
        embedder = self._embedder_factory()
        vectors, embedded, failed = self._embeddings(examples, embedder, progress)
        counts["embedded"] = embedded
        counts["read"] = len(held) + elsewhere
        notes.extend(f"unreadable: {key} ({reason})" for key, reason in failed)
        # In an order of what the pictures are (their bytes), not of how the index returned them.
        usable = sorted(((s, e) for s, e in examples if e.asset_id in vectors), key=lambda p: (p[0].etag, p[1].key))
        untagged = sum(1 for _, e in usable if not e.positives and e.closed)
        tags = sorted({t for _, e in usable for t in e.positives})
        # One row per picture, one per sampled frame of a video (rows_of: the example of each row).
        blocks = [np.atleast_2d(vectors[e.asset_id]) for _, e in usable]
        rows_of = np.repeat(np.arange(len(usable)), [len(b) for b in blocks])
        row_weight = np.concatenate([np.full(len(b), 1.0 / len(b)) for b in blocks]) if blocks else np.zeros(0)
        # The guidelines look at one vector per example (a video: its frames' mean).
        x = np.stack([b.mean(axis=0) for b in blocks]) if usable else np.zeros((0, 1), np.float32)
        y = np.array([[1.0 if t in e.positives else 0.0 for t in tags] for _, e in usable]).reshape(
            len(usable), len(tags)
        )
        positives_per_tag = {t: int(y[:, j].sum()) for j, t in enumerate(tags)}
        negatives_per_tag = {t: sum(1 for _, e in usable if t not in e.positives and e.knows(t)) for t in tags}
        learnable = [t for t in tags if positives_per_tag[t] >= MIN_TO_LEARN and negatives_per_tag[t] > 0]
        active = self._active(embedder.backbone_id)
        carried = [t for t in active.heads.tags if t in taxonomy and t not in learnable] if active else []
        rows: dict[str, TagRow] = {}
        for tag in tags:
            if tag not in learnable:
                n = positives_per_tag[tag]
                advice = (
                    [
                        f"add {settings.min_images_per_tag - n} or more images with this tag "
                        f"(training needs at least {MIN_TO_LEARN})"
                    ]
                    if n < MIN_TO_LEARN
                    else ["every training image carries this tag: add images without it"]
                )
                rows[tag] = TagRow(tag, taxonomy.tags[tag].title(), NOT_TRAINED, n, advice=advice)
        for tag, keys in sorted(unknown_tags.items()):
            rows[tag] = TagRow(
                tag,
                tag,
                NOT_TRAINED,
                0,
                advice=[f"not in the taxonomy (on {len(keys)} assets): add it to the taxonomy file and import it"],
            )
        model_version = None
        duplicates: list[list[str]] = []
        if learnable:
            columns = [tags.index(t) for t in learnable]
            y_fit = y[:, columns]
            known = np.array([[1.0 if e.knows(t) else 0.0 for t in learnable] for _, e in usable])
            # Imported here: the Lambda tagger imports this module but never trains (nor ships threadpoolctl).
            from threadpoolctl import threadpool_limits

            with threadpool_limits(limits=settings.blas_threads):
                findings = guidelines.check(x, y_fit, learnable)
                keys = duplicate_groups([a.etag or a.id for a, _ in usable], findings.duplicates)
                heads, fits = train_heads(
                    np.concatenate(blocks),
                    y_fit[rows_of],
                    learnable,
                    policy=settings.threshold_policy,
                    target_precision=settings.target_precision,
                    folds=settings.cv_folds,
                    seed=settings.seed,
                    known=known[rows_of],
                    groups=[keys[i] for i in rows_of],
                    sample_weight=row_weight,
                )
            duplicates = [[usable[i][1].key, usable[j][1].key] for i, j in findings.duplicates[:100]]
            carried_from: dict[str, str] = {}
            if active and carried:
                heads = combine(heads, select(active.heads, carried))
                carried_from = {t: active.manifest.carried_over.get(t, active.version) for t in carried}
            manifest_ = self.models.save(
                heads,
                fits,
                backbone_id=embedder.backbone_id,
                backbone_sha256=embedder.sha256,
                training_fingerprint=fingerprint([(e.asset_id, a.etag, sorted(e.positives)) for a, e in usable]),
                folders=[f.uri for f in folders],
                carried_over=carried_from,
                carried_metrics={
                    t: active.manifest.metrics[t] for t in carried if active and t in active.manifest.metrics
                },
            )
            model_version = manifest_.version
            if activate:
                self.models.activate(model_version)
            kinds = negative_kinds([e for _, e in usable], learnable, taxonomy)
            for fit in fits:
                status = status_for(fit.positives, fit.average_precision, settings.min_images_per_tag)
                advice = _advice(fit.positives, settings.min_images_per_tag, fit.average_precision)
                if fit.tag in findings.outliers:
                    keys = [usable[i][1].key for i in findings.outliers[fit.tag]]
                    advice.append(f"{len(keys)} image(s) look unlike the rest of this tag: {', '.join(keys[:3])}")
                if fit.tag in findings.imbalanced:
                    advice.append("far fewer images than the largest tag")
                partner = [b if a == fit.tag else a for a, b in findings.always_together if fit.tag in (a, b)]
                if partner:
                    advice.append(f"always appears with {', '.join(partner)}: check tag completeness")
                if status != NOT_TRAINED and not advice:
                    advice.append("ok")
                rows[fit.tag] = TagRow(
                    fit.tag,
                    taxonomy.tags[fit.tag].title(),
                    status,
                    fit.positives,
                    0,
                    round(fit.precision, 4),
                    round(fit.recall, 4),
                    round(fit.f1, 4),
                    round(fit.average_precision, 4),
                    round(fit.threshold, 4),
                    advice,
                    negatives=kinds[fit.tag],
                )
            for tag in carried:
                rows[tag] = _carried_row(
                    tag, taxonomy, active, carried_from[tag], rows.get(tag), settings.min_images_per_tag
                )
            if findings.duplicates:
                notes.append(f"{len(findings.duplicates)} near-duplicate image pair(s) in the training set")
        for tag in taxonomy.tags:
            if tag not in rows:
                rows[tag] = TagRow(
                    tag,
                    taxonomy.tags[tag].title(),
                    NOT_TRAINED,
                    0,
                    advice=[f"no picture in these folders carries this tag: add {settings.min_images_per_tag} or more"],
                )
        # Examples whose label for a tag is a verdict of the review queue (accepted: a positive, rejected: a negative).
        for asset, example in usable:
            for tag in asset.reviewed & (example.positives | example.negatives):
                if tag in rows:
                    rows[tag].from_review += 1
        for tag, n in below_by_tag.items():
            rows[tag].below_resolution = n
            if settings.strict_resolution:
                rows[tag].excluded_low_resolution = n
                rows[tag].advice.append(
                    f"{n} picture(s) under {settings.min_resolution} px left out (training.strict_resolution): "
                    "lower training.min_resolution or turn strict_resolution off to use them"
                )
            else:
                rows[tag].advice.append(
                    f"{n} picture(s) under the {settings.min_resolution} px guideline (training.min_resolution) "
                    "were used: set training.strict_resolution=true to leave them out"
                )
        if elsewhere:
            notes.append(
                f"{elsewhere} picture(s) outside these folders used as negatives for the tags removed from them"
            )
        if untagged:
            notes.append(f"{untagged} untagged picture(s) of the training folders used as negatives for every tag")
        if below:
            verb = "left out" if settings.strict_resolution else "used"
            notes.append(
                f"{len(below)} image(s) under the {settings.min_resolution} px guideline were {verb} "
                "(SMARTTAGS_TRAINING__MIN_RESOLUTION, SMARTTAGS_TRAINING__STRICT_RESOLUTION)"
            )
        return TrainingReport(
            run_id=run_id,
            model_version=model_version,
            folders=[f.uri for f in folders],
            created_at=now_iso(),
            images_used=len(usable),
            images_embedded=embedded,
            rows=sorted(rows.values(), key=lambda r: r.tag),
            excluded_low_resolution=below[:1000] if settings.strict_resolution else [],
            duplicates=duplicates,
            notes=notes,
            retrained=learnable if model_version else [],
            carried_over=carried if model_version else [],
            untagged_negatives=untagged,
        )

    def _active(self, backbone_id: str) -> Model | None:
        """The active model, if its heads can be carried over (same backbone, loadable)."""
        try:
            model = self.models.load_active()
        except (NotFound, ModelError) as exc:
            log.info("no heads to carry over: %s", exc)
            return None
        if model.manifest.backbone_id != backbone_id:
            log.info("the active model %s has another backbone: nothing carried over", model.version)
            return None
        return model

    def _embeddings(
        self,
        examples: Sequence[tuple[Asset, Example]],
        embedder: Embedder,
        progress: Callable[[str, int, int | None], None] | None,
    ) -> tuple[dict[str, np.ndarray[Any, Any]], int, list[tuple[str, str]]]:
        """Stored embeddings where ETag and backbone match; the rest embedded now and written back."""
        vectors: dict[str, np.ndarray[Any, Any]] = {}
        todo: list[Asset] = []
        failed: list[tuple[str, str]] = []
        clips = 0
        for asset, example in examples:
            if asset.media == video.MEDIA:  # frames (rows x dim), sampled again: a video stores no embedding
                rows = self._frames(asset, embedder)
                if isinstance(rows, ImageError):
                    failed.append((asset.key, rows.reason))
                else:
                    vectors[example.asset_id] = rows
                    clips += 1
            elif asset.embedding and asset.embedding.fits(asset.etag, embedder.backbone_id):
                vectors[example.asset_id] = np.asarray(asset.embedding.vector, dtype=np.float32)
            else:
                todo.append(asset)
        if not todo:
            return vectors, clips, failed
        if progress:
            progress("embed", 0, len(todo))

        def load(asset: Asset) -> bytes:
            data, _ = self._stores(asset.bucket).get_bytes(asset.key)
            return data

        embedded: list[Asset] = []
        for asset, result in zip(todo, embedder.iter_embed(todo, load), strict=True):
            if isinstance(result, ImageError):
                failed.append((asset.key, result.reason))
            else:
                vector = np.asarray(result, dtype=np.float32)
                vectors[asset.id] = vector
                stored = StoredEmbedding(tuple(float(v) for v in vector), embedder.backbone_id, asset.etag)
                embedded.append(replace(asset, embedding=stored))
            if len(embedded) >= 100:
                self._assets.merge(embedded, ["embedding"], create=False)
                embedded = []
            if progress:
                progress("embed", 1, len(todo))
        self._assets.merge(embedded, ["embedding"], create=False)
        return vectors, clips + len(todo) - len(failed), failed

    def _frames(self, asset: Asset, embedder: Embedder) -> np.ndarray[Any, Any] | ImageError:
        """A video's sampled frames, embedded in one batch (rows x dim)."""
        if self._videos is None or not self._videos.can_sample:
            return UnsupportedImage("video support is not installed here (pip install 'smarttags[video]')")
        data, _ = self._stores(asset.bucket).get_bytes(asset.key)
        try:
            clip = self._videos.open(data, max_pixels=self._settings.backbone.max_pixels, size=embedder.input_size)
            return np.asarray(embedder.embed_arrays(clip.frames(embedder.input_size)), dtype=np.float32)
        except ImageError as exc:
            return exc


def _read(assets: Iterable[Asset], progress: Callable[[str, int, int | None], None] | None) -> Iterator[Asset]:
    """The assets of a scan (a point in time read page by page), counted on the ``read`` progress bar."""
    for asset in assets:
        if progress:
            progress("read", 1, None)
        yield asset


def duplicate_groups(keys: Sequence[str], pairs: Sequence[tuple[int, int]]) -> list[str]:
    """One group key per row: near-duplicate rows (connected by ``pairs``) share the smallest key of
    their group, so cross-validation puts them in one fold and no shoot is seen on both sides."""
    parent = list(range(len(keys)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        a, b = root(i), root(j)
        if a != b:
            parent[max(a, b)] = min(a, b)
    smallest: dict[int, str] = {}
    for i, key in enumerate(keys):
        r = root(i)
        smallest[r] = min(smallest.get(r, key), key)
    return [smallest[root(i)] for i in range(len(keys))]


def negative_kinds(examples: Sequence[Example], tags: Sequence[str], taxonomy: Taxonomy) -> dict[str, dict[str, int]]:
    """Per tag, how many of the pictures not carrying it are untagged, a moderator's removal of it,
    pictures of a sibling tag (same parent), or pictures with other tags."""
    siblings: dict[str, set[str]] = {}
    for entry in taxonomy.tags.values():
        if entry.parent:
            siblings.setdefault(entry.parent, set()).add(entry.id)
    out: dict[str, dict[str, int]] = {}
    for tag in tags:
        parent = taxonomy.tags[tag].parent
        family = siblings.get(parent, set()) - {tag} if parent else set()
        counts = dict.fromkeys(NEGATIVE_KINDS, 0)
        for e in examples:
            if tag in e.positives or not e.knows(tag):
                continue
            if tag in e.negatives:
                counts["removed"] += 1
            elif not e.positives:
                counts["untagged"] += 1
            elif e.positives & family:
                counts["siblings"] += 1
            else:
                counts["other"] += 1
        out[tag] = counts
    return out


def _carried_row(
    tag: str, taxonomy: Taxonomy, active: Model | None, source: str, seen: TagRow | None, min_images: int
) -> TagRow:
    """The row of a tag whose head is kept from the active model, with that model's numbers."""
    metrics = active.manifest.metrics.get(tag, {}) if active else {}
    images = int(metrics.get("positives", 0))
    ap = metrics.get("average_precision")
    why = f"{seen.images} picture(s) here, too few to retrain" if seen and seen.images else "no pictures here"
    return TagRow(
        tag,
        taxonomy.tags[tag].title(),
        status_for(images, ap, min_images),
        images,
        precision=_round(metrics.get("precision")),
        recall=_round(metrics.get("recall")),
        f1=_round(metrics.get("f1")),
        average_precision=_round(ap),
        threshold=_round(active.manifest.thresholds.get(tag)) if active else None,
        advice=[f"not retrained ({why}): head carried over from model {source}"],
        carried_from=source,
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


def _advice(images: int, min_images: int, average_precision: float) -> list[str]:
    advice = []
    if images < min_images:
        advice.append(f"add {min_images - images} more visually similar images")
    if average_precision < 0.5:
        advice.append("examples vary too much or resemble other tags: use more coherent images")
    return advice
