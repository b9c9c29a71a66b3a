"""Systemic or per-job, decided by evidence (consumer.sync.diagnosis)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.errors import ConfigError
from consumer.gateway.client import Retryable, Systemic
from consumer.sync.circuit import CircuitBreaker
from consumer.sync.diagnosis import (
    CHANCE,
    FailureKind,
    GatewayEvidence,
    ProbeResult,
    Verdict,
    kind_of,
    probe_result,
)
from consumer.sync.retry import RetryPolicy

DOWN_503 = Retryable(status=503, retry_after=None, reason="http_503")
TOKEN_DOWN = Retryable(status=None, retry_after=None, reason="token_unavailable: 503")
FORBIDDEN = Systemic(status=403, reason="forbidden")
NO_BASICSYNC = Systemic(status=404, reason="no_basicsync_404")
SERVER_500 = Retryable(status=500, retry_after=None, reason="http_500")

UNAVAILABLE = FailureKind.UNAVAILABLE
REFUSED = FailureKind.REFUSED


class TestKinds:
    def test_outcomes_to_kinds(self) -> None:
        """5xx/timeouts are 'unavailable', 403/401 'refused', basicSync's 404/405 and a
        2xx web page 'not basicsync', token trouble 'token'."""
        assert kind_of(DOWN_503) is FailureKind.UNAVAILABLE
        assert kind_of(Retryable(None, None, "timeout")) is FailureKind.UNAVAILABLE
        assert kind_of(FORBIDDEN) is FailureKind.REFUSED
        assert kind_of(NO_BASICSYNC) is FailureKind.NOT_BASICSYNC
        assert kind_of(Systemic(405, "no_basicsync_405")) is FailureKind.NOT_BASICSYNC
        web_page = Systemic(200, "no_basicsync_web_page_200")
        assert kind_of(web_page) is FailureKind.NOT_BASICSYNC
        assert kind_of(TOKEN_DOWN) is FailureKind.TOKEN
        assert kind_of(Systemic(None, "token_rejected: invalid_client")) is FailureKind.TOKEN

    def test_probe_statuses(self) -> None:
        """404/2xx: up; 403: up but forbidden; no answer, 401, 408, 429, 5xx: down."""
        assert probe_result(404) is ProbeResult.UP
        assert probe_result(200) is ProbeResult.UP
        assert probe_result(403) is ProbeResult.UP_FORBIDDEN
        for status in (None, 401, 408, 429, 500, 503):
            assert probe_result(status) is ProbeResult.DOWN

    def test_window_must_be_positive(self) -> None:
        """A window of zero is a configuration error."""
        with pytest.raises(ConfigError):
            GatewayEvidence(window=0)


class TestRule:
    """One test per row of the table in the module docstring."""

    def test_row1_token_failure_is_systemic(self) -> None:
        """The token endpoint failing is everyone's problem, whatever else succeeded."""
        evidence = GatewayEvidence(window=60)
        evidence.succeeded("other", 10.0)
        assert evidence.failed("job", FailureKind.TOKEN, 11.0) is Verdict.SYSTEMIC

    def test_row2_token_failing_meanwhile_is_systemic(self) -> None:
        """After a token failure with nothing succeeding since, a 5xx is systemic too."""
        evidence = GatewayEvidence(window=60)
        evidence.succeeded("other", 10.0)
        evidence.failed("other", FailureKind.TOKEN, 11.0)
        assert evidence.failed("job", UNAVAILABLE, 12.0) is Verdict.SYSTEMIC

    def test_row3_others_succeed_meanwhile_is_per_job(self) -> None:
        """A 403 or 5xx while another job succeeds is this job's own."""
        for kind in (UNAVAILABLE, REFUSED):
            evidence = GatewayEvidence(window=60)
            evidence.succeeded("other", 10.0)
            assert evidence.failed("job", kind, 11.0) is Verdict.PER_JOB

    def test_row3_own_success_is_no_evidence(self) -> None:
        """The job's own earlier success says nothing about its failure now."""
        evidence = GatewayEvidence(window=60)
        evidence.succeeded("job", 10.0)
        assert evidence.failed("job", UNAVAILABLE, 11.0) is Verdict.UNDECIDED

    def test_row3_only_successes_since_the_previous_failure(self) -> None:
        """After a first failure, only successes after it count: an outage that began
        after the last success charges a job at most one attempt."""
        evidence = GatewayEvidence(window=60)
        evidence.succeeded("other", 10.0)
        assert evidence.failed("job", UNAVAILABLE, 11.0) is Verdict.PER_JOB
        assert evidence.failed("job", UNAVAILABLE, 12.0) is Verdict.UNDECIDED
        evidence.succeeded("other", 13.0)
        assert evidence.failed("job", UNAVAILABLE, 14.0) is Verdict.PER_JOB

    def test_row3_success_older_than_window_ignored(self) -> None:
        """A success older than the window is no evidence the gateway works now."""
        evidence = GatewayEvidence(window=60)
        evidence.succeeded("other", 10.0)
        assert evidence.failed("job", UNAVAILABLE, 71.0) is Verdict.UNDECIDED

    def test_row4_lone_job_with_gateway_up_is_per_job(self) -> None:
        """Alone, after a probe found the gateway up, a 5xx is the job's own; a 403 too when
        the probe was authorized."""
        for kind, probe in (
            (UNAVAILABLE, ProbeResult.UP),
            (UNAVAILABLE, ProbeResult.UP_FORBIDDEN),
            (REFUSED, ProbeResult.UP),
        ):
            evidence = GatewayEvidence(window=60)
            evidence.failed("job", kind, 10.0)
            evidence.probed(probe, 11.0)
            assert evidence.failed("job", kind, 12.0) is Verdict.PER_JOB, (kind, probe)

    def test_row4_forbidden_probe_cannot_clear_a_refusal(self) -> None:
        """A probe answered 403 cannot tell a refused job from a revoked scope: a lone
        job's 403 stays undecided."""
        evidence = GatewayEvidence(window=60)
        evidence.failed("job", REFUSED, 10.0)
        evidence.probed(ProbeResult.UP_FORBIDDEN, 11.0)
        assert evidence.failed("job", REFUSED, 12.0) is Verdict.UNDECIDED

    def test_row4_not_alone(self) -> None:
        """Other jobs failing meanwhile: a probe that found the gateway up does not make it
        this job's problem."""
        evidence = GatewayEvidence(window=60)
        evidence.failed("job", UNAVAILABLE, 10.0)
        evidence.probed(ProbeResult.UP, 11.0)
        evidence.failed("other", UNAVAILABLE, 11.5)
        assert evidence.failed("job", UNAVAILABLE, 12.0) is not Verdict.PER_JOB

    def test_row5_all_fail_is_systemic(self) -> None:
        """Other jobs failing in the window and none succeeding: a failure everyone gets,
        also when a probe found the gateway up."""
        evidence = GatewayEvidence(window=60)
        evidence.failed("a", REFUSED, 10.0)
        evidence.probed(ProbeResult.UP, 10.5)
        assert evidence.failed("b", REFUSED, 11.0) is Verdict.SYSTEMIC

    def test_row5_lone_job_probe_down_is_systemic(self) -> None:
        """Alone, with the latest probe finding the gateway down: an outage."""
        evidence = GatewayEvidence(window=60)
        evidence.failed("job", UNAVAILABLE, 10.0)
        evidence.probed(ProbeResult.DOWN, 11.0)
        assert evidence.failed("job", UNAVAILABLE, 12.0) is Verdict.SYSTEMIC

    def test_row5_not_while_successes_are_in_the_window(self) -> None:
        """Right after an outage begins the window still holds successes: not systemic yet
        (undecided: no budget spent, nobody paused)."""
        evidence = GatewayEvidence(window=60)
        evidence.succeeded("other", 10.0)
        evidence.failed("job", UNAVAILABLE, 11.0)
        evidence.failed("other", UNAVAILABLE, 11.5)
        assert evidence.failed("job", UNAVAILABLE, 12.0) is Verdict.UNDECIDED
        evidence.failed("other", UNAVAILABLE, 71.0)
        assert evidence.failed("job", UNAVAILABLE, 72.0) is Verdict.SYSTEMIC

    def test_row6_lone_job_without_evidence_is_undecided(self) -> None:
        """One dirty job, nothing succeeded and no probe: never blamed on the job, nobody
        paused on a hunch."""
        evidence = GatewayEvidence(window=60)
        for second in range(10, 1000, 7):
            assert evidence.failed("job", UNAVAILABLE, float(second)) is Verdict.UNDECIDED

    def test_a_streak_that_could_be_chance_is_undecided(self) -> None:
        """Fresh requests of other jobs fail about one time in three (a flaky gateway): a
        job's failures in a row are its own only once r^n is at most one in a thousand;
        before that they are undecided although others succeed meanwhile. Each success
        meanwhile is fresh too, so r falls from 10/31 to 10/36 at the sixth failure, the
        first whose r^6 (4.6e-4) is that unlikely; at 10/35 the fifth's r^5 is 1.9e-3."""
        evidence = GatewayEvidence(window=60)
        for n in range(30):
            if n % 3:
                evidence.succeeded(f"other{n}", 1.0)
            else:
                evidence.failed(f"other{n}", UNAVAILABLE, 1.0)
        verdicts = []
        for attempt in range(8):
            evidence.succeeded(f"late{attempt}", 2.0 + attempt)  # fresh: lowers r a little
            verdicts.append(evidence.failed("job", UNAVAILABLE, 2.5 + attempt))
        assert verdicts == [Verdict.UNDECIDED] * 5 + [Verdict.PER_JOB] * 3

    def test_retries_of_bad_jobs_are_not_a_flaky_gateway(self) -> None:
        """One job refused forever retries 20 times among 100 healthy jobs: only its first
        failure is fresh, so r = 1/100 and another job is blamed at its second failure in a
        row, not its fourth as its twenty retries would have it (r = 1/6)."""
        evidence = GatewayEvidence(window=60)
        for n in range(99):
            evidence.succeeded(f"ok{n}", 1.0)
        for retry in range(20):
            evidence.failed("bad", UNAVAILABLE, 2.0 + retry)
        evidence.succeeded("ok99", 25.0)
        assert evidence.failed("job", UNAVAILABLE, 26.0) is Verdict.UNDECIDED
        evidence.succeeded("ok100", 27.0)
        assert evidence.failed("job", UNAVAILABLE, 28.0) is Verdict.PER_JOB

    def test_a_job_failing_alone_is_not_its_own_evidence(self) -> None:
        """Its own first failure is left out of the rate: among healthy jobs only, a job
        failing is judged per-job at once, as before."""
        evidence = GatewayEvidence(window=60)
        evidence.succeeded("other", 10.0)
        assert evidence.failed("job", UNAVAILABLE, 11.0) is Verdict.PER_JOB
        evidence.succeeded("other2", 11.5)
        assert evidence.failed("job", UNAVAILABLE, 12.0) is Verdict.PER_JOB

    def test_forget_job(self) -> None:
        """A forgotten job's next failure is judged like a first failure again."""
        evidence = GatewayEvidence(window=60)
        evidence.succeeded("other", 10.0)
        evidence.failed("job", UNAVAILABLE, 11.0)
        evidence.forget_job("job")
        assert evidence.failed("job", UNAVAILABLE, 12.0) is Verdict.PER_JOB


