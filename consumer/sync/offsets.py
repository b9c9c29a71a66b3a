"""The input positions a job's next success record reports, packed while they wait.

The scheduler keeps, per dirty job, the position of every event applied since the job's last
success (``sourceOffsets`` of the success record). In a backlog every live job waits with a
dozen of them until it is posted; as :class:`~consumer.domain.results.SourceOffset` models
they cost about 360 bytes each (instance, ``__dict__``, fields set, the offset int), a fifth of
a job's memory at the peak. Here each is two machine integers in one array: the number of its
topic partition (kept once for the process) and its offset, 16 bytes. The models are made
again only for the record that reports them.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from typing import ClassVar

from consumer.domain.results import SourceOffset
from consumer.kafka.records import Position


class PendingOffsets:
    """A job's source offsets in the order they were added: a list of ``SourceOffset`` as far
    as the scheduler uses one (``len``, ``extend``, slices
    read and deleted, ``clear``).
    """

    __slots__ = ("_pairs",)

    #: Every topic partition seen, by number: input topics times partitions, a handful. Shared
    #: by all jobs; a number, once given, means the same topic partition for the process.
    _places: ClassVar[list[tuple[str, int]]] = []
    _numbers: ClassVar[dict[tuple[str, int], int]] = {}

    def __init__(self, offsets: Iterable[Position] = ()) -> None:
        #: ``place number, offset`` of each, flat (one array, not one object per offset)
        self._pairs = array("q")
        self.extend(offsets)

    def __len__(self) -> int:
        return len(self._pairs) // 2

    def extend(self, offsets: Iterable[Position]) -> None:
        pairs = self._pairs
        for offset in offsets:
            pairs.append(self._number((offset.topic, offset.partition)))
            pairs.append(offset.offset)

    def __getitem__(self, index: slice) -> list[SourceOffset]:
        start, stop, step = index.indices(len(self))
        pairs, places = self._pairs, self._places
        found = []
        for n in range(start, stop, step):
            topic, partition = places[pairs[2 * n]]
            found.append(SourceOffset(topic=topic, partition=partition, offset=pairs[2 * n + 1]))
        return found

    def __delitem__(self, index: slice) -> None:
        start, stop, step = index.indices(len(self))
        if step != 1:
            raise ValueError("only contiguous slices of offsets are deleted")
        del self._pairs[2 * start : 2 * max(stop, start)]

    def clear(self) -> None:
        del self._pairs[:]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PendingOffsets):
            return self[:] == other[:]
        if isinstance(other, list):
            return self[:] == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"PendingOffsets({self[:]!r})"

    @classmethod
    def _number(cls, place: tuple[str, int]) -> int:
        number = cls._numbers.get(place)
        if number is None:
            number = cls._numbers[place] = len(cls._places)
            cls._places.append(place)
        return number
