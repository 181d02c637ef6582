"""The upload tagger against the embedded OpenSearch and the moto S3 server, fed real S3 event JSON."""

from __future__ import annotations

import pytest
from smarttags.adapters import imaging
from smarttags.adapters.asset_index import AssetIndex
from smarttags.adapters.opensearch import SearchIndex
from smarttags.core import asset as assets
from smarttags.core import tagging
from smarttags.core.folders import Folder
from smarttags.core.model_registry import Model
from smarttags.entrypoints.batch import handle_lambda_event
from smarttags.entrypoints.compose import Services

from tests.event_files import s3_event, via_sqs
from tests.images import HEIC, bomb_png, picture, truncated_jpeg

pytestmark = pytest.mark.slow

RED = picture("red")
BLUE = picture("blue", "square")


@pytest.fixture
def model(shape_model) -> Model:
    return shape_model


@pytest.fixture
def enabled(services):
    services.folders.set_enabled(Folder(services.settings.aws.bucket, "up/"), True)


def invoke(services, event):
    return handle_lambda_event(services.tagger, services.runs, event)


def _upload(services, key, data, content_type="image/jpeg"):
    services.s3.put_object(Bucket=services.settings.aws.bucket, Key=key, Body=data, ContentType=content_type)
    return services.store.head(key).etag


def _created(services, key, etag, sequencer):
    return s3_event(
        "s3_object_created.json", bucket=services.settings.aws.bucket, key=key, etag=etag, sequencer=sequencer
    )


def _doc(services, key):
    found = services.index.get("assets", assets.asset_id(services.settings.aws.bucket, key))
    return None if found is None else found.source


def _vector(services, key):
    """The asset's vector document (the k-NN index): its embedding, bytes' ETag and backbone."""
    found = services.index.get("vectors", assets.asset_id(services.settings.aws.bucket, key))
    return None if found is None else found.source


def test_create_overwrite_delete(services, model, enabled):
    key = "up/new folder/red car +1.jpg"
    etag = _upload(services, key, RED)
    result = invoke(services, via_sqs(_created(services, key, etag, "0055AA")))
    assert result == {"batchItemFailures": []}
    doc = _doc(services, key)
    assert doc["tagging"]["status"] == "tagged" and doc["tagging"]["model_version"] == model.version
    assert sorted(doc["smart_ids"]) == ["shapes:any", "shapes:red"]
    assert doc["etag"] == etag and (doc["width"], doc["height"]) == (640, 480) and doc["folder"] == "up/new folder"
    assert doc["smart_tags"][0]["model_version"] == model.version and "embedding" not in doc
    vector = _vector(services, key)
    assert len(vector["embedding"]) == services.embedding_dim and (vector["etag"], vector["backbone"]) == (
        etag,
        doc["embedding_model"],
    )

    etag2 = _upload(services, key, BLUE)
    invoke(services, via_sqs(_created(services, key, etag2, "0055AB")))
    doc = _doc(services, key)
    assert doc["etag"] == etag2 and doc["smart_ids"] == ["shapes:any"]
    assert _vector(services, key)["etag"] == etag2

    services.s3.delete_object(Bucket=services.settings.aws.bucket, Key=key)
    removed = s3_event("s3_object_removed.json", bucket=services.settings.aws.bucket, key=key, sequencer="0055AC")
    assert invoke(services, removed) == {"batchItemFailures": []}
    assert _doc(services, key) is None and _vector(services, key) is None


def test_duplicate_delivery_changes_nothing(services, model, enabled):
    key = "up/dup.jpg"
    event = via_sqs(_created(services, key, _upload(services, key, RED), "0100"))
    invoke(services, event)
    before = services.index.get("assets", assets.asset_id(services.settings.aws.bucket, key))
    outcome = services.tagger.handle(next(iter(tagging.events.parse_invocation(event))).events[0])
    after = services.index.get("assets", assets.asset_id(services.settings.aws.bucket, key))
    assert outcome.status == "duplicate" and after.seq_no == before.seq_no


