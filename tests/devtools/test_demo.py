"""The README's main job, end to end and headless: `smarttags demo --no-serve` on a stack of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from smarttags import settings as settings_mod
from smarttags.devtools import stack

from tests.conftest import free_port

pytestmark = pytest.mark.slow


def test_the_demo_trains_tags_uploads_and_searches_in_tier_order(tmp_path, embedder):
    data_dir = tmp_path / "var"
    env = {
        **os.environ,
        "SMARTTAGS_DATA_DIR": str(data_dir),
        "SMARTTAGS_OPENSEARCH__URL": f"http://127.0.0.1:{free_port()}",
        "SMARTTAGS_AWS__ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        # The backbone `make install` built, so the demo does not build it again.
        "SMARTTAGS_BACKBONE__ONNX_FILE": str(embedder.model_path),
    }
    try:
        done = subprocess.run(
            [sys.executable, "-m", "smarttags", "demo", "--no-serve"],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    finally:
        # Whatever happened, nothing of this demo may outlive the test (it stops its own on success).
        left = stack.stack_down(
            settings_mod.load(
                data_dir=data_dir,
                opensearch={"url": env["SMARTTAGS_OPENSEARCH__URL"]},
                aws={"endpoint_url": env["SMARTTAGS_AWS__ENDPOINT_URL"]},
            )
        )
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

    # Nothing the demo started was left running.
    assert left == [] and not list((data_dir / "stack").glob("*.pid"))


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
