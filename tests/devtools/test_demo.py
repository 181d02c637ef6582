"""The README's main job, end to end and headless: `smarttags demo --no-serve` on a stack of its own, twice,
and a demo stopped by signals."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest
from smarttags import settings as settings_mod
from smarttags.devtools import stack

from tests import stopping
from tests.conftest import free_port

pytestmark = pytest.mark.slow


def _env(tmp_path, embedder):
    return {
        **os.environ,
        "SMARTTAGS_DATA_DIR": str(tmp_path / "var"),
        "SMARTTAGS_OPENSEARCH__URL": f"http://127.0.0.1:{free_port()}",
        "SMARTTAGS_AWS__ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "SMARTTAGS_ADMIN__PORT": str(free_port()),
        # The backbone `make install` built, so the demo does not build it again.
        "SMARTTAGS_BACKBONE__ONNX_FILE": str(embedder.model_path),
    }


def _stack_down(env):
    return stack.stack_down(
        settings_mod.load(
            data_dir=env["SMARTTAGS_DATA_DIR"],
            opensearch={"url": env["SMARTTAGS_OPENSEARCH__URL"]},
            aws={"endpoint_url": env["SMARTTAGS_AWS__ENDPOINT_URL"]},
        )
    )


def _demo(env):
    try:
        return subprocess.run(
            [sys.executable, "-m", "smarttags", "demo", "--no-serve"],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    finally:
        # Whatever happened, nothing of this demo may outlive the test (it stops its own on success).
        assert _stack_down(env) == [], "the demo left services running"


def test_the_demo_trains_tags_uploads_and_searches_in_tier_order_and_a_second_run_reuses_it_all(tmp_path, embedder):
    env = _env(tmp_path, embedder)
    data_dir = tmp_path / "var"
    done = _demo(env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "9 trained, 0 partially trained, 0 not trained" in out
    result = json.loads((data_dir / "demo" / "result.json").read_text())

    # Tags applied by the upload tagger, mostly the right ones.
    tagged, expected = result["tagged"], result["expected"]
    assert set(tagged) == set(expected) and len(tagged) == 32
    correct = sum(expected[key] in tags for key, tags in tagged.items())
    assert correct >= 24, f"only {correct} of 32 new pictures got their folder's tag"

    # The report is there, with every sample tag.
    rows = {row["tag"]: row for row in result["report"]["rows"]}
    assert len(rows) == 9 and all(row["images"] >= 30 for row in rows.values())

    # Search output in tier order; "food fruit" shows all three tiers.
    for query, hits in result["searches"].items():
        tiers = [tier for tier, _ in hits]
        assert tiers == sorted(tiers), query
    assert {tier for tier, _ in result["searches"]["food fruit"]} == {1, 2, 3}
    assert "tier 1 (metadata matches all terms)" in out and "tier 3 (smart tags match some terms)" in out
    # Tags are shown as people read them, in the query's language, with confidences: one upload per folder.
    lines = out.splitlines()
    sample_lines = [line for line in lines if " folder): " in line]
    folders = len(set(expected.values()))  # the 8 clip-art folders the new pictures come from
    assert len(sample_lines) == folders and len({line.split(" (from the ")[1] for line in sample_lines}) == folders
    assert not any("clipart:" in line for line in lines if line.lstrip().startswith("demo/"))
    assert any(re.search(r"\(from the Fruit folder\): .*Fruit 0\.\d\d", line) for line in sample_lines)
    obst = lines[lines.index(next(line for line in lines if line.startswith("Search 'Obst' (de)"))) :]
    assert any("[smart tags: Obst" in line for line in obst)

    # Moderation: one wrong smart tag removed (the asset leaves that tag's results), one missed right tag
    # promoted (the asset ranks first among the pictures of its tier for that tag).
    moderation = result["moderation"]
    removed_key, removed_tag = moderation["choice"]["remove"]
    promoted_key, promoted_tag = moderation["choice"]["promote"]
    assert removed_tag in tagged[removed_key] and removed_tag not in result["tagged_after"][removed_key]
    assert promoted_tag not in tagged[promoted_key] and promoted_tag in result["tagged_after"][promoted_key]
    assert moderation["removed_still_found"] is False and moderation["promoted_rank_in_tier"] == 1
    assert "Moderation, as on the admin panel's Manage Tags page:" in out

    # Nothing the demo started was left running.
    assert not list((data_dir / "stack").glob("*.pid"))
    assert "training folder s3://smarttags-assets/demo/train/: 288 pictures uploaded" in out
    assert "  32 uploaded, 0 already there with the same bytes" in out

    # The second run finds the pictures in the restarted local S3 (its state is kept under the data dir)
    # and the model they trained: nothing is uploaded, embedded or trained again. It serves the admin panel,
    # and what it printed reaches a pipe while it serves (flushed, not held until exit); SIGTERM stops it.
    assert (data_dir / "aws" / "moto-state.pickle").is_file()
    again = stopping.Running(["demo"], env)
    try:
        again.wait_for("Admin panel: http://127.0.0.1:", timeout=300)
        started = stopping.pids(data_dir / "stack")
        again.process.send_signal(signal.SIGTERM)
        code = again.finish(timeout=120)
    finally:
        again.kill()
        left = _stack_down(env)
    out = "\n".join(again.lines)
    assert code == 130, out[-3000:] + again.stderr[-3000:]
    assert "training folder s3://smarttags-assets/demo/train/: 0 pictures uploaded" in out
    assert "Training: the training folder is unchanged; reusing the active model and its report." in out
    assert "Training on the training folder" not in out
    assert "  0 uploaded, 32 already there with the same bytes" in out
    second = json.loads((data_dir / "demo" / "result.json").read_text())
    # The same model, and the pictures as the first run's moderation left them; its edits are not redone.
    assert second["report"] == result["report"] and second["tagged"] == result["tagged_after"]
    assert second["moderation"] == result["moderation"] and second["tagged_after"] == second["tagged"]
    assert left == [] and not any(stopping.alive(pid) for pid in started.values())
    assert not list((data_dir / "stack").glob("*.pid"))


def test_sigterm_stops_the_demo_once_and_a_second_signal_does_not_cut_the_clean_up(tmp_path, embedder):
    env = _env(tmp_path, embedder)
    run_dir = tmp_path / "var" / "stack"
    demo = stopping.Running(["demo"], env)
    try:
        # Read through a pipe while the demo runs: its output is flushed as it goes.
        demo.wait_for("Building the sample", timeout=300)
        started = stopping.pids(run_dir)
        assert set(started) == {"opensearch", "moto", "worker"}
        demo.process.send_signal(signal.SIGTERM)
        demo.wait_for("stopping what the demo started", timeout=60)
        demo.process.send_signal(signal.SIGTERM)
        code = demo.finish(timeout=120)
    finally:
        demo.kill()
        left = _stack_down(env)
    assert code == 130, demo.stderr[-3000:]
    assert demo.lines.count("stopping what the demo started") == 1
    assert "SIGTERM: already stopping, the clean-up goes on" in demo.stderr
    assert "Traceback" not in demo.stderr
    assert left == [] and not any(stopping.alive(pid) for pid in started.values())
    assert not list(run_dir.glob("*.pid"))


def test_the_demo_admin_login_is_made_once_and_kept(services):
    from smarttags.core.users import UserStore
    from smarttags.devtools import demo

    settings = services.settings
    first = demo.admin_login(settings)
    again = demo.admin_login(settings)
    assert first.password == again.password and len(first.password) >= 20
    kept = settings.data_dir / "demo"
    assert {p.name: p.stat().st_mode & 0o777 for p in kept.iterdir()} == {"password": 0o600, "secret_key": 0o600}
    assert first.settings.admin.secret_key.get_secret_value() == (kept / "secret_key").read_text()
    assert first.settings.admin.secure_cookies is False  # plain HTTP on loopback
    user = UserStore(first.services.index).verify("demo", first.password)
    assert user is not None and user.role == "admin"
