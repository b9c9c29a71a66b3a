"""A settled job as its changelog value, kept unread until something needs its state.

After a backlog, or in any long-running deployment, most jobs a restore reads are settled:
WorkfloPlus holds their last version, no request of theirs is in doubt, and most have ended.
Nothing but their next event (if one ever comes) needs their state. So the checkpoint marks
the changelog record of a settled state with the header :data:`SETTLED_HEADER`, whose value
carries the two facts retention needs (when the job last changed, whether it is terminal), and
a restore keeps such a record as a :class:`SettledJob`: the value's bytes, read into a
``JobState`` on first use (``consumer.state.store``). A restore then costs the reading of the
changelog and no parse per job, and a settled job held this way costs its value's bytes:
compressed alone (``consumer.domain.value_compression``), about a fifth of what its state
costs once read.

A record without the header (an unsettled state, a marker, or a value written before this) is
parsed when restored, as before. A reader that ignores headers reads the same value.

A running member does the same for the jobs that end (:func:`is_ended`: settled and terminal):
once the checkpoint has committed such a state, the store keeps the value it wrote in place of
the state (``consumer.state.checkpoint``), so a job that ended costs what it would cost after a
restart, not what it cost while it was live. Jobs are kept until the retention forgets them,
seven days after they end by default, so most jobs a long-running member holds have ended.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from consumer.domain.job import JobState, is_terminal

#: The changelog record header that marks a settled state; its value is
#: ``<updated_at, ISO 8601>|<T: terminal, N: not>``.
SETTLED_HEADER = "basicsync-settled"


@dataclass(frozen=True, slots=True)
class SettledJob:
    """A settled job's changelog value, with what retention decides on."""

    client_job_id: str
    value: bytes
    #: ``JobState.updated_at`` of the state the value holds
    updated_at: datetime
    terminal: bool


def is_settled(state: JobState) -> bool:
    """WorkfloPlus accepted ``state``'s version and no request of the job is in doubt."""
    return state.synced_version >= state.version and state.sending_since is None


def settled_header(state: JobState) -> bytes | None:
    """The :data:`SETTLED_HEADER` value for ``state``'s record; None when it is not settled
    (a version not yet accepted by WorkfloPlus, or a request in doubt)."""
    if not is_settled(state):
        return None
    return f"{state.updated_at.isoformat()}|{'T' if is_terminal(state) else 'N'}".encode()


def is_ended(state: JobState) -> bool:
    """Settled and terminal: a job that most likely never changes again."""
    return is_terminal(state) and is_settled(state)


def settled_job(client_job_id: str, value: bytes, header: bytes) -> SettledJob:
    """The settled job of a record marked with ``header``.

    Raises ``ValueError`` when the header is not one this module writes.
    """
    when, _, flag = header.decode().rpartition("|")
    if flag not in ("T", "N"):
        raise ValueError(f"not a {SETTLED_HEADER} header: {header!r}")
    return SettledJob(client_job_id, value, datetime.fromisoformat(when), flag == "T")
