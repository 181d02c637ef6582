"""Video end to end on the real services: an MP4 made at test time goes S3 -> SQS -> worker -> OpenSearch,
is tagged from its keyframes with time ranges, found by search like a picture, and shows its poster;
hostile videos get a typed status with a reason."""

from __future__ import annotations

import io
import threading
import time

import pytest
from PIL import Image
from smarttags.adapters.thumbnails import Thumbnails
from smarttags.core.asset import asset_id
from smarttags.core.folders import Folder
from smarttags.core.search import SearchRequest
from smarttags.core.taxonomy import Tag
from smarttags.entrypoints.worker import Worker

from tests import images

pytestmark = pytest.mark.slow


def _wait(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"not true within {timeout} s")


def test_a_video_is_tagged_with_time_ranges_found_by_search_and_hostile_ones_fail_typed(services, shape_model):
    # A frame of 320 x 240 is allowed, 640 x 480 is over the limit: the "huge declared resolution" case
    # at a size a test can encode (tests/adapters/test_video.py refuses it before any decode).
    services.settings.backbone.max_pixels = 100_000
    services.taxonomy.import_tags([Tag("shapes:red", {"en": "Red"}), Tag("shapes:any", {"en": "Shape"})])
    bucket = services.settings.aws.bucket
    services.folders.set_enabled(Folder(bucket, "clips/"), True)
    red = Image.open(io.BytesIO(images.picture("red", fmt="PNG")))
    white = Image.new("RGB", (640, 480), "white")
    bodies = {
        # 15 s: a red circle, a white card, the red circle again (a keyframe every 5 s); the key's
        # extension says nothing, the bytes do.
        "clips/launch.jpg": images.video([red, white, red], seconds=5),
        "clips/huge.mp4": images.video([red], seconds=1, size=(640, 480)),
        "clips/empty.mkv": images.empty_video(),
    }
    worker = Worker(services.tagger, services.runs, services.queue, concurrency=2, wait_seconds=1)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        for key, body in bodies.items():
            services.s3.put_object(Bucket=bucket, Key=key, Body=body)

        def done() -> bool:
            services.index.refresh()
            held = [services.assets.get(asset_id(bucket, key)) for key in bodies]
            return all(h is not None and h.asset.status in ("tagged", "failed") for h in held)

        _wait(done, 60)
    finally:
        worker.stop.set()
        thread.join(timeout=10)

    clip = services.assets.get(asset_id(bucket, "clips/launch.jpg")).asset
    assert (clip.media, clip.duration, clip.format, clip.decoder) == ("video", 15.0, "H264", "pyav")
    assert (clip.width, clip.height) == (320, 240)
    tags = {t.tag: t for t in clip.smart_tags}
    assert tags["shapes:red"].ranges == ((0.0, 5.0), (10.0, 15.0))
    assert tags["shapes:any"].ranges == ((0.0, 15.0),)
    # Found by its smart tag like a picture (same template, same tiers).
    assert [h.key for h in services.searcher.search(SearchRequest(text="red")).hits] == ["clips/launch.jpg"]
    # The time ranges are nested segments: "red between 11 s and 12 s" is one nested query.
    query = {
        "nested": {
            "path": "segments",
            "query": {
                "bool": {
                    "filter": [
                        {"term": {"segments.tag": "shapes:red"}},
                        {"range": {"segments.start": {"lte": 11}}},
                        {"range": {"segments.end": {"gte": 12}}},
                    ]
                }
            },
        }
    }
    found = services.index.search("assets", {"query": query, "_source": ["key"]})["hits"]["hits"]
    assert [h["_source"]["key"] for h in found] == ["clips/launch.jpg"]
    white_only = {**query}
    white_only["nested"]["query"]["bool"]["filter"][1:] = [
        {"range": {"segments.start": {"lte": 7}}},
        {"range": {"segments.end": {"gte": 8}}},
    ]
    assert not services.index.search("assets", {"query": white_only})["hits"]["hits"]
    # The poster (the first keyframe: the red circle) is the admin's thumbnail, kept where thumbnails are.
    thumbs = Thumbnails(services.store, services.own_store, services.settings.aws.thumbnails_prefix, max_pixels=1)
    poster = thumbs.get(clip.id, clip.key, clip.etag)  # max_pixels=1: it is not rendered again, it is stored
    assert poster is not None
    pixel = Image.open(io.BytesIO(poster.data)).convert("RGB").getpixel((128, 128))
    assert pixel[0] > 200 and pixel[1] < 80, pixel

    huge = services.assets.get(asset_id(bucket, "clips/huge.mp4")).asset
    assert huge.status == "failed" and "640x480" in (huge.tagging.reason or ""), huge.tagging
    empty = services.assets.get(asset_id(bucket, "clips/empty.mkv")).asset
    assert empty.status == "failed" and "video" in (empty.tagging.reason or ""), empty.tagging

    # The upload run counts them once each (its counts land after the assets' writes: wait for them).
    def counted() -> tuple[int, int] | None:
        run = services.runs.latest("tag", f"s3://{bucket}/clips/")
        return None if run is None else (run.counts["tagged"], run.counts["failed"])

    try:
        _wait(lambda: counted() == (1, 2), 30)
    except AssertionError:
        assert counted() == (1, 2)


