"""When the member's own client certificate stops working, and when its renewal is overdue.

A client certificate that expires locks the member out of Kafka at its next new connection,
and nothing in its configuration is wrong: whoever issues it (Strimzi, cert-manager, Vault) was
to renew it in the mounted files, and :mod:`consumer.tls_files` loads the renewal. When the
renewal does not come, the time to hear of it is days before the expiry, not at it. So the
member reads its certificate's dates and says when the renewal is overdue.

*Overdue* is a rule of thumb that suits the issuers above, because they renew well before
the end (Strimzi 30 of 365 days, cert-manager a third of the lifetime, Vault agents about a
third): less than a tenth of the certificate's lifetime is left, or less than seven days,
whichever comes later. A year-long certificate is overdue seven days before its end, a
day-long one 2.4 hours before.

``ssl`` has no public parser for a certificate's dates; ``cryptography`` (pyca) reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509

#: what is left of a certificate when its renewal is overdue: the smaller of the two
OVERDUE_FRACTION = 0.1
OVERDUE_AT_MOST = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class CertificateDates:
    """The validity of a certificate (UTC)."""

    not_before: datetime
    not_after: datetime

    def renewal_overdue(self, now: datetime) -> bool:
        """Less than the smaller of a tenth of its lifetime and seven days left (or expired)."""
        lifetime = self.not_after - self.not_before
        return self.not_after - now < min(lifetime * OVERDUE_FRACTION, OVERDUE_AT_MOST)


def certificate_dates(pem: bytes) -> CertificateDates | None:
    """The dates of the first certificate of a PEM file (the leaf of a chain, as ``ssl``
    presents it); ``None`` when it holds none that can be read."""
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError:
        return None
    first = certificates[0]
    return CertificateDates(first.not_valid_before_utc, first.not_valid_after_utc)
