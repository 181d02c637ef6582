"""``smarttags demo``: the whole product on the embedded stack with public-domain clip art.

Brings the stack up (OpenSearch, S3/SQS, the upload worker), creates the index and templates, uploads
the sample (a taxonomy, a training folder whose pictures carry their tags as embedded XMP keywords, and
a folder of untagged pictures), trains, prints the report, uploads the new pictures and waits until the
upload tagger has tagged them, runs searches that show the three ranking tiers, and moderates: removes
one wrong smart tag, promotes one missed right tag, and searches again. Running it again reuses what
exists: unchanged objects are not uploaded again, an unchanged training set is not trained again, and
the same moderation edits are shown (already made).
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from smarttags.core import report
from smarttags.core.asset import TaggingStatus, asset_id
from smarttags.core.folders import Folder
from smarttags.core.runs import ON_DEMAND
from smarttags.core.search import TIER_NAMES, SearchRequest
from smarttags.core.taxonomy import parse as parse_taxonomy
from smarttags.core.users import UserStore
from smarttags.devtools import sample, stack
from smarttags.entrypoints.compose import Services
from smarttags.entrypoints.progress import Progress
from smarttags.errors import ServiceError
from smarttags.settings import Settings

log = logging.getLogger(__name__)

TRAIN_PREFIX = "demo/train/"
NEW_PREFIX = "demo/new/"
# "food fruit" shows the three tiers: training pictures carry both words as keywords (tier 1), new
# pictures tagged Food and Fruit (tier 2), new pictures tagged Food only (tier 3).
QUERIES: list[tuple[str, str]] = [("food fruit", "en"), ("car", "en"), ("Obst", "de")]


@dataclass
class DemoResult:
    report: report.TrainingReport
    tagged: dict[str, list[str]]  # key -> smart tags
    expected: dict[str, str]  # key -> the tag its clip-art folder says
    searches: dict[str, list[tuple[int, str]]] = field(default_factory=dict)  # query -> [(tier, key)]
    moderation: dict[str, Any] = field(default_factory=dict)  # what the moderation step did and showed
    tagged_after: dict[str, list[str]] = field(default_factory=dict)  # key -> smart tags after moderation

    def to_json(self) -> dict[str, Any]:
        return {
            "report": self.report.to_json(),
            "tagged": self.tagged,
            "expected": self.expected,
            "searches": self.searches,
            "moderation": self.moderation,
            "tagged_after": self.tagged_after,
        }


def _upload_folder(services: Services, local: Path, prefix: str, names: Mapping[str, str] | None = None) -> int:
    """Upload the files under ``local`` to ``prefix`` (under ``names[file name]`` when given); skip those
    already there with the same bytes."""
    existing = {info.key: info.etag for info in services.store.list(prefix)}
    uploaded = 0
    for path in sorted(local.rglob("*.jpg")):
        key = prefix + (names[path.name] if names else path.relative_to(local).as_posix())
        data = path.read_bytes()
        if existing.get(key) == hashlib.md5(data, usedforsecurity=False).hexdigest():
            continue
        services.store.put_bytes(key, data, content_type="image/jpeg")
        uploaded += 1
    return uploaded


DONE = (TaggingStatus.TAGGED, TaggingStatus.FAILED, TaggingStatus.UNSUPPORTED)


def _wait_tagged(
    services: Services, keys: list[str], timeout: float, *, done: tuple[TaggingStatus, ...] = DONE
) -> dict[str, list[dict[str, Any]]]:
    """key -> its smart tags (``{"tag", "confidence", ...}``, best first) once the upload tagger is done."""
    bucket = services.settings.aws.bucket
    deadline = time.monotonic() + timeout
    pending = set(keys)
    tagged: dict[str, list[dict[str, Any]]] = {}
    while pending and time.monotonic() < deadline:
        for key in list(pending):
            found = services.assets.get(asset_id(bucket, key))
            if found and found.asset.status in done:
                ranked = sorted(found.asset.smart_tags, key=lambda t: -t.confidence)
                tagged[key] = [{"tag": t.tag, "confidence": t.confidence} for t in ranked]
                pending.discard(key)
        if pending:
            time.sleep(0.5)
    if pending:
        raise ServiceError("worker", f"{len(pending)} uploads were not tagged within {timeout:.0f} s")
    return tagged


def _say(text: str) -> None:
    print(text, flush=True)  # piped output (`make demo | tee log`) shows each line as it happens


def _title(titles: dict[str, Any], tag_id: str, locale: str) -> str:
    """A tag as people read it, in the query's language ("Obst", not clipart:food/fruit)."""
    tag = titles.get(tag_id)
    return str(tag.title(locale)) if tag is not None else tag_id


