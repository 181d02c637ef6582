"""Seed data for the admin tests: users, a taxonomy (with a hostile title), assets with smart tags,
images in the bucket, a training run with its report, and two model versions."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image
from smarttags.core.asset import Asset, SmartTag
from smarttags.core.clock import now_iso
from smarttags.core.folders import Folder
from smarttags.core.heads import Heads, TagFit
from smarttags.core.report import NOT_TRAINED, PARTIAL, TRAINED, TagRow, TrainingReport
from smarttags.core.runs import ON_DEMAND, TRAIN, Run, RunStatus
from smarttags.core.taxonomy import Tag
from smarttags.core.users import UserStore

PASSWORD = "correct horse battery"
XSS = "<script>alert(1)</script>"
XSS_TAG = f"evil:{XSS}"
ROLES = ("admin", "moderator", "viewer")
TAXONOMY = [
    Tag("animals:cat", {"en": "Cat"}, {"en": ["kitten"]}),
    Tag("animals:dog", {"en": "Dog"}),
    Tag("scenes:beach", {"en": "Beach"}),
    Tag(XSS_TAG, {"en": XSS}),
]


@dataclass
class Seeded:
    cat_id: str
    broken_id: str
    xss_id: str
    run_id: str
    versions: list[str]


def jpeg(colour: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="JPEG")
    return buffer.getvalue()


MODEL_TAGS = ("animals:cat", "animals:dog")  # the seeded models' tags, thresholds 0.5


def _tag(tag: str, confidence: float) -> SmartTag:
    """As the tagger writes it: a tag of the model keeps the threshold it was held against."""
    return SmartTag(tag, confidence, "20260101T000000Z", threshold=0.5 if tag in MODEL_TAGS else None)


def _asset(
    services,
    key: str,
    data: bytes,
    *,
    title: str,
    smart: list[tuple[str, float]],
    near: list[tuple[str, float]] = (),
) -> str:
    etag = services.store.put_bytes(key, data, content_type="image/jpeg")
    asset = (
        Asset(services.settings.aws.bucket, key, etag=etag, size=len(data), content_type="image/jpeg", title=title)
        .with_smart_tags(_tag(tag, conf) for tag, conf in smart)
        .with_near_misses(_tag(tag, conf) for tag, conf in near)
    )
    services.assets.put(asset)
    return asset.id


def _model(services, version: str, ap: float) -> str:
    tags = MODEL_TAGS
    heads = Heads(
        tags=tags,
        weights=np.zeros((4, 2), dtype=np.float32),
        bias=np.zeros(2, dtype=np.float32),
        thresholds=np.full(2, 0.5, dtype=np.float32),
    )
    fits = [TagFit(t, 30, 1.0, 0.5, ap, ap - 0.1, ap - 0.05, ap) for t in tags]
    services.models.save(
        heads, fits, backbone_id="test", backbone_sha256="0", training_fingerprint="f", folders=[], version=version
    )
    return version


def seed(services) -> Seeded:
    users = UserStore(services.index)
    for role in ROLES:
        users.create(role, PASSWORD, role)
    services.taxonomy.import_tags(TAXONOMY)
    cat_id = _asset(
        services,
        "photos/cat.jpg",
        jpeg((200, 120, 40)),
        title="A cat on the beach",
        smart=[("animals:cat", 0.93), ("scenes:beach", 0.71)],
    )
    broken_id = _asset(services, "photos/broken.jpg", b"this is not an image", title="Broken file", smart=[])
    xss_id = _asset(services, "other/xss.jpg", jpeg((10, 10, 200)), title=f"Title {XSS}", smart=[(XSS_TAG, 0.9)])
    services.folders.set_enabled(Folder(services.settings.aws.bucket, "photos/"), True)
    services.index.refresh("assets")
    run = Run("train-0123456789ab", TRAIN, f"s3://{services.settings.aws.bucket}/photos/", ON_DEMAND, now_iso())
    rows = [
        TagRow(
            "animals:cat",
            "Cat",
            TRAINED,
            40,
            precision=0.91,
            recall=0.84,
            average_precision=0.9,
            threshold=0.42,
            negatives={"untagged": 3, "removed": 1, "siblings": 10, "other": 0},
        ),
        TagRow(
            "animals:dog",
            "Dog",
            PARTIAL,
            12,
            precision=0.6,
            recall=0.5,
            average_precision=0.55,
            threshold=0.5,
            advice=["add more visually similar images"],
        ),
        TagRow(XSS_TAG, XSS, NOT_TRAINED, 2, advice=["needs at least 5 images"]),
    ]
    run.report = TrainingReport(
        run_id=run.run_id,
        model_version="20260102T000000Z",
        folders=[run.folder or ""],
        created_at="2026-01-02T00:00:00+00:00",
        images_used=54,
        images_embedded=54,
        rows=rows,
        retrained=["animals:cat"],
        carried_over=["animals:dog"],
    ).to_json()
    run.status, run.ended_at = RunStatus.SUCCEEDED, now_iso()
    services.runs.save(run, refresh=False)
    services.index.refresh("runs")
    versions = [_model(services, "20260101T000000Z", 0.7), _model(services, "20260102T000000Z", 0.9)]
    services.models.activate(versions[0])
    services.models.activate(versions[1])
    return Seeded(cat_id, broken_id, xss_id, run.run_id, versions)
