"""The embedded stack is real: OpenSearch 2.19 with its plugins, moto S3 -> SQS, and our client glue."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import numpy as np
import pytest
from botocore.exceptions import ClientError, ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError
from opensearchpy import exceptions as os_exc
from smarttags import errors
from smarttags import settings as settings_mod
from smarttags.adapters import clients
from smarttags.devtools import stack
from smarttags.settings import Settings

from tests import stopping
from tests.conftest import free_port, make_settings, pinned_versions

EVENTS = Path(__file__).resolve().parents[1] / "events"
PLUGIN_CLASSES = {
    "org.opensearch.transport.Netty4Plugin",
    "org.opensearch.analysis.common.CommonAnalysisPlugin",
    "org.opensearch.index.mapper.MapperExtrasPlugin",
    "org.opensearch.painless.PainlessPlugin",
    "org.opensearch.script.mustache.MustachePlugin",
    "org.opensearch.index.reindex.ReindexPlugin",
    "org.opensearch.ingest.common.IngestCommonPlugin",
    "org.opensearch.knn.plugin.KNNPlugin",
}
SINGLE_SHARD = {"number_of_shards": 1, "number_of_replicas": 0}


# --- OpenSearch -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_node_reports_real_version_and_plugins(os_client: Any) -> None:
    info = os_client.info()
    version = info["version"]
    assert version["number"] == pinned_versions()[0]
    assert version["number"].startswith("2.19.")
    assert version["build_snapshot"] is False
    assert version["build_hash"] not in ("", "unknown")  # read from the jar's manifest
    plugins = {row["component"] for row in os_client.cat.plugins(format="json")}
    assert plugins >= PLUGIN_CLASSES


@pytest.mark.slow
def test_stored_mustache_template_renders_and_searches(settings: Settings, os_client: Any) -> None:
    index = settings.index_name("assets")
    os_client.indices.create(
        index=index,
        body={
            "settings": SINGLE_SHARD,
            "mappings": {"properties": {"title": {"type": "text"}, "tags": {"type": "keyword"}}},
        },
    )
    docs = [("1", "red bicycle", ["bike"]), ("2", "red car", ["car"]), ("3", "blue bicycle", ["bike"])]
    for doc_id, title, tags in docs:
        os_client.index(index=index, id=doc_id, body={"title": title, "tags": tags})
    os_client.indices.refresh(index=index)

    # Sections make this invalid JSON, so it is stored as a string (CONVENTIONS 4).
    source = (
        '{"query": {"bool": {"must": [{"match": {"title": "{{text}}"}}]'
        '{{#tag}}, "filter": [{"term": {"tags": "{{tag}}"}}]{{/tag}}}}, "size": {{size}}}'
    )
    script_id = f"{settings.opensearch.index_prefix}-by-title"
    os_client.put_script(id=script_id, body={"script": {"lang": "mustache", "source": source}})
    try:
        stored = os_client.get_script(id=script_id)["script"]
        assert stored["lang"] == "mustache" and stored["source"] == source

        rendered = os_client.render_search_template(
            id=script_id, body={"params": {"text": "red", "tag": "bike", "size": 5}}
        )["template_output"]
        assert rendered == {
            "query": {
                "bool": {
                    "must": [{"match": {"title": "red"}}],
                    "filter": [{"term": {"tags": "bike"}}],
                }
            },
            "size": 5,
        }
        untagged = os_client.render_search_template(id=script_id, body={"params": {"text": "x", "size": 1}})
        assert "filter" not in untagged["template_output"]["query"]["bool"]

        hits = os_client.search_template(
            index=index, body={"id": script_id, "params": {"text": "red", "tag": "bike", "size": 5}}
        )["hits"]["hits"]
        assert [hit["_id"] for hit in hits] == ["1"]
        hits = os_client.search_template(index=index, body={"id": script_id, "params": {"text": "bicycle", "size": 5}})[
            "hits"
        ]["hits"]
        assert {hit["_id"] for hit in hits} == {"1", "3"}
    finally:
        os_client.delete_script(id=script_id)


@pytest.mark.slow
def test_rank_feature_query_orders_by_feature_value(settings: Settings, os_client: Any) -> None:
    index = settings.index_name("assets")
    os_client.indices.create(
        index=index,
        body={"settings": SINGLE_SHARD, "mappings": {"properties": {"tags": {"type": "rank_features"}}}},
    )
    confidences = {"a": 0.31, "b": 0.92, "c": 0.55, "d": 0.07}
    for doc_id, cat in confidences.items():
        os_client.index(index=index, id=doc_id, body={"tags": {"cat": cat, "dog": 1 - cat}})
    os_client.index(index=index, id="e", body={"tags": {"dog": 0.99}})  # no cat at all: no match
    os_client.indices.refresh(index=index)

    for query in (
        {"rank_feature": {"field": "tags.cat"}},
        {"rank_feature": {"field": "tags.cat", "linear": {}}},
    ):
        hits = os_client.search(index=index, body={"query": query})["hits"]["hits"]
        assert [hit["_id"] for hit in hits] == ["b", "c", "a", "d"]


@pytest.mark.slow
def test_knn_lucene_hnsw_cosine_returns_nearest_in_order(settings: Settings, os_client: Any) -> None:
    index = settings.index_name("assets")
    dim = 8
    os_client.indices.create(
        index=index,
        body={
            "settings": {**SINGLE_SHARD, "index.knn": True},
            "mappings": {
                "properties": {
                    "embedding": {
                        "type": "knn_vector",
                        "dimension": dim,
                        "method": {
                            "name": "hnsw",
                            "engine": "lucene",
                            "space_type": "cosinesimil",
                            "parameters": {"m": 16, "ef_construction": 64},
                        },
                    }
                }
            },
        },
    )
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(40, dim)).astype(np.float32)
    for i, vector in enumerate(vectors):
        os_client.index(index=index, id=str(i), body={"embedding": vector.tolist()})
    os_client.indices.refresh(index=index)

    query = rng.normal(size=dim).astype(np.float32)
    cosine = vectors @ query / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(query))
    expected = [str(i) for i in np.argsort(-cosine)[:5]]

    body = {"size": 5, "query": {"knn": {"embedding": {"vector": query.tolist(), "k": 5}}}}
    hits = os_client.search(index=index, body=body)["hits"]["hits"]
    assert [hit["_id"] for hit in hits] == expected
    # The Lucene engine scores cosine similarity as (1 + cos) / 2.
    top = int(expected[0])
    assert hits[0]["_score"] == pytest.approx((1 + cosine[top]) / 2, rel=1e-4)

    # k-NN's painless functions (its allowlist extension) work too: exact scoring in a script.
    script = {
        "source": "1.0 + cosineSimilarity(params.query_value, doc[params.field])",
        "params": {"field": "embedding", "query_value": query.tolist()},
    }
    body = {"size": 5, "query": {"script_score": {"query": {"match_all": {}}, "script": script}}}
    hits = os_client.search(index=index, body=body)["hits"]["hits"]
    assert [hit["_id"] for hit in hits] == expected


@pytest.mark.slow
def test_sigv4_client_signs_requests_with_refreshable_credentials(opensearch_node: Any, tmp_path: Path) -> None:
    # The node has no security plugin: it ignores the signature, so this proves the signing path runs.
    settings = settings_mod.load(
        opensearch={"url": opensearch_node.url, "auth": "sigv4", "region": "eu-west-1"},
        aws={"access_key_id": "AKIDEXAMPLE", "secret_access_key": "sigv4-secret-value"},
        data_dir=tmp_path,
    )
    client = clients.opensearch_client(settings)
    auth = client.transport.get_connection().session.auth
    assert callable(auth.signer.credentials.get_frozen_credentials)  # not frozen at build time
    assert client.info()["version"]["number"].startswith("2.19.")


# --- S3 -> SQS --------------------------------------------------------------------------------------------

TRICKY_KEYS = [
    "plain.jpg",
    "with space/photo 1.jpg",
    "plus+sign/a+b=c.png",
    "unicode/café-東京-ü.jpg",
    "deep/a/b/c/d/e/f/g/h/leaf (copy) & more.png",
]


def _receive_records(sqs: Any, queue_url: str, want: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(records) < want and time.monotonic() < deadline:
        response = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for message in response.get("Messages", []):
            body = json.loads(message["Body"])
            records.extend(body.get("Records", []))  # an s3:TestEvent has no Records
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return records


@pytest.mark.slow
def test_upload_produces_sqs_event_with_decodable_key(settings: Settings, s3: Any, sqs: Any) -> None:
    wiring = clients.ensure_bucket_and_queue(settings)
    assert clients.ensure_bucket_and_queue(settings) == wiring  # idempotent

    attributes = sqs.get_queue_attributes(QueueUrl=wiring.queue_url, AttributeNames=["All"])["Attributes"]
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == wiring.dead_letter_queue_arn
    assert int(redrive["maxReceiveCount"]) == settings.aws.max_receive_count
    statement = json.loads(attributes["Policy"])["Statement"][0]
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert statement["Condition"]["ArnLike"]["aws:SourceArn"] == f"arn:aws:s3:::{settings.aws.bucket}"
    notification = s3.get_bucket_notification_configuration(Bucket=settings.aws.bucket)
    [queue_config] = notification["QueueConfigurations"]
    assert queue_config["QueueArn"] == wiring.queue_arn
    assert set(queue_config["Events"]) == {"s3:ObjectCreated:*", "s3:ObjectRemoved:*"}

    for key in TRICKY_KEYS:
        s3.put_object(Bucket=settings.aws.bucket, Key=key, Body=b"\x89PNG fake")
    s3.delete_object(Bucket=settings.aws.bucket, Key=TRICKY_KEYS[1])

    records = _receive_records(sqs, wiring.queue_url, want=len(TRICKY_KEYS) + 1)
    created = [r for r in records if r["eventName"].startswith("ObjectCreated:")]
    removed = [r for r in records if r["eventName"].startswith("ObjectRemoved:")]
    assert sorted(unquote_plus(r["s3"]["object"]["key"]) for r in created) == sorted(TRICKY_KEYS)
    assert [unquote_plus(r["s3"]["object"]["key"]) for r in removed] == [TRICKY_KEYS[1]]
    assert {r["s3"]["bucket"]["name"] for r in records} == {settings.aws.bucket}
    # The raw keys really are encoded: a decoder that skips unquote_plus would be wrong. (moto also
    # encodes "/" as %2F where AWS leaves it; unquote_plus reads both.)
    raw = {r["s3"]["object"]["key"].replace("%2F", "/") for r in created}
    assert "with+space/photo+1.jpg" in raw and "plus%2Bsign/a%2Bb%3Dc.png" in raw
    # moto's records have the shape of the real one we keep in tests/events/.
    sample = json.loads((EVENTS / "s3_object_created_put.json").read_text())["Records"][0]
    assert set(sample["s3"]["object"]) <= set(created[0]["s3"]["object"]) | {"eTag", "sequencer"}


def test_sample_event_file_key_decodes() -> None:
    record = json.loads((EVENTS / "s3_object_created_put.json").read_text())["Records"][0]
    assert unquote_plus(record["s3"]["object"]["key"]) == "Campaigns/2024/Spring Sale/café + friends (1).jpg"
    test_event = json.loads((EVENTS / "s3_test_event.json").read_text())
    assert test_event["Event"] == "s3:TestEvent" and "Records" not in test_event


# --- stack up / status / down -----------------------------------------------------------------------------


def _port_pair() -> int:
    """A free HTTP port whose transport port (+100, as `stack up` uses) is free too."""
    for _ in range(50):
        port = free_port()
        if port + 100 < 65536:
            try:
                with socket.create_server(("127.0.0.1", port + 100)):
                    return port
            except OSError:
                continue
    raise RuntimeError("no free port pair")


@pytest.mark.slow
def test_stack_up_status_down_leaves_nothing_running(tmp_path: Path) -> None:
    settings = make_settings(f"http://127.0.0.1:{_port_pair()}", f"http://127.0.0.1:{free_port()}", tmp_path / "var")
    result = stack.stack_up(settings, heap_max="512m")
    try:
        pids = {handle.name: handle.pid for handle in result.handles}
        assert set(pids) == {"opensearch", "moto", "worker"}
        assert not any(handle.reused for handle in result.handles)

        again = stack.stack_up(settings, heap_max="512m")  # harmless: finds the live pids
        assert {h.name: (h.pid, h.reused) for h in again.handles} == {n: (p, True) for n, p in pids.items()}

        rows = {row.name: row for row in stack.stack_status(settings)}
        assert rows["opensearch"].state == "up" and rows["opensearch"].pid == pids["opensearch"]
        assert "OpenSearch 2.19." in rows["opensearch"].detail
        assert rows["s3+sqs"].state == "up" and rows["s3+sqs"].pid == pids["moto"]
        # The worker got these very settings (its own ports and queue), not the defaults.
        assert rows["worker"].state == "up" and rows["worker"].pid == pids["worker"]
        assert settings.aws.queue_name in (settings.data_dir / "stack" / "worker.log").read_text()
        assert (settings.data_dir / "opensearch" / "logs" / "smarttags.log").is_file()
    finally:
        stopped = stack.stack_down(settings)
    assert sorted(stopped) == ["moto", "opensearch", "worker"]
    for pid in pids.values():
        assert not _alive(pid)
    assert not list((settings.data_dir / "stack").glob("*.pid"))
    assert stack.stack_down(settings) == []
    assert {row.state for row in stack.stack_status(settings)} == {"down"}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


# --- The local S3 + SQS keeps its state -------------------------------------------------------------------


def _moto_of(settings: Settings) -> stack.ManagedProcess:
    [moto] = [p for p in stack.managed_processes(settings) if p.name == "moto"]
    return moto


def _wait_saved(state_file: Path, after_ns: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if state_file.is_file() and state_file.stat().st_mtime_ns > after_ns:
            return
        time.sleep(0.1)
    raise AssertionError(f"{state_file} was not written within {timeout} s")


@pytest.mark.slow
def test_local_s3_and_sqs_keep_objects_and_wiring_across_restarts(tmp_path: Path) -> None:
    settings = make_settings("http://127.0.0.1:9", f"http://127.0.0.1:{free_port()}", tmp_path / "var")
    moto = _moto_of(settings)
    state_file = settings.data_dir / "aws" / "moto-state.pickle"
    bucket = settings.aws.bucket
    first = stack.start_process(moto)
    try:
        wiring = clients.ensure_bucket_and_queue(settings)
        s3, sqs = clients.s3_client(settings), clients.sqs_client(settings)
        bodies = {key: f"bytes of {key}".encode() * 100 for key in TRICKY_KEYS}
        for key, body in bodies.items():
            s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata={"owner": "ana"})
        etags = {key: s3.head_object(Bucket=bucket, Key=key)["ETag"] for key in bodies}
        assert stack.stop_process(moto)
        assert state_file.is_file()

        second = stack.start_process(moto)
        assert second.pid != first.pid and not second.reused
        # The queues, their redrive policy and the bucket's notification are the same objects as before
        # (and `stack up` wiring them again keeps the bucket's objects).
        assert clients.ensure_bucket_and_queue(settings) == wiring
        for key, body in bodies.items():
            got = s3.get_object(Bucket=bucket, Key=key)
            assert got["Body"].read() == body and got["ETag"] == etags[key] and got["Metadata"] == {"owner": "ana"}
        attributes = sqs.get_queue_attributes(QueueUrl=wiring.queue_url, AttributeNames=["All"])["Attributes"]
        assert json.loads(attributes["RedrivePolicy"])["deadLetterTargetArn"] == wiring.dead_letter_queue_arn
        [queue_config] = s3.get_bucket_notification_configuration(Bucket=bucket)["QueueConfigurations"]
        assert queue_config["QueueArn"] == wiring.queue_arn
        # The notifications queued before the restart are still there, and uploads after it still notify.
        s3.put_object(Bucket=bucket, Key="after/restart.jpg", Body=b"new")
        records = _receive_records(sqs, wiring.queue_url, want=len(TRICKY_KEYS) + 1)
        assert {unquote_plus(r["s3"]["object"]["key"]) for r in records} == {*TRICKY_KEYS, "after/restart.jpg"}

        # A crash (SIGKILL, no clean save) loses at most the last second: what was saved comes back.
        before = state_file.stat().st_mtime_ns
        s3.put_object(Bucket=bucket, Key="before/crash.jpg", Body=b"kept")
        _wait_saved(state_file, before)
        os.kill(second.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while (_alive(second.pid) or stack.port_taken(moto.ports[0])) and time.monotonic() < deadline:
            time.sleep(0.05)  # its threads may hold the socket a moment after the main one died
        stack.start_process(moto)  # the stale pid file names a dead process: started afresh
        assert s3.get_object(Bucket=bucket, Key="before/crash.jpg")["Body"].read() == b"kept"
        assert len(s3.list_objects_v2(Bucket=bucket)["Contents"]) == len(TRICKY_KEYS) + 2
    finally:
        stack.stop_process(moto)
    assert not moto.pid_file.exists()


def test_a_state_file_of_another_moto_version_is_refused_and_kept(tmp_path: Path) -> None:
    import pickle

    from smarttags.devtools import aws_server

    state_file = tmp_path / "moto-state.pickle"
    state_file.write_bytes(pickle.dumps({"moto": "0.0.1", "backends": {}}))
    with pytest.raises(SystemExit, match=r"written by moto 0\.0\.1, this is moto .*move the file away"):
        aws_server.restore(state_file.read_bytes(), state_file)
    with pytest.raises(SystemExit, match="cannot read"):
        aws_server.restore(b"not a pickle", state_file)
    assert state_file.is_file()


def test_only_requests_that_change_state_trigger_a_save() -> None:
    from smarttags.devtools.aws_server import changes_state

    assert not changes_state({"REQUEST_METHOD": "GET"})
    assert not changes_state({"REQUEST_METHOD": "HEAD"})
    assert not changes_state({"REQUEST_METHOD": "POST", "HTTP_X_AMZ_TARGET": "AmazonSQS.ReceiveMessage"})
    assert changes_state({"REQUEST_METHOD": "POST", "HTTP_X_AMZ_TARGET": "AmazonSQS.DeleteMessage"})
    assert changes_state({"REQUEST_METHOD": "PUT"})  # an S3 upload
    assert changes_state({"REQUEST_METHOD": "DELETE"})


# --- Stopping on a signal -----------------------------------------------------------------------------------


def _stack_env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "SMARTTAGS_DATA_DIR": str(tmp_path / "var"),
        "SMARTTAGS_OPENSEARCH__URL": f"http://127.0.0.1:{_port_pair()}",
        "SMARTTAGS_AWS__ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "SMARTTAGS_AWS__BUCKET": "signals-assets",
    }


@pytest.mark.slow
def test_stack_up_foreground_stops_everything_once_on_sigterm_and_a_second_signal_does_not_cut_it(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "var" / "stack"
    up = stopping.Running(["stack", "up", "--heap", "512m", "--foreground"], _stack_env(tmp_path))
    try:
        up.wait_for("running in the foreground", timeout=240)  # read through a pipe while it runs: flushed
        started = stopping.pids(run_dir)
        assert set(started) == {"opensearch", "moto", "worker"}
        up.process.send_signal(signal.SIGTERM)
        up.wait_for("stopping what stack up started", timeout=30)
        up.process.send_signal(signal.SIGINT)  # a second signal, during the clean-up
        code = up.finish(timeout=120)
    finally:
        up.kill()
    assert code == 130, up.stderr
    assert up.lines.count("stopping what stack up started") == 1
    assert "SIGINT: already stopping, the clean-up goes on" in up.stderr
    assert not any(stopping.alive(pid) for pid in started.values())
    assert not list(run_dir.glob("*.pid"))
    # What S3/SQS held was saved on the way down.
    assert (tmp_path / "var" / "aws" / "moto-state.pickle").is_file()


@pytest.mark.slow
def test_stack_up_foreground_fails_and_stops_the_rest_when_one_of_its_services_dies(tmp_path: Path) -> None:
    run_dir = tmp_path / "var" / "stack"
    up = stopping.Running(["stack", "up", "--heap", "512m", "--foreground"], _stack_env(tmp_path))
    try:
        up.wait_for("running in the foreground", timeout=240)
        started = stopping.pids(run_dir)
        os.kill(started["worker"], signal.SIGKILL)
        code = up.finish(timeout=120)
    finally:
        up.kill()
    assert code == 1, up.stderr
    assert "a service this started is gone: worker" in up.lines
    assert not any(stopping.alive(pid) for pid in started.values())
    assert not list(run_dir.glob("*.pid"))


@pytest.mark.slow
def test_a_signal_while_stack_up_starts_stops_what_it_started(tmp_path: Path) -> None:
    run_dir = tmp_path / "var" / "stack"
    up = stopping.Running(["stack", "up", "--heap", "512m"], _stack_env(tmp_path))
    try:
        stopping.wait_for_file(run_dir / "opensearch.pid", timeout=120)  # OpenSearch is starting
        node = int((run_dir / "opensearch.pid").read_text())
        up.process.send_signal(signal.SIGHUP)
        code = up.finish(timeout=120)
    finally:
        up.kill()
    assert code == 130, up.stderr
    assert not stopping.alive(node)
    assert not list(run_dir.glob("*.pid"))


# --- Error translation and secrets (no services) -----------------------------------------------------------


def _client_error(code: str, message: str = "", status: int = 400, operation: str = "GetObject") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}},
        operation,
    )


@pytest.mark.parametrize(
    "exc",
    [
        EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
        ConnectTimeoutError(endpoint_url="http://127.0.0.1:1"),
        ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
        _client_error("SlowDown", status=503),
        _client_error("SomethingNew", status=500),
    ],
)
def test_aws_unavailable(exc: Exception) -> None:
    assert type(clients.translate_aws_error(exc, "s3")) is errors.ServiceUnavailable


@pytest.mark.parametrize(
    "code",
    [
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "AccessDenied",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
    ],
)
def test_aws_credentials_rejected_by_code(code: str) -> None:
    error = clients.translate_aws_error(_client_error(code, "Secret details: StringToSign=abc", 403), "sqs")
    assert type(error) is errors.CredentialsRejected
    assert error.service == "sqs" and code in str(error)
    assert "StringToSign" not in str(error)


def test_aws_classifies_by_code_not_message() -> None:
    error = clients.translate_aws_error(_client_error("InvalidRequest", "AccessDenied: expired token"), "s3")
    assert type(error) is errors.ServiceError
    assert isinstance(clients.translate_aws_error(_client_error("NoSuchKey", status=404), "s3"), errors.NotFound)


def test_aws_real_connection_refused_is_unavailable(tmp_path: Path) -> None:
    settings = make_settings("http://127.0.0.1:9", f"http://127.0.0.1:{free_port()}", tmp_path)
    with pytest.raises(EndpointConnectionError) as caught:
        clients.s3_client(settings).list_buckets()
    assert isinstance(clients.translate_aws_error(caught.value, "s3"), errors.ServiceUnavailable)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (os_exc.ConnectionError("N/A", "refused", OSError("refused")), errors.ServiceUnavailable),
        (os_exc.ConnectionTimeout("TIMEOUT", "timed out", OSError()), errors.ServiceUnavailable),
        (os_exc.AuthenticationException(401, "security_exception", {}), errors.CredentialsRejected),
        (os_exc.AuthorizationException(403, "security_exception", {}), errors.CredentialsRejected),
        (os_exc.ConflictError(409, "version_conflict_engine_exception", {}), errors.ConflictError),
        (os_exc.NotFoundError(404, "index_not_found_exception", {}), errors.NotFound),
        (os_exc.RequestError(400, "parsing_exception", {}), errors.RequestError),
        (os_exc.TransportError(429, "es_rejected_execution_exception", {}), errors.ServiceUnavailable),
        (os_exc.TransportError(503, "unavailable", {}), errors.ServiceUnavailable),
        (os_exc.TransportError(418, "teapot", {}), errors.ServiceError),
    ],
)
def test_opensearch_translation(exc: Exception, expected: type[errors.SmartTagsError]) -> None:
    assert type(clients.translate_opensearch_error(exc)) is expected


def test_opensearch_real_connection_refused_is_unavailable(tmp_path: Path) -> None:
    settings = make_settings(f"http://127.0.0.1:{free_port()}", "http://127.0.0.1:9", tmp_path)
    client = clients.opensearch_client(settings)
    with pytest.raises(os_exc.ConnectionError) as caught:
        client.info()
    assert isinstance(clients.translate_opensearch_error(caught.value), errors.ServiceUnavailable)


def test_secrets_never_shown(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    settings = settings_mod.load(
        opensearch={
            "url": "https://search.example.com",
            "auth": "basic",
            "username": "u",
            "password": "pw-9f3",
        },
        aws={"access_key_id": "AKID-7c1", "secret_access_key": "sk-41d"},
        data_dir=tmp_path,
    )
    client = clients.opensearch_client(settings)
    s3 = clients.s3_client(settings)
    shown = [repr(settings), str(settings), settings.model_dump_json(), repr(client), repr(s3), caplog.text]
    for secret in ("pw-9f3", "sk-41d"):
        assert not any(secret in text for text in shown)
    # The secret still reaches the client that needs it.
    assert settings.opensearch.password is not None
    assert settings.opensearch.password.get_secret_value() == "pw-9f3"


def test_loopback_detection() -> None:
    assert clients.is_loopback_url("http://127.0.0.1:9200")
    assert clients.is_loopback_url("http://localhost:9400")
    assert not clients.is_loopback_url("https://search-x.eu-west-1.es.amazonaws.com")
    assert not clients.is_loopback_url(None)


def test_external_services_are_never_managed(tmp_path: Path) -> None:
    external = settings_mod.load(
        opensearch={
            "url": "https://search-x.eu-west-1.es.amazonaws.com",
            "auth": "sigv4",
            "region": "eu-west-1",
        },
        aws={"endpoint_url": None, "region": "eu-west-1"},
        data_dir=tmp_path,
    )
    assert stack.managed_processes(external) == []
    assert stack.stack_down(external) == []
    local = make_settings("http://127.0.0.1:9200", "http://localhost:9400", tmp_path)
    processes = {p.name: p for p in stack.managed_processes(local)}
    assert list(processes) == ["opensearch", "moto"]
    assert processes["opensearch"].pid_file.parent == processes["moto"].pid_file.parent == tmp_path / "stack"
    assert "--http-port" in processes["opensearch"].argv and "9200" in processes["opensearch"].argv
    moto_argv = list(processes["moto"].argv)
    assert moto_argv[moto_argv.index("--port") + 1] == "9400"
    assert moto_argv[moto_argv.index("--state") + 1] == str((tmp_path / "aws" / "moto-state.pickle").resolve())


@pytest.mark.parametrize("listening", [True, False], ids=["listener", "bound-without-listener"])
def test_start_refuses_a_port_taken_by_a_stranger(tmp_path: Path, listening: bool) -> None:
    with socket.socket() as stranger:
        stranger.bind(("127.0.0.1", 0))
        if listening:
            stranger.listen()
        port = stranger.getsockname()[1]
        with pytest.raises(errors.ConfigError, match=f"127.0.0.1:{port} .* in use by another process"):
            stack.start_moto(port, tmp_path)
    assert not (tmp_path / "moto.pid").exists()


def _stranger(listening: bool) -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    if listening:
        sock.listen()
    return sock


@pytest.mark.parametrize("listening", [True, False], ids=["listener", "bound-without-listener"])
def test_stack_up_checks_every_port_before_starting_anything(tmp_path: Path, listening: bool) -> None:
    with _stranger(listening) as aws, _stranger(listening) as admin:
        aws_port, admin_port = aws.getsockname()[1], admin.getsockname()[1]
        settings = make_settings(f"http://127.0.0.1:{_port_pair()}", f"http://127.0.0.1:{aws_port}", tmp_path / "var")
        settings = settings.model_copy(update={"admin": settings.admin.model_copy(update={"port": admin_port})})
        with pytest.raises(errors.ConfigError) as caught:
            stack.stack_up(settings, also_ports=[stack.admin_port(settings)])
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"setting SMARTTAGS_AWS__ENDPOINT_URL: 127.0.0.1:{aws_port} (S3 + SQS (moto)) is in use")
    assert f"also 127.0.0.1:{admin_port} (admin panel, SMARTTAGS_ADMIN__PORT)" in message
    assert not (settings.data_dir / "stack").exists()  # nothing was started, not even a pid file written


def test_the_demo_with_its_admin_port_taken_stops_at_once_with_one_line(tmp_path: Path) -> None:
    with _stranger(True) as admin:
        port = admin.getsockname()[1]
        env = {
            **os.environ,
            "SMARTTAGS_DATA_DIR": str(tmp_path / "var"),
            "SMARTTAGS_OPENSEARCH__URL": f"http://127.0.0.1:{_port_pair()}",
            "SMARTTAGS_AWS__ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
            "SMARTTAGS_ADMIN__PORT": str(port),
        }
        done = subprocess.run(
            [sys.executable, "-m", "smarttags", "demo"], env=env, capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"smarttags: setting SMARTTAGS_ADMIN__PORT: 127.0.0.1:{port} (admin panel) is in use by another process; "
        "stop it or choose another port"
    ]
    assert not (tmp_path / "var" / "stack").exists()


@pytest.mark.slow
def test_a_failed_opensearch_start_shows_the_cause_from_the_nodes_own_log(tmp_path: Path) -> None:
    with _stranger(True) as taken:
        port = taken.getsockname()[1]
        node = stack.opensearch_process(
            tmp_path / "opensearch", port, transport_port=free_port(), run_dir=tmp_path / "run", heap_max="512m"
        )
        # Skip the port check, as when another process takes the port between the check and the bind.
        with pytest.raises(errors.ServiceUnavailable) as caught:
            stack.start_process(replace(node, ports=(), port_needs=()))
    message = str(caught.value)
    assert message.startswith("opensearch: exited during start; last log lines:")
    assert str(tmp_path / "opensearch" / "logs" / "smarttags.log") in message
    assert f"BindHttpException[Failed to bind to 127.0.0.1:{port}]" in message
    assert "Address already in use" in message
    assert "\tat " not in message  # the exception lines, not the Java stack frames
    assert not node.pid_file.exists()


def test_a_stop_signal_the_work_swallows_still_counts_as_stopped() -> None:
    """waitress's serve catches KeyboardInterrupt (our Stopped) and returns: the demo must still say a
    signal stopped it (exit 130), not that its work ended by itself."""

    def serve() -> None:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        except KeyboardInterrupt:
            return

    cleaned: list[bool] = []
    assert stack.run_until_stopped(serve, lambda: cleaned.append(True)) is True
    assert cleaned == [True]
    assert stack.run_until_stopped(lambda: None, lambda: cleaned.append(True)) is False
