"""Run history on the real node: a run is found by every folder it covered."""

from __future__ import annotations

import pytest
from smarttags.core.runs import TRAIN, RunLog

pytestmark = pytest.mark.slow


def test_a_multi_folder_training_run_is_found_by_each_folder(services) -> None:
    runs = RunLog(services.index)
    folders = ["s3://b/one/", "s3://b/two/"]
    run = runs.start(TRAIN, ", ".join(folders), "on-demand", folders=folders)
    runs.start(TRAIN, "s3://b/three/", "on-demand")
    for folder in folders:
        latest = runs.latest(TRAIN, folder)
        assert latest is not None and latest.run_id == run.run_id
    assert runs.latest(TRAIN, "s3://b/one") is None  # exact URIs, not prefixes
    assert [r.folders for r in runs.list(kind=TRAIN)][-1] == folders
