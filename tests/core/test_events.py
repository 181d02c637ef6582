import json

from smarttags.core import events

from tests.event_files import load_event


def test_sqs_batch_decodes_keys_and_reports_unreadable_bodies():
    messages = list(events.parse_invocation(load_event("s3_put_sqs.json")))
    assert [m.message_id[:8] for m in messages] == ["19dd0b57", "2e1424d4", "3f9b1e0a"]
    created = messages[0].events[0]
    assert created.action == events.CREATED
    assert created.bucket == "brand-assets"
    # '+' is a space, '%2B' a literal plus, percent-encoded UTF-8 becomes the unicode character.
    assert created.key == "campaigns/summer 2026/café racer + rider.jpg"
    assert created.etag == "d41d8cd98f00b204e9800998ecf8427e"
    assert created.sequencer == "0A1B2C3D4E5F678901"
    assert messages[1].events[0].action == events.REMOVED
    assert messages[1].receive_count == 2
    assert messages[2].events == [] and "unreadable" in (messages[2].error or "")


def test_direct_s3_event_keeps_deep_unicode_keys_and_skips_other_event_types():
    (message,) = events.parse_invocation(load_event("s3_put_direct.json"))
    assert message.message_id is None
    assert [e.key for e in message.events] == ["deep/a/b/c/d/日本 photo.png"]
    assert message.events[0].version_id == "v2"


def test_test_event_carries_nothing():
    (message,) = events.parse_invocation(load_event("s3_test_event.json"))
    assert message.events == [] and message.error is None


def test_work_items_round_trip():
    body = events.work_item("b", ["a/b c.jpg", "a/d.jpg"], run_id="tag-1", trigger="schedule")
    first, second = events.parse_body(body)
    assert (first.action, first.key, first.run_id, first.trigger) == (events.TAG, "a/b c.jpg", "tag-1", "schedule")
    assert (second.key, second.run_id) == ("a/d.jpg", "tag-1")
    # A work item an older release queued names one key.
    (old,) = events.parse_body({"smarttags": "tag", "bucket": "b", "key": "a/e.jpg", "run_id": "tag-1"})
    assert (old.key, old.trigger) == ("a/e.jpg", "on-demand")
    for keys in ([], "a/f.jpg", None):
        message = events.parse_message("m1", json.dumps({"smarttags": "tag", "bucket": "b", "keys": keys}))
        assert "unreadable message" in (message.error or "")


def test_sequencer_comparison_right_pads_then_compares():
    assert events.sequencer_newer("0A1B2C3D4E5F678902", "0A1B2C3D4E5F678901")
    assert not events.sequencer_newer("0A1B2C3D4E5F678901", "0A1B2C3D4E5F678902")
    # Different lengths: the shorter is padded with zeros on the right before comparing.
    assert events.sequencer_newer("0A1B2C3D4E5F6790", "0A1B2C3D4E5F678999")
    assert events.same_sequencer("0A1B", "0A1B0000")
    assert not events.sequencer_newer("00A1", "00A1")
    assert events.sequencer_newer("00A1", None)


def _sqs(*bodies: str) -> dict:
    return {"Records": [{"messageId": f"m{i}", "body": b, "eventSource": "aws:sqs"} for i, b in enumerate(bodies)]}


def test_every_hostile_body_is_one_failed_message_and_the_rest_go_on():
    import json

    good = json.dumps(events.work_item("b", ["k.jpg"], run_id=None, trigger="on-demand"))
    hostile = [
        "[]",
        "null",
        '"text"',
        '{"Records": ["x"]}',
        '{"Records": [{"eventName": "ObjectCreated:Put"}]}',
        "{",
        "7",
    ]
    messages = list(events.parse_invocation(_sqs(*hostile, good)))
    assert [bool(m.error) for m in messages] == [True] * len(hostile) + [False]
    assert all("unreadable message" in (m.error or "") for m in messages[:-1])
    assert messages[-1].events[0].key == "k.jpg"
    # Not even a batch: a direct invocation that is not an S3 event is one unreadable message.
    for event in ([], None, "x", {"Records": "x"}):
        (message,) = events.parse_invocation(event)  # type: ignore[arg-type]
        assert message.error


def test_sns_and_eventbridge_envelopes_and_restores():
    import json

    s3 = load_event("s3_put_direct.json")
    via_sns = {"Type": "Notification", "MessageId": "n1", "Message": json.dumps(s3)}
    assert [e.key for e in events.parse_body(via_sns)] == ["deep/a/b/c/d/日本 photo.png"]
    bridge = {
        "version": "0",
        "detail-type": "Object Created",
        "source": "aws.s3",
        "time": "2026-12-01T00:00:00Z",
        "detail": {
            "bucket": {"name": "brand-assets"},
            "object": {"key": "a/b+c.jpg", "size": 5, "etag": "e1", "version-id": "v1", "sequencer": "00AB"},
        },
    }
    (created,) = events.parse_body(bridge)
    assert (created.action, created.key, created.etag, created.version_id, created.sequencer) == (
        events.CREATED,
        "a/b c.jpg",
        "e1",
        "v1",
        "00AB",
    )
    (deleted,) = events.parse_body({**bridge, "detail-type": "Object Deleted"})
    assert deleted.action == events.REMOVED
    assert events.parse_body({**bridge, "detail-type": "Object Tags Added"}) == []
    restored = {
        "Records": [
            {"eventName": "ObjectRestore:Completed", "s3": {"bucket": {"name": "b"}, "object": {"key": "x.jpg"}}}
        ]
    }
    assert [e.action for e in events.parse_body(restored)] == [events.CREATED]
