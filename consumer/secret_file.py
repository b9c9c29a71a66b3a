"""A secret read again from its file each time it is needed, so a rotation needs no restart.

Secrets get rotated, and Kubernetes updates a mounted Secret in place (the kubelet swaps the
volume's ``..data`` link within a minute or two of the change) without restarting the pod. A
secret read once at start would be sent until its receiver refuses it, and the member would
hold every job until someone restarted it. Read each time it is used instead, the new secret
goes out with the next use.

A file that cannot be read, or is empty, at that moment (a tool that truncates before writing,
a volume being remounted) leaves the last secret read in use, with one warning per problem: a
stale secret may still be accepted, no secret never is. The log lines are named after the
secret (``<name>_reloaded``, ``<name>_file_unreadable``, ``<name>_file_readable``) and carry
the path, never the secret.
"""

from __future__ import annotations

from pathlib import Path

import structlog
from pydantic import SecretStr

log = structlog.get_logger(__name__)


class SecretFile:
    """The secret to use now: ``value`` as given, or the content of ``path`` when there is
    one (the trailing newline stripped, as at start)."""

    def __init__(self, name: str, value: SecretStr, path: Path | None = None) -> None:
        self._name = name
        self._value = value
        self._path = path
        self._problem: str | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(path={self._path!r})"

    def current(self) -> SecretStr:
        """The file's secret if it can be read, else the last one that could."""
        if self._path is None:
            return self._value
        try:
            text = self._path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            return self._kept(f"cannot read it: {exc.strerror or type(exc).__name__}")
        except UnicodeDecodeError:
            return self._kept("it is not UTF-8 text")
        if not text:
            return self._kept("it is empty")
        if self._problem is not None:
            log.info(f"{self._name}_file_readable", path=str(self._path))
            self._problem = None
        if text != self._value.get_secret_value():
            self._value = SecretStr(text)
            log.info(f"{self._name}_reloaded", path=str(self._path))
        return self._value

    def _kept(self, problem: str) -> SecretStr:
        if problem != self._problem:
            log.warning(
                f"{self._name}_file_unreadable",
                path=str(self._path),
                problem=problem,
                using="the secret read last",
            )
            self._problem = problem
        return self._value
