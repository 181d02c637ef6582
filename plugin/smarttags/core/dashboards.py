"""OpenSearch Dashboards saved objects for SmartTags: index patterns, visualizations and a dashboard.

The objects live as data in ``search_templates/dashboards/smarttags.ndjson``, in the format OpenSearch
Dashboards 2.x exports and imports (Stack Management > Saved objects > Import), written for the default
index prefix ``smarttags``. ``render`` rewrites them for another prefix (ids, references, index-pattern
titles) and fills each index pattern's field list from our mapping files, so Dashboards finds the fields
(aggregatable or not) without a refresh and the list cannot drift from the mappings.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from typing import Any

from smarttags import resources
from smarttags.errors import ConfigError

TEMPLATE = "dashboards/smarttags.ndjson"
DEFAULT_PREFIX = "smarttags"

# OpenSearch field types -> the Dashboards field type; types not listed (knn_vector, rank_features,
# disabled objects) are left out of the field list: nothing in Dashboards can aggregate on them.
_FIELD_TYPES = {
    "keyword": "string",
    "text": "string",
    "ip": "ip",
    "boolean": "boolean",
    "date": "date",
    "date_nanos": "date",
    **dict.fromkeys(
        ("long", "integer", "short", "byte", "double", "float", "half_float", "scaled_float", "unsigned_long"),
        "number",
    ),
}
_NOT_AGGREGATABLE = frozenset({"text"})
# Meta fields as Dashboards lists them (from field capabilities).
_META_FIELDS: tuple[dict[str, Any], ...] = (
    {"name": "_id", "type": "string", "esTypes": ["_id"], "searchable": True, "aggregatable": True},
    {"name": "_index", "type": "string", "esTypes": ["_index"], "searchable": True, "aggregatable": True},
    {"name": "_score", "type": "number", "searchable": False, "aggregatable": False},
    {"name": "_source", "type": "_source", "esTypes": ["_source"], "searchable": False, "aggregatable": False},
)


def _walk(properties: Mapping[str, Any], parent: str = "") -> Iterator[tuple[str, str, str | None]]:
    """(dotted name, OpenSearch type, multi-field parent) for every leaf field of a mapping."""
    for name, spec in properties.items():
        path = f"{parent}{name}"
        if "properties" in spec:
            yield from _walk(spec["properties"], f"{path}.")
            continue
        if spec.get("enabled") is False or "type" not in spec or spec["type"] == "object":
            continue
        yield path, spec["type"], None
        for sub, sub_spec in spec.get("fields", {}).items():
            yield f"{path}.{sub}", sub_spec["type"], path


def field_specs(mapping: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The field list of an index pattern, as Dashboards stores it, from an index mapping file."""
    fields = [{**meta, "count": 0, "scripted": False, "readFromDocValues": False} for meta in _META_FIELDS]
    for name, os_type, parent in _walk(mapping["mappings"]["properties"]):
        if os_type not in _FIELD_TYPES:
            continue
        aggregatable = os_type not in _NOT_AGGREGATABLE
        spec: dict[str, Any] = {
            "name": name,
            "type": _FIELD_TYPES[os_type],
            "esTypes": [os_type],
            "count": 0,
            "scripted": False,
            "searchable": True,
            "aggregatable": aggregatable,
            "readFromDocValues": aggregatable,
        }
        if parent is not None:
            spec["subType"] = {"multi": {"parent": parent}}
        fields.append(spec)
    return fields


def aggregatable_fields(kind: str) -> set[str]:
    """Names of the fields of one of our indices (assets, runs, ...) that a visualization may aggregate on."""
    mapping = resources.load_json(f"{kind}.index.json")
    return {f["name"] for f in field_specs(mapping) if f["aggregatable"] and not f["name"].startswith("_")}


def load_objects() -> list[dict[str, Any]]:
    """The saved objects of the stored file, one dict per ndjson line."""
    text = resources.load_text(TEMPLATE)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def pattern_kind(obj: Mapping[str, Any]) -> str:
    """Which of our indices an index-pattern object stands for: its id is ``<prefix>-<kind>``."""
    kind = str(obj["id"]).removeprefix(f"{DEFAULT_PREFIX}-")
    if obj["type"] != "index-pattern" or not resources.exists(f"{kind}.index.json"):
        raise ConfigError(TEMPLATE, f"{obj['type']}:{obj['id']} names no index of ours")
    return kind


def _rename(object_id: str, prefix: str) -> str:
    if not object_id.startswith(f"{DEFAULT_PREFIX}-"):
        raise ConfigError(TEMPLATE, f"saved object id {object_id!r} does not start with {DEFAULT_PREFIX}-")
    return prefix + object_id.removeprefix(DEFAULT_PREFIX)


def render_objects(prefix: str = DEFAULT_PREFIX) -> list[dict[str, Any]]:
    """The saved objects for indices named ``<prefix>-<kind>``."""
    objects = []
    for stored in load_objects():
        obj = copy.deepcopy(stored)
        if obj["type"] == "index-pattern":
            kind = pattern_kind(stored)
            obj["attributes"]["title"] = f"{prefix}-{kind}"
            mapping = resources.load_json(f"{kind}.index.json")
            obj["attributes"]["fields"] = json.dumps(field_specs(mapping), separators=(",", ":"))
        obj["id"] = _rename(obj["id"], prefix)
        for ref in obj.get("references", []):
            ref["id"] = _rename(ref["id"], prefix)
        objects.append(obj)
    return objects


def render(prefix: str = DEFAULT_PREFIX) -> str:
    """The ndjson text Dashboards imports: one object a line, keys sorted so the output is stable."""
    return "".join(json.dumps(obj, sort_keys=True, separators=(",", ":")) + "\n" for obj in render_objects(prefix))
