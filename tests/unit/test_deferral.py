"""What a live checkpoint commits when it leaves jobs to their intents (consumer.state.deferral)."""

from __future__ import annotations

from aiokafka import TopicPartition
from hypothesis import given
from hypothesis import strategies as st

from consumer.state.deferral import capped_offsets, offset_caps, results_now

A, B = TopicPartition("in", 0), TopicPartition("other", 0)


def test_the_cap_is_the_lowest_first_event_of_the_jobs_left_per_topic_partition() -> None:
    assert offset_caps([{A: 7}, {A: 4, B: 9}, {B: 12}]) == {A: 4, B: 9}
    assert offset_caps([]) == {}


def test_offsets_above_their_cap_are_committed_at_it_and_kept_for_later() -> None:
    now, later = capped_offsets({A: 10, B: 3}, {A: 4, B: 9})
    assert now == {A: 4, B: 3}
    assert later == {A: 10}


def test_results_wait_from_the_first_that_reports_an_event_at_or_above_its_cap() -> None:
    caps = {A: 4}
    assert results_now([(A, 2), None, (A, 4), (A, 1), None], caps) == 2
    assert results_now([(B, 99), None, (A, 3)], caps) == 3
    assert results_now([], caps) == 0


firsts = st.dictionaries(st.sampled_from([A, B]), st.integers(0, 50), min_size=1)


@given(
    offsets=st.dictionaries(st.sampled_from([A, B]), st.integers(0, 60)),
    left=st.lists(firsts, max_size=5),
)
def test_no_offset_committed_passes_the_first_event_of_a_job_left(
    offsets: dict[TopicPartition, int], left: list[dict[TopicPartition, int]]
) -> None:
    """And nothing read is forgotten: what is not committed now is kept, whole."""
    now, later = capped_offsets(offsets, offset_caps(left))
    for job in left:
        for tp, first in job.items():
            assert now.get(tp, first) <= first
    assert set(now) == set(offsets)
    assert all(now[tp] <= offset for tp, offset in offsets.items())
    assert later == {tp: o for tp, o in offsets.items() if now[tp] < o}