def _one_per_folder(expected: dict[str, str]) -> list[str]:
    """The first upload of each clip-art folder: every tag shows, right or wrong, not the first few keys."""
    first: dict[str, str] = {}
    for key in sorted(expected):
        first.setdefault(expected[key], key)
    return [first[tag] for tag in sorted(first)]


def _smart_ids(services: Services, key: str) -> list[str]:
    found = services.assets.get(asset_id(services.settings.aws.bucket, key))
    return list(found.asset.smart_ids) if found else []


def _right(titles: dict[str, Any], tag: str, folder_tag: str) -> bool:
    """Whether ``tag`` is right for a picture of ``folder_tag``'s folder: that tag or one of its parents."""
    current: str | None = folder_tag
    while current is not None:
        if tag == current:
            return True
        found = titles.get(current)
        current = found.parent if found is not None else None
    return False


def _moderate(
    services: Services,
    titles: dict[str, Any],
    expected: dict[str, str],
    tagged: dict[str, list[str]],
    out: Callable[[str], None],
) -> dict[str, Any]:
    """Remove one wrong smart tag, promote one right tag the model missed, and search again to show the
    effect. The choice is kept in data_dir/demo/moderation.json, so a second run shows the same edits
    (already made: a removed tag never comes back, a promoted one stays)."""
    path = services.settings.data_dir / "demo" / "moderation.json"
    if path.is_file():
        choice = json.loads(path.read_text())
    else:
        wrong = next(((k, t) for k in sorted(tagged) for t in tagged[k] if not _right(titles, t, expected[k])), None)
        missed = next((k for k in sorted(tagged) if expected[k] not in tagged[k]), None)
        choice = {"remove": list(wrong) if wrong else None, "promote": [missed, expected[missed]] if missed else None}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(choice))
    bucket = services.settings.aws.bucket
    shown: dict[str, Any] = {"choice": choice}
    out("Moderation, as on the admin panel's Manage Tags page:")
    if choice["remove"]:
        key, tag = choice["remove"]
        services.moderation.remove(asset_id(bucket, key), tag, user="demo")
        services.index.refresh()
        found = services.searcher.search(SearchRequest(text=_title(titles, tag, "en"), size=100))
        shown["removed_still_found"] = key in {hit.key for hit in found.hits}
        out(f"  removed {_title(titles, tag, 'en')!r} from {key} (it never comes back);")
        still = "still" if shown["removed_still_found"] else "no longer"
        out(f"  search {_title(titles, tag, 'en')!r} again: {key} is {still} listed")
    if choice["promote"]:
        key, tag = choice["promote"]
        services.moderation.promote(asset_id(bucket, key), tag, user="demo")
        services.index.refresh()
        found = services.searcher.search(SearchRequest(text=_title(titles, tag, "en"), size=100))
        hit = next((h for h in found.hits if h.key == key), None)
        tier = [h.key for h in found.hits if hit is not None and h.tier == hit.tier]
        shown["promoted_rank_in_tier"] = tier.index(key) + 1 if hit is not None else None
        out(f"  promoted {_title(titles, tag, 'en')!r} on {key}, which the model had missed;")
        where = (
            f"number {shown['promoted_rank_in_tier']} of {len(tier)} in tier {hit.tier} ({TIER_NAMES[hit.tier]})"
            if hit is not None
            else "not found"
        )
        out(f"  search {_title(titles, tag, 'en')!r} again: {key} is {where}")
    return shown


