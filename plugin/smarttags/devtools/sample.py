"""The demo's sample, built at set-up from Debian's public-domain ``openclipart-png`` package.

Labels are the clip art's folders. Each picture is flattened onto white, scaled to 640 px on its longer
side (the training guideline asks for at least 500), and saved as JPEG with its tags and a title in
embedded XMP, the way a photographer delivers keywords. The selection is deterministic.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from PIL import Image

from smarttags.errors import PrerequisiteError

log = logging.getLogger(__name__)

OPENCLIPART = Path("/usr/share/openclipart/png")
SIDE = 640
MAX_SOURCE_PIXELS = 40_000_000
SAMPLE_VERSION = 2  # bump when the selection or rendering changes, so set-up rebuilds
TRAIN_PER_TAG = 36
NEW_PER_TAG = 4


@dataclass(frozen=True)
class SampleTag:
    id: str
    folder: str  # under OPENCLIPART
    titles: dict[str, str]


TAGS = [
    SampleTag("clipart:food/fruit", "food/fruit", {"en": "Fruit", "de": "Obst", "fr": "Fruit"}),
    SampleTag("clipart:food/beverages", "food/beverages", {"en": "Beverage", "de": "Getränk", "fr": "Boisson"}),
    SampleTag("clipart:food/desserts", "food/desserts", {"en": "Dessert", "de": "Nachtisch", "fr": "Dessert"}),
    SampleTag("clipart:vehicles", "transportation/vehicles", {"en": "Vehicle", "de": "Fahrzeug", "fr": "Véhicule"}),
    SampleTag("clipart:animals/mammals", "animals/mammals", {"en": "Mammal", "de": "Säugetier", "fr": "Mammifère"}),
    SampleTag("clipart:music", "recreation/music", {"en": "Music", "de": "Musik", "fr": "Musique"}),
    SampleTag("clipart:flags", "signs_and_symbols/flags", {"en": "Flag", "de": "Flagge", "fr": "Drapeau"}),
    SampleTag("clipart:computer/hardware", "computer/hardware", {"en": "Computer hardware", "de": "Hardware"}),
]
PARENTS = [SampleTag("clipart:food", "food", {"en": "Food", "de": "Lebensmittel", "fr": "Nourriture"})]


def taxonomy_document() -> dict[str, object]:
    synonyms = {"clipart:vehicles": {"en": ["car", "automobile"]}, "clipart:food/beverages": {"en": ["drink"]}}
    return {
        "tags": [
            {"id": t.id, "titles": t.titles, **({"synonyms": synonyms[t.id]} if t.id in synonyms else {})}
            for t in [*PARENTS, *TAGS]
        ]
    }


def keywords(tag: SampleTag) -> list[str]:
    """The tag's English title and its parents' (photographers add the broader terms too)."""
    words = [tag.titles["en"]]
    words += [p.titles["en"] for p in PARENTS if tag.id.startswith(p.id + "/")]
    return words


def title_from_name(path: Path) -> str:
    words = re.sub(r"[_\-.]+", " ", path.stem)
    words = re.sub(r"\b\d+\b", " ", words)
    return re.sub(r"\s+", " ", words).strip().capitalize() or "Clip art"


def xmp_packet(title: str, keywords: list[str]) -> bytes:
    items = "".join(f"<rdf:li>{escape(k)}</rdf:li>" for k in keywords)
    return (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/">'
        f'<dc:title><rdf:Alt><rdf:li xml:lang="x-default">{escape(title)}</rdf:li></rdf:Alt></dc:title>'
        f"<dc:subject><rdf:Bag>{items}</rdf:Bag></dc:subject>"
        "</rdf:Description></rdf:RDF></x:xmpmeta>"
    ).encode()


def render(source: Path, title: str, keywords: list[str]) -> bytes | None:
    """One clip art as a 640 px JPEG with XMP; None when the file is unusable."""
    try:
        with warnings.catch_warnings():
            # Some clip art is enormous; refuse it quietly rather than warn.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(source)
        with opened:
            if opened.width * opened.height > MAX_SOURCE_PIXELS:
                return None
            rgba = opened.convert("RGBA")
            canvas = Image.new("RGB", rgba.size, "white")
            canvas.paste(rgba, mask=rgba.getchannel("A"))
    except (OSError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        return None
    scale = SIDE / max(canvas.size)
    size = (max(1, round(canvas.width * scale)), max(1, round(canvas.height * scale)))
    canvas = canvas.resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    canvas.save(buffer, "JPEG", quality=85, xmp=xmp_packet(title, keywords))
    return buffer.getvalue()


def _sources(folder: str) -> list[Path]:
    root = OPENCLIPART / folder
    # Sorted by a hash of the name: deterministic, yet mixed across sub-folders and artists.
    files = sorted({p.resolve() for p in root.rglob("*.png")}, key=lambda p: hashlib.sha1(p.name.encode()).hexdigest())
    return files


def build(destination: Path) -> dict[str, object]:
    """Write ``train/<tag>/*.jpg`` (with embedded tags), ``new/*.jpg`` (no tags) and ``taxonomy.json``.
    Reuses an existing, complete build."""
    manifest_path = destination / "sample.json"
    if manifest_path.is_file():
        manifest: dict[str, object] = json.loads(manifest_path.read_text())
        if manifest.get("version") == SAMPLE_VERSION:
            return manifest
    if not OPENCLIPART.is_dir():
        raise PrerequisiteError(f"{OPENCLIPART} not found: apt-get install openclipart-png")
    train_dir, new_dir = destination / "train", destination / "new"
    used: set[Path] = set()
    entries: list[dict[str, object]] = []
    for tag in TAGS:
        made = 0
        for source in _sources(tag.folder):
            if source in used or made >= TRAIN_PER_TAG + NEW_PER_TAG:
                continue
            training = made < TRAIN_PER_TAG
            title = title_from_name(source)
            data = render(source, title, keywords(tag) if training else [])
            if data is None:
                continue
            used.add(source)
            name = f"{tag.id.split(':', 1)[1].replace('/', '-')}-{made:02d}.jpg"
            path = (train_dir / tag.id.split(":", 1)[1] / name) if training else (new_dir / name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            entries.append(
                {
                    "file": str(path.relative_to(destination)),
                    "tag": tag.id,
                    "train": training,
                    "source": str(source.relative_to(OPENCLIPART)),
                }
            )
            made += 1
        log.info("sample: %d images for %s", made, tag.id)
    (destination / "taxonomy.json").write_text(json.dumps(taxonomy_document(), indent=2, ensure_ascii=False))
    manifest = {"version": SAMPLE_VERSION, "images": entries, "tags": [t.id for t in TAGS]}
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return manifest
