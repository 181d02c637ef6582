"""The admin panel through Flask's test client, on the real embedded OpenSearch and moto S3/SQS."""

from __future__ import annotations

import re

import pytest
from smarttags.core.users import UserStore, hash_password, verify_password
from smarttags.entrypoints.admin import create_app
from smarttags.entrypoints.admin.views import highlight
from smarttags.errors import ConfigError
from smarttags.settings import AdminSettings

from tests.admin_seed import PASSWORD, XSS, seed

pytestmark = pytest.mark.slow

ADMIN_SETTINGS = AdminSettings(secret_key="s" * 32, secure_cookies=False, login_attempts_per_minute=3)


def _app(settings, services, **admin):
    settings = settings.model_copy(update={"admin": ADMIN_SETTINGS.model_copy(update=admin)})
    app = create_app(settings, services)
    app.config.update(TESTING=True, WTF_CSRF_ENABLED=False)
    return app


@pytest.fixture
def seeded(services):
    return seed(services)


@pytest.fixture
def app(settings, services, seeded):
    return _app(settings, services)


def login(client, role: str, password: str = PASSWORD):
    return client.post("/login", data={"username": role, "password": password})


@pytest.fixture
def as_role(app):
    def make(role: str | None):
        client = app.test_client()
        if role:
            assert login(client, role).status_code == 302
        return client

    return make


# --- routes and roles ---------------------------------------------------------------------------------

GET_PAGES = {  # path -> the least role that may see it
    "/": "viewer",
    "/search?q=cat": "viewer",
    "/folders": "viewer",
    "/reports": "viewer",
    "/reports/{run}": "viewer",
    "/models": "viewer",
    "/runs": "viewer",
    "/assets/{cat}": "viewer",
    "/status": "admin",
    "/users": "admin",
}
POSTS = {
    "/folders/enable": "admin",
    "/folders/train": "admin",
    "/folders/tag": "admin",
    "/models/activate": "admin",
    "/models/rollback": "admin",
    "/runs/tag": "admin",
    "/users": "admin",
    "/assets/{cat}/tags": "moderator",
}
RANK = {"viewer": 1, "moderator": 2, "admin": 3}


def _fill(path, seeded):
    return path.format(run=seeded.run_id, cat=seeded.cat_id)


@pytest.mark.parametrize("path", sorted(GET_PAGES))
def test_pages_need_login(as_role, seeded, path):
    response = as_role(None).get(_fill(path, seeded))
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")


@pytest.mark.parametrize("path", ["/assets/{cat}/thumbnail", "/reports/{run}/report.xlsx", *sorted(POSTS)])
def test_assets_downloads_and_actions_need_login(as_role, seeded, path):
    client = as_role(None)
    method = client.post if path in POSTS else client.get
    assert method(_fill(path, seeded)).status_code == 401


@pytest.mark.parametrize("role", ["viewer", "moderator", "admin"])
def test_pages_by_role(as_role, seeded, role):
    client = as_role(role)
    for path, least in GET_PAGES.items():
        response = client.get(_fill(path, seeded))
        expected = (302 if path == "/" else 200) if RANK[role] >= RANK[least] else 403
        assert response.status_code == expected, (role, path)


@pytest.mark.parametrize("role", ["viewer", "moderator"])
def test_actions_forbidden_below_their_role(as_role, seeded, role):
    client = as_role(role)
    for path, least in POSTS.items():
        if RANK[role] < RANK[least]:
            assert client.post(_fill(path, seeded), data={"uri": "photos/"}).status_code == 403, path


def test_navigation_hides_admin_pages_from_viewers(as_role):
    page = as_role("viewer").get("/folders").get_data(as_text=True)
    assert "/status" not in page and "Train now" not in page
    assert "Train now" in as_role("admin").get("/folders").get_data(as_text=True)


# --- login, logout, sessions, CSRF ------------------------------------------------------------------------


def test_login_wrong_password_and_logout(as_role, app):
    client = app.test_client()
    response = login(client, "admin", "wrong password")
    assert response.status_code == 401
    assert "Wrong user name or password" in response.get_data(as_text=True)
    assert login(client, "admin").status_code == 302
    assert client.get("/folders").status_code == 200
    assert client.post("/logout").status_code == 302
    assert client.get("/folders").status_code == 302


def test_login_redirects_only_to_local_pages(app):
    client = app.test_client()
    response = client.post("/login", data={"username": "admin", "password": PASSWORD, "next": "//evil.example/x"})
    assert response.headers["Location"] == "/search"
    client = app.test_client()
    response = client.post("/login", data={"username": "admin", "password": PASSWORD, "next": "/models"})
    assert response.headers["Location"] == "/models"


