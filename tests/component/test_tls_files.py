"""TLS files renewed under a running member, over real TLS handshakes on the loopback: the
context the clients hold presents and trusts what the files hold after the next check."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from aiokafka.helpers import create_ssl_context
from structlog.testing import capture_logs

from consumer.tls_files import TlsFiles, TlsFilesWatch, watching_tls_files
from tests.fixtures.certs import CertificateAuthority, Issued
from tests.fixtures.secret_volume import kubelet_swap


def server_context(ca: CertificateAuthority, directory: Path) -> ssl.SSLContext:
    """A server context with a certificate of ``ca`` that requires a client certificate of
    ``ca`` (its files written to ``directory``)."""
    directory.mkdir(exist_ok=True)
    server_cert, server_key = ca.server().write(directory, "server")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(server_cert, server_key)
    context.load_verify_locations(cadata=ca.cert_pem.decode())
    context.verify_mode = ssl.CERT_REQUIRED
    return context


@asynccontextmanager
async def mtls_server(
    ca: CertificateAuthority, tmp_path: Path
) -> AsyncIterator[tuple[int, list[str]]]:
    """A TLS server on 127.0.0.1 that requires a client certificate signed by ``ca``; yields
    its port and the common names of the clients it accepted."""
    context = server_context(ca, tmp_path)
    accepted: list[str] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peercert")
        accepted.append(dict(pair[0] for pair in peer["subject"])["commonName"])
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    async with server:
        yield server.sockets[0].getsockname()[1], accepted


async def handshake(port: int, context: ssl.SSLContext) -> bool:
    """Whether a connection with ``context`` is accepted (the server answers ``ok``)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        answer = await asyncio.wait_for(reader.read(2), 5)
        writer.close()
    except (ssl.SSLError, ConnectionError):
        return False
    return answer == b"ok"


def volume(
    root: Path, ca: CertificateAuthority, client: Issued, generation: str
) -> dict[str, Path]:
    files = {"ca.crt": ca.cert_pem, "user.crt": client.cert_pem, "user.key": client.key_pem}
    return kubelet_swap(root, files, generation)


def kafka_files(paths: dict[str, Path]) -> TlsFiles:
    """The context aiokafka is given (``consumer.kafka.connection``), built from ``paths``."""
    context = create_ssl_context(
        cafile=str(paths["ca.crt"]), certfile=str(paths["user.crt"]), keyfile=str(paths["user.key"])
    )
    return TlsFiles("kafka", context, paths["ca.crt"], paths["user.crt"], paths["user.key"])


class TestRenewedFiles:
    async def test_an_expired_certificate_renewed_in_its_files_is_presented_next(
        self, tmp_path: Path
    ) -> None:
        """The member started with a certificate that has since expired: refused. The files
        are renewed; after one check the next connection presents the new one, and a check
        with nothing changed loads nothing."""
        ca = CertificateAuthority("tls-files CA")
        paths = volume(tmp_path, ca, ca.client("old-user", expired=True), "1")
        files = kafka_files(paths)
        watch = TlsFilesWatch([files])
        async with mtls_server(ca, tmp_path) as (port, accepted):
            assert not await handshake(port, files.context)
            volume(tmp_path, ca, ca.client("renewed-user"), "2")
            with capture_logs() as logs:
                assert watch.check() == ["kafka"]
                assert watch.check() == []
            assert await handshake(port, files.context)
        assert accepted == ["renewed-user"]
        assert [line["event"] for line in logs] == ["tls_files_reloaded"]

    async def test_a_renewed_ca_is_trusted_and_the_old_one_still_is(self, tmp_path: Path) -> None:
        """The servers move to certificates of a new CA, whose file is renewed: trusted after
        one check, while servers of the old CA still are (a renewal's overlap)."""
        old_ca, new_ca = CertificateAuthority("old CA"), CertificateAuthority("new CA")
        paths = volume(tmp_path, old_ca, old_ca.client("user"), "1")
        files = kafka_files(paths)
        watch = TlsFilesWatch([files])
        async with mtls_server(new_ca, tmp_path / "new") as (port, _):
            assert not await handshake(port, files.context)
        kubelet_swap(
            tmp_path,
            {
                "ca.crt": new_ca.cert_pem,
                "user.crt": new_ca.client("user").cert_pem,
                "user.key": b"",
            },
            "2",
        )
        assert watch.check() == []  # an empty key: kept as it was, warned
        client = new_ca.client("user")
        volume(tmp_path, new_ca, client, "3")
        assert watch.check() == ["kafka"]
        async with mtls_server(new_ca, tmp_path / "new2") as (port, accepted):
            assert await handshake(port, files.context)
        assert accepted == ["user"]
        names = {c["subject"][0][0][1] for c in files.context.get_ca_certs()}
        assert names == {"old CA", "new CA"}

    async def test_a_certificate_that_is_not_its_keys_is_refused_once_and_kept_out(
        self, tmp_path: Path
    ) -> None:
        """A renewal caught half done (a new certificate with the old key), then a file gone:
        each is warned about once, however many checks meet it, and the context keeps
        presenting the certificate that works; the complete renewal is then loaded."""
        ca = CertificateAuthority("tls-files CA")
        first = ca.client("first-user")
        paths = volume(tmp_path, ca, first, "1")
        files = kafka_files(paths)
        watch = TlsFilesWatch([files])
        second = ca.client("second-user")
        half = {"ca.crt": ca.cert_pem, "user.crt": second.cert_pem, "user.key": first.key_pem}
        with capture_logs() as logs:
            kubelet_swap(tmp_path, half, "2")
            assert watch.check() == []
            assert watch.check() == []
            kubelet_swap(tmp_path, {"ca.crt": ca.cert_pem, "user.crt": second.cert_pem}, "3")
            assert watch.check() == []
            empty_ca = {"ca.crt": b"", "user.crt": second.cert_pem, "user.key": second.key_pem}
            kubelet_swap(tmp_path, empty_ca, "3b")
            assert watch.check() == []
            async with mtls_server(ca, tmp_path / "server") as (port, accepted):
                assert await handshake(port, files.context)
                volume(tmp_path, ca, second, "4")
                assert watch.check() == ["kafka"]
                assert await handshake(port, files.context)
        assert accepted == ["first-user", "second-user"]
        events = [(line["event"], line.get("problem", "")[:24]) for line in logs]
        assert events == [
            ("tls_files_unusable", "SSLError: [X509: KEY_VAL"),
            ("tls_files_unusable", f"cannot read {tmp_path}"[:24]),
            ("tls_files_unusable", "ValueError: Empty certif"),
            ("tls_files_reloaded", ""),
        ]
        assert first.key_pem.decode() not in repr(logs)


