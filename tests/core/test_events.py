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
    body = events.work_item("b", "a/b c.jpg", run_id="tag-1", trigger="schedule")
    (event,) = events.parse_body(body)
    assert (event.action, event.key, event.run_id, event.trigger) == (events.TAG, "a/b c.jpg", "tag-1", "schedule")


def test_sequencer_comparison_right_pads_then_compares():
    assert events.sequencer_newer("0A1B2C3D4E5F678902", "0A1B2C3D4E5F678901")
    assert not events.sequencer_newer("0A1B2C3D4E5F678901", "0A1B2C3D4E5F678902")
    # Different lengths: the shorter is padded with zeros on the right before comparing.
    assert events.sequencer_newer("0A1B2C3D4E5F6790", "0A1B2C3D4E5F678999")
    assert events.same_sequencer("0A1B", "0A1B0000")
    assert not events.sequencer_newer("00A1", "00A1")
    assert events.sequencer_newer("00A1", None)
