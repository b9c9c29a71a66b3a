"""When the next checkpoint is due (consumer.pipeline.next_checkpoint_at): the live interval,
the catch-up interval, and the drain after a catch-up, which gets an interval of its own."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from consumer.pipeline import next_checkpoint_at

LIVE, CATCH_UP = 1.0, 30.0


def due(last: float, *, catching_up: bool = False, drain_started: float | None = None) -> float:
    return next_checkpoint_at(
        last,
        catching_up=catching_up,
        drain_started=drain_started,
        live_interval_s=LIVE,
        catch_up_interval_s=CATCH_UP,
    )


class TestNextCheckpointAt:
    def test_live_and_catching_up_count_from_the_last_checkpoint(self) -> None:
        assert due(100.0) == 101.0
        assert due(100.0, catching_up=True) == 130.0

    def test_a_drain_that_starts_just_before_a_tick_gets_a_whole_interval(self) -> None:
        """The catch-up ended 28 s after the last checkpoint: not a checkpoint 2 s into the
        drain, which would write every job still waiting for its request."""
        assert due(100.0, drain_started=128.0) == 158.0

    def test_a_drain_is_put_off_two_intervals_after_the_last_checkpoint_at_most(self) -> None:
        """A catch-up that ends, starts and ends again does not defer the checkpoint for good."""
        assert due(100.0, drain_started=145.0) == 160.0
        assert due(100.0, drain_started=400.0) == 160.0

    def test_a_drain_that_started_before_the_last_checkpoint_counts_from_it(self) -> None:
        assert due(100.0, drain_started=90.0) == 130.0

    @given(
        last=st.floats(0, 1e6),
        drain=st.none() | st.floats(0, 2e6),
        catching_up=st.booleans(),
    )
    def test_always_after_the_last_and_within_two_catch_up_intervals(
        self, last: float, drain: float | None, catching_up: bool
    ) -> None:
        at = due(last, catching_up=catching_up, drain_started=drain)
        assert last + LIVE <= at <= last + 2 * CATCH_UP
        if drain is None and not catching_up:
            assert at == last + LIVE
