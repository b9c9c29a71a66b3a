"""Record sizes: what the producers, the changelog topic and the broker must hold.

A job's whole state is one changelog record, so the changelog topic and the producers are sized
from ``kafka.max_job_bytes`` (the largest state the intake lets a job reach, see
``consumer.intake``), plus :data:`RECORD_HEADROOM_BYTES` for the key and the batch framing.
aiokafka checks ``max_request_size`` against a record's uncompressed size; the broker checks
``max.message.bytes`` against the compressed batch, so compression only ever helps.

Result and failure records are fitted to :data:`RESULT_RECORD_BYTES`
(``consumer.domain.record_size``), below the broker's default ``message.max.bytes``
(1,048,588), which the result topics keep. A broker or topic that still refuses one as too
large gets it again at half the size (``consumer.state.checkpoint``).
"""

from __future__ import annotations

from dataclasses import dataclass

from consumer.config import Compression
from consumer.domain.record_size import RECORD_OVERHEAD_BYTES

#: Room above ``max_job_bytes`` for the changelog record's key and batch framing.
RECORD_HEADROOM_BYTES = 1 << 20
#: Key plus value of a result or failure record at most (below the broker default 1,048,588
#: ``message.max.bytes``, less the batch framing).
RESULT_RECORD_BYTES = 1_000_000 - RECORD_OVERHEAD_BYTES


#: A changelog record's bytes besides its key, its value and the writer's group id (a header):
#: the batch and record framing and the other headers, with room to spare.
CHANGELOG_FRAMING_BYTES = 4096


def max_request_size(max_job_bytes: int) -> int:
    """The producers' ``max_request_size``: a job state of ``max_job_bytes`` with its key."""
    return max_job_bytes + RECORD_HEADROOM_BYTES


def changelog_max_message_bytes(max_job_bytes: int) -> int:
    """The changelog topic's ``max.message.bytes``: one uncompressed job state in a batch."""
    return max_job_bytes + RECORD_HEADROOM_BYTES


def changelog_room(max_message_bytes: int | None, max_job_bytes: int, group_id: str) -> int | None:
    """What a changelog topic whose ``max.message.bytes`` is ``max_message_bytes`` holds for
    one job's key and state together, when that is less than ``max_job_bytes`` needs (a topic
    created by hand, or by an older version with a smaller setting); None when it holds what
    the setting allows, or its limit is not known.

    The intake then refuses a job that would outgrow it as it refuses one past
    ``max_job_bytes`` (``job_too_large``), instead of the changelog refusing the state at the
    checkpoint, which would cost a re-read of the job's whole partition
    (``ChangelogRoom``)."""
    if max_message_bytes is None or max_message_bytes >= changelog_max_message_bytes(max_job_bytes):
        return None
    return max(max_message_bytes - CHANGELOG_FRAMING_BYTES - len(group_id.encode()), 0)


@dataclass
class ChangelogRoom:
    """What the changelog holds for one job's key and state together, as last learned (None:
    all that ``max_job_bytes`` needs). It starts from the topic's limit read at the start
    (:func:`changelog_room`) and only shrinks: the topic's ``max.message.bytes`` can be lowered
    under a running member, which then learns it from the broker refusing a state."""

    bytes: int | None = None

    def lower(self, refused: int, described: int | None) -> bool:
        """Learn from the broker refusing a record of ``refused`` key and value bytes, and
        from the topic's limit read again (``described``, as :func:`changelog_room` gives it;
        None: unread). The room is below the refused size whatever the framing was, so
        ``refused - 1`` bounds it even without the topic's configuration. Whether it shrank
        (``consumer.state.checkpoint`` acts on that)."""
        learned = refused - 1 if described is None else min(described, refused - 1)
        if self.bytes is not None and learned >= self.bytes:
            return False
        self.bytes = max(learned, 0)
        return True


def compression_type(compression: Compression) -> str | None:
    """aiokafka's ``compression_type`` for the setting (``None``: uncompressed)."""
    return None if compression is Compression.none else compression.value
