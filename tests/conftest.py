"""Session fixtures: ONE embedded OpenSearch node and ONE moto server per test run, stopped at the end.

Every test that asks for ``settings`` gets its own index prefix, bucket and queue names, so tests never
see each other's data. Tests that use these services are marked ``slow`` (they still run in CI).
"""

from __future__ import annotations

import importlib.util
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from smarttags import settings as settings_mod
from smarttags.adapters import clients
from smarttags.devtools import stack
from smarttags.devtools.stack import free_port
from smarttags.settings import Settings

# What the suite ran against, for the terminal summary (CI logs show it).
_RAN_AGAINST: dict[str, str] = {}


def pinned_versions() -> tuple[str, str]:
    """(OpenSearch, k-NN) versions pinned in launcher/pom.xml."""
    pom = (stack.LAUNCHER_DIR / "pom.xml").read_text()
    core = re.search(r"<opensearch.version>([^<]+)<", pom)
    knn = re.search(r"<knn.version>([^<]+)<", pom)
    return (core.group(1) if core else "?", knn.group(1) if knn else "?")


def pytest_report_header(config: pytest.Config) -> str:
    core, knn = pinned_versions()
    return f"embedded stack: OpenSearch {core} + k-NN {knn} (launcher/pom.xml), moto server"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _RAN_AGAINST:
        line = ", ".join(f"{key} {value}" for key, value in _RAN_AGAINST.items())
        terminalreporter.write_line(f"ran against: {line}")


@dataclass(frozen=True)
class SharedService:
    """A node or server someone else started (``SMARTTAGS_TEST_*_URL``): several checkouts on one machine
    share one node instead of starting a JVM each. Every test still has its own indices and bucket."""

    url: str


@pytest.fixture(scope="session")
def opensearch_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[stack.ProcessHandle | SharedService]:
    if shared := os.environ.get("SMARTTAGS_TEST_OPENSEARCH_URL"):
        yield SharedService(shared)
        return
    home = tmp_path_factory.mktemp("opensearch")
    node = stack.start_opensearch(home, free_port(), transport_port=free_port(), heap_max="1g")
    info = clients.opensearchpy.OpenSearch(hosts=[node.url]).info()
    _RAN_AGAINST["OpenSearch"] = f"{info['version']['number']} (lucene {info['version']['lucene_version']})"
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[stack.ProcessHandle | SharedService]:
    if shared := os.environ.get("SMARTTAGS_TEST_AWS_URL"):
        yield SharedService(shared)
        return
    server = stack.start_moto(free_port(), tmp_path_factory.mktemp("moto"))
    _RAN_AGAINST["moto"] = server.url
    try:
        yield server
    finally:
        server.stop()


def make_settings(opensearch_url: str, aws_endpoint: str, data_dir: Path, **opensearch: Any) -> Settings:
    """Settings with names of their own: index prefix, bucket, queues."""
    unique = "t" + uuid.uuid4().hex[:12]
    return settings_mod.load(
        opensearch={"url": opensearch_url, "index_prefix": unique, **opensearch},
        aws={
            "endpoint_url": aws_endpoint,
            "access_key_id": "testing",
            "secret_access_key": "testing",
            "bucket": f"{unique}-assets",
            "queue_name": f"{unique}-tagging",
            "dead_letter_queue_name": f"{unique}-tagging-dlq",
            "max_attempts": 2,
        },
        data_dir=data_dir,
    )


@pytest.fixture
def settings(opensearch_node: Any, moto_server: Any, tmp_path: Path) -> Settings:
    return make_settings(opensearch_node.url, moto_server.url, tmp_path / "var")


@pytest.fixture
def os_client(settings: Settings) -> Iterator[clients.opensearchpy.OpenSearch]:
    client = clients.opensearch_client(settings)
    yield client
    # This test's indices only (its own prefix).
    client.indices.delete(index=f"{settings.opensearch.index_prefix}-*", ignore_unavailable=True)
    client.close()


@pytest.fixture
def s3(settings: Settings) -> Any:
    return clients.s3_client(settings)


@pytest.fixture
def sqs(settings: Settings) -> Any:
    return clients.sqs_client(settings)


# --- The library on the real services ---------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def load_adapter(relative: str, name: str) -> Any:
    """Load a top-level file of the checkout (``lambda/handler.py``) by path, as Lambda does."""
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def embedder() -> Any:
    """The real default backbone, built once (cached in the project's var/ by `make install`)."""
    from smarttags.adapters.embedder import load_embedder

    return load_embedder(settings_mod.load(data_dir=ROOT / "var"))


@pytest.fixture
def services(settings: Settings, os_client: Any, embedder: Any) -> Any:
    """Everything wired on this test's own indices, bucket and queues, with the session's embedder."""
    from smarttags.entrypoints.compose import Services

    built = Services(settings)
    built.embedder = lambda: embedder  # one ONNX session for the whole run
    built.index.ensure()
    clients.ensure_bucket_and_queue(settings)
    return built


@pytest.fixture
def shape_model(services: Any, embedder: Any) -> Any:
    """An active model that knows one picture: 'shapes:red' fires on red circles (cosine above 0.9 to the
    reference picture), 'shapes:any' on everything."""
    import numpy as np
    from smarttags.core.heads import Heads

    from tests.images import picture

    red = embedder.embed_bytes([picture("red")])[0]
    weights = np.zeros((red.size, 2), dtype=np.float32)
    weights[:, 0] = 40 * red
    heads = Heads(
        ("shapes:red", "shapes:any"),
        weights,
        np.array([-36.0, 10.0], dtype=np.float32),
        np.array([0.5, 0.5], dtype=np.float32),
    )
    return activate_heads(services, heads, embedder, fingerprint="t")


def activate_heads(services: Any, heads: Any, embedder: Any, *, fingerprint: str) -> Any:
    """Save ``heads`` as a model over ``embedder``'s backbone, activate it and return it loaded."""
    from smarttags.core.heads import TagFit

    fits = [TagFit(t, 30, 1.0, 0.5, 1.0, 1.0, 1.0, 1.0) for t in heads.tags]
    manifest = services.models.save(
        heads,
        fits,
        backbone_id=embedder.backbone_id,
        backbone_sha256=embedder.sha256,
        training_fingerprint=fingerprint,
        folders=[],
    )
    services.models.activate(manifest.version)
    services.tagger.forget_model()
    return services.models.load(manifest.version)