@pytest.mark.parametrize("target", ["/\t/evil.example/", "/\n/x", "/\r/x", "/\\evil.example", "https://evil.example/"])
def test_login_refuses_disguised_redirects(app, target):
    response = app.test_client().post("/login", data={"username": "admin", "password": PASSWORD, "next": target})
    assert response.status_code == 302
    assert response.headers["Location"] == "/search"


def test_login_rate_limit(app):
    client = app.test_client()
    for _ in range(3):
        assert login(client, "viewer", "guess").status_code == 401
    response = login(client, "viewer")  # even the right password waits now
    assert response.status_code == 429
    assert "Too many failed attempts" in response.get_data(as_text=True)
    elsewhere = app.test_client()
    elsewhere.environ_base["REMOTE_ADDR"] = "198.51.100.7"
    assert login(elsewhere, "viewer").status_code == 302  # failures elsewhere lock nobody out
    for _ in range(9):  # the same address may try other names, up to four times the limit
        assert login(client, f"nobody{_}", "guess").status_code == 401
    assert login(client, "admin").status_code == 429


def test_csrf_rejects_a_post_without_token(settings, services, seeded):
    app = _app(settings, services)
    app.config.update(WTF_CSRF_ENABLED=True)
    client = app.test_client()
    assert client.post("/login", data={"username": "admin", "password": PASSWORD}).status_code == 400
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    response = client.post("/login", data={"username": "admin", "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 302
    folders = client.get("/folders").get_data(as_text=True)
    assert client.post("/folders/enable", data={"uri": "photos/", "enabled": "0"}).status_code == 400
    token = re.search(r'name="csrf_token" value="([^"]+)"', folders).group(1)
    ok = client.post("/folders/enable", data={"uri": "photos/", "enabled": "0", "csrf_token": token})
    assert ok.status_code == 302


def test_session_cookie_flags(settings, services, seeded):
    app = _app(settings, services, secure_cookies=True)
    client = app.test_client()
    response = client.post("/login", data={"username": "admin", "password": PASSWORD}, base_url="https://localhost")
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" in cookie
    assert PASSWORD not in cookie


def test_secret_key_is_required_outside_debug(settings, services):
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        create_app(settings.model_copy(update={"admin": AdminSettings()}), services)
    assert create_app(settings.model_copy(update={"admin": AdminSettings()}), services, debug=True)


def test_security_headers(as_role):
    response = as_role("viewer").get("/folders")
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"


# --- escaping ----------------------------------------------------------------------------------------


def test_hostile_tag_names_are_escaped(as_role, seeded):
    client = as_role("admin")
    pages = [
        client.get(f"/assets/{seeded.xss_id}"),
        client.get(f"/reports/{seeded.run_id}"),
        client.get("/search?q=title"),
    ]
    for response in pages:
        body = response.get_data(as_text=True)
        assert response.status_code == 200
        assert XSS not in body
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body


def test_highlight_keeps_only_mark():
    assert highlight("a <mark>cat</mark> &lt;b&gt;") == "a <mark>cat</mark> &lt;b&gt;"
    assert highlight("<script>x</script><mark>y</mark>") == "&lt;script&gt;x&lt;/script&gt;<mark>y</mark>"
    assert highlight("Tom &amp; Jerry") == "Tom &amp; Jerry"


# --- pages -------------------------------------------------------------------------------------------


def test_status_page_checks(as_role, services):
    page = as_role("admin").get("/status").get_data(as_text=True)
    for name in ("OpenSearch", "S3 bucket", "Tagging queue", "Dead-letter queue", "Active model", "Scheduler"):
        assert name in page
    assert "stored templates installed" in page
    assert "sha256 verified" in page
    assert "next training window" in page


def test_status_page_reports_a_broken_model_in_red(as_role, services, seeded):
    key = f"{services.settings.aws.models_prefix}{seeded.versions[1]}/heads.npz"
    services.store.put_bytes(key, b"tampered")
    page = as_role("admin").get("/status").get_data(as_text=True)
    assert "fails its sha256 check" in page
    assert 'class="fail"' in page


def test_folders_page_and_toggle(as_role, services, seeded):
    client = as_role("admin")
    page = client.get("/folders").get_data(as_text=True)
    bucket = services.settings.aws.bucket
    assert f"s3://{bucket}/photos/" in page and f"s3://{bucket}/other/" in page
    assert "_smarttags" not in page
    response = client.post("/folders/enable", data={"uri": f"s3://{bucket}/other/", "enabled": "1"})
    assert response.status_code == 302
    assert services.folders.is_enabled(bucket, "other/xss.jpg")


def test_tag_now_dispatches_to_the_queue(as_role, services, seeded):
    client = as_role("admin")
    before = services.queue.depth()["visible"]  # the bucket's own upload notifications are queued too
    response = client.post("/folders/tag", data={"uri": "photos/"}, follow_redirects=True)
    assert "2 assets queued" in response.get_data(as_text=True)
    assert services.queue.depth()["visible"] == before + 2


def test_report_page_table_chart_and_xlsx(as_role, seeded):
    client = as_role("viewer")
    page = client.get(f"/reports/{seeded.run_id}").get_data(as_text=True)
    assert 'class="pill trained"' in page and 'class="pill partial"' in page and 'class="pill not-trained"' in page
    assert "<svg" in page and page.count('class="bar precision"') == 2
    assert "add more visually similar images" in page
    assert "carried over from the active model: animals:dog" in page
    assert 'title="untagged 3, removed 1, siblings 10, other 0">14</td>' in page
    response = client.get(f"/reports/{seeded.run_id}/report.xlsx")
    assert response.status_code == 200
    assert response.mimetype == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    assert f"filename=training-report-{seeded.run_id}.xlsx" in response.headers["Content-Disposition"]
    assert response.data[:2] == b"PK"
    assert client.get("/reports/nope").status_code == 404


def test_search_shows_tiers_thumbnails_and_highlights(as_role, seeded):
    page = as_role("viewer").get("/search?q=cat").get_data(as_text=True)
    assert f"/assets/{seeded.cat_id}/thumbnail" in page
    assert "tier 1" in page and "metadata matches all terms" in page
    assert "<mark>cat</mark>" in page.lower()


def test_search_refuses_an_overlong_query(as_role):
    page = as_role("viewer").get("/search?q=" + "a" * 2001).get_data(as_text=True)
    assert "at most 2000 are allowed" in page


def test_moderation_remove_promote_and_audit(as_role, services, seeded):
    client = as_role("moderator")
    url = f"/assets/{seeded.cat_id}/tags"
    assert client.post(url, data={"action": "remove", "tag": "scenes:beach"}).status_code == 302
    assert client.post(url, data={"action": "promote", "tag": "animals:dog"}).status_code == 302
    doc = services.index.get("assets", seeded.cat_id).source
    assert "scenes:beach" not in doc["smart_ids"] and "scenes:beach" in doc["rejected_tags"]
    assert "animals:dog" in doc["promoted_tags"]
    page = client.get(f"/assets/{seeded.cat_id}").get_data(as_text=True)
    assert "remove tag" in page and "promote tag" in page and "moderator" in page
    audit = services.moderation.audit(asset_id=seeded.cat_id)
    assert {a["user"] for a in audit} == {"moderator"}
    response = client.post(url, data={"action": "promote", "tag": "animals:unknown"}, follow_redirects=True)
    assert "not in the taxonomy" in response.get_data(as_text=True)
    assert client.post(url, data={"action": "explode", "tag": "x"}).status_code == 400
    assert client.get("/assets/ffff").status_code == 404


def test_thumbnails_once_per_version_and_placeholder(as_role, services, seeded):
    client = as_role("viewer")
    first = client.get(f"/assets/{seeded.cat_id}/thumbnail")
    assert first.status_code == 200 and first.mimetype == "image/jpeg"
    assert "private" in first.headers["Cache-Control"] and "max-age" in first.headers["Cache-Control"]
    etag = first.headers["ETag"]
    stored = list(services.store.list(services.settings.aws.thumbnails_prefix))
    assert len(stored) == 1 and seeded.cat_id in stored[0].key
    again = client.get(f"/assets/{seeded.cat_id}/thumbnail", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert len(list(services.store.list(services.settings.aws.thumbnails_prefix))) == 1
    for asset_id in (seeded.broken_id, "0" * 40):
        placeholder = client.get(f"/assets/{asset_id}/thumbnail")
        assert placeholder.status_code == 200 and placeholder.mimetype == "image/svg+xml"


def test_models_side_by_side_activate_and_rollback(as_role, services, seeded):
    client = as_role("admin")
    page = client.get("/models").get_data(as_text=True)
    old, new = seeded.versions
    assert old in page and new in page and "mean AP" in page
    assert "0.90" in page and "0.70" in page
    assert client.post("/models/rollback").status_code == 302
    assert services.models.active_version() == old
    assert client.post("/models/activate", data={"version": new}).status_code == 302
    assert services.models.active_version() == new


def test_runs_page_and_the_fifteen_asset_limit(as_role, seeded):
    client = as_role("admin")
    page = client.get("/runs").get_data(as_text=True)
    assert seeded.run_id in page
    keys = "\n".join(f"photos/{i}.jpg" for i in range(16))
    response = client.post("/runs/tag", data={"keys": keys})
    assert response.status_code == 400
    assert "16 assets asked for; on-demand tagging takes at most 15" in response.get_data(as_text=True)
    response = client.post("/runs/tag", data={"keys": ""})
    assert "name at least one asset" in response.get_data(as_text=True)


def test_admin_creates_users(as_role, services):
    client = as_role("admin")
    response = client.post(
        "/users", data={"username": "carol", "password": "long enough pw", "role": "moderator"}, follow_redirects=True
    )
    assert "User carol (moderator) created" in response.get_data(as_text=True)
    assert UserStore(services.index).verify("carol", "long enough pw").role == "moderator"
    response = client.post(
        "/users", data={"username": "carol", "password": "x", "role": "moderator"}, follow_redirects=True
    )
    assert "a password has" in response.get_data(as_text=True)


# --- library pieces the admin uses ----------------------------------------------------------------------


def test_password_hashes():
    encoded = hash_password("secret pass")
    assert encoded.startswith("scrypt$") and "secret pass" not in encoded
    assert verify_password("secret pass", encoded)
    assert not verify_password("secret pasS", encoded)
    assert not verify_password("x", "garbage")


def test_cli_create_user_and_validate(settings, services, monkeypatch, capsys):
    import io

    from smarttags.entrypoints import cli

    monkeypatch.setattr(cli.settings_mod, "load", lambda *_: settings)
    monkeypatch.setattr("sys.stdin", io.StringIO("a fine password\n"))
    assert cli.main(["admin", "create-user", "dave", "--role", "viewer", "--password-stdin"]) == 0
    assert UserStore(services.index).verify("dave", "a fine password").role == "viewer"
    assert cli.main(["validate"]) == 1  # no active model yet
    out = capsys.readouterr().out
    assert "[FAIL] Active model" in out and "[ok  ] OpenSearch" in out


def test_plain_http_with_secure_cookies_says_https_is_needed(settings, services, seeded):
    app = _app(settings, services, secure_cookies=True)
    app.config["WTF_CSRF_ENABLED"] = True
    client = app.test_client()
    page = client.get("/login", base_url="http://admin.example").get_data(as_text=True)
    assert "needs HTTPS, or set admin.secure_cookies=false" in page
    expired = client.post("/login", data={"username": "admin"}, base_url="http://admin.example")
    assert expired.status_code == 400 and "needs HTTPS" in expired.get_data(as_text=True)
    for base in ("https://admin.example", "http://localhost"):
        assert "needs HTTPS" not in client.get("/login", base_url=base).get_data(as_text=True)


def test_rollback_hidden_without_a_previous_model(settings, services):
    UserStore(services.index).create("admin", PASSWORD, "admin")
    client = _app(settings, services).test_client()
    assert login(client, "admin").status_code == 302
    page = client.get("/models").get_data(as_text=True)
    assert "Roll back" not in page
    icon = client.get("/static/favicon.svg")
    icon.close()
    assert 'rel="icon"' in page and icon.status_code == 200


def test_logout_ends_a_copied_session(app):
    client = app.test_client()
    assert login(client, "admin").status_code == 302
    copy = app.test_client()
    copy.set_cookie("smarttags_session", client.get_cookie("smarttags_session").value)
    assert copy.get("/models").status_code == 200
    assert client.post("/logout").status_code == 302
    stolen = copy.get("/models")
    assert stolen.status_code == 302 and stolen.headers["Location"].startswith("/login")
    assert login(client, "admin").status_code == 302  # a new login works again
    assert client.get("/models").status_code == 200


def test_ensure_adds_new_fields_to_an_index_made_by_an_older_release(settings, os_client):
    """An index created before ``session_generation`` existed learns the field on the next ``init``."""
    from smarttags.adapters.opensearch import SearchIndex

    index = SearchIndex(os_client, settings.opensearch.index_prefix)
    body = index.index_body("users")
    del body["mappings"]["properties"]["session_generation"]
    os_client.indices.create(index=index.name("users"), body=body)
    index.ensure()
    mapping = os_client.indices.get_mapping(index=index.name("users"))[index.name("users")]["mappings"]
    assert mapping["properties"]["session_generation"]["type"] == "integer"
