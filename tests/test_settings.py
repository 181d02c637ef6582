import pytest
from smarttags import settings
from smarttags.errors import ConfigError


def test_defaults_are_the_embedded_stack():
    s = settings.load()
    assert s.opensearch.url == "http://127.0.0.1:9200"
    assert s.scheduler.training_cron == "30 0 * * sat" and s.scheduler.tagging_cron == "0 0 * * *"
    assert s.index_name("runs") == "smarttags-runs"


@pytest.mark.parametrize(
    ("overrides", "setting"),
    [
        ({"opensearch": {"url": "ftp://x"}}, "SMARTTAGS_OPENSEARCH__URL"),
        ({"opensearch": {"auth": "basic"}}, "SMARTTAGS_OPENSEARCH"),
        ({"scheduler": {"tagging_cron": "every day"}}, "SMARTTAGS_SCHEDULER__TAGGING_CRON"),
        ({"scheduler": {"timezone": "Mars/Olympus"}}, "SMARTTAGS_SCHEDULER__TIMEZONE"),
        ({"training": {"min_images_per_tag": 0}}, "SMARTTAGS_TRAINING__MIN_IMAGES_PER_TAG"),
        ({"backbone": {"name": "custom"}}, "SMARTTAGS_BACKBONE"),
    ],
)
def test_a_wrong_value_names_the_setting(overrides, setting):
    with pytest.raises(ConfigError) as raised:
        settings.load(**overrides)
    assert raised.value.setting == setting
    assert setting in str(raised.value)


def test_environment_and_toml_file(tmp_path, monkeypatch):
    config = tmp_path / "smarttags.toml"
    config.write_text('[aws]\nbucket = "from-file"\n[opensearch]\nindex_prefix = "filed"\n')
    monkeypatch.setenv("SMARTTAGS_OPENSEARCH__INDEX_PREFIX", "from-env")
    s = settings.load(config)
    assert s.aws.bucket == "from-file"
    assert s.opensearch.index_prefix == "from-env"  # the environment outranks the file
    with pytest.raises(ConfigError, match="no such file"):
        settings.load(tmp_path / "missing.toml")


def test_secrets_never_show(monkeypatch):
    monkeypatch.setenv("SMARTTAGS_OPENSEARCH__PASSWORD", "hunter2-secret")
    monkeypatch.setenv("SMARTTAGS_AWS__SECRET_ACCESS_KEY", "aws-secret-value")
    s = settings.load(opensearch={"auth": "basic", "username": "admin"})
    text = repr(s) + str(s) + s.model_dump_json()
    assert "hunter2-secret" not in text and "aws-secret-value" not in text
    assert s.opensearch.password is not None and s.opensearch.password.get_secret_value() == "hunter2-secret"


def test_internal_bucket_defaults_beside_the_bucket_and_never_is_it() -> None:
    assert settings.AwsSettings(bucket="acme").own_bucket == "acme-smarttags"
    assert settings.AwsSettings(bucket="acme", internal_bucket="acme-own").own_bucket == "acme-own"
    with pytest.raises(ValueError, match="must differ"):
        settings.AwsSettings(bucket="acme", internal_bucket="acme")
    with pytest.raises(ValueError, match="set internal_bucket"):
        settings.AwsSettings(bucket="a" * 60)


def test_to_env_leaves_derived_backbone_settings_unset():
    """A child process (the stack's worker) must derive the backbone as its parent does: the active
    model's, with the preset's sizes, not the defaults exported as if chosen."""
    env = settings.to_env(settings.load())
    assert not {
        "SMARTTAGS_BACKBONE__NAME",
        "SMARTTAGS_BACKBONE__INPUT_SIZE",
        "SMARTTAGS_BACKBONE__EMBEDDING_DIM",
    } & set(env)
    assert env["SMARTTAGS_BACKBONE__THREADS"] == "0"
    chosen = settings.to_env(settings.load(backbone={"name": "efficientnet-lite2"}))
    assert chosen["SMARTTAGS_BACKBONE__NAME"] == "efficientnet-lite2" and "SMARTTAGS_BACKBONE__INPUT_SIZE" not in chosen
