"""The OAuth2 client secret, read again from its file before every token request.

Read at each token request (:class:`~consumer.secret_file.SecretFile`), a rotated secret goes
out with the next one: at the token's refresh, after a 401, or at the circuit's next probe while
the old secret is refused. Log lines ``client_secret_reloaded``,
``client_secret_file_unreadable``, ``client_secret_file_readable``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from consumer.secret_file import SecretFile


class ClientSecret(SecretFile):
    """The client secret to send now (see the module)."""

    def __init__(self, value: SecretStr, path: Path | None = None) -> None:
        super().__init__("client_secret", value, path)
