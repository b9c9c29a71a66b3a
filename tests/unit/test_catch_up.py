"""Catch-up mode (consumer.sync.catch_up): entered at once, left once settled, kept if unknown."""

from __future__ import annotations

from consumer.sync.catch_up import CatchUpMode


class TestCatchUpMode:
    def test_more_than_the_lag_behind_is_catching_up_at_once(self) -> None:
        mode = CatchUpMode(lag=100)
        assert not mode.observe(100, 0.0)
        assert mode.observe(101, 0.1)

    def test_caught_up_only_after_staying_within_the_lag_for_the_settle_time(self) -> None:
        mode = CatchUpMode(lag=100, settle_s=1.0)
        mode.observe(5_000, 0.0)
        assert mode.observe(50, 1.0)
        assert mode.observe(0, 1.5)
        assert not mode.observe(0, 2.0)

    def test_a_dip_within_the_lag_does_not_end_the_catch_up(self) -> None:
        """A reading within the lag between two beyond it starts the settle time over."""
        mode = CatchUpMode(lag=100, settle_s=1.0)
        mode.observe(5_000, 0.0)
        assert mode.observe(10, 0.5)
        assert mode.observe(4_000, 1.0)
        assert mode.observe(10, 1.2)
        assert mode.observe(10, 2.1)
        assert not mode.observe(10, 2.2)

    def test_unknown_keeps_the_mode(self) -> None:
        """Right after an assignment, how far behind a partition is is not known yet."""
        mode = CatchUpMode(lag=100)
        assert not mode.observe(None, 0.0)
        mode.observe(5_000, 0.1)
        for moment in (1.0, 5.0, 60.0):
            assert mode.observe(None, moment)