def test_out_of_order_delivery_keeps_the_newest(services, model, enabled):
    key = "up/order.jpg"
    old_etag = _upload(services, key, RED)
    new_etag = _upload(services, key, BLUE)
    invoke(services, via_sqs(_created(services, key, new_etag, "0200B")))
    late = services.tagger.handle(
        next(iter(tagging.events.parse_invocation(_created(services, key, old_etag, "0200A")))).events[0]
    )
    assert late.status == "stale"
    assert _doc(services, key)["etag"] == new_etag
    # A delete older than the upload the index holds is ignored too.
    stale_delete = s3_event("s3_object_removed.json", bucket=services.settings.aws.bucket, key=key, sequencer="01FF")
    invoke(services, stale_delete)
    assert _doc(services, key) is not None


class RacingIndex(SearchIndex):
    """The real index, except that a moderator edits the asset right before the tagger's ``nth`` asset
    write (one document or a bulk: the claim is the first, the tagged document the second)."""

    def __init__(self, inner: SearchIndex, edit, nth: int) -> None:
        super().__init__(inner.client, inner.prefix, embedding_dim=inner._embedding_dim)
        self._edit, self._writes, self._nth = edit, 0, nth

    def _before_write(self, kind, doc_id) -> None:
        if kind == "assets":
            self._writes += 1
            if self._writes == self._nth:
                self._edit(doc_id)

    def put(self, kind, doc_id, source, **kwargs):
        self._before_write(kind, doc_id)
        return super().put(kind, doc_id, source, **kwargs)

    def put_many(self, writes):
        if writes:
            self._before_write(writes[0].kind, writes[0].id)
        return super().put_many(writes)


@pytest.mark.parametrize("nth", [1, 2], ids=["before-the-claim", "before-the-tagged-write"])
def test_a_moderators_concurrent_edit_is_never_lost(services, model, enabled, nth):
    key = "up/race.jpg"
    etag = _upload(services, key, RED)
    invoke(services, via_sqs(_created(services, key, etag, "0300")))
    etag2 = _upload(services, key, picture("red", size=(700, 500)))
    racing = RacingIndex(
        services.index, lambda doc_id: services.moderation.remove(doc_id, "shapes:any", user="mod"), nth
    )
    tagger = tagging.Tagger(
        services.settings,
        AssetIndex(racing),
        services.store_for,
        embedder=services.embedder,
        open_picture=imaging.open_picture,
        models=services.models,
        taxonomy=services.taxonomy,
        folders=services.folders,
    )
    result = handle_lambda_event(tagger, services.runs, via_sqs(_created(services, key, etag2, "0301")))
    assert result == {"batchItemFailures": []}
    doc = _doc(services, key)
    assert doc["etag"] == etag2 and doc["width"] == 700  # the tagger's write landed...
    assert "shapes:any" not in doc["smart_ids"] and doc["rejected_tags"] == ["shapes:any"]  # ...and so did the edit
    # A later run never re-adds the removed tag; a promoted tag stays promoted.
    services.moderation.promote(assets.asset_id(services.settings.aws.bucket, key), "shapes:red", user="mod")
    services.tagger.handle(tagging.events.ObjectEvent(tagging.events.TAG, services.settings.aws.bucket, key))
    doc = _doc(services, key)
    assert "shapes:any" not in doc["smart_ids"] and doc["promoted_tags"] == ["shapes:red"]
    assert doc["smart_scores"]["shapes:red"] > 1.0


