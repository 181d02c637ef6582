"""The composition root's choice of backbone: a deployment keeps the backbone of its active model when
``backbone.name`` is not set (a release may change the default), and the vector mapping follows it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from smarttags.adapters import backbone, clients
from smarttags.core.heads import Heads, TagFit
from smarttags.entrypoints.compose import Services
from smarttags.settings import Settings

pytestmark = pytest.mark.slow


def vector_dimension(os_client: Any, services: Services) -> int:
    name = services.index.name("vectors")
    mapping = os_client.indices.get_mapping(index=name)[name]["mappings"]
    return int(mapping["properties"]["embedding"]["dimension"])


def save_model(services: Services, backbone_id: str, dim: int) -> None:
    heads = Heads(("a",), np.zeros((dim, 1), np.float32), np.zeros(1, np.float32), np.full(1, 0.5, np.float32))
    fits = [TagFit("a", 30, 1.0, 0.5, 1.0, 1.0, 1.0, 1.0)]
    manifest = services.models.save(
        heads, fits, backbone_id=backbone_id, backbone_sha256="0" * 64, training_fingerprint="f", folders=[]
    )
    services.models.activate(manifest.version)


def test_a_new_deployment_gets_the_default_backbone(settings: Settings, os_client: Any) -> None:
    services = Services(settings)
    services.index.ensure()  # before the buckets exist, as a first `smarttags init` runs
    default = settings.backbone.name
    assert services.backbone.name == default
    assert services.embedding_dim == backbone.preset_dim(default)
    assert vector_dimension(os_client, services) == backbone.preset_dim(default)


def test_an_existing_deployment_keeps_its_models_backbone(settings: Settings, os_client: Any) -> None:
    """Its active model was trained on another preset than today's default: without a backbone.name
    setting it keeps embedding (and mapping vectors) with that preset, and its model keeps tagging."""
    other = "efficientnet-lite0" if settings.backbone.name != "efficientnet-lite0" else "efficientnet-lite0+lite2"
    clients.ensure_bucket_and_queue(settings)
    save_model(Services(settings), f"{other}:abc", backbone.preset_dim(other))
    services = Services(settings)
    assert services.backbone.name == other and services.embedding_dim == backbone.preset_dim(other)
    services.index.ensure()
    assert vector_dimension(os_client, services) == backbone.preset_dim(other)
    # Set explicitly, the setting wins (the operator moves the deployment: train, then activate).
    chosen = settings.model_copy(
        update={"backbone": settings.backbone.model_copy(update={"name": "efficientnet-lite2"})}
    )
    assert Services(chosen).backbone.name == "efficientnet-lite2"


def test_a_backbone_of_another_size_than_the_vectors_index_is_one_clear_error(
    settings: Settings, os_client: Any
) -> None:
    """A deployment with 1280-d vectors and no model yet (nothing to follow) upgraded to a default of
    another size: `init` says which setting to change instead of OpenSearch's refusal of the mapping."""
    from smarttags.adapters.opensearch import SearchIndex
    from smarttags.errors import ConfigError

    def index(dim: int) -> SearchIndex:
        return SearchIndex(os_client, settings.opensearch.index_prefix, embedding_dim=dim)

    index(1280).ensure()
    with pytest.raises(ConfigError, match=r"SMARTTAGS_BACKBONE__NAME: .* holds 1280-d vectors .* makes 2560-d"):
        index(2560).ensure()
    index(1280).ensure()  # the same size: harmless to repeat