# --- simulations: the scheduler's use of circuit, retry policy and evidence, fake clock -----

Answer = Callable[[str, float], Retryable | Systemic | None]  # None: accepted


@dataclass
class SimJob:
    ready_at: float
    attempts: int = 0  # per-job attempts: the budget
    tries: int = 0  # every failed attempt: the backoff grows with these
    per_job_since: float | None = None  # budget time counts from the first per-job verdict


@dataclass
class Simulation:
    """What the scheduler does with a failure, per the diagnosis docstring: a systemic
    verdict opens the circuit and spends no budget; a per-job one spends the job's budget
    (its time counted from the first per-job verdict after the last systemic one); an
    undecided one spends nothing, pauses nobody and probes (at most once per interval)."""

    answer: Answer
    probe: Callable[[float], ProbeResult]
    jobs: dict[str, SimJob]
    policy: RetryPolicy = field(
        default_factory=lambda: RetryPolicy(
            initial=0.2, maximum=30.0, max_attempts=8, max_elapsed=300.0
        )
    )
    circuit: CircuitBreaker = field(
        default_factory=lambda: CircuitBreaker(probe_initial=1.0, probe_max=30.0)
    )
    evidence: GatewayEvidence = field(default_factory=lambda: GatewayEvidence(window=60.0))
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    synced: dict[str, float] = field(default_factory=dict)
    failed: dict[str, float] = field(default_factory=dict)
    paused_s: float = 0.0
    last_probe: float = float("-inf")

    def run(self, until: float, step: float = 0.1) -> None:
        now = 0.0
        while now < until and len(self.synced) + len(self.failed) < len(self.jobs):
            if self.circuit.probe_due(now):
                self.circuit.begin_probe(now)
                found = self.probe(now)
                self.evidence.probed(found, now)
                if found is ProbeResult.DOWN:
                    self.circuit.record_failure(now, systemic=False)
                else:
                    self.circuit.record_success(now)
            if not self.circuit.is_closed:
                self.paused_s += step
            for name, job in self.jobs.items():
                if not self.circuit.is_closed:
                    break
                if name in self.synced or name in self.failed or job.ready_at > now:
                    continue
                self.attempt(name, job, now)
            now = round(now + step, 6)

    def attempt(self, name: str, job: SimJob, now: float) -> None:
        outcome = self.answer(name, now)
        if outcome is None:
            self.evidence.succeeded(name, now)
            self.circuit.record_success(now)
            self.synced[name] = now
            return
        verdict = self.evidence.failed(name, kind_of(outcome), now)
        retry_after = getattr(outcome, "retry_after", None)
        job.tries += 1
        if verdict is Verdict.SYSTEMIC:
            job.per_job_since = None
            self.circuit.record_failure(now, systemic=True)
            job.ready_at = now + self.policy.delay(job.tries, retry_after, self.rng)
            return
        if verdict is Verdict.UNDECIDED:
            if now - self.last_probe >= self.circuit.probe_initial:
                self.last_probe = now
                self.evidence.probed(self.probe(now), now)
            job.ready_at = now + self.policy.delay(job.tries, retry_after, self.rng)
            return
        job.attempts += 1
        job.per_job_since = job.per_job_since if job.per_job_since is not None else now
        if self.policy.exhausted(job.attempts, now - job.per_job_since):
            self.failed[name] = now
            self.evidence.forget_job(name)
            return
        job.ready_at = now + self.policy.delay(job.tries, retry_after, self.rng)


