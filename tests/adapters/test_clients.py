"""The bucket -> queue wiring on moto: SmartTags' own files (thumbnails, models) never reach the queue."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import unquote_plus

import pytest
from smarttags.adapters import clients
from smarttags.adapters.thumbnails import Thumbnails

from tests.admin_seed import jpeg

pytestmark = pytest.mark.slow


def _keys_queued(sqs: Any, queue_url: str, until: str, timeout: float = 30.0) -> list[str]:
    """The keys of every record queued, read until ``until`` has arrived."""
    keys: list[str] = []
    deadline = time.monotonic() + timeout
    while until not in keys and time.monotonic() < deadline:
        response = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for message in response.get("Messages", []):
            keys.extend(unquote_plus(r["s3"]["object"]["key"]) for r in json.loads(message["Body"]).get("Records", []))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return keys


def test_thumbnails_and_models_raise_no_notification(settings, services, sqs) -> None:
    wiring = clients.ensure_bucket_and_queue(settings)  # again: idempotent, the internal bucket too
    aws = settings.aws
    assert aws.own_bucket == f"{aws.bucket}-smarttags"
    etag = services.store.put_bytes("photos/cat.jpg", jpeg((200, 120, 40)), content_type="image/jpeg")
    assert _keys_queued(sqs, wiring.queue_url, until="photos/cat.jpg") == ["photos/cat.jpg"]

    thumbnails = Thumbnails(services.store, services.own_store, aws.thumbnails_prefix, max_pixels=10**8)
    assert thumbnails.get("ab12", "photos/cat.jpg", etag) is not None
    services.own_store.put_bytes(f"{aws.models_prefix}v1/manifest.json", b"{}")
    assert [info.key.split("/")[1] for info in services.own_store.list("_smarttags/")] == ["models", "thumbnails"]
    assert not list(services.store.list("_smarttags/"))
    notification = clients.s3_client(settings).get_bucket_notification_configuration(Bucket=aws.own_bucket)
    assert not notification.get("QueueConfigurations")

    services.store.put_bytes("photos/dog.jpg", jpeg((20, 20, 200)), content_type="image/jpeg")
    # moto sends on the put itself, so a thumbnail's or a model's message would be queued before this one.
    assert _keys_queued(sqs, wiring.queue_url, until="photos/dog.jpg") == ["photos/dog.jpg"]
