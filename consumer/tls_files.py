"""TLS files renewed under a running member: new connections use them without a restart.

Certificates expire, and whoever issues them renews them in place: Strimzi renews a KafkaUser's
certificate and its cluster CA, cert-manager a Secret's, and the kubelet swaps the mounted files
a minute or two later. An ``ssl.SSLContext`` loads its files once, so a member that runs for
months would go on presenting the old certificate at every new connection (after a broker
restart, a rebalance, a partition producer started) until it expired, and would then be locked
out of Kafka with nothing wrong in its configuration.

So the files are read again every ``kafka.ssl_files_check_s`` seconds, and once they differ
they are loaded into the same context objects the Kafka clients and the gateway's connector
hold: new handshakes use them, connections already open go on. The new files are first loaded
into a scratch context: a certificate that does not match its key, or a file caught half
written, leaves the context as it was, with a warning, and is tried again at the next check.
A CA file's certificates are added to those trusted; the ones it no longer holds stay trusted
until the process restarts (``ssl`` cannot remove a CA), which keeps a CA renewal's overlap.

Each check also looks at the dates of the client certificate in use: a renewal that is overdue
(:mod:`consumer.certificate_dates`) is said once per certificate, days before the expiry that
would lock the member out.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog

from consumer.certificate_dates import CertificateDates, certificate_dates

log = structlog.get_logger(__name__)

#: a swap between reading the certificate and its key: loaded again at once, at most this often
_LOAD_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The files one context was built from, and the context to load them into again."""

    #: what the files are for, in the log ("kafka", "gateway")
    name: str
    context: ssl.SSLContext
    cafile: Path | None = None
    certfile: Path | None = None
    keyfile: Path | None = None

    @property
    def paths(self) -> tuple[Path, ...]:
        return tuple(p for p in (self.cafile, self.certfile, self.keyfile) if p is not None)


