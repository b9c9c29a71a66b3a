"""When an open transaction holds an input partition, and when that ends (pure, no Kafka)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from consumer.kafka.transaction_holds import Ends, HoldReport, TransactionHolds

P = ("jobs", 3)
Q = ("jobs", 4)


class TestTransactionHolds:
    def test_a_hold_is_reported_once_past_the_warning_age_and_its_end_once(self) -> None:
        holds = TransactionHolds(warn_after_s=60)
        assert holds.observe({P: Ends(100, 250)}, now=0) == []
        assert holds.observe({P: Ends(100, 300)}, now=59.9) == []
        assert holds.observe({P: Ends(100, 320)}, now=60) == [HoldReport(P, 100, 220, 60, False)]
        assert holds.observe({P: Ends(100, 400)}, now=90) == []  # said once
        assert holds.held_for(now=95) == {P: 95}
        assert holds.observe({P: Ends(401, 401)}, now=100) == [HoldReport(P, 100, 300, 100, True)]
        assert holds.held_for(now=101) == {}

    def test_a_last_stable_offset_that_moves_is_no_hold(self) -> None:
        """A producer committing now and then (Kafka Streams every 100 ms) keeps records past
        the last stable offset all the time, but it moves: nothing to say."""
        holds = TransactionHolds(warn_after_s=60)
        for second in range(0, 600, 30):
            assert holds.observe({P: Ends(second * 10, second * 10 + 50)}, now=second) == []

    def test_a_hold_that_ends_before_the_warning_says_nothing(self) -> None:
        holds = TransactionHolds(warn_after_s=60)
        holds.observe({P: Ends(100, 150)}, now=0)
        assert holds.observe({P: Ends(150, 150)}, now=30) == []
        assert holds.held_for(now=31) == {}

    def test_a_new_hold_at_a_moved_offset_starts_its_own_clock(self) -> None:
        """The first transaction ends, a second one opens at once further on: two holds, the
        second reported only once it is old enough itself."""
        holds = TransactionHolds(warn_after_s=60)
        holds.observe({P: Ends(100, 150)}, now=0)
        [first] = holds.observe({P: Ends(100, 150)}, now=61)
        [ended] = holds.observe({P: Ends(140, 170)}, now=70)
        assert (first.ended, ended.ended, ended.last_stable) == (False, True, 100)
        assert holds.observe({P: Ends(140, 180)}, now=129) == []
        [second] = holds.observe({P: Ends(140, 190)}, now=130)
        assert (second.last_stable, second.records_waiting, second.held_s) == (140, 50, 60)

    def test_a_partition_not_read_now_keeps_its_hold_and_a_revoked_one_drops_it(self) -> None:
        """A paused partition is absent from a reading (its figures are as old as the pause):
        its hold is neither ended nor restarted. A revoked one is another member's."""
        holds = TransactionHolds(warn_after_s=60)
        holds.observe({P: Ends(100, 150), Q: Ends(7, 9)}, now=0)
        assert holds.observe({}, now=30) == []
        assert holds.observe({P: Ends(100, 150)}, now=60)[0].partition == P
        holds.forget({4})
        assert set(holds.held_for(now=61)) == {P}
        holds.forget({3})
        assert holds.held_for(now=62) == {}
        holds.observe({P: Ends(150, 160), Q: Ends(7, 9)}, now=70)
        holds.keep({4})  # an assignment without partition 3: lost without a revoke
        assert set(holds.held_for(now=71)) == {Q}
        assert holds.observe({P: Ends(150, 150)}, now=63) == []  # forgotten: no end to tell

    @given(
        st.lists(
            st.tuples(st.integers(0, 5), st.integers(0, 5), st.floats(0, 100)),
            max_size=40,
        )
    )
    def test_every_report_of_an_end_follows_a_warning_of_the_same_hold(
        self, readings: list[tuple[int, int, float]]
    ) -> None:
        """Whatever the readings, ends come after warnings one for one, and nothing held
        less than the warning age is reported."""
        holds = TransactionHolds(warn_after_s=10)
        now, open_warning = 0.0, None
        for lso, extra, step in readings:
            now += step
            for report in holds.observe({P: Ends(lso, lso + extra)}, now):
                assert report.held_s >= 10
                if report.ended:
                    assert open_warning == report.last_stable
                    open_warning = None
                else:
                    assert open_warning is None
                    open_warning = report.last_stable
