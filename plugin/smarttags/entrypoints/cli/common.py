"""What every command group shares: reading a user's file, printing JSON, the services."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smarttags.errors import RequestError
from smarttags.settings import Settings

if TYPE_CHECKING:
    from smarttags.entrypoints.compose import Services


def read_text(path: str, what: str) -> str:
    """A user's input file, or one clear error line (exit 2) instead of a traceback."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RequestError(f"cannot read {what} {path}: {getattr(exc, 'strerror', None) or exc}") from exc


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, ensure_ascii=False, default=str)
    sys.stdout.write("\n")


def services(settings: Settings) -> Services:
    # Imported here: building the clients loads boto3 and opensearch-py, which `--help` does not need.
    from smarttags.entrypoints.compose import Services

    return Services(settings)


def say(text: str) -> None:
    """Print now, even into a pipe; a terminal that went away (SIGHUP) must not stop the clean-up."""
    import contextlib

    with contextlib.suppress(OSError):
        print(text, flush=True)