@pytest.mark.parametrize(
    ("data", "content_type", "status", "reason"),
    [
        (truncated_jpeg(), "image/jpeg", "failed", "corrupt"),
        (b"", "image/jpeg", "failed", "corrupt"),
        (b"\xff\xd8\xff\xe0garbage" * 10, "image/jpeg", "failed", "corrupt"),
        (HEIC, "image/heic", "failed", "corrupt"),  # a HEIC header with no picture in it
        (b"\x00\x00\x00\x0cjP  \r\n\x87\n" + bytes(64), "image/jp2", "unsupported", "image/jp2"),  # JPEG 2000
        (b"%PDF-1.7\n" + bytes(40), "application/pdf", "failed", "corrupt"),  # a PDF is a format we read
        (bomb_png(), "image/png", "failed", "too_large"),
        (b"quarterly numbers, not a picture", "text/plain", "unsupported", "not an image: text/plain"),
    ],
)
def test_bad_input_is_recorded_and_retried_only_by_choice(services, model, enabled, data, content_type, status, reason):
    key = "up/bad-input"
    etag = _upload(services, key, data, content_type)
    result = invoke(services, via_sqs(_created(services, key, etag, "0400")))
    doc = _doc(services, key)
    assert doc["tagging"]["status"] == status and reason in doc["tagging"]["reason"]
    # A bad file is a permanent failure: recorded once, its message deleted (never retried, never DLQ).
    assert result["batchItemFailures"] == []
    # A redelivery of the same event changes and counts nothing.
    again = invoke(services, via_sqs(_created(services, key, etag, "0400")))
    assert again == {"batchItemFailures": []} and _doc(services, key)["tagging"] == doc["tagging"]


def test_a_large_upload_is_read_in_ranges_and_tagged(services, model, enabled, embedder):
    """Over 4 MiB the tagger reads through ranged GETs (adapters/s3.py: RangedObject): same embedding
    as the whole bytes give."""
    import io

    import numpy as np
    from PIL import Image
    from smarttags.adapters.s3 import WHOLE_BYTES

    base = np.asarray(Image.open(io.BytesIO(picture("red", size=(3200, 2400)))), dtype=np.int16)
    noisy = base + np.random.default_rng(0).integers(-12, 13, base.shape, dtype=np.int16)  # bytes enough
    buffer = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=100)
    data = buffer.getvalue()
    assert len(data) > WHOLE_BYTES
    key = "up/large.jpg"
    etag = _upload(services, key, data)
    assert invoke(services, via_sqs(_created(services, key, etag, "0500"))) == {"batchItemFailures": []}
    doc = _doc(services, key)
    assert doc["tagging"]["status"] == "tagged" and doc["width"] == 3200 and doc["size"] == len(data)
    whole = embedder.embed_bytes([data])[0]
    assert np.allclose(_vector(services, key)["embedding"], whole, atol=1e-5)


def test_one_bad_record_never_redoes_the_others(services, model, enabled):
    good = _created(services, "up/good.jpg", _upload(services, "up/good.jpg", RED), "0600")
    bad = _created(services, "up/bad.jpg", _upload(services, "up/bad.jpg", b""), "0601")
    result = invoke(services, via_sqs(good, bad))
    assert result == {"batchItemFailures": []}
    assert _doc(services, "up/good.jpg")["tagging"]["status"] == "tagged"
    assert _doc(services, "up/bad.jpg")["tagging"]["status"] == "failed"


def test_folder_flag_and_the_ignore_flag_setting(services, model, settings):
    key = "elsewhere/red.jpg"
    event = via_sqs(_created(services, key, _upload(services, key, RED), "0700"))
    invoke(services, event)
    doc = _doc(services, key)
    assert doc["tagging"]["status"] == "not_enabled" and doc["smart_ids"] == []
    ignoring = Services(
        settings.model_copy(update={"tagging": settings.tagging.model_copy(update={"ignore_smart_tag_flag": True})})
    )
    ignoring.embedder = services.embedder
    ignoring.tagger.handle(tagging.events.ObjectEvent(tagging.events.TAG, services.settings.aws.bucket, key))
    assert _doc(services, key)["tagging"]["status"] == "tagged"


def test_opensearch_down_fails_the_record_then_it_succeeds(services, model, enabled, settings):
    key = "up/outage.jpg"
    event = via_sqs(_created(services, key, _upload(services, key, RED), "0800"))
    down = Services(
        settings.model_copy(update={"opensearch": settings.opensearch.model_copy(update={"url": "http://127.0.0.1:9"})})
    )
    down.embedder = services.embedder
    assert invoke(down, event) == {"batchItemFailures": [{"itemIdentifier": "m0"}]}
    assert _doc(services, key) is None
    assert invoke(services, event) == {"batchItemFailures": []}
    assert _doc(services, key)["tagging"]["status"] == "tagged"


