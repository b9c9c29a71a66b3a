"""OAuth2 client-credentials tokens for the WorkfloPlus gateway.

Split the way httpx splits auth: the flow is pure and the I/O is a thin adapter.

- :class:`TokenCache`, :func:`token_request_form` and :func:`parse_token_response` know the
  protocol, the expiry and the refresh margin; time is passed in and they never do I/O.
- :class:`CachingTokenProvider` caches, refreshes and single-flights around any async fetch;
  :class:`ClientCredentialsTokenProvider` is it with the fetch done by aiohttp. Both satisfy the
  :class:`TokenProvider` protocol that the gateway client depends on (tests use fakes).

Secrets stay secret: the client secret lives in a ``SecretStr`` until the form is built, tokens
are excluded from every ``repr``, and neither appears in exceptions or log events.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import aiohttp
import structlog
from pydantic import SecretStr

from consumer.errors import AuthRejected, TokenUnavailable
from consumer.gateway.answer import MAX_TOKEN_ANSWER_BYTES, read_answer
from consumer.gateway.client_secret import ClientSecret
from consumer.gateway.proxy import Proxy, proxy_kwargs

log = structlog.get_logger(__name__)

#: Token endpoint statuses worth retrying; any other non-2xx means the request itself is refused.
RETRYABLE_TOKEN_STATUSES = frozenset({408, 429})
_OAUTH_ERROR_CODE = re.compile(r"^[a-z_]{1,64}$")


class TokenProvider(Protocol):
    """Hands out bearer tokens. The gateway client depends on this, not on OAuth2."""

    async def token(self) -> str:
        """A token valid for a while yet. Raises AuthRejected or TokenUnavailable."""
        ...

    async def invalidate(self, token: str) -> None:
        """The gateway refused ``token`` (401): drop it, unless it has already been replaced."""
        ...


@dataclass(frozen=True, slots=True)
class Token:
    """An access token and its lifetime on the caller's monotonic clock."""

    value: str = field(repr=False)
    issued_at: float
    expires_at: float

    @property
    def refresh_at(self) -> float:
        """When to fetch a new one: with max(10 % of the lifetime, 5 s) left.

        The margin never exceeds half the lifetime, so very short tokens (a few seconds, as in
        tests) are still used for a while instead of being refetched on every call.
        """
        lifetime = self.expires_at - self.issued_at
        margin = min(max(0.1 * lifetime, 5.0), 0.5 * lifetime)
        return self.expires_at - margin


class TokenCache:
    """Holds the current token; pure, time passed in."""

    def __init__(self) -> None:
        self._token: Token | None = None

    def __repr__(self) -> str:
        return f"TokenCache(has_token={self._token is not None})"

    def current(self, now: float) -> str | None:
        """The cached token if it is not yet due for refresh, else ``None``."""
        if self._token is None or now >= self._token.refresh_at:
            return None
        return self._token.value

    def store(self, token: Token) -> None:
        """Remember a freshly issued token."""
        self._token = token

    def invalidate(self, value: str) -> bool:
        """Drop the token if it is still ``value``; False when it was already replaced."""
        if self._token is None or self._token.value != value:
            return False
        self._token = None
        return True


def token_request_form(
    client_id: str, client_secret: SecretStr, scope: str | None
) -> dict[str, str]:
    """The form-encoded body of a client-credentials token request."""
    form = {
        "grant_type": "client_credentials",
        "client_id": client_id,
        "client_secret": client_secret.get_secret_value(),
    }
    if scope:
        form["scope"] = scope
    return form


def parse_token_response(status: int, body_text: str, now: float) -> Token:
    """Turn the token endpoint's answer into a :class:`Token` or a classified error.

    408, 429 and 5xx raise :class:`TokenUnavailable`; other non-2xx (400/401 for bad credentials
    or scope, 403, 404 or a 3xx for a wrong token URL) raise :class:`AuthRejected`. A 2xx
    without a usable ``access_token`` is treated as transient (a proxy answering for the
    identity server).
    """
    if status >= 500 or status in RETRYABLE_TOKEN_STATUSES:
        raise TokenUnavailable(f"token endpoint answered {status}", status=status)
    if not 200 <= status < 300:
        raise AuthRejected(
            f"token endpoint refused the request: {status}{_error_code(body_text)}",
            status=status,
        )
    try:
        payload = json.loads(body_text)
        access_token = payload["access_token"]
        expires_in = float(payload.get("expires_in", 3600))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise TokenUnavailable(
            f"token endpoint answered {status} without a usable access_token", status=status
        ) from None
    if not isinstance(access_token, str) or not access_token or expires_in <= 0:
        raise TokenUnavailable(
            f"token endpoint answered {status} without a usable access_token", status=status
        )
    return Token(value=access_token, issued_at=now, expires_at=now + expires_in)