def test_without_pyav_the_image_tagger_forwards_videos_to_the_video_queue_which_tags_them(services, shape_model):
    # The image Lambda's situation (no PyAV) on the real S3 -> SQS wiring: it sniffs the video, sends a
    # work item to the video queue and counts nothing; the video tagger consumes that queue and tags it.
    from smarttags.adapters import videos
    from smarttags.adapters.sqs import WorkQueue
    from smarttags.entrypoints.compose import Services

    class WithoutPyAV(videos.Videos):
        @property
        def can_sample(self) -> bool:
            return False

    settings = services.settings
    settings.aws.video_queue_name = f"{settings.aws.queue_name}-video"
    services.sqs.create_queue(QueueName=settings.aws.video_queue_name)
    services.videos = WithoutPyAV(services.own_store, settings.aws.thumbnails_prefix)
    video_side = Services(settings)  # the video function: PyAV here, consuming the video queue
    video_side.embedder = services.embedder
    services.taxonomy.import_tags([Tag("shapes:red", {"en": "Red"}), Tag("shapes:any", {"en": "Shape"})])
    bucket = settings.aws.bucket
    services.folders.set_enabled(Folder(bucket, "clips/"), True)
    red = Image.open(io.BytesIO(images.picture("red", fmt="PNG")))
    services.s3.put_object(Bucket=bucket, Key="clips/red.mov", Body=images.video([red], seconds=2))
    services.s3.put_object(Bucket=bucket, Key="clips/red.png", Body=images.picture("red", fmt="PNG"))
    workers = [
        Worker(services.tagger, services.runs, services.queue, concurrency=1, wait_seconds=1),
        Worker(
            video_side.tagger,
            video_side.runs,
            WorkQueue.by_name(video_side.sqs, settings.aws.video_queue_name),
            concurrency=1,
            wait_seconds=1,
        ),
    ]
    threads = [threading.Thread(target=w.run, daemon=True) for w in workers]
    for thread in threads:
        thread.start()
    try:

        def tagged() -> bool:
            held = [services.assets.get(asset_id(bucket, k)) for k in ("clips/red.mov", "clips/red.png")]
            return all(h is not None and h.asset.status == "tagged" for h in held)

        _wait(tagged, 60)
    finally:
        for worker in workers:
            worker.stop.set()
        for thread in threads:
            thread.join(timeout=10)
    clip = services.assets.get(asset_id(bucket, "clips/red.mov")).asset
    assert clip.media == "video" and {t.tag for t in clip.smart_tags} == {"shapes:red", "shapes:any"}
    assert services.assets.get(asset_id(bucket, "clips/red.png")).asset.media == "image"

    # Counted once each, in the upload run: the forwarding itself counts nothing.
    def counted() -> bool:
        run = services.runs.latest("tag", f"s3://{bucket}/clips/")
        return run is not None and run.counts.get("processed") == 2

    _wait(counted, 10)
    run = services.runs.latest("tag", f"s3://{bucket}/clips/")
    assert run.counts["tagged"] == 2 and run.counts["processed"] == 2, run.counts
