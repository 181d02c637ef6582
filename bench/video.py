"""The video function's worst case on this machine (a script, not a test): what its Lambda timeout covers.

    .venv/bin/python bench/video.py [--data-dir var]

Tags videos as the video function does (``adapters/videos.open_clip``: keyframes sampled, letterboxed,
embedded in one batch), with the backbone on one thread like the Lambda (``BACKBONE__THREADS=1``): a
2-minute 4K H.264 video with a keyframe every 5 s (the full 24 samples, each a 4K intra-frame decode),
a ten-hour video (24 samples spread over it) and, as the same-run baseline, one 12 MP JPEG end to end.
Prints ms per video and the ratio to the JPEG; the timeout must cover the worst line plus the download.
"""

from __future__ import annotations

import argparse
import io
import resource
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image
from skimage import data as skdata
from smarttags import settings
from smarttags.adapters import videos
from smarttags.adapters.embedder import load_embedder

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script too
from bench.embed import timed


def encode(size: tuple[int, int], seconds: int, *, fps: int = 1, gop: int = 5, step: int = 1) -> bytes:
    """H.264 panning over a photo; ``step`` seconds between frames (a long video from few frames)."""
    photo = Image.fromarray(skdata.astronaut()).resize((size[0] * 2, size[1]))
    canvas = np.asarray(photo)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="matroska") as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.codec_context.gop_size = gop
        stream.codec_context.time_base = Fraction(1, fps)
        frames = seconds // step
        for i in range(frames):
            x = int(size[0] * i / frames)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(canvas[:, x : x + size[0]]), format="rgb24")
            frame.pts, frame.time_base = i * step * fps, Fraction(1, fps)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="var", type=Path)
    args = parser.parse_args()
    s = settings.load(data_dir=args.data_dir, backbone={"threads": 1})
    embedder = load_embedder(s)
    size, max_pixels = embedder.input_size, s.backbone.max_pixels

    jpeg = io.BytesIO()
    Image.fromarray(skdata.chelsea()).resize((4000, 3000)).save(jpeg, "JPEG", quality=90)
    one_jpeg = timed(lambda: embedder.embed_bytes([jpeg.getvalue()]), 3)
    print(f"one 12 MP JPEG end to end (1 thread): {one_jpeg * 1000:8.1f} ms")

    cases = {
        "2 min 4K H.264, keyframe every 5 s": encode((3840, 2160), 120),
        "10 h 1080p H.264 (24 samples)": encode((1920, 1080), 36_000, step=600, gop=1),
    }
    for name, data in cases.items():

        def tag(data: bytes = data) -> int:
            clip = videos.open_clip(data, max_pixels=max_pixels, size=size)
            embedder.embed_arrays(clip.frames(size))
            return len(clip.times)

        frames = tag()
        took = timed(tag, 2)
        ratio = took / one_jpeg
        print(f"{name} ({len(data) / 1e6:.1f} MB, {frames} frames): {took * 1000:8.1f} ms ({ratio:.1f} x JPEG)")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MB")


if __name__ == "__main__":
    main()
