"""The retry policy: full-jitter backoff bounds, Retry-After as a floor, the budget."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.errors import ConfigError
from consumer.sync.retry import RetryPolicy


def make_policy(**overrides: float) -> RetryPolicy:
    settings: dict[str, float] = {
        "initial": 0.5,
        "maximum": 30.0,
        "max_attempts": 8,
        "max_elapsed": 600.0,
    }
    settings.update(overrides)
    return RetryPolicy(
        initial=settings["initial"],
        maximum=settings["maximum"],
        max_attempts=int(settings["max_attempts"]),
        max_elapsed=settings["max_elapsed"],
        multiplier=settings.get("multiplier", 2.0),
        retry_after_max=settings.get("retry_after_max", 3600.0),
    )


policies = st.builds(
    lambda initial, extra, multiplier: RetryPolicy(
        initial=initial,
        maximum=initial + extra,
        multiplier=multiplier,
        max_attempts=5,
        max_elapsed=60.0,
    ),
    st.floats(0.001, 10.0),
    st.floats(0.0, 100.0),
    st.floats(1.0, 10.0),
)


class TestDelay:
    @given(
        policy=policies,
        attempt=st.integers(1, 10_000),
        seed=st.integers(0, 2**32),
    )
    def test_delay_is_within_zero_and_the_cap(
        self, policy: RetryPolicy, attempt: int, seed: int
    ) -> None:
        """Without Retry-After, every delay lies in [0, min(maximum, initial * m**(n-1))]."""
        delay = policy.delay(attempt, None, random.Random(seed))
        assert 0.0 <= delay <= policy.cap(attempt) <= policy.maximum

    @given(
        policy=policies,
        attempt=st.integers(1, 50),
        retry_after=st.floats(0.0, 1e12),
        seed=st.integers(0, 2**32),
    )
    def test_retry_after_is_a_floor_up_to_its_bound(
        self, policy: RetryPolicy, attempt: int, retry_after: float, seed: int
    ) -> None:
        """With Retry-After, the delay is never shorter than the server asked for, up to
        ``retry_after_max`` (an hour): a gateway that asks for a day, or sends milliseconds as
        seconds, does not park the job for that long."""
        delay = policy.delay(attempt, retry_after, random.Random(seed))
        asked = min(retry_after, policy.retry_after_max)
        assert delay >= asked
        assert delay <= max(asked, policy.cap(attempt))

    def test_cap_grows_exponentially_up_to_maximum(self) -> None:
        """The cap doubles per attempt from ``initial`` and stops at ``maximum``."""
        policy = make_policy(initial=1.0, maximum=10.0)
        assert [policy.cap(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]

    def test_huge_attempt_numbers_do_not_overflow(self) -> None:
        """An attempt number far beyond float range still yields the maximum as the cap."""
        policy = make_policy(initial=1.0, maximum=10.0)
        assert policy.cap(100_000) == 10.0

    def test_jitter_spreads_delays(self) -> None:
        """Full jitter: delays for the same attempt differ and use the whole range."""
        policy = make_policy(initial=8.0, maximum=8.0)
        rng = random.Random(7)
        delays = [policy.delay(1, None, rng) for _ in range(1_000)]
        assert min(delays) < 1.0
        assert max(delays) > 7.0

    def test_same_seed_same_delays(self) -> None:
        """Randomness comes only from the rng passed in, so tests can be deterministic."""
        policy = make_policy()
        first = [policy.delay(n, None, random.Random(3)) for n in range(1, 6)]
        again = [policy.delay(n, None, random.Random(3)) for n in range(1, 6)]
        assert first == again


class TestBudget:
    def test_exhausted_by_attempts(self) -> None:
        """The budget is used up once ``max_attempts`` attempts were made."""
        policy = make_policy(max_attempts=3)
        assert not policy.exhausted(2, 1.0)
        assert policy.exhausted(3, 1.0)

    def test_exhausted_by_elapsed_time(self) -> None:
        """The budget is used up once ``max_elapsed`` seconds passed since the first attempt."""
        policy = make_policy(max_elapsed=60.0)
        assert not policy.exhausted(1, 59.9)
        assert policy.exhausted(1, 60.0)


class TestRetryAfterBound:
    def test_a_day_is_an_hour(self) -> None:
        policy = make_policy(retry_after_max=3600.0)
        assert policy.delay(1, 86_400.0, random.Random(1)) == 3600.0
        assert policy.delay(1, 120.0, random.Random(1)) == 120.0


class TestValidation:
    @pytest.mark.parametrize(
        "overrides",
        [
            {"initial": 0.0},
            {"initial": 5.0, "maximum": 1.0},
            {"multiplier": 0.5},
            {"max_attempts": 0},
            {"max_elapsed": 0.0},
            {"retry_after_max": 0.0},
        ],
    )
    def test_nonsense_settings_are_a_config_error(self, overrides: dict[str, float]) -> None:
        """Impossible bounds are refused at construction with a ConfigError."""
        with pytest.raises(ConfigError):
            make_policy(**overrides)