class TlsFilesWatch:
    """Loads each :class:`TlsFiles` into its context again once the files' bytes change.

    Pure of timers: :meth:`check` is one look, which :func:`watching_tls_files` repeats.
    """

    def __init__(
        self,
        watched: Sequence[TlsFiles],
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._watched = tuple(w for w in watched if w.paths)
        self._wall_clock = wall_clock
        self._loaded = {w.name: _contents(w) for w in self._watched}
        self._problems: dict[str, str] = {}
        self._certificates: dict[str, CertificateDates] = {}
        self._overdue_said: set[tuple[str, datetime]] = set()
        for files in self._watched:
            self._read_dates(files, self._loaded[files.name])
        self._say_overdue()

    @property
    def client_certificates(self) -> Mapping[str, CertificateDates]:
        """The dates of the client certificate each context presents (by context name)."""
        return self._certificates

    def check(self) -> list[str]:
        """Reload what changed; the names of the contexts loaded anew."""
        reloaded = [w.name for w in self._watched if self._reload_if_changed(w)]
        self._say_overdue()
        return reloaded

    def _read_dates(self, files: TlsFiles, contents: tuple[bytes | None, ...]) -> None:
        if files.certfile is None:
            return
        pem = contents[files.paths.index(files.certfile)]
        dates = certificate_dates(pem) if pem is not None else None
        if dates is None:  # ssl took it; without dates there is nothing to say of them
            self._certificates.pop(files.name, None)
        else:
            self._certificates[files.name] = dates

    def _say_overdue(self) -> None:
        """Once per certificate: its renewal is overdue (a check every minute must not repeat
        it every minute; a renewal that is itself overdue is said again)."""
        now = self._wall_clock()
        for name, dates in self._certificates.items():
            said = (name, dates.not_after)
            if said in self._overdue_said or not dates.renewal_overdue(now):
                continue
            self._overdue_said.add(said)
            files = next(w for w in self._watched if w.name == name)
            log.warning(
                "tls_client_certificate_renewal_overdue",
                context=name,
                certfile=str(files.certfile),
                expires_at=dates.not_after.isoformat(),
                expires_in_s=round((dates.not_after - now).total_seconds()),
            )

    def _reload_if_changed(self, files: TlsFiles) -> bool:
        contents = _contents(files)
        if contents == self._loaded[files.name]:
            return False
        problem = _unusable(files, contents)
        if problem is None:
            problem = _load(files, contents)
        if problem is not None:
            self._warn(files, problem)
            return False
        self._loaded[files.name] = contents
        self._read_dates(files, contents)
        self._problems.pop(files.name, None)
        log.info("tls_files_reloaded", context=files.name, files=[str(p) for p in files.paths])
        return True

    def _warn(self, files: TlsFiles, problem: str) -> None:
        """Once per problem: a check every minute must not repeat it every minute."""
        if self._problems.get(files.name) == problem:
            return
        self._problems[files.name] = problem
        log.warning(
            "tls_files_unusable",
            context=files.name,
            problem=problem,
            using="the files loaded last",
        )


def _contents(files: TlsFiles) -> tuple[bytes | None, ...]:
    """Each file's bytes, ``None`` for one that cannot be read now."""
    contents: list[bytes | None] = []
    for path in files.paths:
        try:
            contents.append(path.read_bytes())
        except OSError:
            contents.append(None)
    return tuple(contents)


def _unusable(files: TlsFiles, contents: tuple[bytes | None, ...]) -> str | None:
    """Why the files cannot replace the loaded ones, tried on a scratch context; None: they can.

    The message names files and ``ssl``'s reason, never a key's bytes."""
    for path, content in zip(files.paths, contents, strict=True):
        if content is None:
            return f"cannot read {path}"
    scratch = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        if files.cafile is not None:  # the very bytes _load gives the live context
            scratch.load_verify_locations(cadata=_ca_text(files, contents))
        if files.certfile is not None:
            keyfile = str(files.keyfile) if files.keyfile is not None else None
            scratch.load_cert_chain(str(files.certfile), keyfile)
    except (OSError, ssl.SSLError, ValueError) as exc:  # ValueError: an empty CA file
        return f"{type(exc).__name__}: {exc}"
    return None


def _load(files: TlsFiles, contents: tuple[bytes | None, ...]) -> str | None:
    """Load the files into the live context. The CA goes in from the bytes already checked; the
    certificate and key from their files, again should a swap come between the two reads."""
    context = files.context
    if files.cafile is not None:
        context.load_verify_locations(cadata=_ca_text(files, contents))
    if files.certfile is None:
        return None
    keyfile = str(files.keyfile) if files.keyfile is not None else None
    problem = None
    for _ in range(_LOAD_ATTEMPTS):
        try:
            context.load_cert_chain(str(files.certfile), keyfile)
        except (OSError, ssl.SSLError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
            continue
        return None
    return problem


def _ca_text(files: TlsFiles, contents: tuple[bytes | None, ...]) -> str:
    """The CA file's PEM text as read by :func:`_contents` (checked readable by then)."""
    assert files.cafile is not None
    cadata = contents[files.paths.index(files.cafile)]
    assert cadata is not None
    return cadata.decode("ascii", "replace")


@asynccontextmanager
async def watching_tls_files(
    watched: Sequence[TlsFiles], interval_s: float
) -> AsyncIterator[TlsFilesWatch]:
    """Check ``watched`` every ``interval_s`` seconds for the ``with`` block (nothing to do,
    no task, when no context has files)."""
    watch = TlsFilesWatch(watched)
    if not any(w.paths for w in watched):
        yield watch
        return
    task = asyncio.create_task(_every(watch, interval_s), name="tls-files-watch")
    try:
        yield watch
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


async def _every(watch: TlsFilesWatch, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        # Reading a few small files, and loading them when they changed, is quick: done on
        # the loop, as the contexts it changes are used there.
        try:
            watch.check()
        except Exception as exc:  # a surprise from ssl must not end the watch for good
            log.error("tls_files_check_failed", error=f"{type(exc).__name__}: {exc}")