def run(
    settings: Settings,
    started: list[stack.ProcessHandle],
    *,
    out: Callable[[str], None] = _say,
    wait_seconds: float = 180.0,
    serve_admin: bool = False,
) -> DemoResult:
    """Run the demo. What it starts is added to ``started`` as soon as it runs: the caller stops those,
    whether the demo succeeded, failed or was stopped by a signal (one clean-up, in one place). Every port
    it needs (the admin panel's too, with ``serve_admin``) is checked free before anything starts."""
    out("Starting the embedded stack (OpenSearch, S3 + SQS, upload worker)...")
    up = stack.stack_up(settings, also_ports=[stack.admin_port(settings)] if serve_admin else [])
    started.extend(h for h in up.handles if not h.reused)
    for handle in up.handles:
        out(f"  {handle.name}: {'running' if handle.reused else 'started'} at {handle.url} (pid {handle.pid})")
    return _run(settings, out, wait_seconds)


def _run(settings: Settings, out: Callable[[str], None], wait_seconds: float) -> DemoResult:
    services = Services(settings)
    services.index.ensure()
    sample_dir = settings.data_dir / "sample"
    out(f"Building the sample from Debian's openclipart-png in {sample_dir}...")
    built = sample.build(sample_dir)
    tags = parse_taxonomy((sample_dir / "taxonomy.json").read_text(encoding="utf-8"))
    services.taxonomy.import_tags(tags)
    out(f"  taxonomy: {len(tags)} tags with English, German and French titles")
    bucket = settings.aws.bucket
    for prefix in (TRAIN_PREFIX, NEW_PREFIX):
        services.folders.set_enabled(Folder(bucket, prefix), True, user="demo")
    uploaded = _upload_folder(services, sample_dir / "train", TRAIN_PREFIX)
    out(f"  training folder s3://{bucket}/{TRAIN_PREFIX}: {uploaded} pictures uploaded")
    # The upload tagger embeds them as they arrive (no model yet); training reuses those embeddings, so
    # every picture is embedded one way and two runs give the same model and the same rankings.
    train_keys = sorted(info.key for info in services.store.list(TRAIN_PREFIX))
    _wait_tagged(services, train_keys, wait_seconds, done=(TaggingStatus.EMBEDDED, *DONE))

    previous = services.runs.latest("train", f"s3://{bucket}/{TRAIN_PREFIX}")
    if previous and previous.report and uploaded == 0 and services.models.active_version():
        out("Training: the training folder is unchanged; reusing the active model and its report.")
        result = report.TrainingReport.from_json(previous.report)
    else:
        out("Training on the training folder...")
        bar = Progress()
        try:
            result = services.trainer.train([Folder(bucket, TRAIN_PREFIX)], trigger=ON_DEMAND, progress=bar)
        finally:
            bar.close()
    out(report.as_table(result))
    # The training pictures arrived before there was a model: tag them with it now (what the daily window
    # would do tonight), so every picture is tagged by the same model and two runs show the same results.
    dispatch = services.dispatch_tagging(Folder(bucket, TRAIN_PREFIX), trigger=ON_DEMAND)
    _wait_tagged(services, train_keys, wait_seconds)
    out(f"  tagged the training folder with the new model: {dispatch.run.counts.get('selected', 0)} pictures")

    images: list[dict[str, Any]] = list(built["images"])  # type: ignore[call-overload]
    # Neutral names for the uploads: "food-fruit-38.jpg" would match "food fruit" by its file name
    # (tier 1) and hide what the smart tags find.
    new = sorted((Path(str(e["file"])).name, str(e["tag"])) for e in images if not e["train"])
    names = {name: f"upload-{n:03d}.jpg" for n, (name, _) in enumerate(new)}
    expected = {NEW_PREFIX + names[name]: tag for name, tag in new}
    new_keys = sorted(expected)
    out(f"Uploading {len(new_keys)} untagged pictures to s3://{bucket}/{NEW_PREFIX}; the upload tagger tags them...")
    started = time.monotonic()
    uploaded = _upload_folder(services, sample_dir / "new", NEW_PREFIX, names)
    out(f"  {uploaded} uploaded, {len(new_keys) - uploaded} already there with the same bytes")
    smart = _wait_tagged(services, new_keys, wait_seconds)
    tagged = {key: [str(e["tag"]) for e in entries] for key, entries in smart.items()}
    out(f"  {len(tagged)} pictures tagged in {time.monotonic() - started:.1f} s; one of each clip-art folder:")
    titles = {tag.id: tag for tag in tags}
    for key in _one_per_folder(expected):
        shown = ", ".join(f"{_title(titles, str(e['tag']), 'en')} {float(e['confidence']):.2f}" for e in smart[key])
        out(f"  {key} (from the {_title(titles, expected[key], 'en')} folder): {shown or '(no tag)'}")

    demo = DemoResult(report=result, tagged=tagged, expected=expected)
    services.index.refresh()
    for text, locale in QUERIES:
        found = services.searcher.search(SearchRequest(text=text, locale=locale, size=100))
        demo.searches[text] = [(hit.tier, hit.key) for hit in found.hits]
        out(f"Search {text!r} ({locale}): {found.total}{'' if found.total_exact else '+'} results, best first")
        for tier in sorted({hit.tier for hit in found.hits}):
            hits = [hit for hit in found.hits if hit.tier == tier]
            out(f"  tier {tier} ({TIER_NAMES[tier]}): {len(hits)}")
            for hit in hits[:3]:
                matched = ", ".join(_title(titles, tag, locale) for tag in hit.matched_tags)
                out(f"    {hit.key}" + (f"  [smart tags: {matched}]" if matched else ""))
    correct = sum(expected[key] in tags for key, tags in tagged.items())
    out(f"{correct} of {len(tagged)} new pictures got the tag of the clip-art folder they came from")
    demo.moderation = _moderate(services, titles, expected, tagged, out)
    demo.tagged_after = {key: _smart_ids(services, key) for key in new_keys}
    result_file = settings.data_dir / "demo" / "result.json"
    result_file.parent.mkdir(parents=True, exist_ok=True)
    result_file.write_text(json.dumps(demo.to_json(), indent=2))
    return demo


