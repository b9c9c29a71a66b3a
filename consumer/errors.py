"""The project's exception tree.

Every error the consumer raises on purpose derives from :class:`BasicSyncError` and says, as the
class attribute ``retriable``, whether trying the same thing again later can succeed. Callers
decide on the type, never on the message::

    BasicSyncError                  retriable=False
    ├── FatalError                  retriable=False   stops the consumer; docstring says what to do
    │   ├── ConfigError                               settings are missing or invalid
    │   ├── TopicLayoutError                          topics missing or not co-partitioned
    │   ├── ChangelogReplaced                         the offsets outlived their changelog
    │   ├── ChangelogShared                           another group writes the changelog too
    │   └── KafkaSecurityError                        TLS or SASL refused: credentials, certs
    ├── KafkaAccessDenied           retriable=True    an ACL is missing; waited out, not ready
    ├── PartitionLost               retriable=False   this member no longer owns a partition
    ├── RecordsTooLarge             retriable=True    Kafka refused records as too large
    ├── MemoryExhausted             retriable=False   the partitions' state does not fit in memory
    ├── InvalidEvent                retriable=False   (consumer.domain.events) to the failure topic
    └── GatewayError                retriable=True    talking to WorkfloPlus went wrong
        ├── TokenUnavailable        retriable=True    token endpoint down, slow or answering 5xx
        └── AuthRejected            retriable=False   token endpoint refuses our client credentials

Expected HTTP outcomes of a basicSync call (429, 5xx, 4xx, timeouts) are *not* exceptions: the
gateway client returns them as values (see ``consumer.gateway.client.SyncOutcome``). Exceptions
are kept for what the caller cannot handle locally.

No exception here ever carries a client secret or an access token: messages name the endpoint,
the HTTP status and the OAuth2 ``error`` code at most.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar


class BasicSyncError(Exception):
    """Root of every error raised on purpose by the consumer."""

    retriable: ClassVar[bool] = False


class FatalError(BasicSyncError):
    """The consumer cannot go on; it stops with a non-zero exit code after a clean shutdown."""

    retriable: ClassVar[bool] = False


class ConfigError(FatalError):
    """Settings are missing or invalid.

    Operator: read the message (one line per problem, naming the ``BASICSYNC_...`` variable),
    fix the environment or the ``*_FILE`` secret it points to, and start again. ``basicsync``
    validates everything at start, so nothing was consumed or posted.
    """


class TopicLayoutError(FatalError):
    """Kafka topics are missing or the input topics are not co-partitioned.

    Operator: create the named topics (or allow the consumer to create its internal topics), and
    give every input topic and the state changelog the same partition count. Nothing was
    committed, so restarting after the fix loses nothing.
    """


class ChangelogReplaced(FatalError):
    """The group's committed offsets were committed with a changelog that is gone: the topic
    was deleted and created again (or lost records), or ``BASICSYNC_TOPICS__STATE`` names
    another topic (``consumer.state.continuity``). Restoring would find the states missing,
    and each job's next event would post a partial document over the complete one.

    Raised by a take before anything of the partition is restored, read or posted. Operator:
    put the changelog's records back, or reset the group's offsets to the earliest to build
    the state again from the input topics; docs/operations.md ("Topics") has both, and how to
    accept the loss instead.
    """

    def __init__(self, problems: list[str]) -> None:
        super().__init__(
            "; ".join(problems)
            + ". Nothing is restored or posted from it. Restore the changelog's records, or stop "
            "every member and reset the group's offsets to the earliest "
            "(kafka-consumer-groups.sh --reset-offsets --to-earliest) to rebuild the state "
            "from the input topics; see docs/operations.md, 'Topics'"
        )


class ChangelogShared(FatalError):
    """The changelog holds records another consumer group wrote: two groups were given one
    state topic (``BASICSYNC_TOPICS__STATE``), and each would restore the other's jobs and
    post them as its own. Every changelog record names the group that wrote it (header
    ``basicsync-group``; ``consumer.state.continuity``).

    Raised by a restore, before anything of the partition is kept, read or posted. Operator:
    give each group its own state topic. A group renamed on purpose, whose old group is
    stopped for good, takes the old group's records as its own with
    ``BASICSYNC_STORE__ADOPT_CHANGELOG_OF``; docs/operations.md ("Topics").
    """

    def __init__(self, topic: str, partition: int, offset: int, writer: str, group: str) -> None:
        super().__init__(
            f"changelog {topic} partition {partition} holds a record written by consumer "
            f"group {writer!r} (offset {offset}), not by this member's group {group!r}: each "
            "group needs a state topic of its own (BASICSYNC_TOPICS__STATE), or two groups "
            "restore each other's jobs. Nothing is restored or posted from it. If this group "
            f"takes over {writer!r}'s state on purpose (a renamed group, the old one stopped "
            f"for good), set BASICSYNC_STORE__ADOPT_CHANGELOG_OF={writer}; see "
            "docs/operations.md, 'Topics'"
        )
        self.writer = writer


class ChangelogWrittenElsewhere(FatalError):
    """Another producer wrote to a changelog partition this member owns, while it owned it:
    its commit's first record landed past where its own writes had left the partition
    (``consumer.kafka.transactions.PartitionProducer.count_from``). Two groups given one
    state topic that both started on empty partitions meet here, at their first writes after
    each other's, instead of at a later restore (``ChangelogShared``).

    Raised once the commit that found it was aborted: nothing of it counts, and nothing it
    announced was posted. Operator: give each group its own state topic; ``basicsync check``
    names the groups that wrote the changelog's newest records; a record produced by hand is
    read by the next start's restore; docs/operations.md ("Topics").
    """

    def __init__(self, problems: list[str]) -> None:
        super().__init__(
            "; ".join(problems)
            + ". Only this group's members may write its state topic while they run: the "
            "commit was aborted and nothing of it was posted. Another consumer group given the "
            "same BASICSYNC_TOPICS__STATE needs its own (basicsync check names the groups "
            "writing it); a record produced by hand (a job's key deleted) is read by the next "
            "start's restore: start the member again. See docs/operations.md, 'Topics'"
        )


class KafkaSecurityError(FatalError):
    """The brokers refused the connection's security: wrong SASL user or password, a client
    certificate they do not trust (or an expired one), a broker certificate we do not trust,
    or a protocol that does not match the listener (plaintext to a TLS port).

    Operator: the message names the cause and the settings to check
    (``BASICSYNC_KAFKA__SECURITY_PROTOCOL``, ``SASL_*``, ``SSL_*``); fix them and start again.
    Nothing was consumed. Messages never contain a password or a key.
    """


class KafkaAccessDenied(BasicSyncError):
    """The brokers authenticated us but an ACL is missing: the message names the resource and
    the operation (``Read on topic 'x'``).

    Retriable: the consumer stays up, reports not ready, logs the denial and starts again with
    a backoff, so granting the ACL heals it without a restart (no crash loop). Nothing is
    committed past what was made durable. Operator: grant the ACLs listed in
    docs/operations.md ("Connecting to a secured Kafka") to the service's principal.
    """

    retriable: ClassVar[bool] = True


class ConfigsUnread(BasicSyncError):
    """The cluster would not describe a topic's or broker's configuration; the message says
    why, for an operator. ``denied``: the principal lacks ``DescribeConfigs`` on it, which
    ``run`` does without (it then warns that the changelog's retention went unchecked) and
    ``check`` needs.
    """

    def __init__(self, reason: str, *, denied: bool) -> None:
        super().__init__(reason)
        self.denied = denied


class RecordsTooLarge(BasicSyncError):
    """Kafka refused some records of a transaction as too large; nothing of it was committed.

    Raised by ``PartitionProducer.commit`` (the producer's own ``max_request_size`` check, or
    the broker's ``MESSAGE_TOO_LARGE`` / ``RECORD_LIST_TOO_LARGE``) after aborting the
    transaction. The checkpoint reduces the result records named by ``indices`` and commits
    again. A job state refused so is a topic whose ``max.message.bytes`` is below what
    ``BASICSYNC_KAFKA__MAX_JOB_BYTES`` needs: ``basicsync check`` says so.
    """

    retriable: ClassVar[bool] = True

    def __init__(self, partition: int, indices: set[int], why: str) -> None:
        super().__init__(f"partition {partition}: {len(indices)} records too large ({why})")
        self.partition = partition
        self.indices = indices


class MemoryExhausted(BasicSyncError):
    """Restoring the assigned partitions would take the process past its memory limit.

    Raised by the restore once resident memory passes the share of the limit that state may
    use (``BASICSYNC_STORE__*``), instead of being killed by the kernel with nothing said. The
    member gives the partitions back and reports it (log ``state_exceeds_memory``, metric
    ``basicsync_restore_refusals_total``, readiness). Operator: raise the memory limit (see
    docs/operations.md "Memory"), or spread the partitions over more members.
    """

    retriable: ClassVar[bool] = False

    def __init__(self, resident_bytes: int, limit_bytes: int, share: float) -> None:
        super().__init__(
            f"resident memory {resident_bytes / 2**20:.0f} MiB passed {share:.0%} of the "
            f"{limit_bytes / 2**20:.0f} MiB limit while restoring job state"
        )
        self.resident_bytes = resident_bytes
        self.limit_bytes = limit_bytes


class PartitionLost(BasicSyncError):
    """This member may no longer write for an input partition: it was fenced or gave it up.

    Raised by the checkpoint when Kafka refuses the partition's transactional producer
    (``ProducerFenced``: another member started a producer with the same transactional id,
    so it owns the partition now) or when the partition was revoked meanwhile. Whoever gets it
    stops working for that partition at once: nothing more is posted or written for its jobs.
    Not an operator's problem: the group's next rebalance settles who owns what.
    """

    retriable: ClassVar[bool] = False

    def __init__(self, partition: int, why: str) -> None:
        super().__init__(f"partition {partition} lost: {why}")
        self.partition = partition


class GatewayError(BasicSyncError):
    """Talking to WorkfloPlus (its gateway or its token endpoint) went wrong."""

    retriable: ClassVar[bool] = True

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        #: HTTP status of the failing response, ``None`` for timeouts and connection errors.
        self.status = status


class TokenUnavailable(GatewayError):
    """The token endpoint could not issue a token right now (5xx, 408, 429, timeout, network).

    Transient, but everyone's: every job needs a token, so a sync failing this way is judged
    systemic (``consumer.sync.diagnosis``), the circuit opens and consumption pauses until a
    probe gets a token again; no job spends its retry budget on it.
    """

    retriable: ClassVar[bool] = True


class AuthRejected(GatewayError):
    """The token endpoint refused our request (400/401 bad credentials or scope, other 4xx, 3xx).

    Systemic: no job can be synced until it is fixed, so the consumer pauses all partitions and
    probes instead of failing jobs. Operator: check ``BASICSYNC_GATEWAY__CLIENT_ID``,
    ``BASICSYNC_GATEWAY__CLIENT_SECRET`` (expired or rotated secret?), the requested scope
    (``https://www.workfloplus.com/auth/workflow.execute``) and ``BASICSYNC_GATEWAY__TOKEN_URL``
    (a 404 or a redirect means the URL is wrong).
    The consumer resumes by itself once a token is issued again.
    """

    retriable: ClassVar[bool] = False


def leaves(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, or every exception inside it when it is a group (a task group's failure)."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from leaves(inner)
    else:
        yield exc
