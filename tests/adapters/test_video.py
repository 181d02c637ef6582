"""Video sampling (adapters/formats/video.py): keyframes only, bounded by count, every codec the wheel has,
and hostile files (huge frames, ten hours, zero length, audio only, mutated bytes) as typed errors."""

from __future__ import annotations

import contextlib
import io
from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image
from smarttags.adapters.formats import video
from smarttags.errors import CorruptImage, ImageError, ImageTooLarge, UnsupportedImage

from tests import images

RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)
MAX = 100_000_000


def encode(
    colours: list[tuple[int, int, int]],
    *,
    fps: int = 6,
    gop: int = 12,
    codec: str = "libx264",
    fmt: str = "mp4",
    size: tuple[int, int] = (320, 240),
) -> bytes:
    """One second of each colour at ``fps``, a keyframe every ``gop`` frames."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        for colour in colours:
            for _ in range(fps):
                for packet in stream.encode(av.VideoFrame.from_image(Image.new("RGB", size, colour))):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buffer.getvalue()


def ten_hours() -> bytes:
    """61 frames ten minutes apart: a ten-hour video of a few kilobytes."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="matroska") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height = 64, 48
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1)
        for i in range(61):
            frame = av.VideoFrame.from_image(Image.new("RGB", (64, 48), RED if i < 30 else BLUE))
            frame.pts, frame.time_base = i * 600, Fraction(1, 1)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buffer.getvalue()


def colour_of(frame: video.Frame) -> tuple[int, int, int]:
    return tuple(int(c) for c in np.asarray(frame.image)[frame.image.height // 2, frame.image.width // 2])


def near(pixel, expected, tol=10) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(pixel, expected, strict=True))


def test_keyframes_are_sampled_every_few_seconds_and_scaled_by_ffmpeg():
    data = encode([RED] * 4 + [BLUE] * 4 + [GREEN] * 4)  # 12 s, a keyframe every 2 s
    result = video.sample(data, size=224, max_pixels=MAX, content_type="video/mp4", every=1.0)
    assert (result.codec, result.width, result.height, result.duration) == ("h264", 320, 240, 12.0)
    # Asked for a sample every second, but only keyframes are decoded: one per GOP, each kept once.
    assert [f.seconds for f in result.frames] == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    assert [f.image.size for f in result.frames] == [(224, 168)] * 6
    colours = [colour_of(f) for f in result.frames]
    assert near(colours[0], RED) and near(colours[2], BLUE) and near(colours[5], GREEN)


def test_at_most_max_frames_spread_over_the_whole_video():
    data = encode([RED] * 6 + [BLUE] * 6, gop=6)  # a keyframe every second
    result = video.sample(data, size=64, max_pixels=MAX, every=1.0, max_frames=3)
    assert [f.seconds for f in result.frames] == [0.0, 4.0, 8.0]
    assert video.sample_times(60.0, 5.0, 24) == [i * 5.0 for i in range(12)]
    assert len(video.sample_times(36_000.0, 5.0, 24)) == 24


@pytest.mark.parametrize(
    ("codec", "fmt", "name"),
    [
        ("libvpx-vp9", "webm", "vp9"),
        ("libsvtav1", "mp4", "av1"),
        ("libx265", "matroska", "hevc"),
        ("mpeg4", "avi", "mpeg4"),
    ],
)
def test_every_codec_of_the_wheel_decodes(codec, fmt, name):
    data = encode([RED] * 2 + [BLUE] * 2, codec=codec, fmt=fmt, size=(160, 120))
    result = video.sample(data, size=64, max_pixels=MAX, every=2.0)
    assert result.codec == name
    assert near(colour_of(result.frames[0]), RED, tol=16) and near(colour_of(result.frames[-1]), BLUE, tol=16)


def test_ten_hours_cost_a_bounded_number_of_decodes():
    result = video.sample(ten_hours(), size=64, max_pixels=MAX)
    assert result.duration >= 36_000
    assert 1 < len(result.frames) <= video.MAX_FRAMES
    assert near(colour_of(result.frames[0]), RED, tol=16) and near(colour_of(result.frames[-1]), BLUE, tol=16)


def test_frames_over_max_pixels_are_refused_before_decoding():
    with pytest.raises(ImageTooLarge) as err:
        video.sample(encode([RED]), size=64, max_pixels=320 * 240 - 1)
    assert "320x240" in err.value.reason


def test_zero_length_empty_and_audio_only_files_are_typed_errors():
    with pytest.raises(CorruptImage):
        video.sample(b"", size=64, max_pixels=MAX)
    with pytest.raises(CorruptImage):
        video.sample(b"\x1aE\xdf\xa3" + bytes(64), size=64, max_pixels=MAX, content_type="video/x-matroska")
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=44100)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 44100, 0
        for packet in [*stream.encode(frame), *stream.encode()]:
            out.mux(packet)
    with pytest.raises(UnsupportedImage) as err:
        video.sample(buffer.getvalue(), size=64, max_pixels=MAX, content_type="video/mp4")
    assert "no video stream" in err.value.reason


