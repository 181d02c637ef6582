"""What every decoder in ``adapters.formats`` shares: the Source it attaches and its size rule."""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image

SOURCE = "smarttags.source"  # the img.info key holding the Source of a rendered image
MODES = ("RGB", "RGBA")  # what decoders return


@dataclass(frozen=True)
class Source:
    """What a rendered document says about itself; ``width``/``height`` are the source's own size."""

    format: str
    content_type: str
    decoder: str
    width: int
    height: int
    title: str | None = None
    description: str | None = None
    keywords: tuple[str, ...] = field(default_factory=tuple)


def finish(img: Image.Image, source: Source) -> Image.Image:
    """``img`` as 8-bit RGB (or RGBA, composited later like any PNG) carrying ``source``."""
    out = img if img.mode in MODES else img.convert("RGBA" if "A" in img.getbands() else "RGB")
    out.info[SOURCE] = source
    out.format = source.format
    return out


def target(width: float, height: float, size: int) -> tuple[int, int]:
    """The (w, h) that puts a ``width`` x ``height`` source's long side at ``size``, aspect kept."""
    long_side = max(width, height)
    return max(1, round(width * size / long_side)), max(1, round(height * size / long_side))
