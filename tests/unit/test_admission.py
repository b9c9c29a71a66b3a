"""The intent stage's adaptive bound (consumer.sync.admission.IntentAdmission)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.sync.admission import IntentAdmission


class TestIntentAdmission:
    async def test_admits_up_to_the_limit_and_waits_for_a_release(self) -> None:
        gate = IntentAdmission(2, 8)
        await gate.acquire()
        await gate.acquire()
        third = asyncio.create_task(gate.acquire())
        await asyncio.sleep(0.01)
        assert not third.done()
        gate.release()
        await asyncio.wait_for(third, 1.0)
        assert gate.held == 2

    async def test_a_free_slot_lets_one_more_in_at_once(self) -> None:
        gate = IntentAdmission(1, 8)
        await gate.acquire()
        waiting = asyncio.create_task(gate.acquire())
        await asyncio.sleep(0.01)
        assert not waiting.done()
        gate.sent_at_once()
        await asyncio.wait_for(waiting, 1.0)
        assert (gate.limit, gate.held) == (2, 2)

    async def test_a_busy_slot_admits_none_until_below_the_halved_limit(self) -> None:
        gate = IntentAdmission(2, 64)
        for _ in range(14):
            gate.sent_at_once()
        for _ in range(16):
            await gate.acquire()
        gate.slot_busy()
        assert gate.limit == 8
        waiting = asyncio.create_task(gate.acquire())
        for _ in range(8):
            gate.release()
        await asyncio.sleep(0.01)
        assert not waiting.done(), "8 held of 8: still full"
        gate.release()
        await asyncio.wait_for(waiting, 1.0)

    def test_rejects_a_floor_above_the_ceiling(self) -> None:
        with pytest.raises(ValueError, match="floor"):
            IntentAdmission(4, 2)

    @given(st.integers(1, 64), st.integers(0, 16), st.lists(st.booleans(), max_size=300))
    def test_the_limit_stays_between_floor_and_ceiling(
        self, floor: int, extra: int, busy: list[bool]
    ) -> None:
        gate = IntentAdmission(floor, floor + extra)
        for slot_busy in busy:
            before = gate.limit
            if slot_busy:
                gate.slot_busy()
                assert gate.limit == max(floor, before // 2)
            else:
                gate.sent_at_once()
                assert gate.limit == min(floor + extra, before + 1)
            assert floor <= gate.limit <= floor + extra
