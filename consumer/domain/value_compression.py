"""A changelog value compressed on its own, so that a restore need not decompress it.

Kafka compresses record *batches*: a consumer decompresses every batch it fetches, whatever it
then keeps. A restore reads about two records per job (the intent and the settled state) and
keeps the last, and most jobs it keeps are settled (``consumer.domain.settled``): held as bytes,
never read unless the job gets another event. Decompressing their batches was most of a
restore's CPU (60 % of it, profiled on a 20k-job changelog). A value compressed alone (a zstd
frame) travels in an uncompressed batch, so a restore copies it as it came and a settled job is
held compressed (about a fifth of its JSON); it is decompressed only when its state is read.

zstd level 1: on typical 11 kB job states it compresses as well as level 3 (4.5x) and, with
a reused context, costs about 22 µs to compress and 10 µs to decompress, measured side by side
(python-zstandard; cramjam, which aiokafka uses, creates a context per call and took 30 and
18 µs). A value that is not a zstd frame (every value written before this, or with
``kafka.compress_changelog_values`` false) is read as it is: JSON never starts with the frame's
magic number.
"""

from __future__ import annotations

import zstandard

#: The first four bytes of every zstd frame (RFC 8878 §3.1.1).
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

_LEVEL = 1
#: No Kafka record is larger (``message.max.bytes`` is a 32-bit size): a frame that says it is
#: was damaged, and is refused before its buffer is allocated.
_LARGEST_RECORD = 2**31 - 1
# Contexts are reused (most of zstd's cost on small inputs is setting one up). The event loop
# is the only thread that encodes or decodes a state.
_compressor = zstandard.ZstdCompressor(level=_LEVEL)
_decompressor = zstandard.ZstdDecompressor()


def compressed(value: bytes) -> bytes:
    """``value`` as one zstd frame (with its size, which :func:`decompressed` checks).

    Copied to its own size: python-zstandard returns the frame in a buffer of zstd's worst
    case for the input (about the input's size), so an 11 kB state compressed to 2.6 kB held
    11 kB for as long as the frame was kept (the store keeps the frames of ended jobs). The
    copy costs about half a microsecond, against the 22 µs the compression takes.
    """
    return bytes(memoryview(_compressor.compress(value)))


def is_compressed(value: bytes) -> bool:
    return value.startswith(ZSTD_MAGIC)


def decompressed(value: bytes, max_bytes: int = _LARGEST_RECORD) -> bytes:
    """The value :func:`compressed` was given, or ``value`` itself when it is not compressed.

    Raises ``ValueError`` when the frame is damaged, or would decompress to more than
    ``max_bytes`` (the frame says its size first, so nothing is decompressed then).
    """
    if not value.startswith(ZSTD_MAGIC):
        return value
    try:
        size = zstandard.frame_content_size(value)
    except zstandard.ZstdError as exc:
        raise ValueError(f"a damaged zstd frame: {exc}") from exc
    if size < 0:
        raise ValueError("a zstd frame without its content size (not a value this writes)")
    if size > max_bytes:
        raise ValueError(f"a zstd frame of {size} bytes, more than the {max_bytes} allowed")
    try:
        return _decompressor.decompress(value)
    except zstandard.ZstdError as exc:
        raise ValueError(f"a damaged zstd frame: {exc}") from exc