@dataclass(frozen=True)
class DemoAdmin:
    settings: Settings  # the demo's: a kept secret key, cookies without Secure (plain HTTP on loopback)
    services: Services
    password: str  # of the login "demo", an admin


def admin_login(settings: Settings) -> DemoAdmin:
    """The admin panel's settings for the demo and its login ``demo``; the secret key and the password
    are made once and kept in data_dir/demo (mode 0600), so a second demo run logs in the same way."""
    folder = settings.data_dir / "demo"
    folder.mkdir(parents=True, exist_ok=True)

    def kept(name: str) -> str:
        path = folder / name
        if not path.is_file():
            path.write_text(secrets.token_urlsafe(18))
            path.chmod(0o600)
        return path.read_text().strip()

    admin = settings.admin
    if admin.secret_key is None:
        admin = admin.model_copy(update={"secret_key": SecretStr(kept("secret_key"))})
    # Plain http on loopback: a Secure cookie would never come back.
    demo_settings = settings.model_copy(update={"admin": admin.model_copy(update={"secure_cookies": False})})
    services = Services(demo_settings)
    password = kept("password")
    users = UserStore(services.index)
    if users.get("demo") is None:
        users.create("demo", password, "admin")
    return DemoAdmin(demo_settings, services, password)


def serve_admin(settings: Settings, *, out: Callable[[str], None] = print) -> None:
    """Serve the admin panel on ``admin.host:admin.port`` with the demo login, until Ctrl-C."""
    import waitress

    from smarttags.entrypoints.admin import create_app

    login = admin_login(settings)
    admin = login.settings.admin
    app = create_app(login.settings, login.services)
    out(f"\nAdmin panel: http://{admin.host}:{admin.port}/  (login: demo / {login.password})")
    out("Ctrl-C stops the admin panel and everything the demo started.")
    waitress.serve(app, host=admin.host, port=admin.port, threads=8, ident="smarttags")
