"""The SASL password read again from its file: new connections use a rotated one, no restart.

Who owns a Kafka user rotates its password in place: Strimzi regenerates a KafkaUser's password
in its Secret (the broker takes only the new one from then on), and the kubelet updates the
mounted file a minute or two later. aiokafka keeps the password it was given in each client and
uses it for every new connection, so a member running since before the rotation goes on over
its open connections and is refused at its next new one (a broker restart, a rebalance, a
partition's producer), with nothing but a restart to heal it.

So every ``kafka.ssl_files_check_s`` the file is read again
(:class:`~consumer.secret_file.SecretFile`: ``sasl_password_reloaded``; a file missing or empty
keeps the last password), and a changed password is given to the arguments new clients are
made from and to every live client of this run. aiokafka has no public way to change it: it is
``AIOKafkaClient._sasl_plain_password``, read at each new connection (aiokafka 0.14, the version
pinned; ``tests/unit/test_sasl_password.py`` fails if that attribute goes). Short-lived
consumers (a restore, a sample) are not tracked: they take the password current when made.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar

import structlog

from consumer.secret_file import SecretFile

log = structlog.get_logger(__name__)

Client = TypeVar("Client")

#: where aiokafka's consumer, producer and admin client keep their ``AIOKafkaClient``
_INNER_CLIENT = ("_client", "client")


class SaslPasswordWatch:
    """Gives a changed password to ``kafka`` (the keyword arguments of new clients) and to
    every client :meth:`track` was given. Pure of timers: :meth:`check` is one look."""

    def __init__(self, password: SecretFile, kafka: dict[str, Any]) -> None:
        self._password = password
        self._kafka = kafka
        self._clients: weakref.WeakSet[Any] = weakref.WeakSet()

    def track(self, client: Client) -> Client:
        """Remember a live aiokafka client (forgotten once it is garbage)."""
        self._clients.add(client)
        return client

    def check(self) -> bool:
        """Read the file; True when the password changed and was handed out."""
        password = self._password.current().get_secret_value()
        if password == self._kafka.get("sasl_plain_password"):
            return False
        self._kafka["sasl_plain_password"] = password
        for client in list(self._clients):
            inner = _inner_client(client)
            if inner is not None:
                inner._sasl_plain_password = password
        return True


def tracked(watch: SaslPasswordWatch | None, client: Client) -> Client:
    """``client``, tracked by ``watch`` when there is one (a password file)."""
    return client if watch is None else watch.track(client)


def _inner_client(client: Any) -> Any:
    for name in _INNER_CLIENT:
        inner = getattr(client, name, None)
        if inner is not None and hasattr(inner, "_sasl_plain_password"):
            return inner
    return None


@asynccontextmanager
async def watching_sasl_password(
    watch: SaslPasswordWatch | None, interval_s: float
) -> AsyncIterator[None]:
    """Check ``watch`` every ``interval_s`` seconds for the ``with`` block (nothing when
    ``None``: no password file)."""
    if watch is None:
        yield
        return
    task = asyncio.create_task(_every(watch, interval_s), name="sasl-password-watch")
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


async def _every(watch: SaslPasswordWatch, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            watch.check()
        except Exception as exc:  # a surprise must not end the watch for good
            log.error("sasl_password_check_failed", error=type(exc).__name__)
