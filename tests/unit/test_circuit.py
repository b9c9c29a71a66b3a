"""The circuit breaker's transitions: closed -> open -> half_open -> closed, probe backoff."""

from __future__ import annotations

import pytest

from consumer.errors import ConfigError
from consumer.sync.circuit import CircuitBreaker, CircuitState


def make_circuit() -> CircuitBreaker:
    return CircuitBreaker(probe_initial=1.0, probe_max=8.0)


def open_circuit(circuit: CircuitBreaker, now: float) -> None:
    circuit.record_failure(now, systemic=True)


def fail_probe(circuit: CircuitBreaker, now: float) -> None:
    assert circuit.probe_due(now)
    circuit.begin_probe(now)
    circuit.record_failure(now, systemic=False)


class TestOpening:
    def test_starts_closed(self) -> None:
        """A new breaker lets requests flow and has no outage start."""
        circuit = make_circuit()
        assert circuit.state is CircuitState.CLOSED
        assert circuit.is_closed
        assert circuit.opened_at is None

    def test_failures_not_judged_systemic_never_open_it(self) -> None:
        """However many failures come, only a systemic verdict opens the circuit: one job's
        failures are that job's business (the diagnosis decides, not a count)."""
        circuit = make_circuit()
        for now in range(100, 200):
            circuit.record_failure(float(now) / 10, systemic=False)
        assert circuit.state is CircuitState.CLOSED
        assert circuit.opened_at is None

    def test_systemic_failure_opens_at_once(self) -> None:
        """One systemic failure (403, 401 after refresh, bad credentials) opens immediately."""
        circuit = make_circuit()
        circuit.record_failure(50.0, systemic=True)
        assert circuit.state is CircuitState.OPEN
        assert not circuit.is_closed


class TestProbing:
    def test_probe_due_after_initial_interval(self) -> None:
        """While open, the first probe is due ``probe_initial`` seconds after opening."""
        circuit = make_circuit()
        open_circuit(circuit, 10.0)
        assert circuit.next_probe_at == 11.0
        assert not circuit.probe_due(10.9)
        assert circuit.probe_due(11.0)

    def test_begin_probe_goes_half_open_and_allows_one_probe(self) -> None:
        """A probe in flight moves to half_open, where no second probe is due."""
        circuit = make_circuit()
        open_circuit(circuit, 10.0)
        circuit.begin_probe(11.0)
        assert circuit.state is CircuitState.HALF_OPEN
        assert not circuit.probe_due(100.0)
        assert circuit.next_probe_at is None

    def test_successful_probe_closes(self) -> None:
        """A successful probe closes the circuit and clears the outage start."""
        circuit = make_circuit()
        open_circuit(circuit, 10.0)
        circuit.begin_probe(11.0)
        circuit.record_success(11.2)
        assert circuit.state is CircuitState.CLOSED
        assert circuit.opened_at is None

    def test_failed_probes_back_off_doubling_to_max(self) -> None:
        """Each failed probe doubles the wait before the next, up to ``probe_max``."""
        circuit = make_circuit()
        open_circuit(circuit, 0.0)
        now, waits = 0.0, []
        for _ in range(6):
            assert circuit.next_probe_at is not None
            waits.append(circuit.next_probe_at - now)
            now = circuit.next_probe_at
            fail_probe(circuit, now)
        assert waits == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
        assert circuit.state is CircuitState.OPEN
        assert circuit.opened_at == 0.0

    def test_late_failures_while_open_change_nothing(self) -> None:
        """Answers of requests sent before opening neither delay the probe nor re-open."""
        circuit = make_circuit()
        open_circuit(circuit, 10.0)
        circuit.record_failure(10.5, systemic=False)
        circuit.record_failure(10.6, systemic=True)
        assert circuit.next_probe_at == 11.0
        assert circuit.opened_at == 10.0

    def test_late_success_while_open_closes(self) -> None:
        """Any success proves the gateway is back, even one that was already in flight."""
        circuit = make_circuit()
        open_circuit(circuit, 10.0)
        circuit.record_success(10.5)
        assert circuit.is_closed

    def test_reopening_soon_after_closing_keeps_backoff(self) -> None:
        """A gateway that passes probes but refuses real calls is probed ever less often."""
        circuit = make_circuit()
        open_circuit(circuit, 0.0)
        circuit.begin_probe(1.0)
        circuit.record_success(1.0)
        circuit.record_failure(1.5, systemic=True)
        assert circuit.next_probe_at == 1.5 + 2.0

    def test_reopening_long_after_closing_starts_from_initial(self) -> None:
        """A new outage long after the last one probes quickly again."""
        circuit = make_circuit()
        open_circuit(circuit, 0.0)
        fail_probe(circuit, 1.0)
        circuit.record_success(2.0)
        circuit.record_failure(500.0, systemic=True)
        assert circuit.next_probe_at == 501.0


class TestValidation:
    @pytest.mark.parametrize(
        "kwargs",
        [
            {"probe_initial": 0.0},
            {"probe_initial": 10.0, "probe_max": 5.0},
        ],
    )
    def test_nonsense_settings_are_a_config_error(self, kwargs: dict[str, float]) -> None:
        """Impossible probe intervals are refused at construction with a ConfigError."""
        with pytest.raises(ConfigError):
            CircuitBreaker(**kwargs)
