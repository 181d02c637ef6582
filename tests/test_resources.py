"""Package data through importlib.resources: the templates are found, a wrong name is one clear error."""

from __future__ import annotations

import pytest
from smarttags import resources
from smarttags.errors import ConfigError


def test_mappings_and_templates_are_package_data() -> None:
    assert "properties" in resources.load_json("assets.index.json")["mappings"]
    assert "{{" in resources.load_text("search.mustache")
    assert resources.exists("dashboards/smarttags.ndjson")


def test_a_missing_file_is_a_config_error() -> None:
    assert not resources.exists("nope.index.json")
    with pytest.raises(ConfigError, match=r"nope\.index\.json"):
        resources.load_json("nope.index.json")
