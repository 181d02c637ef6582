"""The Lambda deployment: template.yaml lints and transforms offline, IAM is scoped, the package builds."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from smarttags import settings

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "lambda" / "template.yaml"
PARAMETERS = {
    "BucketName": "acme-assets",
    "InternalBucketName": "acme-assets-smarttags",
    "OpenSearchUrl": "https://search-assets-abc123.eu-west-1.es.amazonaws.com",
    "OpenSearchDomainArn": "arn:aws:es:eu-west-1:123456789012:domain/assets",
}


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags (!Ref, !GetAtt, !Sub ...) read as their long forms."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_CfnLoader.add_multi_constructor("!", _tag)


def load_template() -> dict[str, Any]:
    data: dict[str, Any] = yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)
    return data


class _OfflinePolicies:
    """samtranslator's managed-policy loader asks IAM for ARNs; the template names none, so none are needed."""

    def load(self) -> dict[str, str]:
        return {}


@pytest.fixture(scope="module")
def transformed() -> dict[str, Any]:
    from samtranslator.translator.transform import transform

    template = load_template()
    # `sam package` uploads the local CodeUri and puts its S3 address there before the transform runs.
    template["Resources"]["TaggerFunction"]["Properties"]["CodeUri"] = "s3://example-artifacts/tagger.zip"
    # ... and `sam build`/`sam package` push the video function's image and name it.
    video_image = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/smarttags-video:latest"
    template["Resources"]["VideoFunction"]["Properties"]["ImageUri"] = video_image
    with pytest.MonkeyPatch.context() as mp:
        # The translator reads the partition from the region; no AWS call is made.
        mp.setenv("AWS_DEFAULT_REGION", "eu-west-1")
        result: dict[str, Any] = transform(template, dict(PARAMETERS), _OfflinePolicies())
    return result


