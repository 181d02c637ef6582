"""The one settings object. Built at each entry point and passed down; nothing else reads the environment.

Sources, strongest first: keyword overrides, ``SMARTTAGS_*`` environment variables (nested with ``__``,
e.g. ``SMARTTAGS_OPENSEARCH__URL``), a ``.env`` file, a TOML file (``--config`` or ``SMARTTAGS_CONFIG``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from smarttags.errors import ConfigError

ENV_PREFIX = "SMARTTAGS_"
_CRON_FIELD = re.compile(r"^[\w*/,\-?#LW]+$")


class OpenSearchSettings(BaseModel):
    url: str = "http://127.0.0.1:9200"
    auth: Literal["none", "basic", "sigv4"] = "none"
    username: str | None = None
    password: SecretStr | None = None
    # SigV4 signs for this region and service ("es" for domains, "aoss" for serverless).
    region: str | None = None
    service: Literal["es", "aoss"] = "es"
    verify_certs: bool = True
    timeout_seconds: float = Field(default=30.0, gt=0)
    index_prefix: str = Field(default="smarttags", pattern=r"^[a-z0-9][a-z0-9_\-]*$")
    replicas: int = Field(default=0, ge=0)
    shards: int = Field(default=1, ge=1)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _auth_complete(self) -> OpenSearchSettings:
        if self.auth == "basic" and (not self.username or self.password is None):
            raise ValueError("auth=basic needs username and password")
        if self.auth == "sigv4" and not self.region:
            raise ValueError("auth=sigv4 needs region")
        return self


class AwsSettings(BaseModel):
    region: str = "us-east-1"
    # None means real AWS; the embedded stack points both at the local moto server.
    endpoint_url: str | None = "http://127.0.0.1:9400"
    # Only for local endpoints. Real deployments leave these unset: boto3's provider chain
    # (environment, profile, instance or Lambda role) supplies credentials and refreshes them.
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    bucket: str = Field(default="smarttags-assets", min_length=3, max_length=63)
    queue_name: str = "smarttags-tagging"
    dead_letter_queue_name: str = "smarttags-tagging-dlq"
    # Where a process without PyAV (the image Lambda) forwards videos: the video function's queue.
    # Unset: such a process records videos as unsupported.
    video_queue_name: str | None = None
    max_receive_count: int = Field(default=3, ge=1, le=1000)
    # SmartTags' own files (models, thumbnails) live in a bucket of their own that notifies nothing, so
    # writing them never sets off the tagging pipeline (S3 notification filters cannot exclude a
    # prefix). Default: "<bucket>-smarttags".
    internal_bucket: str | None = Field(default=None, min_length=3, max_length=63)
    models_prefix: str = "_smarttags/models/"
    thumbnails_prefix: str = "_smarttags/thumbnails/"
    max_attempts: int = Field(default=4, ge=1, le=10)

    @property
    def own_bucket(self) -> str:
        """The bucket of SmartTags' own files: ``internal_bucket`` or ``<bucket>-smarttags``."""
        return self.internal_bucket or f"{self.bucket}-smarttags"

    @model_validator(mode="after")
    def _own_bucket_apart(self) -> AwsSettings:
        if self.own_bucket == self.bucket:
            raise ValueError("internal_bucket must differ from bucket: its writes would set off tagging")
        if len(self.own_bucket) > 63:
            raise ValueError("bucket is too long to derive internal_bucket from (63 characters): set internal_bucket")
        return self

    @field_validator("endpoint_url", mode="before")
    @classmethod
    def _empty_is_real_aws(cls, value: object) -> object:
        # An environment variable cannot be None: SMARTTAGS_AWS__ENDPOINT_URL="" (the Lambda template) means
        # real AWS, not the local default.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("models_prefix", "thumbnails_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        value = value.lstrip("/")
        return value if value.endswith("/") else value + "/"


