"""The admin panel through Flask's test client, on the real embedded OpenSearch and moto S3/SQS."""

from __future__ import annotations

import html
import re

import pytest
from smarttags.core.asset import Asset
from smarttags.core.users import UserStore, hash_password, verify_password
from smarttags.entrypoints.admin import create_app
from smarttags.entrypoints.admin.views import highlight
from smarttags.errors import ConfigError
from smarttags.settings import AdminSettings

from tests.admin_seed import PASSWORD, XSS, seed
from tests.event_files import s3_event

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
    "/tags?tag=animals:cat": "viewer",
    "/status": "admin",
    "/users": "admin",
    "/dead-letters": "admin",
    "/review": "moderator",
}
POSTS = {
    "/folders/enable": "admin",
    "/folders/train": "admin",
    "/folders/tag": "admin",
    "/models/activate": "admin",
    "/models/rollback": "admin",
    "/runs/tag": "admin",
    "/users": "admin",
    "/users/viewer": "admin",
    "/assets/{cat}/tags": "moderator",
    "/moderation/bulk": "moderator",
    "/dead-letters/redrive": "admin",
    "/review/decide": "moderator",
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


def test_login_throttle_holds_across_processes(settings, services, seeded):
    first, second = _app(settings, services).test_client(), _app(settings, services).test_client()
    for client in (first, second, first):  # two processes, one count
        assert login(client, "moderator", "guess").status_code == 401
    assert login(second, "moderator").status_code == 429
    assert login(_app(settings, services).test_client(), "moderator").status_code == 429  # a restart too


# --- user administration ------------------------------------------------------------------------------


def test_user_admin_changes_end_that_users_sessions(app, as_role):
    admin = as_role("admin")
    viewer = as_role("viewer")
    assert viewer.get("/folders").status_code == 200
    assert admin.post("/users/viewer", data={"action": "role", "role": "moderator"}).status_code == 302
    assert viewer.get("/folders").status_code == 302  # the role change ended the viewer's session
    moderator = as_role("viewer")  # same account, logged in again: now a moderator
    assert "(moderator)" in moderator.get("/folders").get_data(as_text=True)

    admin.post("/users/viewer", data={"action": "password", "password": "a new long password"})
    assert moderator.get("/folders").status_code == 302
    assert login(app.test_client(), "viewer").status_code == 401  # the old password is gone
    again = app.test_client()
    assert login(again, "viewer", "a new long password").status_code == 302

    admin.post("/users/viewer", data={"action": "disable"})
    assert again.get("/folders").status_code == 302
    assert login(app.test_client(), "viewer", "a new long password").status_code == 401
    page = admin.get("/users").get_data(as_text=True)
    assert "disabled" in page
    for detail in ("set the role of viewer to moderator", "reset the password of viewer", "disabled viewer"):
        assert detail in page
    admin.post("/users/viewer", data={"action": "enable"})
    assert login(app.test_client(), "viewer", "a new long password").status_code == 302


def test_user_admin_keeps_the_last_admin_and_checks_input(as_role, services):
    admin = as_role("admin")
    for data in ({"action": "role", "role": "viewer"}, {"action": "disable"}):
        page = admin.post("/users/admin", data=data, follow_redirects=True).get_data(as_text=True)
        assert "the last admin" in page
    assert services.index.get("users", "admin").source["role"] == "admin"
    assert not services.index.get("users", "admin").source.get("disabled")
    short = admin.post("/users/moderator", data={"action": "password", "password": "short"}, follow_redirects=True)
    assert "a password has 8" in short.get_data(as_text=True)
    root = admin.post("/users/moderator", data={"action": "role", "role": "root"}, follow_redirects=True)
    assert "role must be one of" in root.get_data(as_text=True)
    assert services.index.get("users", "moderator").source["role"] == "moderator"
    assert admin.post("/users/nobody", data={"action": "disable"}).status_code == 404
    assert admin.post("/users/moderator", data={"action": "explode"}).status_code == 400
    # With a second admin the first may step down; it ends their own session.
    admin.post("/users/moderator", data={"action": "role", "role": "admin"})
    response = admin.post("/users/admin", data={"action": "role", "role": "viewer"})
    assert response.headers["Location"] == "/login"
    assert admin.get("/users").status_code == 302


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
    services.own_store.put_bytes(key, b"tampered")
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
    assert 'class="row register"' in page
    page = client.post("/folders/enable", data={"uri": "new/2024/", "enabled": "1"}, follow_redirects=True)
    assert f"s3://{bucket}/new/2024/" in page.get_data(as_text=True)  # registered, listed although empty
    assert services.folders.is_enabled(bucket, "new/2024/a.jpg")
    assert not services.folders.is_enabled(bucket, "new/a.jpg")
    refused = client.post("/folders/enable", data={"uri": "s3://", "enabled": "1"}, follow_redirects=True)
    assert refused.status_code == 400


def test_tag_now_dispatches_to_the_queue(as_role, services, seeded):
    client = as_role("admin")
    before = services.queue.depth()["visible"]  # the bucket's own upload notifications are queued too
    response = client.post("/folders/tag", data={"uri": "photos/"}, follow_redirects=True)
    assert "2 assets queued" in response.get_data(as_text=True)
    assert services.queue.depth()["visible"] == before + 1  # one work item names both keys


def test_report_page_table_chart_and_xlsx(as_role, seeded):
    client = as_role("viewer")
    page = client.get(f"/reports/{seeded.run_id}").get_data(as_text=True)
    assert 'class="pill trained"' in page and 'class="pill partial"' in page and 'class="pill not-trained"' in page
    assert "<svg" in page and page.count('class="bar precision"') == 2
    assert "add more visually similar images" in page
    assert "carried over from the active model: animals:dog" in page
    assert "0 labels from the review queue" in page and "From review</th>" in page
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


def _facet_links(page: str, facet: str) -> dict[str, str]:
    section = re.search(rf'data-facet="{facet}">(.*?)</section>', page, re.S).group(1)
    links = re.findall(r'<a href="([^"]+)"[^>]*>(.*?)</a>', section, re.S)
    return {html.unescape(text.strip()): html.unescape(href) for href, text in links}


def test_search_facets_count_filter_and_escape(as_role, seeded):
    client = as_role("viewer")
    page = client.get("/search").get_data(as_text=True)
    tags = _facet_links(page, "smart_tags")
    assert set(tags) == {"Cat", "Beach", XSS}  # titles, not ids; the hostile one escaped
    assert XSS not in page and "&lt;script&gt;" in page
    assert set(_facet_links(page, "folders")) == {"photos", "other"}
    assert "pending" in _facet_links(page, "statuses")
    narrowed = client.get(tags["Beach"]).get_data(as_text=True)
    assert "1 asset" in narrowed and "photos/cat.jpg" in narrowed and "other/xss.jpg" not in narrowed
    chosen = _facet_links(narrowed, "smart_tags")
    assert chosen["Beach"] == "/search"  # a chosen value's link drops it again
    both = client.get(chosen["Cat"]).get_data(as_text=True)  # Beach and Cat: both required
    assert "1 asset" in both and "photos/cat.jpg" in both
    hostile = client.get(tags[XSS]).get_data(as_text=True)
    assert "other/xss.jpg" in hostile and "photos/cat.jpg" not in hostile
    month = _facet_links(page, "months")
    assert month and "asset" in client.get(next(iter(month.values()))).get_data(as_text=True)
    assert "month must be YYYY-MM" in client.get("/search?month=2026-13").get_data(as_text=True)
    # The confidence filter: Beach is at 0.71 on the cat, so at least 0.8 of Beach finds nothing.
    strict = _facet_links(page, "confidence")
    assert list(strict) == ["at least 0.5", "at least 0.6", "at least 0.7", "at least 0.8", "at least 0.9"]
    high = client.get(strict["at least 0.9"]).get_data(as_text=True)
    assert "2 assets" in high and "photos/cat.jpg" in high and "other/xss.jpg" in high  # Cat 0.93, XSS 0.9
    beach = _facet_links(narrowed, "confidence")
    assert "1 asset" in client.get(beach["at least 0.7"]).get_data(as_text=True)
    assert "0 assets" in client.get(beach["at least 0.8"]).get_data(as_text=True)
    assert "confidence must be one of" in client.get("/search?confidence=2").get_data(as_text=True)


def test_bulk_moderation_of_selected_assets_and_of_all_results(as_role, services, seeded):
    client = as_role("moderator")
    page = client.get("/search?folder=photos").get_data(as_text=True)
    assert 'name="asset"' in page and "Bulk moderation" in page
    assert 'name="asset"' not in as_role("viewer").get("/search").get_data(as_text=True)
    form = {"action": "remove", "bulk_tag": "animals:cat", "query": "folder=photos", "scope": "selected"}
    response = client.post("/moderation/bulk", data={**form, "asset": [seeded.cat_id, seeded.broken_id]})
    assert response.status_code == 302 and response.headers["Location"] == "/search?folder=photos"
    # The broken file never had Cat: rejecting it still keeps a later model from adding it.
    assert "removed from 2 assets (0 already so, 0 gone)" in client.get("/search").get_data(as_text=True)
    client.post("/moderation/bulk", data={**form, "asset": [seeded.cat_id]})
    assert "removed from 0 assets (1 already so, 0 gone)" in client.get("/search").get_data(as_text=True)
    assert "animals:cat" in services.assets.get(seeded.cat_id).asset.rejected
    assert [a["tag"] for a in services.moderation.audit(asset_id=seeded.cat_id)] == ["animals:cat"]  # once

    # Every result of a faceted query: both photos get Dog, the other folder is untouched.
    form = {"action": "promote", "bulk_tag": "animals:dog", "query": "folder=photos&status=pending", "scope": "all"}
    page = client.post("/moderation/bulk", data=form, follow_redirects=True).get_data(as_text=True)
    assert "promoted on 2 assets" in page
    assert services.assets.get(seeded.broken_id).asset.is_promoted("animals:dog")
    assert not services.assets.get(seeded.xss_id).asset.is_promoted("animals:dog")
    assert {a["user"] for a in services.moderation.audit()} == {"moderator"}

    unknown = client.post("/moderation/bulk", data={**form, "bulk_tag": "animals:unicorn"}, follow_redirects=True)
    assert "not in the taxonomy" in unknown.get_data(as_text=True)
    empty = client.post("/moderation/bulk", data={**form, "scope": "selected"}, follow_redirects=True)
    assert "Select at least one asset" in empty.get_data(as_text=True)
    assert client.post("/moderation/bulk", data={**form, "action": "explode"}).status_code == 400


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


def test_asset_page_facts_and_a_presigned_original(as_role, app, services, seeded):
    import urllib.request

    page = as_role("viewer").get(f"/assets/{seeded.cat_id}").get_data(as_text=True)
    size = services.assets.get(seeded.cat_id).asset.size
    assert "image/jpeg" in page and f"{size} Bytes" in page and "modified" in page
    assert f"/assets/{seeded.cat_id}/original" in page
    assert app.test_client().get(f"/assets/{seeded.cat_id}/original").headers["Location"].startswith("/login")
    response = as_role("viewer").get(f"/assets/{seeded.cat_id}/original")
    assert response.status_code == 303
    link = response.headers["Location"]
    assert "photos/cat.jpg" in link and "Signature" in link and "Expires" in link
    with urllib.request.urlopen(link, timeout=10) as fetched:  # the browser's request: no credentials
        assert fetched.read() == services.store.get_bytes("photos/cat.jpg")[0]
    assert as_role("viewer").get("/assets/ffff/original").status_code == 404


def test_thumbnails_once_per_version_and_placeholder(as_role, services, seeded):
    client = as_role("viewer")
    first = client.get(f"/assets/{seeded.cat_id}/thumbnail")
    assert first.status_code == 200 and first.mimetype == "image/jpeg"
    assert "private" in first.headers["Cache-Control"] and "max-age" in first.headers["Cache-Control"]
    etag = first.headers["ETag"]
    stored = list(services.own_store.list(services.settings.aws.thumbnails_prefix))
    assert len(stored) == 1 and seeded.cat_id in stored[0].key
    assert not list(services.store.list("_smarttags/"))  # never beside the originals: no S3 notification
    again = client.get(f"/assets/{seeded.cat_id}/thumbnail", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert len(list(services.own_store.list(services.settings.aws.thumbnails_prefix))) == 1
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


def test_runs_page_and_the_fifteen_asset_limit(as_role, services, seeded):
    run = services.runs.get(seeded.run_id)
    run.counts.update(read=60, used=54, embedded=7, retrained=1, carried_over=1, not_trained=1)
    services.runs.save(run)
    client = as_role("admin")
    page = client.get("/runs").get_data(as_text=True)
    assert seeded.run_id in page
    text = " ".join(re.sub(r"<[^>]+>", " ", page).split())
    assert "60 assets read, 54 used (7 embedded now); 1 tags trained, 1 carried over, 1 not trained" in text
    keys = "\n".join(f"photos/{i}.jpg" for i in range(16))
    response = client.post("/runs/tag", data={"keys": keys})
    assert response.status_code == 400
    assert "16 assets asked for; on-demand tagging takes at most 15" in response.get_data(as_text=True)
    response = client.post("/runs/tag", data={"keys": ""})
    assert "name at least one asset" in response.get_data(as_text=True)
    # The search grid's checkboxes send asset ids: each stands for its key.
    response = client.post("/runs/tag", data={"asset": [seeded.cat_id] * 2, "keys": keys}, follow_redirects=True)
    assert "17 assets asked for" in response.get_data(as_text=True)


def test_tag_now_names_why_a_missing_key_was_skipped(as_role, services, seeded):
    bucket = services.settings.aws.bucket
    response = as_role("admin").post("/runs/tag", data={"keys": "photos/nope.jpg"}, follow_redirects=True)
    page = response.get_data(as_text=True)
    reason = f"no such object: s3://{bucket}/photos/nope.jpg"
    assert '<p class="flash warn">' in page and reason in page  # not a bare green "succeeded"
    run = services.runs.list(kind="tag", size=1)[0]
    assert run.counts["skipped"] == 1 and run.counts["processed"] == 1 and not run.errors
    assert run.skips == [{"key": "photos/nope.jpg", "reason": reason}]
    assert page.count(reason) == 2  # the flash and the run's row on the runs page
    assert services.assets.get(Asset(bucket, "photos/nope.jpg").id) is None  # no phantom asset left behind


def test_dead_letters_list_with_reasons_and_redrive(as_role, services, seeded):
    from smarttags.core.asset import TaggingStatus

    bucket = services.settings.aws.bucket
    broken = services.assets.get(seeded.broken_id)
    failed = broken.asset.with_status(TaggingStatus.FAILED, reason="cannot identify image file")
    services.assets.put(failed, expected=broken, refresh="true")
    client = as_role("admin")
    assert "dead-letter queue is empty" in client.get("/dead-letters").get_data(as_text=True)
    for key in ("photos/broken.jpg", "photos/cat.jpg"):
        body = s3_event("s3_object_created.json", bucket=bucket, key=key, sequencer="0A")
        services.dead_letter_queue.send([body])
    services.dead_letter_queue.send_raw(["{not json"])
    page = client.get("/dead-letters").get_data(as_text=True)
    rows = dict(re.findall(r'<tr data-message="([^"]+)">(.*?)</tr>', page, re.S))
    assert len(rows) == 3
    by_key = {next(iter(re.findall(r"<code>(.*?)</code>", row)), "-"): (mid, row) for mid, row in rows.items()}
    assert "cannot identify image file" in by_key[f"s3://{bucket}/photos/broken.jpg"][1]
    assert "no failure recorded" in by_key[f"s3://{bucket}/photos/cat.jpg"][1]
    assert "unreadable message" in by_key["-"][1]
    assert client.get("/dead-letters").get_data(as_text=True).count("<tr data-message=") == 3  # listing took none

    before = services.queue.depth()["visible"]
    one = by_key[f"s3://{bucket}/photos/broken.jpg"][0]
    page = client.post("/dead-letters/redrive", data={"message_id": one}, follow_redirects=True).get_data(as_text=True)
    assert "1 message sent back" in page and page.count("<tr data-message=") == 2
    assert services.queue.depth()["visible"] == before + 1
    gone = client.post("/dead-letters/redrive", data={"message_id": one}, follow_redirects=True)
    assert "no longer in the dead-letter queue" in gone.get_data(as_text=True)
    page = client.post("/dead-letters/redrive", data={"all": "1"}, follow_redirects=True).get_data(as_text=True)
    assert "2 messages sent back" in page and "dead-letter queue is empty" in page
    assert services.queue.depth()["visible"] == before + 3
    assert client.post("/dead-letters/redrive", data={}).status_code == 400


def test_review_queue_least_certain_first_accept_and_reject(as_role, services, seeded):
    from tests.admin_seed import _asset as seed_asset
    from tests.admin_seed import jpeg

    unsure_dog = seed_asset(services, "photos/dog.jpg", jpeg((1, 2, 3)), title="Dog?", smart=[("animals:dog", 0.55)])
    unsure_cat = seed_asset(services, "photos/cat2.jpg", jpeg((3, 2, 1)), title="Cat?", smart=[("animals:cat", 0.6)])
    services.index.refresh("assets")
    queue = services.review.next()
    assert [(d.asset.id, d.tag) for d in queue] == [
        (unsure_dog, "animals:dog"),
        (unsure_cat, "animals:cat"),
        (seeded.cat_id, "animals:cat"),
    ]  # nearest the 0.5 thresholds first; scenes:beach is not the active model's tag
    assert queue[0].threshold == 0.5 and round(queue[0].margin, 2) == 0.05
    client = as_role("moderator")
    page = client.get("/review").get_data(as_text=True)
    assert page.index("photos/dog.jpg") < page.index("photos/cat2.jpg") < page.index("photos/cat.jpg")
    assert "review.js" in page
    assert client.post("/review/decide", data={"verdict": "accept", "asset_id": unsure_dog, "tag": "animals:dog"})
    assert services.assets.get(unsure_dog).asset.is_promoted("animals:dog")
    client.post("/review/decide", data={"verdict": "reject", "asset_id": unsure_cat, "tag": "animals:cat"})
    assert "animals:cat" in services.assets.get(unsure_cat).asset.rejected
    # Both verdicts are marked as the review queue's, for the training report's "from review" count.
    assert services.assets.get(unsure_dog).asset.reviewed == {"animals:dog"}
    assert services.assets.get(unsure_cat).asset.reviewed == {"animals:cat"}
    assert [d.asset.id for d in services.review.next()] == [seeded.cat_id]  # reviewed ones leave the queue
    assert {a["action"] for a in services.moderation.audit()} == {"promote_tag", "remove_tag"}
    maybe = {"verdict": "maybe", "asset_id": unsure_cat, "tag": "x"}
    assert client.post("/review/decide", data=maybe).status_code == 400


def test_tag_page_both_sides_linked_from_facets_assets_and_reports(as_role, services, seeded):
    from tests.admin_seed import _asset as seed_asset
    from tests.admin_seed import jpeg

    just_above = seed_asset(services, "photos/c2.jpg", jpeg((1, 1, 1)), title="Above", smart=[("animals:cat", 0.53)])
    just_below = seed_asset(
        services, "photos/c3.jpg", jpeg((2, 2, 2)), title="Below", smart=[], near=[("animals:cat", 0.46)]
    )
    services.index.refresh("assets")
    client = as_role("moderator")
    page = client.get("/tags?tag=animals:cat").get_data(as_text=True)
    above = page[
        page.index('aria-label="Just above the threshold"') : page.index('aria-label="Just below the threshold"')
    ]
    below = page[page.index('aria-label="Just below the threshold"') : page.index("All its assets by confidence")]
    assert above.index(just_above) < above.index(seeded.cat_id) and just_below not in above
    assert just_below in below and just_above not in below and "0.040 below" in below
    assert "2 assets carry it" in page and "1 near miss " in page and "threshold 0.50" in page
    # Linked from the grid's facet, the asset page's tags, the report's rows and the queue.
    link = 'href="/tags?tag=animals:cat"'
    assert link in client.get("/search").get_data(as_text=True)
    assert link in client.get(f"/assets/{seeded.cat_id}").get_data(as_text=True)
    assert link in client.get(f"/reports/{seeded.run_id}").get_data(as_text=True)
    assert link in client.get("/review").get_data(as_text=True)
    # "Add the tag" on the near miss returns to the page, where it is no longer below.
    added = {"verdict": "accept", "asset_id": just_below, "tag": "animals:cat", "back": "tag"}
    response = client.post("/review/decide", data=added)
    assert response.status_code == 302 and response.headers["Location"] == "/tags?tag=animals:cat"
    assert services.assets.get(just_below).asset.is_promoted("animals:cat")
    page = client.get("/tags?tag=animals:cat").get_data(as_text=True)
    assert "No near misses" in page and "3 assets carry it (1 promoted)" in page
    # A viewer sees the page without verdict buttons; a tag nobody carries says so.
    viewer = as_role("viewer").get("/tags?tag=animals:cat").get_data(as_text=True)
    assert "Just above the threshold" in viewer and 'value="accept"' not in viewer
    assert "No asset carries this tag" in as_role("viewer").get("/tags?tag=animals:dog").get_data(as_text=True)
    assert as_role("viewer").get("/tags").status_code == 400


def test_users_page_forms_come_from_one_macro(as_role):
    page = as_role("admin").get("/users").get_data(as_text=True)
    assert "<title>Users · SmartTags admin</title>" in page  # the title holds no table any more
    assert page.count("Recent changes") == 1
    rows = re.findall(r'<tr data-user="([^"]+)">(.*?)</tr>', page, re.S)
    assert {name for name, _ in rows} == {"admin", "moderator", "viewer"}
    for name, row in rows:
        forms = re.findall(r"<form (.*?)</form>", row, re.S)
        actions = [re.search(r'name="action" value="([a-z]+)"', f).group(1) for f in forms]
        assert actions == ["role", "disable", "password"]
        assert all(f'action="/users/{name}"' in f and 'name="csrf_token"' in f for f in forms)


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
    from smarttags.adapters import backbone
    from smarttags.adapters.opensearch import SearchIndex

    index = SearchIndex(
        os_client, settings.opensearch.index_prefix, embedding_dim=backbone.embedding_dim_for(settings.backbone)
    )
    body = index.index_body("users")
    del body["mappings"]["properties"]["session_generation"]
    os_client.indices.create(index=index.name("users"), body=body)
    index.ensure()
    mapping = os_client.indices.get_mapping(index=index.name("users"))[index.name("users")]["mappings"]
    assert mapping["properties"]["session_generation"]["type"] == "integer"


def test_a_video_asset_page_shows_each_tags_time_ranges(as_role, services, seeded):
    from smarttags.core.asset import SmartTag

    tag = SmartTag("shapes:red", 0.93, "v1", ((0.0, 5.0), (70.5, 3725.0)))
    clip = Asset(services.settings.aws.bucket, "clips/launch.mp4", etag="e1", media="video", duration=3725.0)
    services.assets.put(clip.with_smart_tags([tag]))
    page = as_role("viewer").get(f"/assets/{clip.id}").get_data(as_text=True)
    assert "Time ranges" in page and "video, 3725.0 s" in page
    assert "0:00.0–0:05.0" in page and "1:10.5–1:02:05.0" in page
    # A picture's page has no time-range column.
    assert "Time ranges" not in as_role("viewer").get(f"/assets/{seeded.cat_id}").get_data(as_text=True)
