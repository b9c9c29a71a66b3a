"""Benchmark: ours against the ceilings and the peers, side by side in one invocation.

    python -m tests.bench.run --size smoke|20k|100k [--out DIR] [--skip-quix] [--profile]

One broker (started on port 17092 with ``deploy/kafka-local/kafka.sh`` unless one already
answers there, and stopped at the end if this command started it), one sandbox (a child
process, one worker, with a convergence watch: ``tests.bench.sandbox_watch``), one workload
(demo jobs pre-produced to three fresh 3-partition input topics before any clock starts).
Then, each as a child process from a fresh consumer group, timed from its spawn to the sandbox
holding every job's final document:

1. ceiling A: bare aiokafka consumer reading every event;
2. ceiling B: bare aiohttp posting of every final document once, concurrency 32;
3. ours: ``python -m consumer run`` (then: state size from its changelog, and a restart on the
   same group timed by its ``state_restored`` log line);
4. naive: aiokafka loop posting one request per event, commit per batch;
5. quix: Quix Streams with RocksDB state and changelog (own virtualenv, installed on first use
   from ``requirements-quix.txt``; skipped with a message if that fails, or ``--skip-quix``).

Then ours under live traffic (``measure_paced``) at half its backlog rate and at a fifth of it,
each followed by the live ceiling (``ceiling_live``: consume, fold, debounce, post, nothing
durable) under the same traffic.
Between them, ``tests.bench.bench_transactions`` measures the checkpoint's writes with and
without Kafka transactions (the cost of fencing), interleaved against the same broker.

Prints a table and the ratios, writes ``bench.json`` and ``bench.png`` to ``--out`` (default
``bench-results/<size>-<time>``). Exits non-zero when a run did not converge or the harness
broke; it never judges speed (``--size smoke`` is the CI check that the harness works).
``--profile`` samples ours with py-spy during its run and prints the top functions.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.bench import quix_env
from tests.bench.bench_transactions import measure_transactions
from tests.bench.ours import (
    changelog_size,
    measure_baseline,
    measure_restore,
    ours_child,
    ours_settings,
    paced_ours,
    paced_workload,
    slug,
)
from tests.bench.profile import Profiler
from tests.bench.report import RunResult, chart, ratios, table, write_json
from tests.bench.runs import (
    Child,
    Watch,
    measure_consume,
    measure_paced,
    measure_posting,
    python_env,
)
from tests.bench.workload import Workload, prepare

ROOT = Path(__file__).resolve().parents[2]
SIZES = {"smoke": 20, "20k": 20_000, "100k": 100_000}
TIMEOUTS = {"smoke": 60.0, "20k": 900.0, "100k": 3600.0}
#: The peers post once per event and can take many times longer than ours: past this limit
#: they are stopped and their events/s is the rate at which they committed input.
PEER_TIMEOUTS = {"smoke": 60.0, "20k": 240.0, "100k": 600.0}
#: Below the ephemeral range (Linux: 32768 and up): a port in it can be taken by any client
#: connection first, as 39092 once was by the test suite's, just before CI's smoke run.
BENCH_PORT = 17092
CONCURRENCY = 32  # ours' default sync.concurrency


class Broker:
    """The benchmark's own broker on :data:`BENCH_PORT` (never the ones others' tests use)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.bootstrap = f"127.0.0.1:{port}"
        self.started_here = False
        self._script = str(ROOT / "deploy" / "kafka-local" / "kafka.sh")
        self._env = {**os.environ, "KAFKA_PORT": str(port)}

    def start(self) -> None:
        status = subprocess.run(
            ["bash", self._script, "status"], env=self._env, capture_output=True
        )
        if status.returncode == 0:
            return
        subprocess.run(["bash", self._script, "start"], env=self._env, check=True)
        self.started_here = True

    def stop(self) -> None:
        if self.started_here:
            subprocess.run(["bash", self._script, "stop"], env=self._env, check=False)