class BackboneSettings(BaseModel):
    """Which image encoder turns pixels into embeddings (see README, "Bring your own encoder")."""

    # Left unset, these are derived (the active model's backbone, the preset's sizes): ``to_env`` must
    # pass them to a child process only when set, or the child would see the defaults as choices.
    DERIVED_WHEN_UNSET: ClassVar[frozenset[str]] = frozenset({"name", "input_size", "embedding_dim"})

    # Not set: the backbone of the bucket's active model, or this default for a new deployment
    # (adapters/backbone.py: for_model).
    name: Literal["efficientnet-lite0", "efficientnet-lite2", "efficientnet-lite0+lite2", "custom"] = (
        "efficientnet-lite0+lite2"
    )
    # For name=custom: any ONNX image encoder.
    onnx_file: Path | None = None
    input_size: int = Field(default=224, ge=16, le=2048)
    mean: tuple[float, float, float] = (0.498, 0.498, 0.498)
    std: tuple[float, float, float] = (0.502, 0.502, 0.502)
    input_name: str | None = None
    output_name: str = "embedding"
    embedding_dim: int = Field(default=1280, ge=1)
    threads: int = Field(default=0, ge=0)  # 0: the cores this process may use
    batch_size: int = Field(default=32, ge=1, le=512)
    decode_workers: int = Field(default=2, ge=1, le=64)
    max_pixels: int = Field(default=100_000_000, ge=1)
    # Objects larger than this are not downloaded: their asset records the refusal (status failed).
    max_object_bytes: int = Field(default=512 * 1024 * 1024, ge=1)

    @model_validator(mode="after")
    def _custom_needs_file(self) -> BackboneSettings:
        if self.name == "custom" and self.onnx_file is None:
            raise ValueError("name=custom needs onnx_file")
        return self


class TrainingSettings(BaseModel):
    min_images_per_tag: int = Field(default=30, ge=1)
    min_resolution: int = Field(default=500, ge=1)
    # Pictures under min_resolution are counted and named in the advice; only a strict setting drops them.
    strict_resolution: bool = False
    threshold_policy: Literal["f1", "precision"] = "f1"
    target_precision: float = Field(default=0.9, gt=0, le=1)
    cv_folds: int = Field(default=5, ge=2, le=20)
    seed: int = 0
    # The matrix products of training are small: extra BLAS threads mostly fight the backbone and the
    # worker for the cores (a loaded 2-core machine ran 10x slower with the library's default).
    blas_threads: int = Field(default=1, ge=1, le=256)
    # Assets read per page of the point-in-time walk (each page holds their embeddings: ~25 KB apiece).
    read_page_size: int = Field(default=500, ge=1, le=10_000)


class TaggingSettings(BaseModel):
    # The seed's workflow options.
    ignore_smart_tag_flag: bool = False
    max_tags_per_asset: int = Field(default=20, ge=1)
    on_demand_gap_hours: float = Field(default=24, ge=0)
    periodic_gap_days: float = Field(default=182, ge=0)
    max_assets_on_demand: int = Field(default=15, ge=1)
    worker_concurrency: int = Field(default=2, ge=1, le=64)
    # How long a message the local worker received stays invisible to others: a worker that dies holding
    # it leaves it to the next after this long (Lambda's is the queue's, set in lambda/template.yaml).
    worker_visibility_seconds: int = Field(default=120, ge=1, le=43_200)
    # Assets a tagging run's dispatch looks at per page (one search, one update of the run each).
    dispatch_page_size: int = Field(default=500, ge=1, le=10_000)
    # A dispatch sends its next page only when the queue then holds at most about this many assets (0: no
    # limit): uploads are not queued behind a whole backfill, and the queue stays short.
    dispatch_max_queued: int = Field(default=2000, ge=0)
    # Assets per work item (one queue message) of a tagging run: the queue costs per message (SQS
    # requests, Lambda invocations), and the consumer tags a message's assets as one batch.
    keys_per_message: int = Field(default=25, ge=1, le=100)
    # The first delay before a message that failed on a transient error (a service down) is received
    # again; each further receive waits 4x longer, at most 5 minutes (see README: outages absorbed).
    retry_backoff_seconds: int = Field(default=30, ge=1, le=300)


