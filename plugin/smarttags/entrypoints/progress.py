"""Progress bars for long library calls (ingest, training): one tqdm bar per phase, on stderr."""

from __future__ import annotations

import sys
from typing import Any


class Progress:
    """A ``progress(phase, advance, total)`` callback; quiet when ``enabled`` is false (``--json``)."""

    def __init__(self, enabled: bool = True, *, unit: str = "img") -> None:
        self._enabled = enabled
        self._unit = unit
        self._bars: dict[str, Any] = {}

    def __call__(self, phase: str, advance: int, total: int | None) -> None:
        if not self._enabled:
            return
        from tqdm import tqdm

        bar = self._bars.get(phase)
        if bar is None:
            bar = self._bars[phase] = tqdm(total=total, desc=phase, unit=self._unit, file=sys.stderr, leave=True)
        elif total is not None and bar.total != total:
            bar.total = total
            bar.refresh()
        if advance:
            bar.update(advance)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