def test_truncated_and_mutated_videos_never_crash():
    data = encode([RED, BLUE, GREEN], size=(64, 48), gop=3)
    with pytest.raises(ImageError):
        video.sample(data[:200], size=32, max_pixels=MAX)
    rng = np.random.default_rng(0)
    for i in range(80):
        mutated = bytearray(data)
        if i % 2:
            mutated = mutated[: int(rng.integers(1, len(mutated)))]
        else:
            for _ in range(int(rng.integers(1, 12))):
                mutated[int(rng.integers(0, len(mutated)))] = int(rng.integers(0, 256))
        with contextlib.suppress(ImageError):
            video.sample(bytes(mutated), size=32, max_pixels=MAX)


# --- adapters/videos.py: the tagger's video port ---


def test_the_video_port_sniffs_samples_letterboxes_and_keeps_the_poster_as_the_thumbnail():
    from smarttags.adapters import imaging, thumbnails, videos

    from tests.fakes import FakeStore

    data = encode([RED] * 6 + [BLUE] * 6, gop=12, fmt="matroska")  # a keyframe every 2 s, a sample every 5 s
    port = videos.Videos(FakeStore("own"), "_smarttags/thumbnails/")
    assert port.can_sample and port.is_video(data) and not port.is_video(b"\x89PNG\r\n\x1a\n" + bytes(32))
    clip = port.open(data, max_pixels=MAX, size=32)
    facts = clip.facts
    assert (facts.media, facts.duration, facts.decoder, facts.format) == ("video", 12.0, "pyav", "H264")
    assert list(clip.times) == [0.0, 4.0, 10.0] and clip.duration == 12.0  # the keyframes at or before 0, 5, 10
    pixels = clip.frames(32)
    assert [p.shape for p in pixels] == [(32, 32, 3)] * 3
    assert near(tuple(int(c) for c in pixels[2][16, 16]), BLUE, tol=16)
    assert tuple(int(c) for c in pixels[0][1, 16]) == imaging.GREY  # 4:3 letterboxed like a picture
    port.keep_poster(clip, "abc", '"etag-1"')
    stored, _ = port._posters.get_bytes(thumbnails.thumbnail_key("_smarttags/thumbnails/", "abc", '"etag-1"'))
    poster = Image.open(io.BytesIO(stored))
    assert poster.size == (thumbnails.SIZE, thumbnails.SIZE) and near(poster.getpixel((128, 128)), RED, tol=16)
    # Training's folder sync reads a video's facts (one keyframe) and a picture's as before.
    assert videos.read_facts(data, max_pixels=MAX).media == "video"
    assert videos.read_facts(images.picture("red"), max_pixels=MAX).media == "image"
    with pytest.raises(ImageTooLarge):
        videos.read_facts(data, max_pixels=1000)


class Reader(io.RawIOBase):
    """A seekable reader over bytes, not bytes: what ``adapters.s3.RangedObject`` is to the decoders."""

    def __init__(self, data: bytes) -> None:
        self._data, self._at = data, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._at = {io.SEEK_SET: 0, io.SEEK_CUR: self._at, io.SEEK_END: len(self._data)}[whence] + offset
        return self._at

    def tell(self) -> int:
        return self._at

    def readinto(self, buffer) -> int:
        chunk = self._data[self._at : self._at + len(buffer)]
        buffer[: len(chunk)] = chunk
        self._at += len(chunk)
        return len(chunk)


def test_a_video_behind_a_ranged_reader_is_sampled_like_its_bytes():
    from smarttags.adapters import videos

    data = encode([RED] * 6 + [BLUE] * 6, gop=12, fmt="matroska")
    reader = Reader(data)
    port = videos.Videos(None, "_smarttags/thumbnails/")
    assert port.is_video(reader)
    clip = port.open(reader, max_pixels=MAX, size=32)
    whole = port.open(data, max_pixels=MAX, size=32)
    assert clip.times == whole.times and clip.facts == whole.facts
    assert all(np.array_equal(a, b) for a, b in zip(clip.frames(32), whole.frames(32), strict=True))
