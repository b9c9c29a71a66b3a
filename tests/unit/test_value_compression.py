"""Changelog values compressed alone (consumer.domain.value_compression): what a restore keeps
compressed and a reader decompresses, and the damaged frames it must refuse, not crash on."""

from __future__ import annotations

import io
import tracemalloc

import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from consumer.domain import value_compression
from consumer.domain.value_compression import (
    ZSTD_MAGIC,
    compressed,
    decompressed,
    is_compressed,
)

STATE_LIKE = b'{"layout":{"version":2},"client_job_id":"j-1","steps":[' + b'{"a":null},' * 200


class TestRoundTrip:
    @given(st.binary().map(lambda tail: b"{" + tail))
    def test_any_value_comes_back_exactly(self, value: bytes) -> None:
        """Every JSON value (it starts with ``{``) is compressed into a frame and back."""
        packed = compressed(value)
        assert is_compressed(packed)
        assert not is_compressed(value)
        assert decompressed(packed) == value

    def test_a_value_not_compressed_is_read_as_it_is(self) -> None:
        """Values written before compression, or with it turned off, are read unchanged."""
        assert decompressed(STATE_LIKE) is STATE_LIKE
        assert decompressed(b"") == b""

    def test_a_job_state_takes_a_fraction_of_its_bytes(self) -> None:
        assert len(compressed(STATE_LIKE)) * 10 < len(STATE_LIKE)

    def test_a_frame_holds_only_its_own_bytes_in_memory(self) -> None:
        """The frame kept (the store keeps those of ended jobs) is allocated at its size, not
        at the compressor's worst case for the input, about the input's size. Only what
        ``compressed`` allocated and still holds counts: another thread of the test process
        may allocate meanwhile (it failed so once, under xdist)."""
        tracemalloc.start()
        try:
            frame = compressed(STATE_LIKE)
            snapshot = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        mine = snapshot.filter_traces([tracemalloc.Filter(True, value_compression.__file__)])
        held = sum(stat.size for stat in mine.statistics("filename"))
        assert len(frame) * 10 < len(STATE_LIKE)
        assert held < len(frame) + 256, (held, len(frame), len(STATE_LIKE))


class TestDamagedFrames:
    """A changelog value that starts like a frame but is not a whole one is a ``ValueError``,
    which every reader of values treats as an unreadable value (skipped, logged)."""

    @pytest.mark.parametrize(
        "damaged",
        [
            ZSTD_MAGIC,
            ZSTD_MAGIC + b"\x00\x00",
            compressed(STATE_LIKE)[:12],
            compressed(STATE_LIKE)[:-4] + b"\xff\xff\xff\xff",
        ],
        ids=["magic-only", "header-cut", "body-cut", "checksum-or-tail-wrong"],
    )
    def test_is_refused(self, damaged: bytes) -> None:
        with pytest.raises(ValueError, match="zstd frame"):
            decompressed(damaged)

    def test_a_frame_larger_than_allowed_is_refused_before_it_is_decompressed(self) -> None:
        with pytest.raises(ValueError, match="more than the 100 allowed"):
            decompressed(compressed(STATE_LIKE), max_bytes=100)

    def test_a_frame_that_does_not_say_its_size_is_refused(self) -> None:
        """A streamed frame (no content size) is not one this writes: its size could not be
        checked before decompressing it."""
        sink = io.BytesIO()
        with zstandard.ZstdCompressor().stream_writer(sink, closefd=False) as writer:
            writer.write(STATE_LIKE)
        assert is_compressed(sink.getvalue())
        with pytest.raises(ValueError, match="without its content size"):
            decompressed(sink.getvalue())
