"""The Dashboards saved objects pass the checks Dashboards' importer makes, and fit its strict mapping."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from smarttags import resources
from smarttags.core import dashboards
from smarttags.entrypoints import cli

# The saved-objects index mapping of OpenSearch Dashboards 2.19 for the types we ship: the core fields
# every saved object index has (strict at the root) plus the index-pattern, visualization and dashboard
# type mappings, as their type registrations declare them.
_NOT_INDEXED = {"type": "text", "index": False}
_STORED_ONLY_KEYWORD = {"type": "keyword", "index": False, "doc_values": False}
SAVED_OBJECTS_MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "migrationVersion": {"dynamic": "true", "type": "object"},
        "type": {"type": "keyword"},
        "namespace": {"type": "keyword"},
        "namespaces": {"type": "keyword"},
        "originId": {"type": "keyword"},
        "updated_at": {"type": "date"},
        "references": {
            "type": "nested",
            "properties": {"name": {"type": "keyword"}, "type": {"type": "keyword"}, "id": {"type": "keyword"}},
        },
        "index-pattern": {"dynamic": False, "properties": {"title": {"type": "text"}, "type": {"type": "keyword"}}},
        "visualization": {
            "properties": {
                "description": {"type": "text"},
                "kibanaSavedObjectMeta": {"properties": {"searchSourceJSON": _NOT_INDEXED}},
                "savedSearchRefName": _STORED_ONLY_KEYWORD,
                "title": {"type": "text"},
                "uiStateJSON": _NOT_INDEXED,
                "version": {"type": "integer"},
                "visState": _NOT_INDEXED,
            }
        },
        "dashboard": {
            "properties": {
                "description": {"type": "text"},
                "hits": {"type": "integer", "index": False, "doc_values": False},
                "kibanaSavedObjectMeta": {"properties": {"searchSourceJSON": _NOT_INDEXED}},
                "optionsJSON": _NOT_INDEXED,
                "panelsJSON": _NOT_INDEXED,
                "refreshInterval": {
                    "properties": {
                        "display": _STORED_ONLY_KEYWORD,
                        "pause": {"type": "boolean", "index": False, "doc_values": False},
                        "section": {"type": "integer", "index": False, "doc_values": False},
                        "value": {"type": "integer", "index": False, "doc_values": False},
                    }
                },
                "timeFrom": _STORED_ONLY_KEYWORD,
                "timeRestore": {"type": "boolean", "index": False, "doc_values": False},
                "timeTo": _STORED_ONLY_KEYWORD,
                "title": {"type": "text"},
                "version": {"type": "integer"},
            }
        },
    },
}
MIGRATION_VERSIONS = {"index-pattern": "7.6.0", "visualization": "7.10.0", "dashboard": "7.9.3"}
EMBEDDED_JSON = ("visState", "uiStateJSON", "panelsJSON", "optionsJSON", "fields")
AGGREGATABLE_TYPES = {"keyword", "long", "integer", "short", "byte", "double", "float", "half_float", "date", "boolean"}


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return dashboards.load_objects()


def _by_key(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["type"], o["id"]): o for o in objects}


def _mapping_type(kind: str, dotted: str) -> str | None:
    """The type of a (possibly nested or multi-) field in one of our mapping files, read independently."""
    props = resources.load_json(f"{kind}.index.json")["mappings"]["properties"]
    parts = dotted.split(".")
    spec: dict[str, Any] | None = None
    for i, part in enumerate(parts):
        if part in props:
            spec = props[part]
            props = spec.get("properties", {})
        elif spec is not None and part in spec.get("fields", {}) and i == len(parts) - 1:
            spec = spec["fields"][part]
        else:
            return None
    return spec.get("type") if spec else None


def test_the_stored_file_is_what_render_writes() -> None:
    # Regenerate with `smarttags dashboards export --out search_templates/dashboards/smarttags.ndjson`.
    assert resources.load_text(dashboards.TEMPLATE) == dashboards.render()


def test_every_line_is_a_saved_object(objects: list[dict[str, Any]]) -> None:
    lines = resources.load_text(dashboards.TEMPLATE).splitlines()
    assert len(lines) == len(objects) == 7
    for obj in objects:
        assert set(obj) == {"attributes", "id", "migrationVersion", "references", "type"}
        assert obj["type"] in MIGRATION_VERSIONS
        assert obj["migrationVersion"] == {obj["type"]: MIGRATION_VERSIONS[obj["type"]]}
        assert obj["attributes"]["title"]
    assert Counter(o["type"] for o in objects) == {"index-pattern": 2, "visualization": 4, "dashboard": 1}


def test_type_and_id_are_unique(objects: list[dict[str, Any]]) -> None:
    assert len(_by_key(objects)) == len(objects)


def test_every_reference_resolves_in_the_file(objects: list[dict[str, Any]]) -> None:
    known = _by_key(objects)
    for obj in objects:
        names = [ref["name"] for ref in obj["references"]]
        assert len(names) == len(set(names)), obj["id"]
        for ref in obj["references"]:
            assert (ref["type"], ref["id"]) in known, f"{obj['id']} -> {ref}"


def test_embedded_json_parses(objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        attrs = obj["attributes"]
        for name in EMBEDDED_JSON:
            if name in attrs:
                json.loads(attrs[name])
        if "kibanaSavedObjectMeta" in attrs:
            source = json.loads(attrs["kibanaSavedObjectMeta"]["searchSourceJSON"])
            assert "index" not in source, "the index goes through indexRefName and references"
            if "indexRefName" in source:
                assert source["indexRefName"] in {ref["name"] for ref in obj["references"]}


def test_index_patterns_name_our_indices_and_their_time_fields(objects: list[dict[str, Any]]) -> None:
    patterns = {o["attributes"]["title"]: o["attributes"] for o in objects if o["type"] == "index-pattern"}
    assert patterns["smarttags-assets"]["timeFieldName"] == "modified"
    assert patterns["smarttags-runs"]["timeFieldName"] == "started_at"
    for title, attrs in patterns.items():
        kind = title.removeprefix("smarttags-")
        assert _mapping_type(kind, attrs["timeFieldName"]) == "date"
        fields = {f["name"]: f for f in json.loads(attrs["fields"])}
        assert fields["smart_ids" if kind == "assets" else "trigger"]["aggregatable"] is True
        if kind == "assets":
            assert fields["title"]["aggregatable"] is False and fields["keywords.raw"]["aggregatable"] is True
            assert "embedding" not in fields and "smart_scores" not in fields


def test_visualization_fields_exist_and_are_aggregatable(objects: list[dict[str, Any]]) -> None:
    known = _by_key(objects)
    used = set()
    for vis in (o for o in objects if o["type"] == "visualization"):
        (ref,) = vis["references"]
        pattern = known[("index-pattern", ref["id"])]
        kind = dashboards.pattern_kind(pattern)
        listed = {f["name"]: f for f in json.loads(pattern["attributes"]["fields"])}
        state = json.loads(vis["attributes"]["visState"])
        assert state["title"] == vis["attributes"]["title"]
        for agg in state["aggs"]:
            field = agg["params"].get("field")
            if field is None:
                continue
            used.add(field)
            assert _mapping_type(kind, field) in AGGREGATABLE_TYPES, f"{vis['id']}: {kind}.{field}"
            assert listed[field]["aggregatable"], field
    assert used == {"smart_ids", "smart_tags.confidence", "started_at", "trigger", "tagging.reason"}


def test_dashboard_panels_use_panel_references(objects: list[dict[str, Any]]) -> None:
    (dashboard,) = (o for o in objects if o["type"] == "dashboard")
    panels = json.loads(dashboard["attributes"]["panelsJSON"])
    refs = {ref["name"]: ref for ref in dashboard["references"]}
    assert [p["panelRefName"] for p in panels] == [f"panel_{i}" for i in range(len(panels))]
    assert set(refs) == {p["panelRefName"] for p in panels}
    assert all(refs[p["panelRefName"]]["type"] == "visualization" for p in panels)
    assert len({p["panelIndex"] for p in panels}) == len(panels)
    for panel in panels:
        assert panel["gridData"]["i"] == panel["panelIndex"] and "id" not in panel
        assert panel["gridData"]["x"] + panel["gridData"]["w"] <= 48


def _unmapped_keys(value: Any, mapping: dict[str, Any], path: str) -> list[str]:
    """Keys a strict mapping would refuse (objects under ``dynamic: false`` accept anything)."""
    if mapping.get("dynamic") in (False, "false", True, "true") or not isinstance(value, dict):
        return []
    props = mapping.get("properties", {})
    bad = []
    for key, sub in value.items():
        if key not in props:
            bad.append(f"{path}.{key}")
        elif "properties" in props[key] or "dynamic" in props[key]:
            bad += _unmapped_keys(sub, props[key], f"{path}.{key}")
    return bad


def _stored_body(obj: dict[str, Any]) -> dict[str, Any]:
    """The document Dashboards writes to its index for a saved object (id ``<type>:<id>``)."""
    return {
        "type": obj["type"],
        obj["type"]: obj["attributes"],
        "references": obj["references"],
        "migrationVersion": obj["migrationVersion"],
        "updated_at": "2026-01-01T00:00:00.000Z",
    }


def test_attributes_fit_the_strict_saved_objects_mapping(objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        assert _unmapped_keys(_stored_body(obj), SAVED_OBJECTS_MAPPING, obj["id"]) == []


def test_render_for_another_prefix() -> None:
    objects = dashboards.render_objects("acme")
    for obj in objects:
        assert obj["id"].startswith("acme-")
        assert all(ref["id"].startswith("acme-") for ref in obj["references"])
    titles = {o["attributes"]["title"] for o in objects if o["type"] == "index-pattern"}
    assert titles == {"acme-assets", "acme-runs"}


def test_cli_export(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SMARTTAGS_OPENSEARCH__INDEX_PREFIX", "acme")
    out = tmp_path / "objects.ndjson"
    assert cli.main(["dashboards", "export", "--out", str(out)]) == 0
    assert out.read_text() == dashboards.render("acme")
    assert cli.main(["dashboards", "export"]) == 0
    assert capsys.readouterr().out == dashboards.render("acme")


@pytest.mark.slow
def test_objects_index_under_the_strict_saved_objects_mapping(os_client: Any, settings: Any) -> None:
    # Under this test's own prefix, so the fixture's clean-up removes it even if the test fails.
    index = f"{settings.opensearch.index_prefix}-kibana"
    os_client.indices.create(
        index=index,
        body={"settings": {"number_of_shards": 1, "number_of_replicas": 0}, "mappings": SAVED_OBJECTS_MAPPING},
    )
    try:
        for obj in dashboards.render_objects("smarttags"):
            result = os_client.index(index=index, id=f"{obj['type']}:{obj['id']}", body=_stored_body(obj))
            assert result["result"] == "created"
        # A key the mapping does not know must be refused, or this test proves nothing.
        from opensearchpy.exceptions import RequestError

        with pytest.raises(RequestError, match="strict_dynamic_mapping_exception"):
            os_client.index(
                index=index, id="visualization:x", body={"type": "visualization", "visualization": {"x": 1}}
            )
        os_client.indices.refresh(index=index)
        found = os_client.search(index=index, body={"query": {"term": {"type": "visualization"}}})
        assert found["hits"]["total"]["value"] == 4
    finally:
        os_client.indices.delete(index=index)
