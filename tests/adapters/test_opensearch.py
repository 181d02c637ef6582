"""The OpenSearch adapter on the real node: several renderings of a stored template in one round trip;
a scan through a point in time, page by page, that closes it."""

from __future__ import annotations

import base64

import pytest
from smarttags.adapters.asset_index import AssetIndex
from smarttags.core.asset import Asset
from smarttags.core.folders import Folder
from smarttags.errors import ServiceError
from smarttags.resources import TEMPLATES

pytestmark = pytest.mark.slow


def test_msearch_template_reads_each_response_and_raises_on_a_failed_one(services) -> None:
    ok = {"size": 1, "bucket": services.settings.aws.bucket, "tag": "a:b", "feature": "a:b"}
    below = TEMPLATES["tag_below.mustache"]
    assert [r["hits"]["total"]["value"] for r in services.index.msearch_template("assets", below, [ok])] == [0]
    assert services.index.msearch_template("assets", below, []) == []
    with pytest.raises(ServiceError, match="1 of 2 searches failed"):
        services.index.msearch_template("assets", below, [ok, {**ok, "size": -5}])
    # Different templates in one round trip, answered in order.
    above = TEMPLATES["tag_above.mustache"]
    answers = services.index.msearch_templates("assets", [(below, ok), (above, {**ok, "min_score": 0.5})])
    assert [r["hits"]["total"]["value"] for r in answers] == [0, 0]


def test_the_assets_index_is_searchable_soon_and_keeps_every_acknowledged_write(services, os_client) -> None:
    name = services.index.name("assets")
    settings = os_client.indices.get_settings(index=name)[name]["settings"]["index"]
    # Moderation shares the index: an acknowledged decision is fsynced, throughput comes from bulk writes.
    assert settings["refresh_interval"] == "1s" and settings["translog"]["durability"] == "request"


def _open_pits_on(client, index: str) -> int:
    """Points in time open on ``index`` (a PIT id is base64 of the shard contexts, index names included);
    other tests' PITs on the shared node are not counted."""
    pits = client.transport.perform_request("GET", "/_search/point_in_time/_all")["pits"]
    return sum(index.encode() in base64.urlsafe_b64decode(p["pit_id"] + "=" * (-len(p["pit_id"]) % 4)) for p in pits)


def test_scan_reads_every_page_of_a_point_in_time_and_closes_it(services) -> None:
    assets = AssetIndex(services.index)
    bucket = services.settings.aws.bucket
    assets.merge([Asset(bucket, f"many/{i:02}.jpg", etag=f"e{i}") for i in range(23)], ["etag"])
    services.index.refresh()
    name = services.index.name("assets")
    client = services.index.client

    hits = list(services.index.scan("assets", Folder(bucket, "many/").query(), source=["key"], batch_size=5))
    ids = [h["_id"] for h in hits]
    assert len(ids) == 23 and ids == sorted(set(ids))  # five pages, each asset once, in the page order
    assert _open_pits_on(client, name) == 0

    # A reader that stops early still closes its point in time (the generator's finally).
    walk = services.index.scan("assets", {"match_all": {}}, batch_size=5)
    next(walk)
    assert _open_pits_on(client, name) == 1
    walk.close()
    assert _open_pits_on(client, name) == 0
