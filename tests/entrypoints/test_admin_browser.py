"""The admin panel in a real headless Chromium (Debian's), driven by Playwright: log in, narrow the grid
by a facet, promote a tag on two selected assets, open Manage Tags, remove a tag, see it gone from the
results; the report page draws its chart; an admin changes a user's role."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from smarttags.entrypoints.admin import create_app
from smarttags.settings import AdminSettings
from werkzeug.serving import make_server

from tests.admin_seed import PASSWORD, seed
from tests.event_files import s3_event

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture
def server(settings, services):
    seeded = seed(services)
    admin = AdminSettings(secret_key="b" * 32, secure_cookies=False)
    app = create_app(settings.model_copy(update={"admin": admin}), services)
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}", seeded, services
    httpd.shutdown()
    thread.join(timeout=10)
    httpd.server_close()


@pytest.fixture
def page():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        yield context.new_page()
        context.close()
        browser.close()


def test_search_moderate_and_report(server, page):
    base, seeded, services = server
    errors: list[str] = []  # console errors (a CSP refusal, a missing file) on any page fail the test
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{base}/search?q=cat")
    assert "/login" in page.url  # not logged in: sent to the login page
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/search?q=cat")
    hit = page.locator("li.hit", has_text="photos/cat.jpg")
    assert hit.locator(".chip", has_text="Beach").count() == 1
    assert hit.locator(".tier").inner_text().startswith("tier")
    page.wait_for_function("() => [...document.images].every(i => i.complete && i.naturalWidth > 0)")
    page.screenshot(path=str(ARTIFACTS / "search.png"), full_page=True)

    # A facet narrows the grid; choosing it again widens it.
    page.goto(f"{base}/search")
    assert page.locator("li.hit").count() == 3
    page.locator("[data-facet=smart_tags] a", has_text="Beach").click()
    page.wait_for_url("**/search?tag=scenes:beach")
    assert page.locator("li.hit").count() == 1
    page.screenshot(path=str(ARTIFACTS / "search-facet.png"), full_page=True)
    page.locator("[data-facet=smart_tags] a.on").click()
    page.wait_for_url("**/search")
    assert page.locator("li.hit").count() == 3

    # Bulk: select two cards, promote Dog on them; the grid shows it on both and only there.
    for key in ("photos/cat.jpg", "other/xss.jpg"):
        page.locator("li.hit", has_text=key).locator("input[name=asset]").check()
    page.select_option("select[name=action]", "promote")
    page.select_option("select[name=bulk_tag]", "animals:dog")
    page.click("fieldset.bulk button")
    page.wait_for_url("**/search")
    assert "promoted on 2 assets" in page.locator(".flash.ok").inner_text()
    page.screenshot(path=str(ARTIFACTS / "bulk.png"), full_page=True)
    assert page.locator("li.hit .chip.promoted", has_text="Dog").count() == 2
    assert page.locator("li.hit", has_text="photos/broken.jpg").locator(".chip", has_text="Dog").count() == 0
    page.goto(f"{base}/search?q=cat")
    hit = page.locator("li.hit", has_text="photos/cat.jpg")

    hit.locator("a.title").click()
    page.wait_for_url(f"**/assets/{seeded.cat_id}")
    assert page.locator("h1").inner_text() == "Manage tags"
    row = page.locator("tr.smart-tag", has_text="scenes:beach")
    row.locator("button[value=remove]").click()
    page.wait_for_url(f"**/assets/{seeded.cat_id}")
    assert "removed" in page.locator(".flash.ok").inner_text()
    assert page.locator("tr.smart-tag", has_text="scenes:beach").count() == 0
    assert "remove tag" in page.locator("table").last.inner_text()  # the audit trail
    page.screenshot(path=str(ARTIFACTS / "manage-tags.png"), full_page=True)

    page.goto(f"{base}/search?q=cat")
    hit = page.locator("li.hit", has_text="photos/cat.jpg")
    assert hit.count() == 1
    assert hit.locator(".chip", has_text="Beach").count() == 0

    page.goto(f"{base}/reports/{seeded.run_id}")
    chart = page.locator("svg.chart")
    assert chart.count() == 1
    assert chart.locator("rect.bar").count() == 4  # precision and recall for the two tags with metrics
    assert page.locator(".pill.trained").count() >= 1
    page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)

    for name in ("folders", "models", "status", "runs", "dead-letters", "review"):
        page.goto(f"{base}/{name}")
        assert page.locator("h1").count() == 1
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    # The review queue with the keyboard: R rejects the least certain decision, A accepts the next.
    from tests.admin_seed import _asset as seed_asset
    from tests.admin_seed import jpeg

    dog = seed_asset(services, "photos/dog.jpg", jpeg((9, 9, 9)), title="Dog?", smart=[("animals:dog", 0.52)])
    # A near miss: the model did not apply Dog (0.40 under 0.5); A adds it.
    near = seed_asset(services, "photos/pup.jpg", jpeg((8, 8, 8)), title="Pup", smart=[], near=[("animals:dog", 0.4)])
    services.index.refresh("assets")
    page.goto(f"{base}/review")
    assert "photos/dog.jpg" in page.locator("li.decision.current").inner_text()
    page.screenshot(path=str(ARTIFACTS / "review.png"), full_page=True)
    page.keyboard.press("r")
    page.wait_for_selector(".flash.ok")
    assert "animals:dog: rejected" in page.locator(".flash.ok").inner_text()
    assert "animals:dog" in services.assets.get(dog).asset.rejected
    current = page.locator("li.decision.current")
    assert "photos/pup.jpg" in current.inner_text() and "not applied" in current.inner_text()
    assert current.locator("button.accept").inner_text() == "Add the tag (A)"
    page.keyboard.press("a")
    page.wait_for_function("() => document.querySelector('li.decision.current')?.innerText.includes('photos/cat.jpg')")
    assert services.assets.get(near).asset.is_promoted("animals:dog")
    assert "photos/cat.jpg" in page.locator("li.decision.current").inner_text()
    page.keyboard.press("a")
    page.wait_for_selector("p.empty")
    assert "animals:cat: accepted" in page.locator(".flash.ok").inner_text()
    assert services.assets.get(seeded.cat_id).asset.is_promoted("animals:cat")

    # The dead-letter queue: one message, redriven from its row.
    bucket = services.settings.aws.bucket
    body = s3_event("s3_object_created.json", bucket=bucket, key="photos/broken.jpg", sequencer="0B")
    services.dead_letter_queue.send([body])
    page.goto(f"{base}/dead-letters")
    row = page.locator("tr[data-message]", has_text="photos/broken.jpg")
    assert row.count() == 1
    page.screenshot(path=str(ARTIFACTS / "dead-letters.png"), full_page=True)
    row.locator("button", has_text="Redrive").click()
    page.wait_for_url("**/dead-letters")
    assert "1 message sent back" in page.locator(".flash.ok").inner_text()
    assert page.locator("tr[data-message]").count() == 0

    page.goto(f"{base}/users")
    row = page.locator("tr[data-user=viewer]")
    row.locator("select[name=role]").select_option("moderator")
    row.locator("button", has_text="Set role").click()
    page.wait_for_url("**/users")
    assert "viewer is now moderator" in page.locator(".flash.ok").inner_text()
    assert "set the role of viewer to moderator" in page.locator("table.history").inner_text()
    page.screenshot(path=str(ARTIFACTS / "users.png"), full_page=True)

    page.click("header .who button")
    page.wait_for_url("**/login")
    assert errors == []


def test_tag_page_both_sides_and_add_the_tag(server, page):
    """A moderator opens a tag from the grid's facet, sees the assets either side of its threshold and
    adds the tag to a near miss; the page has no console errors."""
    from tests.admin_seed import _asset as seed_asset
    from tests.admin_seed import jpeg

    base, _, services = server
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    near = seed_asset(
        services, "photos/nearly.jpg", jpeg((90, 60, 30)), title="Nearly", smart=[], near=[("animals:cat", 0.47)]
    )
    seed_asset(services, "photos/barely.jpg", jpeg((30, 60, 90)), title="Barely", smart=[("animals:cat", 0.52)])
    services.index.refresh("assets")
    page.goto(f"{base}/login")
    page.fill("input[name=username]", "moderator")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/search")
    page.locator("[data-facet=smart_tags] li", has_text="Cat").locator("a.manage").click()
    page.wait_for_url("**/tags?tag=animals:cat")
    above = page.locator("ol.side.above li.decision")
    below = page.locator("ol.side.below li.decision")
    assert above.count() == 2 and "photos/barely.jpg" in above.first.inner_text()
    assert below.count() == 1 and "photos/nearly.jpg" in below.first.inner_text()
    page.wait_for_function("() => [...document.images].every(i => i.complete && i.naturalWidth > 0)")
    page.screenshot(path=str(ARTIFACTS / "tag-page.png"), full_page=True)
    below.first.locator("button", has_text="Add the tag").click()
    page.wait_for_url("**/tags?tag=animals:cat")
    assert "animals:cat: accepted" in page.locator(".flash.ok").inner_text()
    assert page.locator("ol.side.below li.decision").count() == 0
    assert services.assets.get(near).asset.is_promoted("animals:cat")
    assert errors == []
