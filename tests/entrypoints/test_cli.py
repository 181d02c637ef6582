"""The command tree: every group's commands in their order, and ``--help`` without the heavy libraries."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from smarttags.entrypoints import cli

COMMANDS = [
    "init",
    "index",
    "taxonomy",
    "ingest",
    "train",
    "report",
    "models",
    "predict",
    "tag",
    "runs",
    "folders",
    "worker",
    "scheduler",
    "search",
    "similar",
    "moderate",
    "demo",
    "backbone",
    "embed",
    "stack",
    "dashboards",
    "validate",
    "admin",
]


def test_every_command_in_its_order() -> None:
    parser = cli.build_parser()
    (commands,) = [a for a in parser._actions if a.dest == "command"]
    assert list(commands.choices) == COMMANDS  # type: ignore[arg-type]


def test_every_command_has_a_handler() -> None:
    parser = cli.build_parser()
    for argv in (["init"], ["taxonomy", "import", "f"], ["models", "list"], ["stack", "up"], ["admin"]):
        assert callable(parser.parse_args(argv).handler), argv


def test_building_the_parser_loads_no_service_library() -> None:
    code = (
        "import json, sys\n"
        "from smarttags.entrypoints import cli\n"
        "cli.build_parser()\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    loaded = json.loads(run.stdout)
    heavy = ("flask", "apscheduler", "waitress", "boto3", "opensearchpy", "onnxruntime", "smarttags.devtools")
    assert [m for m in loaded if m.startswith(heavy)] == []


def test_search_takes_words_that_look_like_options() -> None:
    parser = cli.build_parser()
    assert cli.parse(parser, ["search", "-woman"]).text == ["-woman"]
    args = cli.parse(parser, ["search", "--locale", "de", "-road", "running", "--size", "5", "-x"])
    assert (args.text, args.locale, args.size) == (["-road", "running", "-x"], "de", 5)
    assert cli.parse(parser, ["search", "--", "--json"]).text == ["--json"]


def test_other_commands_still_refuse_unknown_options(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["init", "-woman"], ["search"]):
        with pytest.raises(SystemExit):
            cli.parse(cli.build_parser(), argv)
    assert "unrecognized arguments: -woman" in capsys.readouterr().err