class SandboxProcess:
    """``python -m tests.bench.sandbox_watch``: the sandbox and its watch, one process."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.process: subprocess.Popen[str] | None = None
        self.url = self.watch_url = ""

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.bench.sandbox_watch"],
            stdout=subprocess.PIPE,
            stderr=self.log.open("ab"),
            text=True,
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (self.url and self.watch_url):
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"sandbox did not start; see {self.log}")
            if line.startswith("sandbox listening on "):
                self.url = line.split()[-1]
            elif line.startswith("watch listening on "):
                self.watch_url = line.split()[-1]
        if not (self.url and self.watch_url):
            raise RuntimeError("sandbox did not announce its URLs within 30 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(15)


def _peer(module: str, out: Path, name: str, **options: Any) -> Child:
    argv = [sys.executable, "-m", f"tests.bench.{module}"]
    for key, value in options.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return Child(name, argv, out / f"{slug(name)}.log", python_env())


async def run_all(args: argparse.Namespace, out: Path) -> tuple[list[RunResult], dict[str, Any]]:
    jobs, within = SIZES[args.size], args.timeout or TIMEOUTS[args.size]
    peers = args.peer_timeout or PEER_TIMEOUTS[args.size]
    broker = Broker(BENCH_PORT)
    sandbox = SandboxProcess(out / "sandbox.log")
    results: list[RunResult] = []
    figures: dict[str, Any] = {"size": args.size, "jobs": jobs}
    broker.start()
    try:
        sandbox.start()
        print(f"producing {jobs} demo jobs to {broker.bootstrap} ...", flush=True)
        workload = await prepare(broker.bootstrap, jobs)
        figures.update(events=workload.events, produce_seconds=round(workload.produce_seconds, 2))
        print(
            f"{workload.events} events in {workload.produce_seconds:.1f} s; measuring", flush=True
        )
        common = {"bootstrap": broker.bootstrap, "topics": ",".join(workload.inputs)}
        async with aiohttp.ClientSession() as session:
            watch = Watch(sandbox.watch_url, session, broker.bootstrap)

            async def record(result: RunResult) -> None:
                results.append(result)
                rate = result.events_per_s
                p99 = result.latency_ms.get("p99")
                print(f"  {result.name}: ok={result.ok} events/s={rate and round(rate)} "
                      f"requests={result.requests} p99 ms={p99 and round(p99)} {result.note}",
                      flush=True)  # fmt: skip

            child = _peer("ceiling_consume", out, "ceiling A", group=f"{workload.prefix}.ca",
                          events=workload.events, **common)  # fmt: skip
            await record(await measure_consume(child, workload, within=within))

            bodies = out / "bodies.jsonl"
            bodies.write_bytes(b"\n".join(workload.bodies.values()) + b"\n")
            child = _peer("ceiling_post", out, "ceiling B", sandbox=sandbox.url,
                          bodies=bodies, concurrency=CONCURRENCY)  # fmt: skip
            result = await measure_posting(child, watch, workload, within=within)
            child.stop()
            await record(result)
            bodies.unlink()

            await record(await _ours(args, out, broker, sandbox, watch, workload, figures, within))

            group = f"{workload.prefix}.naive"
            child = _peer("peer_naive", out, "naive", group=group,
                          sandbox=sandbox.url, concurrency=CONCURRENCY, **common)  # fmt: skip
            result = await measure_posting(child, watch, workload, within=peers, group=group)
            child.stop()
            await record(result)

            ours = next((r for r in results if r.name == "ours" and r.ok), None)
            backlog_rate = (ours.events_per_s if ours is not None else None) or 0.0
            # Half of ours' backlog rate is the latency goal's rate. Live events of a job come
            # seconds apart, so they cost about a request each: a fifth of the rate shows the
            # latency where the machine is not saturated by requests. At each rate the live
            # ceiling (consume, fold, debounce, post; nothing durable) gets the same traffic:
            # the latency no consumer that posts right documents beats on this machine.
            paced_runs = (
                ("ours paced", "ceiling live", 2),
                ("ours paced 1/5", "ceiling live 1/5", 5),
            )
            for name, floor, share in paced_runs if backlog_rate and not args.skip_paced else ():
                rate = backlog_rate / share
                print(f"  {name}: {rate:.0f} events/s for {args.paced_seconds:g} s", flush=True)
                # The half-rate run is profiled too: a live event costs a request, an intent
                # and a settled state, which the backlog's profile does not show.
                profiler = (
                    Profiler(out / f"{slug(name)}-profile.txt")
                    if args.profile and share == 2
                    else None
                )
                paced = await paced_ours(
                    broker.bootstrap,
                    sandbox.url,
                    watch,
                    rate=rate,
                    seconds=args.paced_seconds,
                    out=out,
                    within=within,
                    name=name,
                    on_start=profiler.attach if profiler is not None else None,
                )
                if profiler is not None:
                    figures[f"{name} profile"] = str(profiler.path)
                    print(profiler.finish(), flush=True)
                await record(paced)
                figures[f"{name} p99 ms"] = paced.latency_ms.get("p99")
                live = await paced_workload(broker.bootstrap, rate, args.paced_seconds, floor)
                child = _peer("ceiling_live", out, floor, group=f"{live.prefix}.live",
                              sandbox=sandbox.url, concurrency=CONCURRENCY,
                              bootstrap=broker.bootstrap, topics=",".join(live.inputs))  # fmt: skip
                ceiling = await measure_paced(child, watch, live, rate=rate, within=within)
                await record(ceiling)
                figures[f"{floor} p99 ms"] = ceiling.latency_ms.get("p99")

            print("  checkpoint with and without transactions ...", flush=True)
            rounds = 5 if args.size == "smoke" else 20
            figures.update(await measure_transactions(broker.bootstrap, rounds))

            if args.skip_quix:
                results.append(RunResult("quix", ok=False, note="skipped: --skip-quix"))
            else:
                await record(await _quix(out, sandbox, watch, workload, common, peers))
    finally:
        sandbox.stop()
        if not args.keep_broker:
            broker.stop()
    by_name = {r.name: r for r in results}
    figures.update(ratios(by_name, workload.events / workload.jobs))
    return results, figures


async def _ours(
    args: argparse.Namespace,
    out: Path,
    broker: Broker,
    sandbox: SandboxProcess,
    watch: Watch,
    workload: Workload,
    figures: dict[str, Any],
    within: float,
) -> RunResult:
    settings = await ours_settings(broker.bootstrap, sandbox.url, workload)
    baseline = await measure_baseline(settings, workload, out)
    figures["ours idle peak RSS MB"] = baseline
    child = ours_child(settings, out / "ours.log")
    figures["ours commit"] = _revision()
    profiler = Profiler(out / "ours-profile.txt") if args.profile else None
    on_start = profiler.attach if profiler is not None else None
    result = await measure_posting(child, watch, workload, within=within, on_start=on_start)
    code = child.stop()
    if profiler is not None:
        figures["profile"] = str(profiler.path)
        print(profiler.finish(), flush=True)
    if code not in (0, None):
        result.ok = False
        result.note += f" exit code {code} on SIGTERM"
    size = await changelog_size(broker.bootstrap, settings.state_topic, workload.partitions)
    result.extra["changelog"] = size
    figures["ours state bytes/job"] = size["live_bytes"] / max(1, size["live_jobs"])
    if baseline is not None and result.peak_rss_mb is not None:
        above = (result.peak_rss_mb - baseline) * 1e6 / workload.jobs
        figures["ours peak RSS bytes/job above idle"] = above
    before = (await watch.progress())["requests"]
    again = ours_child(settings, out / "ours-restart.log", "ours restart")
    restore = await measure_restore(again, workload.jobs, within=within)
    restore["reposted_requests"] = (await watch.progress())["requests"] - before
    result.extra["restore"] = restore
    figures["ours restore jobs/s"] = restore["jobs_per_s"]
    figures["ours restore seconds"] = restore["seconds"]
    if not restore["ok"]:
        result.ok = False
        result.note += f" restore not seen ({restore['jobs']} jobs); see ours-restart.log"
    return result


async def _quix(
    out: Path,
    sandbox: SandboxProcess,
    watch: Watch,
    workload: Workload,
    common: dict[str, str],
    within: float,
) -> RunResult:
    python, why = quix_env.ensure()
    if python is None:
        print(f"quix peer skipped: {why}", flush=True)
        return RunResult("quix", ok=False, note=f"skipped: {why}")
    state_dir = tempfile.mkdtemp(prefix="quix-state-", dir=out)
    group = f"{workload.prefix}.quix"
    child = _peer("peer_quix", out, "quix", group=group,
                  sandbox=sandbox.url, concurrency=CONCURRENCY, state_dir=state_dir,
                  **common)  # fmt: skip
    child.argv[0] = python
    child.env = python_env(PYTHONPATH=str(ROOT))
    result = await measure_posting(child, watch, workload, within=within, group=group)
    child.stop()
    return result


def _revision() -> str:
    """The commit ours runs from, ``+dirty`` when ``consumer/`` has uncommitted changes (the
    tree is shared: say exactly which code was measured)."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "consumer"], cwd=ROOT,
                           capture_output=True)  # fmt: skip
    name = head.stdout.decode().strip() or "unknown"
    return name + ("+dirty" if dirty.stdout.strip() else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="smoke")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--timeout", type=float, default=None, help="seconds per run")
    parser.add_argument("--peer-timeout", type=float, default=None, help="seconds per peer run")
    parser.add_argument("--skip-quix", action="store_true")
    parser.add_argument("--skip-paced", action="store_true", help="no live latency runs")
    parser.add_argument(
        "--paced-seconds",
        type=float,
        default=None,
        help="length of the half-rate latency run (default 5 s for smoke, else 30 s)",
    )
    parser.add_argument("--keep-broker", action="store_true", help="leave the broker running")
    parser.add_argument("--profile", action="store_true", help="py-spy profile of ours")
    args = parser.parse_args()
    # Fresh topics answer NotLeaderForPartition for a moment; aiokafka retries and logs each.
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    if args.paced_seconds is None:
        args.paced_seconds = 5.0 if args.size == "smoke" else 30.0
    out = args.out or ROOT / "bench-results" / f"{args.size}-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    results, figures = asyncio.run(run_all(args, out))
    title = f"basicsync benchmark, {figures['jobs']} jobs, {figures.get('events')} events"
    print()
    print(table(results, figures))
    write_json(out / "bench.json", results, figures)
    drawn = chart(out / "bench.png", results, title)
    print(f"\nwrote {out / 'bench.json'}" + (f" and {out / 'bench.png'}" if drawn else
          " (no chart: pip install -r tests/bench/requirements.txt)"))  # fmt: skip
    broken = [r.name for r in results if not r.ok and not r.note.startswith("skipped")]
    if broken:
        print(f"FAILED: {', '.join(broken)} did not complete", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
