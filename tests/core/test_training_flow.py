"""Training on the committed sample from the CLI: report as table/JSON/XLSX, incremental retrains,
model versions, tampering, guideline refusals."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import pytest
from openpyxl import load_workbook
from smarttags.core import report
from smarttags.devtools import sample
from smarttags.entrypoints import cli
from smarttags.errors import ModelError

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
# tag -> how many training pictures this test uploads (the sample has 36 of each)
COUNTS = {"clipart:flags": 34, "clipart:food/fruit": 12, "clipart:vehicles": 12, "clipart:music": 3}


@pytest.fixture(scope="module")
def sample_dir() -> Path:
    target = ROOT / "var" / "sample"
    sample.build(target)
    return target


@pytest.fixture
def config(settings, tmp_path) -> Path:
    """The test's settings as a TOML file, the way an operator hands them to the CLI."""
    aws = settings.aws
    text = f"""
data_dir = "{ROOT / "var"}"
[opensearch]
url = "{settings.opensearch.url}"
index_prefix = "{settings.opensearch.index_prefix}"
[aws]
endpoint_url = "{aws.endpoint_url}"
access_key_id = "testing"
secret_access_key = "testing"
bucket = "{aws.bucket}"
queue_name = "{aws.queue_name}"
dead_letter_queue_name = "{aws.dead_letter_queue_name}"
[training]
cv_folds = 3
"""
    path = tmp_path / "smarttags.toml"
    path.write_text(text)
    return path


def _upload_training(services, sample_dir: Path) -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for tag, count in COUNTS.items():
        folder = sample_dir / "train" / tag.split(":", 1)[1]
        for path in sorted(folder.glob("*.jpg"))[:count]:
            key = f"train/{tag.split(':', 1)[1]}/{path.name}"
            services.store.put_bytes(key, path.read_bytes(), content_type="image/jpeg")
            keys.setdefault(tag, []).append(key)
    return keys


def _run(capsys, *argv: str) -> tuple[int, str]:
    code = cli.main(list(argv))
    return code, capsys.readouterr().out


def test_train_report_retrain_and_models(services, sample_dir, config, capsys, tmp_path):
    code, out = _run(capsys, "--config", str(config), "taxonomy", "import", str(sample_dir / "taxonomy.json"))
    assert code == 0 and "imported 9 tags" in out
    keys = _upload_training(services, sample_dir)
    bucket = services.settings.aws.bucket
    xlsx = tmp_path / "report.xlsx"

    code, out = _run(capsys, "--config", str(config), "train", "--folder", f"s3://{bucket}/train/", "--xlsx", str(xlsx))
    assert code == 0
    assert "clipart:flags" in out and "trained" in out and f"report written to {xlsx}" in out

    code, out = _run(capsys, "--config", str(config), "report", "--json")
    first = json.loads(out)
    rows = {row["tag"]: row for row in first["rows"]}
    assert first["images_embedded"] == sum(COUNTS.values())
    # The documented rule: >= 30 images and AP >= 0.5 is trained; 5..29 partially; < 5 not trained.
    assert rows["clipart:flags"]["status"] == report.status_for(34, rows["clipart:flags"]["average_precision"], 30)
    assert rows["clipart:flags"]["images"] == 34
    assert rows["clipart:food/fruit"]["status"] == report.PARTIAL
    assert "add 18 more visually similar images" in rows["clipart:food/fruit"]["advice"]
    assert rows["clipart:music"]["status"] == report.NOT_TRAINED
    # Child tags imply their parents: the fruit pictures also train "Food".
    assert rows["clipart:food"]["images"] == 12
    for row in rows.values():
        if row["status"] != report.NOT_TRAINED:
            assert 0 < row["threshold"] < 1 and 0 <= row["precision"] <= 1 and 0 <= row["recall"] <= 1
    book = load_workbook(io.BytesIO(xlsx.read_bytes()))
    sheet = book["Training report"]
    statuses = {
        sheet.cell(row=r, column=1).value: sheet.cell(row=r, column=3).value for r in range(2, sheet.max_row + 1)
    }
    assert statuses == {tag: row["status"] for tag, row in rows.items()}

    # Change three assets and delete one: the retrain embeds exactly three pictures.
    for key in keys["clipart:flags"][:3]:
        data, _ = services.store.get_bytes(key)
        services.store.put_bytes(key, data + b"\x00", content_type="image/jpeg")
    services.store.delete(keys["clipart:vehicles"][0])
    code, out = _run(capsys, "--config", str(config), "train", "--folder", f"s3://{bucket}/train/", "--json")
    second = json.loads(out)
    assert second["images_embedded"] == 3
    assert second["images_used"] == first["images_used"] - 1

    code, out = _run(capsys, "--config", str(config), "models", "list")
    versions = [re.search(r"\d{8}T\d{6}Z-\w+", line).group(0) for line in out.splitlines()]
    assert len(versions) == 2 and out.splitlines()[1].startswith("*")
    code, out = _run(capsys, "--config", str(config), "models", "rollback")
    assert out.strip() == f"active: {versions[0]}"
    code, out = _run(capsys, "--config", str(config), "models", "activate", versions[1])
    assert services.models.active_version() == versions[1]

    # A tampered model file is refused: never activated, never loaded.
    prefix = services.settings.aws.models_prefix
    services.own_store.put_bytes(f"{prefix}{versions[0]}/heads.npz", b"tampered")
    with pytest.raises(ModelError, match="sha256"):
        services.models.activate(versions[0])
    assert services.models.active_version() == versions[1]
    code = cli.main(["--config", str(config), "models", "activate", versions[0]])
    assert code == 2 and "sha256" in capsys.readouterr().err