class SchedulerSettings(BaseModel):
    training_cron: str = "30 0 * * sat"
    tagging_cron: str = "0 0 * * *"
    timezone: str = "UTC"
    # A window missed while the service was down runs once on return if it is at most this late.
    misfire_grace_seconds: int = Field(default=6 * 3600, ge=1)
    lease_seconds: int = Field(default=3600, ge=10)

    @field_validator("training_cron", "tagging_cron")
    @classmethod
    def _five_fields(cls, value: str) -> str:
        fields = value.split()
        if len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields):
            raise ValueError("must be a 5-field cron expression: minute hour day month day_of_week")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value


class AdminSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(default=8700, ge=1, le=65535)
    secret_key: SecretStr | None = None
    secure_cookies: bool = True
    login_attempts_per_minute: int = Field(default=5, ge=1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_file=".env",
        extra="forbid",
    )

    data_dir: Path = Path("var")
    opensearch: OpenSearchSettings = OpenSearchSettings()
    aws: AwsSettings = AwsSettings()
    backbone: BackboneSettings = BackboneSettings()
    training: TrainingSettings = TrainingSettings()
    tagging: TaggingSettings = TaggingSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    admin: AdminSettings = AdminSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, dotenv_settings]
        if _TOML_FILE[0] is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=_TOML_FILE[0]))
        return tuple(sources)

    @property
    def assets_index(self) -> str:
        return f"{self.opensearch.index_prefix}-assets"

    def index_name(self, kind: str) -> str:
        """Name of one of our indices: assets, taxonomy, runs, folders, audit, leases, users."""
        return f"{self.opensearch.index_prefix}-{kind}"

    @property
    def is_local_aws(self) -> bool:
        return self.aws.endpoint_url is not None


# The TOML path reaches settings_customise_sources (a classmethod) through this cell; load() sets it.
_TOML_FILE: list[Path | None] = [None]


def load(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Build the settings, or raise ConfigError naming the first wrong setting."""
    import os

    path = config_file or os.environ.get(f"{ENV_PREFIX}CONFIG")
    if path is not None and not Path(path).is_file():
        raise ConfigError(f"{ENV_PREFIX}CONFIG", f"no such file: {path}")
    _TOML_FILE[0] = Path(path) if path else None
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ENV_PREFIX + "__".join(str(part) for part in first["loc"]).upper()
        raise ConfigError(name, first["msg"]) from None
    finally:
        _TOML_FILE[0] = None


def to_env(settings: Settings) -> dict[str, str]:
    """The settings as ``SMARTTAGS_*`` variables, for a child process that must see exactly these
    (the stack's worker). Secrets are included: environment variables are how a child gets them."""
    import json

    env: dict[str, str] = {}

    def put(prefix: str, value: Any) -> None:
        if isinstance(value, BaseModel):
            derived: frozenset[str] = getattr(value, "DERIVED_WHEN_UNSET", frozenset())
            for name in type(value).model_fields:
                if name in derived and name not in value.model_fields_set:
                    continue
                put(f"{prefix}__{name.upper()}", getattr(value, name))
        elif value is None:
            if prefix.endswith("ENDPOINT_URL"):
                env[prefix] = ""  # "" is how the environment says "real AWS"
        elif isinstance(value, SecretStr):
            env[prefix] = value.get_secret_value()
        elif isinstance(value, bool):
            env[prefix] = "true" if value else "false"
        elif isinstance(value, list | tuple | dict):
            env[prefix] = json.dumps(value)
        else:
            env[prefix] = str(value)

    for name in Settings.model_fields:
        put(ENV_PREFIX + name.upper(), getattr(settings, name))
    return {key.replace(f"{ENV_PREFIX}__", ENV_PREFIX): value for key, value in env.items()}
