"""The OpenSearch adapter on the real node: several renderings of a stored template in one round trip."""

from __future__ import annotations

import pytest
from smarttags.errors import ServiceError

pytestmark = pytest.mark.slow


def test_msearch_template_reads_each_response_and_raises_on_a_failed_one(services) -> None:
    ok = {"size": 1, "bucket": services.settings.aws.bucket, "tag": "a:b", "feature": "a:b"}
    assert [
        r["hits"]["total"]["value"] for r in services.index.msearch_template("assets", "smarttags-review-v1", [ok])
    ] == [0]
    assert services.index.msearch_template("assets", "smarttags-review-v1", []) == []
    with pytest.raises(ServiceError, match="1 of 2 searches failed"):
        services.index.msearch_template("assets", "smarttags-review-v1", [ok, {**ok, "size": -5}])


def test_the_assets_index_is_searchable_soon_and_keeps_every_acknowledged_write(services, os_client) -> None:
    name = services.index.name("assets")
    settings = os_client.indices.get_settings(index=name)[name]["settings"]["index"]
    # Moderation shares the index: an acknowledged decision is fsynced, throughput comes from bulk writes.
    assert settings["refresh_interval"] == "1s" and settings["translog"]["durability"] == "request"
