"""The package's data files: mappings, mustache templates and Dashboards objects in ``search_templates/``.

They are package data (``smarttags/search_templates/``), read with ``importlib.resources``, so the same
code finds them in a checkout, an installed wheel and the Lambda zip. In git the folder stays at the top
of the checkout (the design card puts it there); ``plugin/smarttags/search_templates`` is a symlink to it,
which the sdist, the wheel and ``lambda/build.py`` resolve into real files.
"""

from __future__ import annotations

import json
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any

from smarttags.errors import ConfigError

# Stored search templates: file in search_templates/ -> stored script id. The id carries a version so a
# changed template never silently replaces the one a running deployment uses.
TEMPLATES = {
    "search.mustache": "smarttags-search-v7",
    "similar.mustache": "smarttags-similar-v2",
    "review.mustache": "smarttags-review-v2",
    "review_stats.mustache": "smarttags-review-stats-v1",
    "tag_above.mustache": "smarttags-tag-above-v1",
    "tag_below.mustache": "smarttags-tag-below-v1",
    "tag_assets.mustache": "smarttags-tag-assets-v1",
}


def _file(name: str) -> Traversable:
    return files("smarttags").joinpath("search_templates", name)


def exists(name: str) -> bool:
    return _file(name).is_file()


def load_text(name: str) -> str:
    path = _file(name)
    if not path.is_file():
        raise ConfigError("search_templates", f"{name} is not in the smarttags package data")
    return path.read_text(encoding="utf-8")


def load_json(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(load_text(name))
    return data