def _of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def test_cfn_lint_passes() -> None:
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    run = subprocess.run([str(cfn_lint), str(TEMPLATE)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr


def test_cfn_lint_would_catch_a_broken_template(tmp_path: Path) -> None:
    # Guards the test above against a linter that passes everything (wrong path, rules not loaded).
    broken = tmp_path / "broken.yaml"
    broken.write_text(TEMPLATE.read_text().replace("      Handler: handler.handler", "      Handlr: handler.handler"))
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    run = subprocess.run([str(cfn_lint), str(broken)], capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and "Handlr" in run.stdout


def _mapping_of(transformed: dict[str, Any], queue: str) -> dict[str, Any]:
    (mapping,) = [
        m
        for m in _of_type(transformed, "AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["EventSourceArn"] == {"Fn::GetAtt": [queue, "Arn"]}
    ]
    return mapping


def _function(transformed: dict[str, Any], name: str = "TaggerFunction") -> dict[str, Any]:
    return _of_type(transformed, "AWS::Lambda::Function")[name]


def test_event_source_mapping_reports_partial_batch_failures(transformed: dict[str, Any]) -> None:
    assert len(_of_type(transformed, "AWS::Lambda::EventSourceMapping")) == 2
    props = _mapping_of(transformed, "TaggingQueue")["Properties"]
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props["BatchSize"] == {"Ref": "BatchSize"}
    assert props["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "MaximumConcurrency"}}
    assert props["EventSourceArn"] == {"Fn::GetAtt": ["TaggingQueue", "Arn"]}


def test_queue_has_a_dead_letter_queue_and_outlives_the_timeout(transformed: dict[str, Any]) -> None:
    queue = transformed["Resources"]["TaggingQueue"]["Properties"]
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]},
        "maxReceiveCount": {"Ref": "MaxReceiveCount"},
    }
    assert queue["VisibilityTimeout"] == {"Fn::Sub": "${Timeout}0"}  # 10x the function timeout
    params = transformed["Parameters"]
    assert params["MaxReceiveCount"]["Default"] == settings.AwsSettings().max_receive_count


def test_bucket_notifies_the_queue_of_creates_and_removes(transformed: dict[str, Any]) -> None:
    bucket = transformed["Resources"]["AssetBucket"]
    events = {c["Event"] for c in bucket["Properties"]["NotificationConfiguration"]["QueueConfigurations"]}
    assert events == {"s3:ObjectCreated:*", "s3:ObjectRemoved:*"}
    # S3 checks its permission to send when the notification is created.
    assert bucket["DependsOn"] == "TaggingQueuePolicy"
    (statement,) = transformed["Resources"]["TaggingQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert "aws:SourceArn" in statement["Condition"]["ArnEquals"]


def _statements(transformed: dict[str, Any], role_name: str = "TaggerRole") -> list[dict[str, Any]]:
    found = []
    for name, role in _of_type(transformed, "AWS::IAM::Role").items():
        if name != role_name:
            continue
        assert not role["Properties"].get("ManagedPolicyArns"), "managed policies grant on Resource *"
        for policy in role["Properties"].get("Policies", []):
            found.extend(policy["PolicyDocument"]["Statement"])
    return found


# Objects of the asset bucket; models in the internal bucket; each bucket itself, so a deleted key
# reads as 404, not 403 (see the template's comment).
_S3_GRANTS = [
    ("s3:GetObject", {"Fn::Sub": "arn:${AWS::Partition}:s3:::${BucketName}/*"}),
    ("s3:GetObject", {"Fn::Sub": "arn:${AWS::Partition}:s3:::${InternalBucketName}/${ModelsPrefix}*"}),
    ("s3:ListBucket", {"Fn::Sub": "arn:${AWS::Partition}:s3:::${BucketName}"}),
    ("s3:ListBucket", {"Fn::Sub": "arn:${AWS::Partition}:s3:::${InternalBucketName}"}),
]


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_internal_bucket_has_no_notification(transformed: dict[str, Any]) -> None:
    internal = transformed["Resources"]["InternalBucket"]["Properties"]
    assert internal["BucketName"] == {"Ref": "InternalBucketName"}
    assert "NotificationConfiguration" not in internal
    function = _function(transformed)
    env = function["Properties"]["Environment"]["Variables"]
    assert env["SMARTTAGS_AWS__INTERNAL_BUCKET"] == {"Ref": "InternalBucketName"}


def test_iam_is_least_privilege(transformed: dict[str, Any]) -> None:
    function = _function(transformed)
    assert function["Properties"]["Role"] == {"Fn::GetAtt": ["TaggerRole", "Arn"]}
    statements = _statements(transformed)
    actions: dict[str, dict[str, Any]] = {}
    for statement in statements:
        assert statement["Effect"] == "Allow"
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        assert "*" not in resources and all(r for r in resources)
        for action in statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]:
            assert "*" not in action, action
            actions[action] = statement
    assert set(actions) == {
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "s3:GetObject",
        "s3:ListBucket",
        "es:ESHttpGet",
        "es:ESHttpPut",
        "es:ESHttpPost",
        "es:ESHttpDelete",
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:GetQueueAttributes",
        "sqs:GetQueueUrl",
        "sqs:SendMessage",
    }
    granted = {(a, str(r)) for s in statements for a in _listed(s["Action"]) for r in _listed(s["Resource"])}
    s3_granted = {g for g in granted if g[0].startswith("s3:")}
    assert {(action, str(resource)) for action, resource in _S3_GRANTS} == s3_granted
    assert actions["sqs:ReceiveMessage"]["Resource"] == {"Fn::GetAtt": ["TaggingQueue", "Arn"]}
    assert {"Ref": "OpenSearchDomainArn"} in actions["es:ESHttpPost"]["Resource"]
    # The image function may only hand videos on to the video queue.
    assert actions["sqs:SendMessage"]["Resource"] == {"Fn::GetAtt": ["VideoQueue", "Arn"]}
    assert set(_listed(actions["sqs:SendMessage"]["Action"])) == {"sqs:GetQueueUrl", "sqs:SendMessage"}


def test_videos_have_their_own_function_queue_and_least_privilege_role(transformed: dict[str, Any]) -> None:
    image = _function(transformed)["Properties"]
    video = _function(transformed, "VideoFunction")["Properties"]
    # A container image (the zip would be 341 MB with PyAV, over the 250 MB limit), the same settings.
    assert video["PackageType"] == "Image" and "Handler" not in video and "Runtime" not in video
    assert video["Code"] == {"ImageUri": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/smarttags-video:latest"}
    assert video["Timeout"] == {"Ref": "VideoTimeout"} and video["Role"] == {"Fn::GetAtt": ["VideoRole", "Arn"]}
    image_env, video_env = image["Environment"]["Variables"], video["Environment"]["Variables"]
    assert image_env["SMARTTAGS_AWS__VIDEO_QUEUE_NAME"] == {"Fn::GetAtt": ["VideoQueue", "QueueName"]}
    assert "SMARTTAGS_AWS__VIDEO_QUEUE_NAME" not in video_env  # it samples videos itself
    assert {k: v for k, v in image_env.items() if k != "SMARTTAGS_AWS__VIDEO_QUEUE_NAME"} == video_env
    mapping = _mapping_of(transformed, "VideoQueue")["Properties"]
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"] and mapping["BatchSize"] == 1
    queue = transformed["Resources"]["VideoQueue"]["Properties"]
    assert queue["VisibilityTimeout"] == {"Fn::Sub": "${VideoTimeout}0"}
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
    # The worst case (24 keyframes of a 4K minute, a 512 MB download) fits the default timeout with margin.
    assert transformed["Parameters"]["VideoTimeout"]["Default"] >= 60
    statements = _statements(transformed, "VideoRole")
    granted = {(a, str(r)) for s in statements for a in _listed(s["Action"]) for r in _listed(s["Resource"])}
    assert all("*" not in a for a, _ in granted)
    posters = str({"Fn::Sub": "arn:${AWS::Partition}:s3:::${InternalBucketName}/${ThumbnailsPrefix}*"})
    assert {r for a, r in granted if a == "s3:PutObject"} == {posters}
    assert {r for a, r in granted if a.startswith("sqs:")} == {str({"Fn::GetAtt": ["VideoQueue", "Arn"]})}
    assert not any(a == "sqs:SendMessage" for a, _ in granted)


def test_environment_configures_real_aws(transformed: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    function = _function(transformed)
    props = function["Properties"]
    assert props["Handler"] == "handler.handler" and props["Runtime"] in ("python3.11", "python3.12")
    env = props["Environment"]["Variables"]
    assert env["SMARTTAGS_OPENSEARCH__AUTH"] == "sigv4"
    assert env["SMARTTAGS_AWS__ENDPOINT_URL"] == ""
    # Build the settings the function would get (CloudFormation values replaced by examples).
    for name, value in env.items():
        monkeypatch.setenv(name, value if isinstance(value, str) else "example-value")
    monkeypatch.setenv("SMARTTAGS_OPENSEARCH__URL", PARAMETERS["OpenSearchUrl"])
    monkeypatch.setenv("SMARTTAGS_AWS__MAX_RECEIVE_COUNT", "3")
    assert env["SMARTTAGS_BACKBONE__NAME"] == {"Ref": "Backbone"}
    backbone_parameter = transformed["Parameters"]["Backbone"]
    product_default = settings.BackboneSettings().name
    assert product_default in backbone_parameter["AllowedValues"]
    monkeypatch.setenv("SMARTTAGS_BACKBONE__NAME", backbone_parameter["Default"])
    monkeypatch.setenv("SMARTTAGS_AWS__MODELS_PREFIX", "_smarttags/models/")
    monkeypatch.setenv("SMARTTAGS_AWS__INTERNAL_BUCKET", PARAMETERS["InternalBucketName"])
    loaded = settings.load()
    assert loaded.aws.own_bucket == "acme-assets-smarttags"
    assert loaded.aws.endpoint_url is None and not loaded.is_local_aws
    assert loaded.opensearch.auth == "sigv4" and loaded.opensearch.region == "example-value"
    # A new stack ships the product's default backbone; its input size is the preset's, not a setting.
    assert loaded.backbone.name == product_default == backbone_parameter["Default"]
    assert str(loaded.backbone.onnx_file).endswith("models/backbone.onnx")
    assert "SMARTTAGS_BACKBONE__INPUT_SIZE" not in env


@pytest.mark.parametrize(
    ("value", "expected"), [("", None), ("  ", None), ("http://127.0.0.1:9400", "http://127.0.0.1:9400")]
)
def test_an_empty_endpoint_url_means_real_aws(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: str | None
) -> None:
    monkeypatch.setenv("SMARTTAGS_AWS__ENDPOINT_URL", value)
    assert settings.load().aws.endpoint_url == expected
    assert settings.load(aws={"endpoint_url": None}).aws.endpoint_url is None


def _load_by_path(path: Path, name: str) -> Any:
    # Never `import lambda`: it is a keyword, and the folder is not a package.
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_handler_loads_by_path() -> None:
    module = _load_by_path(ROOT / "lambda" / "handler.py", "smarttags_lambda_handler")
    assert callable(module.handler)


# The handler's import graph must not pull in what the package leaves out.
_LEFT_OUT = ("torch", "onnx", "openpyxl", "tqdm", "flask", "apscheduler", "sklearn", "skimage", "moto", "av")
# Installed with opensearch-py, stripped from the package (lambda/build.py: UNUSED): never imported.
_STRIPPED = ("grpc", "google", "opensearch_protobufs")


def test_handler_imports_only_what_the_package_ships() -> None:
    code = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('h', {str(ROOT / 'lambda' / 'handler.py')!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "import smarttags.adapters.embedder, smarttags.entrypoints.compose\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    loaded = set(json.loads(run.stdout))
    assert not loaded & set(_LEFT_OUT)
    assert not loaded & set(_STRIPPED)


def test_the_lambda_package_leaves_out_only_what_the_handler_never_imports() -> None:
    code = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('h', {str(ROOT / 'lambda' / 'handler.py')!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "import smarttags.adapters.embedder, smarttags.entrypoints.compose\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('smarttags'))))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    graph = {m.removeprefix("smarttags.").replace(".", "/") for m in json.loads(run.stdout)}
    library = ROOT / "plugin" / "smarttags"
    left_out = {
        p.relative_to(library).with_suffix("").as_posix()
        for pattern in _build_module().LEFT_OUT
        for p in library.glob(pattern)
    }
    assert {"devtools", "entrypoints/admin", "entrypoints/cli"} <= left_out
    assert not {m for m in graph if any(m == x or m.startswith(x + "/") for x in left_out)}


def _build_module() -> Any:
    return _load_by_path(ROOT / "lambda" / "build.py", "smarttags_lambda_build")


def test_build_refuses_torch(tmp_path: Path) -> None:
    build = _build_module()
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch-2.5.0.dist-info").mkdir()
    (tmp_path / "numpy").mkdir()
    assert build.forbidden_present(tmp_path) == ["torch", "torch-2.5.0.dist-info"]


def test_build_strips_tests_and_caches(tmp_path: Path) -> None:
    build = _build_module()
    kept = ("PIL", "google/auth")
    stripped = ("numpy/tests", "numpy/core/__pycache__", "bin", "grpc", "grpcio-1.0.dist-info", "google/protobuf")
    for d in (*kept, *stripped):
        (tmp_path / d).mkdir(parents=True)
        (tmp_path / d / "f").write_bytes(b"x" * 10)
    assert build.strip(tmp_path) == 10 * len(stripped)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "PIL",
        "PIL/f",
        "google",
        "google/auth",
        "google/auth/f",
        "numpy",
        "numpy/core",
    ]


@pytest.mark.slow
def test_build_the_lambda_package(tmp_path: Path) -> None:
    # Downloads the Lambda platform's wheels (about 80 MB, from pip's cache when warm: ~20 s).
    model = tmp_path / "tiny.onnx"
    model.write_bytes(b"not really onnx; the layout is what is tested")
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, str(ROOT / "lambda" / "build.py"), "--model", str(model), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "unzipped size:" in run.stdout
    package = out / "package"
    for name in (
        "handler.py",
        "smarttags/core/tagging.py",
        "smarttags/search_templates/assets.index.json",
        "models/backbone.onnx",
    ):
        assert (package / name).is_file(), name
    assert not (package / "smarttags/search_templates").is_symlink()
    for name in ("devtools", "entrypoints/admin", "entrypoints/cli", "core/dashboards.py"):
        assert not (package / "smarttags" / name).exists(), name
    assert (package / "models/backbone.onnx.sha256").read_text().split()[0]
    assert not list(package.rglob("__pycache__")) and not list(package.rglob("tests"))
    # What the handler imports is in the package, or in the Lambda runtime (boto3 and its deps).
    shipped = {p.name.removesuffix(".py") for p in package.iterdir()}
    for module in ("numpy", "onnxruntime", "PIL", "opensearchpy", "pydantic", "pydantic_settings", "yaml"):
        assert module in shipped, module
    assert not shipped & {"torch", "boto3", "botocore", *_LEFT_OUT}
    with zipfile.ZipFile(out / "smarttags-tagger.zip") as zf:
        names = set(zf.namelist())
    assert {"handler.py", "smarttags/__init__.py", "models/backbone.onnx"} <= names
