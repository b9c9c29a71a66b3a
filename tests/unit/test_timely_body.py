"""The basicSync body that refuses to leave after its send deadline, without a socket."""

from __future__ import annotations

import time
from typing import Any

import pytest

from consumer.gateway.timely_body import SendDeadlinePassed, TimelyBody


class RecordingWriter:
    """Collects what aiohttp's stream writer would hand to the transport."""

    def __init__(self) -> None:
        self.written = b""

    async def write(self, chunk: Any, **_: Any) -> None:
        self.written += bytes(chunk)


BODY = b'{"metadata": {"clientJobId": "job-1"}}'


class TestTimelyBody:
    async def test_before_its_deadline_it_is_handed_over_whole(self) -> None:
        body, writer = TimelyBody(BODY, time.monotonic() + 60), RecordingWriter()
        await body.write_with_length(writer, None)  # type: ignore[arg-type]
        assert writer.written == BODY
        assert (body.handed_over, body.refused) == (True, False)
        assert body.content_type == "application/json"

    @pytest.mark.parametrize("length", [None, 5])
    async def test_past_its_deadline_nothing_leaves(self, length: int | None) -> None:
        body, writer = TimelyBody(BODY, time.monotonic() - 0.001), RecordingWriter()
        with pytest.raises(SendDeadlinePassed):
            await body.write_with_length(writer, length)  # type: ignore[arg-type]
        with pytest.raises(SendDeadlinePassed):
            await body.write(writer)  # type: ignore[arg-type]
        assert writer.written == b""
        assert (body.handed_over, body.refused) == (False, True)

    async def test_without_a_deadline_it_always_leaves(self) -> None:
        body, writer = TimelyBody(BODY, None), RecordingWriter()
        await body.write(writer)  # type: ignore[arg-type]
        assert writer.written == BODY

    async def test_once_sealed_it_never_leaves(self) -> None:
        """The outcome was decided (not in doubt: nothing was sent), so a body writer that
        aiohttp runs later must not send it after all."""
        body, writer = TimelyBody(BODY, time.monotonic() + 60), RecordingWriter()
        body.seal()
        with pytest.raises(SendDeadlinePassed):
            await body.write_with_length(writer, None)  # type: ignore[arg-type]
        assert writer.written == b""
        assert not body.handed_over
