"""The client certificate's dates, and when its renewal is overdue."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from consumer.certificate_dates import CertificateDates, certificate_dates
from tests.fixtures.certs import CertificateAuthority

START = datetime(2026, 1, 1, tzinfo=UTC)


def lasting(lifetime: timedelta) -> CertificateDates:
    return CertificateDates(START, START + lifetime)


class TestRenewalOverdue:
    @pytest.mark.parametrize(
        ("lifetime", "left", "overdue"),
        [
            # a year (Strimzi renews 30 days before the end): seven days left is the line
            (timedelta(days=365), timedelta(days=30), False),
            (timedelta(days=365), timedelta(days=7, minutes=1), False),
            (timedelta(days=365), timedelta(days=6, hours=23), True),
            # 90 days (cert-manager renews at a third): seven days, the smaller
            (timedelta(days=90), timedelta(days=30), False),
            (timedelta(days=90), timedelta(days=6), True),
            # a day (a Vault agent renews at about a third): a tenth, 2.4 hours
            (timedelta(days=1), timedelta(hours=8), False),
            (timedelta(days=1), timedelta(hours=2, minutes=30), False),
            (timedelta(days=1), timedelta(hours=2, minutes=20), True),
            # expired
            (timedelta(days=365), -timedelta(seconds=1), True),
        ],
    )
    def test_less_than_a_tenth_or_seven_days_left_whichever_is_less(
        self, lifetime: timedelta, left: timedelta, overdue: bool
    ) -> None:
        dates = lasting(lifetime)
        assert dates.renewal_overdue(dates.not_after - left) is overdue

    def test_a_certificate_not_yet_valid_is_not_overdue(self) -> None:
        dates = lasting(timedelta(days=30))
        assert not dates.renewal_overdue(START - timedelta(days=1))


class TestCertificateDates:
    def test_the_dates_of_the_first_certificate_of_the_file(self) -> None:
        """A chain lists the leaf first (what ``ssl`` presents); its key may share the file."""
        ca = CertificateAuthority("dates CA")
        client = ca.client("member", valid_s=600)
        dates = certificate_dates(client.cert_pem + ca.cert_pem + client.key_pem)
        assert dates is not None
        assert certificate_dates(client.key_pem + client.cert_pem + ca.cert_pem) == dates
        assert (
            timedelta(seconds=590) < dates.not_after - datetime.now(UTC) <= timedelta(seconds=600)
        )
        assert dates.not_after - dates.not_before == timedelta(hours=1, seconds=600)

    @pytest.mark.parametrize(
        "pem",
        [
            b"",
            b"not a certificate",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        ],
    )
    def test_no_readable_certificate_has_no_dates(self, pem: bytes) -> None:
        assert certificate_dates(pem) is None

    def test_a_key_alone_has_no_dates(self) -> None:
        assert certificate_dates(CertificateAuthority("key CA").client("k").key_pem) is None
