"""OAuth2 token handling without I/O: expiry, refresh margin, classification, single flight."""

from __future__ import annotations

import asyncio
import json

import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from consumer.errors import AuthRejected, TokenUnavailable
from consumer.gateway.auth import (
    CachingTokenProvider,
    Token,
    TokenCache,
    parse_token_response,
    token_request_form,
)

SECRET = "s3cr3t-value-never-printed"


class FakeClock:
    """Monotonic seconds that only move when the test says so."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeFetch:
    """A token endpoint stand-in: hands out numbered tokens, optionally held at a gate."""

    def __init__(self, clock: FakeClock, lifetime: float = 3600.0) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.calls = 0
        self.gate: asyncio.Event | None = None
        self.error: Exception | None = None

    async def __call__(self) -> Token:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        now = self.clock()
        return Token(value=f"token-{self.calls}", issued_at=now, expires_at=now + self.lifetime)


class TestRefreshMargin:
    def test_long_token_refreshes_with_ten_percent_left(self) -> None:
        """A one-hour token is refreshed when 6 minutes (10 %) remain."""
        token = Token(value="t", issued_at=0.0, expires_at=3600.0)
        assert token.refresh_at == 3240.0

    def test_short_token_keeps_at_least_five_seconds(self) -> None:
        """A 30 s token is refreshed 5 s before expiry, not 3 s (10 %)."""
        token = Token(value="t", issued_at=0.0, expires_at=30.0)
        assert token.refresh_at == 25.0

    def test_tiny_token_is_still_used_for_half_its_life(self) -> None:
        """A 4 s token (tests) is used for 2 s instead of being refetched on every call."""
        token = Token(value="t", issued_at=0.0, expires_at=4.0)
        assert token.refresh_at == 2.0

    def test_token_value_is_not_in_repr(self) -> None:
        """The access token never shows in a repr (logs, tracebacks)."""
        token = Token(value="very-secret-jwt", issued_at=0.0, expires_at=1.0)
        assert "very-secret-jwt" not in repr(token)


class TestTokenCache:
    def test_current_until_refresh_point(self) -> None:
        """The cached token is served up to its refresh point, then no longer."""
        cache = TokenCache()
        cache.store(Token(value="a", issued_at=0.0, expires_at=100.0))
        assert cache.current(89.9) == "a"
        assert cache.current(90.0) is None

    def test_empty_cache_has_nothing(self) -> None:
        """Before the first fetch there is no token."""
        assert TokenCache().current(0.0) is None

    def test_invalidate_only_the_current_token(self) -> None:
        """Invalidating a token that was already replaced keeps the newer one."""
        cache = TokenCache()
        cache.store(Token(value="new", issued_at=0.0, expires_at=100.0))
        assert not cache.invalidate("old")
        assert cache.current(1.0) == "new"
        assert cache.invalidate("new")
        assert cache.current(1.0) is None


class TestTokenProtocol:
    def test_form_carries_credentials_and_scope(self) -> None:
        """The form is client_credentials with id, secret and the optional scope."""
        form = token_request_form("client", SecretStr(SECRET), "scope-a scope-b")
        assert form == {
            "grant_type": "client_credentials",
            "client_id": "client",
            "client_secret": SECRET,
            "scope": "scope-a scope-b",
        }
        assert "scope" not in token_request_form("client", SecretStr(SECRET), None)

    def test_parse_success(self) -> None:
        """A 200 with access_token and expires_in gives a token expiring that much later."""
        body = json.dumps({"access_token": "jwt", "expires_in": 300, "token_type": "Bearer"})
        token = parse_token_response(200, body, now=50.0)
        assert (token.value, token.issued_at, token.expires_at) == ("jwt", 50.0, 350.0)

    @pytest.mark.parametrize("status", [400, 401, 403, 404])
    def test_refusals_are_auth_rejected(self, status: int) -> None:
        """400/401 (bad credentials) and other plain 4xx are systemic, not retried blindly."""
        body = json.dumps({"error": "invalid_client", "error_description": SECRET})
        with pytest.raises(AuthRejected) as caught:
            parse_token_response(status, body, now=0.0)
        assert caught.value.status == status
        assert not caught.value.retriable
        assert "invalid_client" in str(caught.value)
        assert SECRET not in str(caught.value)

    @pytest.mark.parametrize("status", [408, 429, 500, 502, 503])
    def test_transient_statuses_are_token_unavailable(self, status: int) -> None:
        """408, 429 and 5xx from the token endpoint are worth retrying."""
        with pytest.raises(TokenUnavailable) as caught:
            parse_token_response(status, "", now=0.0)
        assert caught.value.retriable

    @pytest.mark.parametrize(
        "body", ["not json", "[]", "{}", '{"access_token": ""}', '{"access_token": 5}']
    )
    def test_unusable_success_body_is_transient(self, body: str) -> None:
        """A 2xx without a usable token is treated as a transient glitch."""
        with pytest.raises(TokenUnavailable):
            parse_token_response(200, body, now=0.0)


class TestCachingTokenProvider:
    async def test_fetches_once_then_serves_from_cache(self) -> None:
        """Repeated calls within the token's life cost one fetch."""
        clock = FakeClock()
        fetch = FakeFetch(clock, lifetime=100.0)
        provider = CachingTokenProvider(fetch, clock)
        assert await provider.token() == "token-1"
        clock.now += 80.0
        assert await provider.token() == "token-1"
        assert fetch.calls == 1

    async def test_refreshes_past_the_margin(self) -> None:
        """Once inside the refresh margin, the next call fetches a new token."""
        clock = FakeClock()
        fetch = FakeFetch(clock, lifetime=100.0)
        provider = CachingTokenProvider(fetch, clock)
        await provider.token()
        clock.now += 95.0
        assert await provider.token() == "token-2"

    async def test_concurrent_callers_share_one_fetch(self) -> None:
        """Many callers needing a token while one fetch runs all get its result."""
        clock = FakeClock()
        fetch = FakeFetch(clock)
        fetch.gate = asyncio.Event()
        provider = CachingTokenProvider(fetch, clock)
        callers = [asyncio.create_task(provider.token()) for _ in range(20)]
        await asyncio.sleep(0)
        fetch.gate.set()
        assert set(await asyncio.gather(*callers)) == {"token-1"}
        assert fetch.calls == 1

    async def test_concurrent_callers_share_one_failure(self) -> None:
        """When the shared fetch fails, the waiters get that failure, not N more fetches."""
        clock = FakeClock()
        fetch = FakeFetch(clock)
        fetch.gate = asyncio.Event()
        fetch.error = TokenUnavailable("token endpoint answered 503", status=503)
        provider = CachingTokenProvider(fetch, clock)
        callers = [asyncio.create_task(provider.token()) for _ in range(5)]
        await asyncio.sleep(0)
        fetch.gate.set()
        results = await asyncio.gather(*callers, return_exceptions=True)
        assert all(isinstance(r, TokenUnavailable) for r in results)
        assert fetch.calls == 1

    async def test_next_call_after_failure_fetches_again(self) -> None:
        """A failure is not cached: a later call tries the endpoint again."""
        clock = FakeClock()
        fetch = FakeFetch(clock)
        fetch.error = TokenUnavailable("down")
        provider = CachingTokenProvider(fetch, clock)
        with pytest.raises(TokenUnavailable):
            await provider.token()
        fetch.error = None
        assert await provider.token() == "token-2"

    async def test_many_invalidations_of_one_token_cause_one_refresh(self) -> None:
        """N callers refused with the same token invalidate it once; one new token is fetched."""
        clock = FakeClock()
        fetch = FakeFetch(clock)
        provider = CachingTokenProvider(fetch, clock)
        stale = await provider.token()
        await provider.invalidate(stale)
        fresh = await provider.token()
        for _ in range(10):
            await provider.invalidate(stale)
        assert await provider.token() == fresh == "token-2"
        assert fetch.calls == 2

    async def test_an_outage_warns_once(self) -> None:
        """Repeated token failures warn once, then log at info with their count; the fetch
        that succeeds again says how many failed."""
        clock = FakeClock()
        fetch = FakeFetch(clock)
        fetch.error = TokenUnavailable("token endpoint answered 503", status=503)
        provider = CachingTokenProvider(fetch, clock)
        with capture_logs() as logs:
            for _ in range(5):
                with pytest.raises(TokenUnavailable):
                    await provider.token()
            fetch.error = None
            await provider.token()
        failed = [entry for entry in logs if entry["event"] == "token_fetch_failed"]
        assert [entry["log_level"] for entry in failed] == ["warning"] + ["info"] * 4
        assert [entry["failed_in_a_row"] for entry in failed] == [1, 2, 3, 4, 5]
        (recovered,) = [entry for entry in logs if entry["event"] == "token_fetch_recovered"]
        assert recovered["failed_in_a_row"] == 5

    async def test_tokens_never_logged(self) -> None:
        """Log events about tokens carry lifetimes and statuses, never the token itself."""
        clock = FakeClock()
        fetch = FakeFetch(clock)
        provider = CachingTokenProvider(fetch, clock)
        with capture_logs() as logs:
            token = await provider.token()
            await provider.invalidate(token)
        assert [entry["event"] for entry in logs] == ["token_fetched", "token_invalidated"]
        assert token not in repr(logs)
        assert token not in repr(provider)