def test_predict_is_a_dry_run(services, sample_dir, config, capsys):
    cli.main(["--config", str(config), "taxonomy", "import", str(sample_dir / "taxonomy.json")])
    _upload_training(services, sample_dir)
    bucket = services.settings.aws.bucket
    assert cli.main(["--config", str(config), "train", "--folder", f"s3://{bucket}/train/", "--json"]) == 0
    capsys.readouterr()
    flag = sorted((sample_dir / "train" / "flags").glob("*.jpg"))[-1]
    before = services.index.count("assets")
    code, out = _run(capsys, "--config", str(config), "predict", str(flag), "--json", "--all-scores")
    result = json.loads(out)["predictions"][0]
    assert code == 0 and result["tags"][0]["tag"] == "clipart:flags"
    assert max(result["scores"], key=result["scores"].get) == "clipart:flags"
    assert services.index.count("assets") == before

    # A missing file is one error line; the good file's result still prints; the exit code says it failed.
    code = cli.main(["--config", str(config), "predict", "missing.png", str(flag), "--all-scores"])
    captured = capsys.readouterr()
    assert code == 1 and captured.err.strip().splitlines() == [
        "smarttags predict: missing.png: cannot read: No such file or directory"
    ]
    lines = captured.out.splitlines()
    assert lines[0].startswith(f"{flag}: clipart:flags (")
    score_lines = [line.split() for line in lines[1:]]
    assert score_lines and score_lines[0][1] == "clipart:flags"
    assert all(len(score.split(".")[1]) == 6 for score, _ in score_lines)  # not rounded to 4 decimals


def test_unreadable_inputs_are_one_line(services, config, capsys, tmp_path):
    bucket = services.settings.aws.bucket
    yaml, csv = tmp_path / "missing.yaml", tmp_path / "missing.csv"
    for argv, what in [
        (["taxonomy", "import", str(yaml)], f"taxonomy file {yaml}"),
        (["ingest", f"s3://{bucket}/train/", "--manifest", str(csv)], f"manifest {csv}"),
        (["train", "--folder", f"s3://{bucket}/train/", "--manifest", str(csv)], f"manifest {csv}"),
    ]:
        assert cli.main(["--config", str(config), *argv]) == 2
        err = capsys.readouterr().err
        assert err.strip().splitlines() == [f"smarttags: cannot read {what}: No such file or directory"]