def _error_code(body_text: str) -> str:
    """The OAuth2 ``error`` code (e.g. ``invalid_client``) if present; never the raw body."""
    try:
        code = json.loads(body_text).get("error")
    except (ValueError, AttributeError):
        return ""
    return f" ({code})" if isinstance(code, str) and _OAUTH_ERROR_CODE.match(code) else ""


class CachingTokenProvider:
    """A :class:`TokenProvider` around any async ``fetch``: caches, refreshes, single-flights.

    One fetch at a time for all callers; callers that queued behind a fetch reuse its result,
    success or failure, instead of fetching again. ``clock`` is monotonic seconds.
    """

    def __init__(
        self, fetch: Callable[[], Awaitable[Token]], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._fetch_token = fetch
        self._clock = clock
        self._cache = TokenCache()
        self._lock = asyncio.Lock()
        self._fetches = 0
        self._last_error: AuthRejected | TokenUnavailable | None = None
        self._failed_in_a_row = 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(fetches={self._fetches})"

    async def token(self) -> str:
        """A valid token, fetched when missing or due for refresh."""
        cached = self._cache.current(self._clock())
        if cached is not None:
            return cached
        seen = self._fetches
        async with self._lock:
            if self._fetches != seen:  # a fetch finished while we waited: reuse its result
                if self._last_error is not None:
                    raise self._last_error
                cached = self._cache.current(self._clock())
                if cached is not None:
                    return cached
            return await self._fetch()

    async def invalidate(self, token: str) -> None:
        """Drop ``token`` if it is still current, so N callers refused with it cause one fetch."""
        if self._cache.invalidate(token):
            log.info("token_invalidated")

    async def _fetch(self) -> str:
        try:
            token = await self._fetch_token()
        except (AuthRejected, TokenUnavailable) as exc:
            self._last_error = exc
            self._fetches += 1
            self._failed_in_a_row += 1
            # One warning per outage, not one per attempt: the circuit's own warning says the
            # rest; repeats stay visible at info with their count.
            level = log.warning if self._failed_in_a_row == 1 else log.info
            level(
                "token_fetch_failed",
                error=str(exc),
                status=exc.status,
                failed_in_a_row=self._failed_in_a_row,
            )
            raise
        if self._failed_in_a_row:
            log.info("token_fetch_recovered", failed_in_a_row=self._failed_in_a_row)
        self._failed_in_a_row = 0
        self._last_error = None
        self._fetches += 1
        self._cache.store(token)
        log.info("token_fetched", expires_in=round(token.expires_at - token.issued_at, 1))
        return token.value


class ClientCredentialsTokenProvider(CachingTokenProvider):
    """OAuth2 client credentials against ``token_url`` over aiohttp, cached and single-flight.

    With ``secret_file``, the secret is read from it again before each request
    (:class:`~consumer.gateway.client_secret.ClientSecret`), ``client_secret`` being what it
    held at start.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        token_url: str,
        client_id: str,
        client_secret: SecretStr,
        scope: str | None,
        clock: Callable[[], float] = time.monotonic,
        *,
        timeout: float = 10.0,
        secret_file: Path | None = None,
        proxy: Proxy | None = None,
    ) -> None:
        super().__init__(self._request_token, clock)
        self._session = session
        self._token_url = token_url
        self._client_id = client_id
        self._client_secret = ClientSecret(client_secret, secret_file)
        self._proxy = proxy_kwargs(proxy)
        self._scope = scope
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    def __repr__(self) -> str:
        return (
            f"ClientCredentialsTokenProvider(token_url={self._token_url!r}, "
            f"client_id={self._client_id!r})"
        )

    async def _request_token(self) -> Token:
        form = token_request_form(self._client_id, self._client_secret.current(), self._scope)
        started = self._clock()
        try:
            async with self._session.post(
                self._token_url,
                data=form,
                timeout=self._timeout,
                allow_redirects=False,
                **self._proxy,
            ) as response:
                status = response.status
                body_text = (await read_answer(response, MAX_TOKEN_ANSWER_BYTES)).text
        except TimeoutError:
            raise TokenUnavailable("token endpoint timed out") from None
        except aiohttp.ClientError as exc:
            # aiohttp's messages name host and port, never the form body we sent.
            raise TokenUnavailable(
                f"token endpoint unreachable: {type(exc).__name__}: {exc}"
            ) from None
        return parse_token_response(status, body_text, started)
