"""Build the tagger's Lambda deployment package into ``build/lambda/``.

    .venv/bin/python lambda/build.py [--model FILE.onnx | --backbone NAME] [--python-version 3.12] [--no-zip]
        [--with-boto3] [--video]

Lays out ``build/lambda/package/`` (the directory ``template.yaml``'s ``CodeUri`` names) and zips it to
``build/lambda/smarttags-tagger.zip``:

    handler.py             the entry point (handler string ``handler.handler``)
    smarttags/             the library as in plugin/smarttags, with its package data (search_templates/),
                           less what the handler never imports (LEFT_OUT: dev stack, demo, admin, CLI, ...)
    models/backbone.onnx   the backbone, with its ``.sha256`` file
    numpy/, onnxruntime/, PIL/, opensearchpy/, pydantic/, ...   run-time dependencies only

Dependencies are wheels for the Lambda platform (x86_64, Amazon Linux 2023's glibc), not this machine's.
boto3/botocore come with the Lambda Python runtime and are left out (``--with-boto3`` ships the tested
version instead, 23 MB more; the code needs boto3>=1.34, which every current Python runtime has).
The unzipped size must stay under Lambda's 250 MB limit, and torch must never get in: both are checked
and fail the build.

``--video`` lays out the video function's package instead (``build/lambda-video/package``): the same code
and dependencies plus PyAV (``adapters/formats/video.py`` and its FFmpeg), which the image function leaves
out and forwards videos to. At about 340 MB it is over the zip limit, so it ships as a container image
(``lambda/Dockerfile.video`` copies this directory; the 10 GB image limit is the one checked, no zip).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "build" / "lambda"
VIDEO_OUT = ROOT / "build" / "lambda-video"
VIDEO_REQUIREMENTS = ("av>=14",)  # the video extra: PyAV with its FFmpeg
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024
CONTAINER_IMAGE_LIMIT = 10 * 1024 * 1024 * 1024
MODEL_PATH = "models/backbone.onnx"  # /var/task/models/backbone.onnx in template.yaml

# What smarttags.entrypoints.compose/tagging import at run time (checked against the import graph by
# tests/entrypoints/test_deploy.py). Not here: onnx (only builds the backbone), openpyxl (Excel reports),
# tqdm (CLI progress), boto3/botocore (in the runtime), flask/apscheduler (other adapters), torch (never).
RUNTIME_REQUIREMENTS = (
    "numpy>=1.26",
    "onnxruntime>=1.18",
    "pillow>=11.3",
    "pillow-heif>=1.0",
    "pypdfium2>=5.0",
    "resvg-py>=0.5",
    "rawpy>=0.25",
    "psd-tools>=1.10",
    "opensearch-py>=2.6",
    "pydantic>=2.6",
    "pydantic-settings>=2.2",
    "pyyaml>=6.0",
    "defusedxml>=0.7",
)
# Lambda's python3.12 runtime runs on Amazon Linux 2023 (glibc 2.34): manylinux_2_28 wheels run there.
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_28_x86_64")
NEVER = ("torch", "torchvision")
# The runtime's boto3 is older than ours and changes with the runtime; --with-boto3 ships the tested one.
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer", "jmespath")
# opensearch-py 3 requires its gRPC transport (opensearch-protobufs: grpcio + protobuf, ~20 MB), which its
# HTTP client never imports (tests/entrypoints/test_deploy.py checks the handler loads neither).
UNUSED = ("grpc", "grpcio", "protobuf", "opensearch_protobufs", "google/protobuf", "google/_upb")
FORBIDDEN = (*NEVER, *RUNTIME_PROVIDED)
STRIP_DIRS = frozenset({"tests", "test", "__pycache__"})
# Parts of plugin/smarttags outside the handler's import graph (tests/entrypoints/test_deploy.py checks that none
# is in it): the dev stack, demo and sample, the admin, the CLI and its progress bars, the worker and the
# scheduler service, and the core modules only they use.
VIDEO_MODULE = "adapters/formats/video.py"  # PyAV: only in the video function's package
LEFT_OUT = (
    "devtools",
    "entrypoints/admin",
    "entrypoints/cli",
    "entrypoints/progress.py",
    "entrypoints/worker.py",
    "entrypoints/scheduler*",
    "core/dashboards.py",
    "entrypoints/health.py",
    "entrypoints/overview.py",
    VIDEO_MODULE,
    "core/users.py",
    "core/cron.py",
)


def tested_versions() -> list[str]:
    """``name==version`` of every package in this environment: the Lambda gets what the tests ran with."""
    from importlib import metadata

    pins = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name and name.lower() not in ("smarttags", *NEVER):
            pins[name.lower()] = f"{name}=={dist.version}"
    return sorted(pins.values())


def pip_install(target: Path, python_version: str, requirements: Sequence[str] = RUNTIME_REQUIREMENTS) -> None:
    """Install the run-time wheels for the Lambda platform into ``target`` (pip's cache is reused)."""
    constraints = target.parent / "constraints.txt"
    constraints.write_text("\n".join(tested_versions()) + "\n")
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-warn-conflicts"]
    cmd += ["--constraint", str(constraints)]
    cmd += ["--target", str(target), "--only-binary=:all:", "--implementation", "cp"]
    cmd += ["--python-version", python_version]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    cmd += list(requirements)
    subprocess.run(cmd, check=True)


def strip(root: Path) -> int:
    """Remove test suites, bytecode caches, console scripts and the unused gRPC transport; return the
    bytes saved."""
    saved = 0
    for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and path.name in STRIP_DIRS:
            saved += tree_size(path)
            shutil.rmtree(path)
    for path in sorted(root.iterdir()):
        name = path.name.split("-")[0] if path.name.endswith(".dist-info") else path.name
        if name in UNUSED:
            saved += tree_size(path)
            shutil.rmtree(path)
    for nested in (u for u in UNUSED if "/" in u):
        if (root / nested).is_dir():
            saved += tree_size(root / nested)
            shutil.rmtree(root / nested)
    bin_dir = root / "bin"  # console scripts of the deps: nothing runs them in Lambda
    if bin_dir.is_dir():
        saved += tree_size(bin_dir)
        shutil.rmtree(bin_dir)
    return saved


def tree_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def forbidden_present(root: Path, forbidden: Sequence[str] = FORBIDDEN) -> list[str]:
    """Top-level packages in ``root`` that must not ship (torch above all)."""
    found = []
    for path in root.iterdir():
        name = path.name.split("-")[0].lower() if path.name.endswith(".dist-info") else path.name.lower()
        if name in forbidden:
            found.append(path.name)
    return sorted(found)


def copy_project(package: Path, model: Path, *, video: bool = False) -> None:
    shutil.copy2(ROOT / "lambda" / "handler.py", package / "handler.py")
    # Follows the search_templates symlink, so the package data lands as real files.
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    library = package / "smarttags"
    shutil.copytree(ROOT / "plugin" / "smarttags", library, ignore=ignore)
    for pattern in LEFT_OUT:
        if video and pattern == VIDEO_MODULE:
            continue
        for path in library.glob(pattern):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    # A fixed name, so template.yaml's SMARTTAGS_BACKBONE__ONNX_FILE need not change with the build.
    target = package / MODEL_PATH
    target.parent.mkdir()
    shutil.copy2(model, target)
    # The embedder checks the .sha256 file beside the model before it loads it.
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    target.with_name(target.name + ".sha256").write_text(f"{digest}  {target.name}\n")


def default_model(name: str | None = None) -> Path:
    """The preset backbone (``name``, or the settings' default) built (or found cached) in data_dir/models
    by smarttags.adapters.backbone. It must be the template's ``Backbone`` parameter: the active model's."""
    sys.path.insert(0, str(ROOT / "plugin"))
    from smarttags import settings
    from smarttags.adapters import backbone

    return backbone.build(settings.load(), name).path


def write_zip(package: Path, zip_path: Path) -> None:
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for path in sorted(package.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(package).as_posix())


def build(
    out: Path,
    model: Path,
    python_version: str,
    *,
    make_zip: bool = True,
    with_boto3: bool = False,
    video: bool = False,
) -> int:
    """Lay out the package, check it, optionally zip it; return the unzipped size in bytes."""
    package = out / "package"
    if package.exists():
        shutil.rmtree(package)
    package.mkdir(parents=True)
    requirements = list(RUNTIME_REQUIREMENTS)
    if with_boto3:
        requirements.append("boto3>=1.34")  # pinned to this environment's version by the constraints
    if video:
        requirements.extend(VIDEO_REQUIREMENTS)
    pip_install(package, python_version, requirements)
    saved = strip(package)
    copy_project(package, model, video=video)
    bad = forbidden_present(package, NEVER if with_boto3 else FORBIDDEN)
    if bad:
        raise SystemExit(f"build: {', '.join(bad)} must not be in the Lambda package")
    size = tree_size(package)
    print(f"unzipped size: {size / 1e6:.1f} MB ({size} bytes; stripped {saved / 1e6:.1f} MB)")
    limit = CONTAINER_IMAGE_LIMIT if video else LAMBDA_UNZIPPED_LIMIT
    if size > limit:
        raise SystemExit(f"build: {size} bytes is over Lambda's limit of {limit}")
    if make_zip and not video:
        zip_path = out / "smarttags-tagger.zip"
        write_zip(package, zip_path)
        print(f"zip: {zip_path} ({zip_path.stat().st_size / 1e6:.1f} MB)")
    return size


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="backbone ONNX file (default: build the preset one)")
    parser.add_argument("--backbone", help="the preset to build and ship (the template's Backbone parameter)")
    parser.add_argument("--out", type=Path, help=f"default: {DEFAULT_OUT} ({VIDEO_OUT} with --video)")
    parser.add_argument("--python-version", default=os.environ.get("LAMBDA_PYTHON_VERSION", "3.12"))
    parser.add_argument("--no-zip", action="store_true")
    parser.add_argument("--with-boto3", action="store_true", help="ship the tested boto3 instead of the runtime's")
    parser.add_argument("--video", action="store_true", help="the video function's package (with PyAV)")
    args = parser.parse_args(argv)
    model = args.model or default_model(args.backbone)
    if not model.is_file():
        parser.error(f"no such model file: {model}")
    out = args.out or (VIDEO_OUT if args.video else DEFAULT_OUT)
    build(out, model, args.python_version, make_zip=not args.no_zip, with_boto3=args.with_boto3, video=args.video)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
