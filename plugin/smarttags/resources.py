"""Where the project's data files live: mappings and templates in ``search_templates/``.

The folder sits at the top of a checkout (beside ``plugin/``) and at the root of the Lambda package
(beside ``smarttags/``); both are parents of this file, so one search up the tree finds it.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from smarttags.errors import ConfigError

# Stored search templates: file in search_templates/ -> stored script id. The id carries a version so a
# changed template never silently replaces the one a running deployment uses.
TEMPLATES = {"search.mustache": "smarttags-search-v1", "similar.mustache": "smarttags-similar-v1"}


@cache
def templates_dir() -> Path:
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "search_templates"
        if (candidate / "assets.index.json").is_file():
            return candidate
    raise ConfigError("search_templates", "folder not found beside the smarttags package")


def load_json(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((templates_dir() / name).read_text(encoding="utf-8"))
    return data


def load_text(name: str) -> str:
    return (templates_dir() / name).read_text(encoding="utf-8")