class TestClientCertificateDates:
    async def test_an_overdue_renewal_is_said_once_per_certificate(self, tmp_path: Path) -> None:
        """A member starts with a certificate about to expire (its renewal overdue): said at
        once, not again at the next checks. A renewal that is overdue too is said again; a
        good renewal quietly replaces the dates."""
        ca = CertificateAuthority("dates CA")
        paths = volume(tmp_path, ca, ca.client("short-lived", valid_s=25), "1")
        with capture_logs() as logs:
            watch = TlsFilesWatch([kafka_files(paths)])
            watch.check()
        [said] = [
            line for line in logs if line["event"] == "tls_client_certificate_renewal_overdue"
        ]
        assert (said["context"], said["certfile"]) == ("kafka", str(paths["user.crt"]))
        assert 0 < said["expires_in_s"] <= 25
        first = watch.client_certificates["kafka"].not_after
        assert said["expires_at"] == first.isoformat()

        volume(tmp_path, ca, ca.client("still-short", valid_s=40), "2")
        with capture_logs() as logs:
            assert watch.check() == ["kafka"]
            watch.check()
        overdue = [
            line for line in logs if line["event"] == "tls_client_certificate_renewal_overdue"
        ]
        assert [line["expires_at"] for line in overdue] == [
            watch.client_certificates["kafka"].not_after.isoformat()
        ]

        volume(tmp_path, ca, ca.client("renewed"), "3")  # a day
        with capture_logs() as logs:
            assert watch.check() == ["kafka"]
        assert [line["event"] for line in logs] == ["tls_files_reloaded"]
        assert watch.client_certificates["kafka"].not_after - first > timedelta(hours=23)

    def test_a_context_without_a_client_certificate_has_no_dates(self, tmp_path: Path) -> None:
        ca = CertificateAuthority("ca only")
        (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
        context = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
        watch = TlsFilesWatch([TlsFiles("gateway", context, tmp_path / "ca.crt")])
        assert dict(watch.client_certificates) == {}


class TestWatching:
    async def test_the_watch_checks_every_interval_until_the_block_ends(
        self, tmp_path: Path
    ) -> None:
        ca = CertificateAuthority("tls-files CA")
        files = kafka_files(volume(tmp_path, ca, ca.client("a"), "1"))
        with capture_logs() as logs:
            async with watching_tls_files([files], 0.05):
                volume(tmp_path, ca, ca.client("b"), "2")
                await asyncio.sleep(0.3)
            volume(tmp_path, ca, ca.client("c"), "3")
            await asyncio.sleep(0.2)
        assert [line["event"] for line in logs] == ["tls_files_reloaded"]

    async def test_without_files_nothing_is_watched(self) -> None:
        context = ssl.create_default_context()
        async with watching_tls_files([TlsFiles("gateway", context)], 0.01) as watch:
            await asyncio.sleep(0.05)
            assert watch.check() == []
        assert not [t for t in asyncio.all_tasks() if t.get_name() == "tls-files-watch"]

    async def test_a_check_that_raises_is_logged_and_the_watch_goes_on(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        ca = CertificateAuthority("tls-files CA")
        files = kafka_files(volume(tmp_path, ca, ca.client("a"), "1"))
        calls: list[int] = []
        check = TlsFilesWatch.check

        def once_broken(self: TlsFilesWatch) -> list[str]:
            calls.append(1)
            if len(calls) == 1:
                raise ValueError("a surprise")
            return check(self)

        monkeypatch.setattr(TlsFilesWatch, "check", once_broken)
        with capture_logs() as logs:
            async with watching_tls_files([files], 0.02):
                await asyncio.sleep(0.1)
                volume(tmp_path, ca, ca.client("b"), "2")
                await asyncio.sleep(0.1)
        events = [line["event"] for line in logs]
        assert events == ["tls_files_check_failed", "tls_files_reloaded"]
        assert len(calls) > 3