class TestSimulations:
    def test_two_hour_outage_of_a_single_job(self) -> None:
        """One dirty job while basicSync and the token endpoint fail for two hours and every
        probe finds the gateway down: zero failures, and the job converges soon after."""
        outage = 2 * 3600.0

        def answer(job: str, now: float) -> Retryable | None:
            if now < outage:
                return TOKEN_DOWN if int(now) % 2 else DOWN_503
            return None

        sim = Simulation(
            answer=answer,
            probe=lambda now: ProbeResult.DOWN if now < outage else ProbeResult.UP,
            jobs={"only": SimJob(ready_at=5.0)},
        )
        sim.run(until=outage + 600)
        assert sim.failed == {}
        assert outage <= sim.synced["only"] <= outage + 60

    def test_outage_after_traffic_fails_nobody(self) -> None:
        """Ten jobs succeed, then the gateway goes down for 30 minutes while all ten have new
        changes: the successes just before it charge each job at most one attempt, nobody
        fails, and all converge once it heals."""
        start, end = 60.0, 60.0 + 1800.0
        healthy_once: set[str] = set()

        def answer(job: str, now: float) -> Retryable | None:
            if start <= now < end:
                return DOWN_503
            healthy_once.add(job)
            return None

        jobs = {f"j{i}": SimJob(ready_at=start - 5 + i * 0.5) for i in range(10)}
        sim = Simulation(
            answer=answer,
            probe=lambda now: ProbeResult.DOWN if start <= now < end else ProbeResult.UP,
            jobs=jobs,
        )
        sim.run(until=end + 600)
        assert sim.failed == {}
        assert set(sim.synced) == set(jobs)
        assert all(job.attempts <= 1 for job in jobs.values())

    def test_forbidden_job_among_live_jobs(self) -> None:
        """One job answered 403 forever while 30 jobs arrive live and succeed: the bad job is
        failed within two minutes and every other job is synced within 5 s of arriving."""
        jobs = {"bad": SimJob(ready_at=1.0)}
        jobs.update({f"ok{i}": SimJob(ready_at=2.0 + i * 3) for i in range(30)})
        sim = Simulation(
            answer=lambda job, now: FORBIDDEN if job == "bad" else None,
            probe=lambda now: ProbeResult.UP_FORBIDDEN,
            jobs=jobs,
        )
        sim.run(until=600)
        assert sim.failed.keys() == {"bad"}
        assert sim.failed["bad"] <= 120
        assert all(sim.synced[name] - jobs[name].ready_at <= 5 for name in sim.synced)

    def test_twenty_jobs_failing_among_live_traffic(self) -> None:
        """20 jobs answered 500 forever while healthy jobs keep arriving: each bad job is
        failed within seven minutes, every healthy one synced within 5 s."""
        jobs = {f"bad{i}": SimJob(ready_at=1.0 + i * 3) for i in range(20)}
        jobs.update({f"ok{i}": SimJob(ready_at=2.0 + i * 2) for i in range(210)})
        sim = Simulation(
            answer=lambda job, now: SERVER_500 if job.startswith("bad") else None,
            probe=lambda now: ProbeResult.UP,
            jobs=jobs,
        )
        sim.run(until=420)
        assert len(sim.failed) == 20
        assert all(name.startswith("bad") for name in sim.failed)
        assert all(sim.synced[name] - jobs[name].ready_at <= 5 for name in sim.synced)

    @pytest.mark.parametrize(
        ("refusal", "probed"),
        [(FORBIDDEN, ProbeResult.UP_FORBIDDEN), (NO_BASICSYNC, ProbeResult.UP)],
        ids=["revoked-scope", "url-without-basicsync"],
    )
    def test_every_job_refused_fails_nobody(self, refusal: Systemic, probed: ProbeResult) -> None:
        """Ten jobs all refused for an hour: answered 403 (a revoked scope) while the probe
        gets 403 too, or 404 at a base URL with no basicSync behind it while the probe's GET
        gets 404 as well (as the real gateway answers for an unknown job). Systemic, nobody
        is failed."""
        jobs = {f"j{i}": SimJob(ready_at=float(i)) for i in range(10)}
        sim = Simulation(
            answer=lambda job, now: refusal,
            probe=lambda now: probed,
            jobs=jobs,
        )
        sim.run(until=3600)
        assert sim.failed == {}

    def test_lone_job_failing_while_gateway_is_up(self) -> None:
        """A single job answered 500 forever while probes find the gateway up is that job's
        own problem: failed on its budget, not retried forever."""
        sim = Simulation(
            answer=lambda job, now: SERVER_500,
            probe=lambda now: ProbeResult.UP,
            jobs={"only": SimJob(ready_at=0.0)},
        )
        sim.run(until=3600)
        assert "only" in sim.failed

    def test_a_gateway_failing_a_third_of_all_requests_fails_nobody(self) -> None:
        """A load balancer with one node of three broken: every request, of any job, fails
        with a 503 one time in three, and probes find the gateway up. 600 jobs arrive live;
        each is synced, none failed. Before fresh requests' failure rate was weighed, a job
        that drew its budget's worth of per-job failures in a row was failed: here 2 of the
        600 at a budget of three (the same rule with ``CHANCE`` at 1, the test below)."""
        sim = self._flaky_load_balancer()
        sim.run(until=3600)
        assert sim.failed == {}
        assert len(sim.synced) == 600

    def test_without_weighing_chance_the_same_gateway_fails_jobs(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The test above can fail: with every per-job verdict standing, jobs are failed."""
        monkeypatch.setattr("consumer.sync.diagnosis.CHANCE", 1.0)
        sim = self._flaky_load_balancer()
        sim.run(until=3600)
        assert len(sim.failed) > 0

    @staticmethod
    def _flaky_load_balancer() -> Simulation:
        rng = random.Random(11)
        jobs = {f"j{i}": SimJob(ready_at=i * 0.5) for i in range(600)}
        return Simulation(
            answer=lambda job, now: DOWN_503 if rng.random() < 1 / 3 else None,
            probe=lambda now: ProbeResult.UP,
            jobs=jobs,
            policy=RetryPolicy(initial=0.2, maximum=30.0, max_attempts=3, max_elapsed=300.0),
        )


@dataclass(slots=True)
class _Kept:
    at: float
    job: str | None
    ok: bool
    kind: FailureKind | ProbeResult | None = None
    #: a job's request with no failure in a row before it
    fresh: bool = False
    #: a first failure whose job was forgotten
    dropped: bool = False


class ScanningEvidence:
    """The rule as first written: every outcome of the window kept and scanned for each
    failure. The oracle :class:`GatewayEvidence`'s constant-time form must agree with."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._outcomes: list[_Kept] = []
        self._last_failure: dict[str, float] = {}
        self._in_a_row: dict[str, int] = {}
        self._first: dict[str, _Kept] = {}

    def succeeded(self, job: str, now: float) -> None:
        self._outcomes.append(_Kept(now, job, ok=True, fresh=job not in self._in_a_row))
        self._last_failure.pop(job, None)
        self._in_a_row.pop(job, None)
        self._first.pop(job, None)

    def probed(self, result: ProbeResult, now: float) -> None:
        self._outcomes.append(_Kept(now, None, ok=result is not ProbeResult.DOWN, kind=result))

    def forget_job(self, job: str) -> None:
        self._last_failure.pop(job, None)
        self._in_a_row.pop(job, None)
        first = self._first.pop(job, None)
        if first is not None:
            first.dropped = True

    def failed(self, job: str, kind: FailureKind, now: float) -> Verdict:
        since = max(self._last_failure.get(job, now - self.window), now - self.window)
        in_a_row = self._in_a_row.get(job, 0) + 1
        verdict = self._judge(job, kind, since, now)
        if verdict is Verdict.PER_JOB and self._chance(job, in_a_row, now):
            verdict = Verdict.UNDECIDED
        kept = _Kept(now, job, ok=False, kind=kind, fresh=in_a_row == 1)
        self._outcomes.append(kept)
        if in_a_row == 1:
            self._first[job] = kept
        self._in_a_row[job] = in_a_row
        self._last_failure[job] = now
        return verdict

    def _chance(self, job: str, in_a_row: int, now: float) -> bool:
        own = self._first.get(job)
        fresh = [
            o
            for o in self._outcomes
            if o.fresh and not o.dropped and o.at >= now - self.window and o is not own
        ]
        if not fresh:
            return False
        rate = sum(not o.ok for o in fresh) / len(fresh)
        return rate**in_a_row > CHANCE

    def _judge(self, job: str, kind: FailureKind, since: float, now: float) -> Verdict:
        if kind is FailureKind.TOKEN:
            return Verdict.SYSTEMIC
        meanwhile = [o for o in self._outcomes if o.at >= since]
        token_at = [o.at for o in meanwhile if o.kind is FailureKind.TOKEN]
        if token_at and not any(o.ok and o.at > token_at[-1] for o in meanwhile):
            return Verdict.SYSTEMIC
        others = [o for o in meanwhile if o.job is not None and o.job != job]
        if any(o.ok for o in others):
            return Verdict.PER_JOB
        convincing = {ProbeResult.UP} if kind is not FailureKind.NOT_BASICSYNC else set()
        if kind is FailureKind.UNAVAILABLE:
            convincing.add(ProbeResult.UP_FORBIDDEN)
        probes = [o.kind for o in meanwhile if isinstance(o.kind, ProbeResult)]
        if not others and probes and probes[-1] in convincing:
            return Verdict.PER_JOB
        recent = [o for o in self._outcomes if o.at >= now - self.window]
        window = [o for o in recent if o.job is not None]
        probes = [o.kind for o in recent if isinstance(o.kind, ProbeResult)]
        if not any(o.ok for o in window) and (
            any(o.job != job for o in window) or probes[-1:] == [ProbeResult.DOWN]
        ):
            return Verdict.SYSTEMIC
        return Verdict.UNDECIDED


_STEPS = st.lists(
    st.tuples(
        st.sampled_from(["ok", "fail", "probe", "forget"]),
        st.sampled_from(["a", "b"]),
        st.sampled_from(list(FailureKind)),
        st.sampled_from(list(ProbeResult)),
        st.sampled_from([0.0, 0.0, 0.0, 0.5, 3.0, 20.0, 59.0, 60.0, 61.0]),
    ),
    max_size=60,
)


class TestConstantTimeForm:
    @given(_STEPS)
    @settings(max_examples=2000, deadline=None)
    def test_every_verdict_is_the_scanning_rules(
        self, steps: list[tuple[str, str, FailureKind, ProbeResult, float]]
    ) -> None:
        """Any history of successes, failures, probes and forgotten jobs, times equal or
        growing across the window's edge: each verdict is the one scanning gives."""
        fast, scanning = GatewayEvidence(window=60.0), ScanningEvidence(window=60.0)
        now = 0.0
        for action, job, kind, probe, step in steps:
            now += step
            if action == "ok":
                fast.succeeded(job, now)
                scanning.succeeded(job, now)
            elif action == "probe":
                fast.probed(probe, now)
                scanning.probed(probe, now)
            elif action == "forget":
                fast.forget_job(job)
                scanning.forget_job(job)
            else:
                assert fast.failed(job, kind, now) == scanning.failed(job, kind, now)
