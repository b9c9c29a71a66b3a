"""The changelog's continuity with the group's committed offsets.

The committed input offsets of partition ``p`` say which events the states in changelog
partition ``p`` already hold: the checkpoint writes both in one transaction. But they live in
two places an operator can change apart. A changelog deleted and created again, or
``BASICSYNC_TOPICS__STATE`` pointed at another topic, leaves offsets that claim states nobody
holds any more: the restore finds none, each job's next event starts it afresh, and its partial
document is posted over the complete one in WorkfloPlus.

So every offset the checkpoint commits carries, as its Kafka offset metadata, the changelog's
name and a floor of the changelog partition's end offset: the end before the transaction,
which the transaction can only raise. A topic's end offset never decreases in its life, and
truncation below a committed transaction is data loss; so a take that finds the end below the
floor (or offsets committed against another changelog) knows the state is not the one the
offsets were committed with, and the member stops (``ChangelogReplaced``, exit 2) before it
restores, reads or posts anything.

Records deleted from the changelog's head (``kafka-delete-records.sh``, the Admin API's
``deleteRecords``) leave the end where it was, but move the partition's start offset: the
states whose last record lay below it are gone. On a ``cleanup.policy=compact`` topic nothing
else moves the start (the log cleaner keeps each cleaned segment's base offset, even when it
empties it: KAFKA-7556), so the metadata also carries the start the committing member found
at its take (``start_at_most``), and a take that finds the start above it stops the same way.
A start read once per take is enough: a member that keeps committing after the deletion still
writes the start it took with, so the next take finds the deletion.

Offsets committed without this metadata (by an older version, or reset by
``kafka-consumer-groups.sh``) are trusted as before: resetting the offsets is how an operator
answers the stop.

Two groups given one changelog (``BASICSYNC_TOPICS__STATE`` copied between deployments) keep
their offsets apart but write each other's partitions: each would restore the other's jobs and
post them as its own. So every record the checkpoint writes to the changelog names its group
(header :data:`WRITER_HEADER`), and a restore that meets a record of another group stops the
member (``ChangelogShared``, exit 2) before it keeps anything of the partition. Records naming
no group (written before this header) are trusted; a group renamed on purpose takes its old
name's records with :class:`ChangelogOwner`'s ``adopted`` (``BASICSYNC_STORE__ADOPT_CHANGELOG_OF``).

A changelog replaced while a member runs is found at the member's next write to it: the
broker acknowledges the first record below the floor its producer counted
(``PartitionProducer.count_from``). That transaction is aborted, and the offsets the member
committed last are committed again marked ``replaced``: the end alone would not tell the next
take, since the aborted records raised it, and later writes could raise it past the floor.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from consumer.config import Settings

#: The metadata's version key: another program's metadata is not mistaken for ours.
_VERSION = "basicsync"


#: The header naming the consumer group that wrote a changelog record.
WRITER_HEADER = "basicsync-group"


@dataclass(frozen=True, slots=True)
class ChangelogOwner:
    """Whose changelog records a restore takes: the member's group's, and those of the groups
    it took over (renamed groups, stopped for good)."""

    group: str
    adopted: frozenset[str] = frozenset()

    def header(self) -> tuple[str, bytes]:
        """The header the checkpoint puts on every changelog record it writes."""
        return (WRITER_HEADER, self.group.encode())

    def accepts(self, writer: bytes) -> bool:
        """Is a record whose :data:`WRITER_HEADER` is ``writer`` this group's to restore?"""
        return writer == self.group.encode() or writer.decode(errors="replace") in self.adopted


def changelog_owner(settings: Settings) -> ChangelogOwner:
    """The member's group, and the groups ``BASICSYNC_STORE__ADOPT_CHANGELOG_OF`` names."""
    return ChangelogOwner(settings.kafka.group_id, frozenset(settings.store.adopt_changelog_of))


class ChangelogBounds(NamedTuple):
    """A changelog partition's start and end offsets, as a take reads them."""

    start: int
    end: int


@dataclass(frozen=True, slots=True)
class ChangelogFloor:
    """What a committed offset says of the changelog it was committed with."""

    changelog: str
    #: the changelog partition's end offset was at least this when the offset was committed
    end_at_least: int
    #: a member found the changelog replaced under it (its write landed below the floor)
    replaced: bool = False
    #: the changelog partition's start offset the committing member found at its take
    start_at_most: int | None = None

    def metadata(self) -> str:
        """The offset metadata (Kafka allows 4,096 bytes by default; a topic name is at most
        249 characters)."""
        fields: dict[str, object] = {
            _VERSION: 1,
            "changelog": self.changelog,
            "end_at_least": self.end_at_least,
        }
        if self.replaced:
            fields["replaced"] = True
        if self.start_at_most is not None:
            fields["start_at_most"] = self.start_at_most
        return json.dumps(fields, separators=(",", ":"))


def read_floor(metadata: str | None) -> ChangelogFloor | None:
    """The floor a committed offset's metadata carries; None for no metadata or another's."""
    if not metadata or not metadata.startswith("{"):
        return None
    try:
        fields = json.loads(metadata)
    except ValueError:
        return None
    if not isinstance(fields, dict) or fields.get(_VERSION) != 1:
        return None
    changelog, end = fields.get("changelog"), fields.get("end_at_least")
    if not isinstance(changelog, str) or not isinstance(end, int) or isinstance(end, bool):
        return None
    start = fields.get("start_at_most")
    if not isinstance(start, int) or isinstance(start, bool):
        start = None
    return ChangelogFloor(changelog, end, fields.get("replaced") is True, start)


def broken_continuity(
    changelog: str, partition: int, metadata: Iterable[str | None], bounds: ChangelogBounds
) -> str | None:
    """Why changelog partition ``partition``, now holding the offsets ``bounds``, is not the
    one the group's offsets of that partition were committed with (``metadata``: theirs, one
    per input topic); None when nothing says so."""
    floors = [floor for text in metadata if (floor := read_floor(text)) is not None]
    others = sorted({floor.changelog for floor in floors} - {changelog})
    if others:
        return (
            f"the group's offsets of partition {partition} were committed with the changelog "
            f"{others[0]}, not {changelog}: the states they account for are not in {changelog}"
        )
    if any(floor.replaced for floor in floors):
        return replaced_while_written(changelog, partition)
    highest = max((floor.end_at_least for floor in floors), default=0)
    start, end = bounds
    if end < highest:
        return (
            f"changelog {changelog} partition {partition} ends at offset {end}, but the "
            f"group's offsets were committed when it held at least {highest}: it was deleted "
            "and created again, or lost records"
        )
    starts = [floor.start_at_most for floor in floors if floor.start_at_most is not None]
    if starts and start > max(starts):
        return (
            f"changelog {changelog} partition {partition} starts at offset {start}, but the "
            f"group's offsets were committed when it started at {max(starts)}: its records "
            f"below {start} were deleted (by kafka-delete-records.sh, the Admin API's "
            "deleteRecords or retention; compaction never moves the start), and the states "
            "they held are gone"
        )
    return None


def replaced_while_written(changelog: str, partition: int) -> str:
    """What a member that found its changelog replaced under it reports."""
    return (
        f"changelog {changelog} partition {partition} was deleted and created again (or lost "
        "records) while a member wrote to it: its write landed below the end the topic had"
    )
