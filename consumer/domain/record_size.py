"""Every record we produce fits: shrink a result record until it is within a byte limit.

A result record that the broker refuses as too large must never escape as an error: the
checkpoint would fail, the process would restart and replay the same record, forever. So the
publisher sends what :func:`fit_record` returns, whose key plus value are at most ``limit``
bytes (give it the producer's ``max_request_size`` less room for the record's framing and
headers, see :data:`RECORD_OVERHEAD_BYTES`). It reduces in this order, stopping as soon as
the record fits:

1. the record as it is;
2. a failure record's ``source.value`` dropped (``valueSize`` and ``valueSha256`` stay, the
   coordinates locate the original, ``truncated`` says so); a success record's
   ``sourceOffsets`` cut to the last offset per topic partition (``sourceOffsetsTruncated``);
3. ``error.body`` cut to :data:`REDUCED_BODY_CHARS` characters, marked
   :data:`~consumer.domain.results.TRUNCATION_SUFFIX`;
4. ``source.headers`` and ``source.key`` dropped (``truncated``);
5. every free-text string (``clientJobId``, which is also the Kafka key, ``error.message``,
   ``error.body``, ``jobId``, ``jobStatus``, the raw key) cut to a number of characters that
   halves from 1024 until it fits, each marked.

With ``limit >= MIN_LIMIT_BYTES`` the last step always fits (about 600 bytes are left); a
smaller limit is a programming error (:class:`ValueError`). Pure, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from consumer.domain.results import (
    TRUNCATION_SUFFIX,
    FailureRecord,
    SourceOffset,
    SuccessRecord,
)

#: The smallest limit :func:`fit_record` accepts; any record fits in it after step 5.
MIN_LIMIT_BYTES = 2048
#: Room to leave below the producer's ``max_request_size`` for the record batch framing and
#: the record's headers (the result publisher sends none).
RECORD_OVERHEAD_BYTES = 512
#: ``error.body`` is cut to this many characters in step 3.
REDUCED_BODY_CHARS = 1024

ResultRecord = SuccessRecord | FailureRecord


@dataclass(frozen=True, slots=True)
class Fitted:
    """A record as it will be produced: ``len(key or b"") + len(value) <= limit``."""

    record: ResultRecord
    key: bytes | None
    value: bytes
    #: True when the record had to be reduced (worth a log line and a metric).
    reduced: bool


def fit_record(record: ResultRecord, limit: int, raw_key: bytes | None = None) -> Fitted:
    """``record`` with its Kafka key (``clientJobId``, else ``raw_key``), within ``limit``
    bytes; see the module docstring for what is given up, in which order."""
    if limit < MIN_LIMIT_BYTES:
        raise ValueError(f"fit_record: limit {limit} is below {MIN_LIMIT_BYTES} bytes")
    for step, (candidate, key) in enumerate(_reductions(record, raw_key)):
        value = candidate.to_json_bytes()
        if len(key or b"") + len(value) <= limit:
            return Fitted(candidate, key, value, reduced=step > 0)
    raise AssertionError("unreachable: the last reduction fits in MIN_LIMIT_BYTES")


def _reductions(
    record: ResultRecord, raw_key: bytes | None
) -> Iterator[tuple[ResultRecord, bytes | None]]:
    """Yield ``(record, key)`` ever smaller, as listed in the module docstring."""
    yield record, _key(record, raw_key)
    if isinstance(record, SuccessRecord):
        record = record.model_copy(
            update={
                "source_offsets": _last_offsets(record.source_offsets),
                "source_offsets_truncated": True,
            }
        )
        yield record, _key(record, raw_key)
    else:
        source = record.source
        if source is not None and source.value is not None:
            source = source.model_copy(update={"value": None, "truncated": True})
            record = record.model_copy(update={"source": source})
            yield record, _key(record, raw_key)
        if record.error.body is not None and len(record.error.body) > REDUCED_BODY_CHARS:
            error = record.error.model_copy(
                update={"body": _cut(record.error.body, REDUCED_BODY_CHARS)}
            )
            record = record.model_copy(update={"error": error})
            yield record, _key(record, raw_key)
        if source is not None and (source.headers or source.key is not None):
            source = source.model_copy(update={"headers": [], "key": None, "truncated": True})
            record = record.model_copy(update={"source": source})
            yield record, _key(record, raw_key)
    chars = 1024
    while chars >= 16:
        smaller = _cut_texts(record, chars)
        yield smaller, _key(smaller, None if raw_key is None else raw_key[:chars])
        chars //= 2


def _key(record: ResultRecord, raw_key: bytes | None) -> bytes | None:
    return record.client_job_id.encode() if record.client_job_id is not None else raw_key


def _last_offsets(offsets: list[SourceOffset]) -> list[SourceOffset]:
    last: dict[tuple[str, int], SourceOffset] = {}
    for offset in offsets:
        held = last.get((offset.topic, offset.partition))
        if held is None or offset.offset > held.offset:
            last[(offset.topic, offset.partition)] = offset
    return sorted(last.values(), key=lambda o: (o.topic, o.partition))


def _cut(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[:chars] + TRUNCATION_SUFFIX


def _cut_or_none(text: str | None, chars: int) -> str | None:
    return None if text is None else _cut(text, chars)


def _cut_texts(record: ResultRecord, chars: int) -> ResultRecord:
    if isinstance(record, SuccessRecord):
        return record.model_copy(
            update={
                "client_job_id": _cut(record.client_job_id, chars),
                "job_id": _cut_or_none(record.job_id, chars),
                "job_status": _cut_or_none(record.job_status, chars),
            }
        )
    error = record.error.model_copy(
        update={
            "message": _cut(record.error.message, chars),
            "body": _cut_or_none(record.error.body, chars),
        }
    )
    source = record.source
    if source is not None:
        source = source.model_copy(update={"topic": _cut(source.topic, chars)})
    return record.model_copy(
        update={
            "client_job_id": _cut_or_none(record.client_job_id, chars),
            "error": error,
            "source": source,
        }
    )
