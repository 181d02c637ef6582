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