def test_the_lambda_handler_file_loads_by_path_and_handles_an_event(services, model, enabled, settings, monkeypatch):
    from tests.conftest import load_adapter as load

    handler = load("lambda/handler.py", "smarttags_lambda_handler_test")
    handler._services = services  # a warm container
    key = "up/lambda.jpg"
    result = handler.handler(via_sqs(_created(services, key, _upload(services, key, RED), "0900")), None)
    assert result == {"batchItemFailures": []}
    assert _doc(services, key)["tagging"]["status"] == "tagged"


class Counted:
    """One of our adapters (the real one inside) with its calls counted: what the tagger asked of it."""

    def __init__(self, inner) -> None:
        self._inner = inner
        self.calls: dict[str, int] = {}

    def __getattr__(self, name):
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def counted(*args, **kwargs):
            self.calls[name] = self.calls.get(name, 0) + 1
            return attr(*args, **kwargs)

        return counted


def test_a_batch_of_re_tags_after_a_model_change_runs_only_the_heads(services, model, enabled, embedder):
    """A batch of work items whose stored embeddings fit: one multi-get, one bulk, no S3 request, no
    inference; new bytes in the same batch are read and embedded, in that same one embedder call."""
    from dataclasses import replace

    import numpy as np
    from smarttags.core import asset as assets_mod
    from smarttags.core import events
    from smarttags.core.heads import Heads

    from tests.conftest import activate_heads

    keys = [f"up/re/{i}.jpg" for i in range(10)]
    for i, key in enumerate(keys):
        etag = _upload(services, key, picture("red" if i % 2 else "blue", size=(300 + i, 200)))
        assert invoke(services, _created(services, key, etag, f"{i:04X}"))["batchItemFailures"] == []
    # A new model over the same backbone: 'shapes:any' no longer fires.
    heads = Heads(model.heads.tags, model.heads.weights, np.array([-36.0, -10.0], np.float32), model.heads.thresholds)
    new_model = activate_heads(services, heads, embedder, fingerprint="t2")
    assets, counted_embedder = Counted(services.assets), Counted(embedder)
    stores: dict[str, Counted] = {}

    def store_for(bucket):
        return stores.setdefault(bucket, Counted(services.store_for(bucket)))

    tagger = tagging.Tagger(
        services.settings,
        assets,
        store_for,
        embedder=lambda: counted_embedder,
        open_picture=imaging.open_picture,
        models=services.models,
        taxonomy=services.taxonomy,
        folders=services.folders,
    )

    def retag(run_id, names):
        items = [
            (events.ObjectEvent(events.TAG, services.settings.aws.bucket, k, run_id=run_id), f"{run_id}-{k}")
            for k in names
        ]
        assets.calls.clear(), counted_embedder.calls.clear(), stores.clear()
        return tagger.handle_many(items)

    answers = retag("tag-1", keys)
    assert [a.status for a in answers] == ["tagged"] * 10
    assert {a.tags for a in answers} == {("shapes:red",), ()}  # the new heads: 'shapes:any' is gone
    assert assets.calls == {"get_many": 1, "put_many": 1}
    assert stores == {} and counted_embedder.calls == {}  # no S3 request, no inference
    assert {_doc(services, k)["tagging"]["model_version"] for k in keys} == {new_model.version}
    # The same run's items again (a redelivery): the multi-get alone.
    assert [a.status for a in retag("tag-1", keys)] == ["tagged"] * 10
    assert assets.calls == {"get_many": 1} and stores == {} and counted_embedder.calls == {}
    # New bytes under one key, as the index knows them (a sync recorded their ETag): that one is read and
    # embedded, the rest not. (Bytes the index does not know yet are read by their own, newer, event.)
    new_etag = _upload(services, keys[0], picture("green", size=(500, 300)))
    found = services.assets.get(assets_mod.asset_id(services.settings.aws.bucket, keys[0]))
    services.assets.merge([replace(found.asset, etag=new_etag)], ["etag"], create=False)
    answers = retag("tag-2", keys)
    assert [a.status for a in answers] == ["tagged"] * 10
    assert counted_embedder.calls == {"embed_arrays": 1}
    assert stores[services.settings.aws.bucket].calls == {"head": 1, "read": 1}  # that one only