def test_a_taxonomy_file_with_a_problem_is_refused_whole(services, config, capsys, tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("tags:\n  - id: v:cars\n  - id: v:car/sedan\n  - id: v:bikes/city\n")
    assert cli.main(["--config", str(config), "taxonomy", "import", str(path)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"smarttags: {path}: 1 problem(s), nothing imported",
        f"{path} line 3: parent 'v:car' of 'v:car/sedan' is not in the taxonomy (closest: v:cars): "
        "fix the id, or add the parent",
    ]
    assert services.index.count("taxonomy") == 0
    # Fixed, it imports; the parent may come from an earlier import, a grouping level is named.
    path.write_text("tags:\n  - id: v:cars\n")
    assert _run(capsys, "--config", str(config), "taxonomy", "import", str(path))[0] == 0
    path.write_text("tags:\n  - id: v:cars/sedan\n  - id: v:bikes/city\n")
    code, out = _run(capsys, "--config", str(config), "taxonomy", "import", str(path))
    assert code == 0 and out.splitlines() == [
        f"{path} line 3: 'v:bikes/city' has no parent tag 'v:bikes' (a grouping level only)",
        f"imported 2 tags from {path}",
    ]
    assert services.index.count("taxonomy") == 3


def test_training_a_folder_that_does_not_exist_says_so(services, sample_dir, config, capsys):
    cli.main(["--config", str(config), "taxonomy", "import", str(sample_dir / "taxonomy.json")])
    capsys.readouterr()
    bucket = services.settings.aws.bucket
    assert cli.main(["--config", str(config), "train", "--folder", f"s3://{bucket}/no-such-folder/"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip().splitlines() == [
        f"smarttags: no objects under s3://{bucket}/no-such-folder/: check the folder URI"
    ]


def test_tags_outside_the_taxonomy_are_refused(services, sample_dir, config, capsys, tmp_path):
    cli.main(["--config", str(config), "taxonomy", "import", str(sample_dir / "taxonomy.json")])
    path = sorted((sample_dir / "train" / "flags").glob("*.jpg"))[0]
    services.store.put_bytes("m/one.jpg", path.read_bytes(), content_type="image/jpeg")
    manifest = tmp_path / "tags.csv"
    manifest.write_text("key,tags\nm/one.jpg,clipart:flags;clipart:unicorns\n")
    bucket = services.settings.aws.bucket
    code, out = _run(capsys, "--config", str(config), "ingest", f"s3://{bucket}/m/", "--manifest", str(manifest))
    assert code == 0 and "1 new" in out
    assert "refused tag 'clipart:unicorns' (not in the taxonomy)" in out
    doc = services.index.search("assets", {"query": {"term": {"key": "m/one.jpg"}}})["hits"]["hits"][0]["_source"]
    assert doc["tags"] == ["clipart:flags"]  # from the embedded XMP keyword "Flag" and the manifest


def test_the_operator_commands_on_a_trained_model(services, sample_dir, config, capsys):
    """folders, tag, runs, search, similar and moderate, each through the CLI, on one trained model."""
    cfg = ("--config", str(config))
    bucket = services.settings.aws.bucket
    assert _run(capsys, *cfg, "taxonomy", "import", str(sample_dir / "taxonomy.json"))[0] == 0
    _upload_training(services, sample_dir)
    assert _run(capsys, *cfg, "train", "--folder", f"s3://{bucket}/train/")[0] == 0

    code, out = _run(capsys, *cfg, "folders", "enable", f"s3://{bucket}/new/")
    assert (code, out) == (0, f"s3://{bucket}/new/: Smart Tags enabled\n")
    code, out = _run(capsys, *cfg, "folders", "list")
    assert code == 0 and f"on   s3://{bucket}/new/" in out.splitlines()
    flag = sorted((sample_dir / "train" / "flags").glob("*.jpg"))[-1]  # not among the training pictures
    services.store.put_bytes("new/flag.jpg", flag.read_bytes(), content_type="image/jpeg")

    code, out = _run(capsys, *cfg, "tag", "--asset", "new/flag.jpg", "--json")
    assert code == 0 and json.loads(out)["counts"]["tagged"] == 1
    code, out = _run(capsys, *cfg, "tag", "--folder", f"s3://{bucket}/new/", "--json")
    assert code == 0 and json.loads(out)["counts"]["selected"] == 0 and json.loads(out)["reasons"] == {}
    code, out = _run(capsys, *cfg, "runs", "--kind", "tag")
    assert code == 0 and len(out.splitlines()) == 2 and all(" tag " in line for line in out.splitlines())
    services.index.refresh()

    code, out = _run(capsys, *cfg, "search", "flag", "--folder", "new", "--json")
    hits = {hit["key"]: hit for hit in json.loads(out)["hits"]}
    assert code == 0 and "clipart:flags" in hits["new/flag.jpg"]["matched_tags"]
    assert {"key", "tier", "score", "why", "matched_tags", "title", "smart_tags"} == set(hits["new/flag.jpg"])
    code, out = _run(capsys, *cfg, "search", "flag", "--folder", "new")
    assert code == 0 and re.search(r"^  +\d\.\d{3}  new/flag\.jpg  \[", out, re.MULTILINE)
    code, out = _run(capsys, *cfg, "similar", "new/flag.jpg", "--json")
    assert code == 0 and all(hit["key"] != "new/flag.jpg" for hit in json.loads(out))

    code, out = _run(capsys, *cfg, "moderate", "remove", "new/flag.jpg", "clipart:flags")
    assert code == 0 and out.startswith("new/flag.jpg: smart tags now ") and "clipart:flags" not in out


def test_a_resync_after_new_bytes_keeps_the_manifest_tags(services, sample_dir, config, capsys, tmp_path):
    """Issue 13, item 4, on the real services: ingest with a manifest (keys relative to the folder), a
    retouched file, ingest again without the manifest: the manifest's tags stay."""
    cli.main(["--config", str(config), "taxonomy", "import", str(sample_dir / "taxonomy.json")])
    fruit = sorted((sample_dir / "train" / "food" / "fruit").glob("*.jpg"))[0]
    services.store.put_bytes("m/one.jpg", fruit.read_bytes(), content_type="image/jpeg")
    manifest = tmp_path / "tags.csv"
    manifest.write_text("key,tags\none.jpg,clipart:music\ntwo.jpg,clipart:music\n")
    bucket = services.settings.aws.bucket
    code, out = _run(capsys, "--config", str(config), "ingest", f"s3://{bucket}/m/", "--manifest", str(manifest))
    assert code == 0 and "1 new" in out
    assert f"manifest line 3: no object under s3://{bucket}/m/ matches (tried 'two.jpg' and 'm/two.jpg')" in out

    def own_tags() -> list[str]:
        hits = services.index.search("assets", {"query": {"term": {"key": "m/one.jpg"}}})["hits"]["hits"]
        return sorted(hits[0]["_source"]["tags"])

    first = own_tags()
    assert "clipart:music" in first
    services.store.put_bytes("m/one.jpg", fruit.read_bytes() + b"\x00", content_type="image/jpeg")  # retouched
    code, out = _run(capsys, "--config", str(config), "ingest", f"s3://{bucket}/m/")
    assert code == 0 and "1 changed" in out
    assert own_tags() == first


def test_nothing_trainable_exits_1_with_one_line_and_a_row_per_tag(services, sample_dir, config, capsys):
    cli.main(["--config", str(config), "taxonomy", "import", str(sample_dir / "taxonomy.json")])
    for path in sorted((sample_dir / "train" / "music").glob("*.jpg"))[:3]:
        services.store.put_bytes(f"few/{path.name}", path.read_bytes(), content_type="image/jpeg")
    bucket = services.settings.aws.bucket
    capsys.readouterr()
    code = cli.main(["--config", str(config), "train", "--folder", f"s3://{bucket}/few/", "--json"])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.err.strip().splitlines() == [
        "smarttags train: no tag had enough pictures to train; no model was made"
    ]
    rows = {row["tag"]: row for row in json.loads(captured.out)["rows"]}
    assert len(rows) == 9 and all(row["status"] == report.NOT_TRAINED for row in rows.values())
    assert rows["clipart:music"]["images"] == 3


def test_training_reads_its_assets_page_by_page_with_a_progress_bar(services, sample_dir, config, capsys):
    """More assets than one page: every one is read (pages of 7 through one point in time, closed after),
    and the CLI shows the read count on its progress bar."""
    config.write_text(config.read_text().replace("[training]\n", "[training]\nread_page_size = 7\n"))
    assert _run(capsys, "--config", str(config), "taxonomy", "import", str(sample_dir / "taxonomy.json"))[0] == 0
    _upload_training(services, sample_dir)
    bucket = services.settings.aws.bucket
    assert cli.main(["--config", str(config), "train", "--folder", f"s3://{bucket}/train/"]) == 0
    err = capsys.readouterr().err
    assert re.search(rf"read: {sum(COUNTS.values())}img", err), err
    _, out = _run(capsys, "--config", str(config), "report", "--json")
    assert json.loads(out)["images_used"] == sum(COUNTS.values())
    pits = services.index.client.transport.perform_request("GET", "/_search/point_in_time/_all")["pits"]
    prefix = services.settings.opensearch.index_prefix.encode()
    assert not [p for p in pits if prefix in base64.urlsafe_b64decode(p["pit_id"] + "=" * (-len(p["pit_id"]) % 4))]
