"""Kafka refusals worded for an operator, and the consumer kept up while an ACL is missing.

- :func:`explain_denial` turns aiokafka's authorization errors (found anywhere in an exception
  group) into one :class:`KafkaAccessDenied` naming the resource and the operation the service
  needs on it, from the one ACL list (:mod:`consumer.kafka.acls`).
- :func:`run_waiting_out_denials` runs the consumer; a denial is logged as one line, readiness
  reports it, and the consumer starts again after a backoff (5 s doubling to 2 min), so
  granting the ACL heals it without a restart and a missing ACL never becomes a crash loop. A
  refused connection (credentials, certificates, TLS versus plaintext) is fatal instead, with
  the cause named: nothing but a change of our settings fixes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Protocol, TypeVar

import structlog
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)

from consumer.config import Settings
from consumer.errors import KafkaAccessDenied, leaves
from consumer.kafka.acls import Acl, Operation, Purpose, ResourceType, required_acls
from consumer.kafka.diagnose import security_problem
from consumer.observability.health import Observed, serve_health
from consumer.stopping import set_within

log = structlog.get_logger(__name__)

RETRY_INITIAL_S = 5.0
RETRY_MAX_S = 120.0
_SERVICE = (Purpose.run, Purpose.create_topics)
_T = TypeVar("_T")


class DenialBoard(Observed, Protocol):
    """A running consumer as :func:`run_waiting_out_denials` writes to it; ``consumer.app.Running``
    is one."""

    #: the denial, for readiness; None once access works
    kafka_access: str | None
    #: the bound port of the endpoints served while waiting
    http_port: int | None

    def drop_components(self) -> None:
        """Forget the pipeline, scheduler and source of a run that ended."""


_Board = TypeVar("_Board", bound=DenialBoard)


def explain_denial(exc: BaseException, settings: Settings) -> KafkaAccessDenied | None:
    """The first authorization failure in ``exc`` as a one-line :class:`KafkaAccessDenied`."""
    for leaf in leaves(exc):
        message = _denial_message(leaf, settings)
        if message is not None:
            return KafkaAccessDenied(message)
    return None


_DENIALS = (
    TopicAuthorizationFailedError,
    GroupAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
    ClusterAuthorizationFailedError,
)


def is_denial(exc: BaseException) -> bool:
    """Is ``exc`` (or an exception in its group) Kafka refusing an ACL? Retrying in place
    cannot help then: it is reported and waited out as a whole (:func:`run_waiting_out_denials`).
    """
    return any(isinstance(leaf, _DENIALS) for leaf in leaves(exc))


def _denial_message(exc: BaseException, settings: Settings) -> str | None:
    acls = required_acls(settings)
    who = _principal(settings)
    if isinstance(exc, TopicAuthorizationFailedError):
        topics = sorted(_names(exc)) or ["(unnamed)"]
        needs = "; ".join(_needs(acls, ResourceType.TOPIC, topic) for topic in topics)
        return f"Kafka denied {who} access to topic {', '.join(topics)}: {needs}"
    if isinstance(exc, GroupAuthorizationFailedError):
        group = settings.kafka.group_id
        needs = _needs(acls, ResourceType.GROUP, group)
        return f"Kafka denied {who} access to group {group!r}: {needs}"
    if isinstance(exc, TransactionalIdAuthorizationFailed):
        txn = [acl for acl in acls if acl.resource is ResourceType.TRANSACTIONAL_ID]
        return f"Kafka denied {who} a transactional id: grant {_list(txn)}"
    if isinstance(exc, ClusterAuthorizationFailedError):
        return (
            f"Kafka denied {who} a cluster operation (an idempotent producer id): grant Write "
            "on the topics listed in the docs (Kafka 3.0+) or IdempotentWrite on the cluster"
        )
    return None


def configs_denial(settings: Settings, topic: str, reads: str) -> KafkaAccessDenied:
    """Kafka refused ``DescribeConfigs`` on ``topic``, which ``check`` reads ``reads`` with.
    Said apart from :func:`explain_denial`, which knows only the topic and so names every ACL
    ``run`` needs on it, all of them held here."""
    wanted = Acl(ResourceType.TOPIC, topic, Operation.DESCRIBE_CONFIGS)
    return KafkaAccessDenied(
        f"Kafka denied {_principal(settings)} DescribeConfigs on topic {topic!r}, which check "
        f"reads {reads} with: grant {wanted.describe()}"
    )


def _principal(settings: Settings) -> str:
    kafka = settings.kafka
    if kafka.security_protocol.startswith("SASL"):
        return f"user {kafka.sasl_username!r}"
    if kafka.ssl_certfile is not None:
        return "this client certificate's principal"
    return "this client"


def _names(exc: BaseException) -> set[str]:
    names: set[str] = set()
    for arg in exc.args:
        if isinstance(arg, str):
            names.add(arg)
        elif isinstance(arg, set | frozenset | list | tuple):
            names.update(str(item) for item in arg)
    return names


def _needs(acls: tuple[Acl, ...], resource: ResourceType, name: str) -> str:
    wanted = [acl for acl in acls if acl.resource is resource and acl.name == name]
    run = [acl for acl in wanted if acl.purpose in _SERVICE] or wanted
    if not run:
        return f"{name!r} is not one of the configured topics"
    return f"grant {_list(run)}"


def _list(acls: list[Acl]) -> str:
    return " and ".join(acl.describe() for acl in acls)


async def run_waiting_out_denials(
    run: Callable[[_Board], Awaitable[None]],
    settings: Settings,
    stop: asyncio.Event,
    running: _Board,
    *,
    retry_initial_s: float = RETRY_INITIAL_S,
    retry_max_s: float = RETRY_MAX_S,
) -> None:
    """Run ``run(running)`` until it returns; start it again after each Kafka access denial.

    Raises :class:`~consumer.errors.KafkaSecurityError` when the brokers refuse the
    connection's security, and anything else ``run`` raises.
    """
    delay = retry_initial_s
    while not stop.is_set():
        try:
            await run(running)
            running.kafka_access = None
            return
        except Exception as exc:
            denied = explain_denial(exc, settings)
            if denied is None:
                await _raise_security_problem(exc, settings)
                raise
        running.kafka_access = str(denied)
        running.drop_components()
        log.error("kafka_access_denied", error=str(denied), retry_in_s=delay)
        async with AsyncExitStack() as stack:
            port = settings.observability.http_port
            if port is not None:
                server = await stack.enter_async_context(
                    serve_health(running, None, host="0.0.0.0", port=port)
                )
                running.http_port = server.port
            await set_within(stop, delay)
        delay = min(delay * 2, retry_max_s)


async def explained(work: Awaitable[_T], settings: Settings) -> _T:
    """Await ``work``; a Kafka refusal it raises becomes :class:`KafkaAccessDenied` or
    :class:`~consumer.errors.KafkaSecurityError` with the cause named (for the commands)."""
    try:
        return await work
    except Exception as exc:
        denied = explain_denial(exc, settings)
        if denied is not None:
            raise denied from None
        await _raise_security_problem(exc, settings)
        raise


async def _raise_security_problem(exc: BaseException, settings: Settings) -> None:
    """Raise the security cause of a failed bootstrap, if that is what it was."""
    if not any(isinstance(leaf, KafkaConnectionError) for leaf in leaves(exc)):
        return
    servers = settings.kafka.bootstrap_servers
    if servers:
        problem = await security_problem(settings.kafka, servers)
        if problem is not None:
            raise problem from None
