"""What a live checkpoint may leave to the intents: the offsets and records it commits then.

Under live traffic a job changes, is posted a debounce later, and changes again: a checkpoint
every second would write each changed job's state, and the request's intent writes it again
a moment later, so most changelog writes (and their encoding and compression, the largest
cost of a live request) are ones the next intent makes stale. A checkpoint may instead leave
a job that is about to be posted to its intent, if it does not commit the job's events as
consumed: the input offsets it commits stop below the first event of each job it left
(:func:`capped_offsets`). A crash then replays those events onto the older state, exactly as
it would replay any events after the offsets.

The states the checkpoint does write may hold events above those offsets; they are written
ahead of their offsets, as intents are, so each must replay its events as duplicates (the
caller checks ``replays_as_duplicates``). The failure records of events above the offsets
wait too (:func:`results_now`): a replay would report those events again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from aiokafka import TopicPartition

#: per input topic partition, the offset of a job's first event not yet in a written state
Firsts = Mapping[TopicPartition, int]


def offset_caps(left: Iterable[Firsts]) -> dict[TopicPartition, int]:
    """The lowest first unwritten event of the jobs ``left``, per input topic partition."""
    caps: dict[TopicPartition, int] = {}
    for firsts in left:
        for tp, offset in firsts.items():
            if offset < caps.get(tp, offset + 1):
                caps[tp] = offset
    return caps


def capped_offsets(
    offsets: Mapping[TopicPartition, int], caps: Mapping[TopicPartition, int]
) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    """``offsets`` split into what may be committed now (each at most its cap) and what
    must wait for a later commit (the ones a cap held back)."""
    now: dict[TopicPartition, int] = {}
    later: dict[TopicPartition, int] = {}
    for tp, offset in offsets.items():
        cap = caps.get(tp)
        if cap is not None and cap < offset:
            now[tp] = cap
            later[tp] = offset
        else:
            now[tp] = offset
    return now, later


def results_now(
    sources: Sequence[tuple[TopicPartition, int] | None], caps: Mapping[TopicPartition, int]
) -> int:
    """How many of the staged results (in staging order) are committed now: those before the
    first that reports an event at or above its partition's cap. That one and every later
    one wait, so the records keep the order they were staged in."""
    for index, source in enumerate(sources):
        if source is not None:
            tp, offset = source
            cap = caps.get(tp)
            if cap is not None and offset >= cap:
                return index
    return len(sources)
