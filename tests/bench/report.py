"""The benchmark's output: one table on stdout, the figures as JSON, a PNG chart.

A run's figures (:class:`RunResult`) come from the sandbox watch (requests, when each job's
final document was accepted) and from /proc (peak RSS). Latency of a job: from its event time
(its last event's record timestamp) or the run's start, whichever is later (the workload is
pre-produced, so for a backlog it is the run's start), to the sandbox accepting the job's
final document.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class RunResult:
    name: str
    ok: bool
    note: str = ""
    seconds: float | None = None
    events: int = 0
    jobs: int = 0
    converged: int = 0
    requests: int | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: float | None = None
    cpu_seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def events_per_s(self) -> float | None:
        """Events per second to convergence; for a run stopped at its time limit, the rate at
        which it committed input so far (``extra["projected_events_per_s"]``)."""
        if self.ok and self.seconds:
            return self.events / self.seconds
        projected = self.extra.get("projected_events_per_s")
        return float(projected) if projected else None

    @property
    def requests_per_job(self) -> float | None:
        return self.requests / self.jobs if self.requests is not None and self.jobs else None


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(share: float) -> float:
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))]

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": ordered[-1]}


def ratios(results: dict[str, RunResult], events_per_job: float) -> dict[str, float | None]:
    def rate(name: str) -> float | None:
        found = results.get(name)
        return found.events_per_s if found else None

    ours, ceiling_a, ceiling_b = rate("ours"), rate("ceiling A"), rate("ceiling B")
    # Ceiling B posts one final document per job; "what fully coalesced requests could carry"
    # in events is its job rate times events per job, which is what its events/s already is.
    binding = min((r for r in (ceiling_a, ceiling_b) if r), default=None)
    # One process both consumes and posts: its physical limit is the two ceilings' work in
    # series, L = 1 / (1/A + 1/B).
    limit = 1 / (1 / ceiling_a + 1 / ceiling_b) if ceiling_a and ceiling_b else None

    def over(other: float | None) -> float | None:
        return ours / other if ours and other else None

    return {
        "L = 1/(1/A + 1/B) events/s": limit,
        "ours / L": over(limit),
        "ours / binding ceiling": over(binding),
        "ours / ceiling A": over(ceiling_a),
        "ours / ceiling B": over(ceiling_b),
        "ours / naive": over(rate("naive")),
        "ours / quix": over(rate("quix")),
        "events per job": events_per_job,
    }


def _fmt(value: float | None, spec: str) -> str:
    if value is None:
        width = spec.split(".")[0].rstrip("df")
        return "-".rjust(int(width or 0))
    return format(value, spec)


def table(results: list[RunResult], figures: dict[str, Any]) -> str:
    head = (
        f"{'run':<14} {'ok':<3} {'seconds':>8} {'events/s':>9} {'requests':>9} {'req/job':>7} "
        f"{'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'peak RSS MB':>11} {'CPU s':>6}  note"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        lat = r.latency_ms
        lines.append(
            f"{r.name:<14} {'yes' if r.ok else 'NO':<3} {_fmt(r.seconds, '8.2f')} "
            f"{_fmt(r.events_per_s, '9.0f')} {_fmt(r.requests, '9d')} "
            f"{_fmt(r.requests_per_job, '7.2f')} {_fmt(lat.get('p50'), '8.0f')} "
            f"{_fmt(lat.get('p95'), '8.0f')} {_fmt(lat.get('p99'), '8.0f')} "
            f"{_fmt(r.peak_rss_mb, '11.1f')} {_fmt(r.cpu_seconds, '6.1f')}  {r.note}"
        )
    lines.append("")
    for name, value in figures.items():
        lines.append(f"{name:<32} {_fmt(value, '.3f') if isinstance(value, float) else value}")
    return "\n".join(lines)


def write_json(path: Path, results: list[RunResult], figures: dict[str, Any]) -> None:
    runs = []
    for r in results:
        entry = asdict(r)
        entry["events_per_s"] = r.events_per_s
        entry["requests_per_job"] = r.requests_per_job
        runs.append(entry)
    path.write_text(json.dumps({"runs": runs, "figures": figures}, indent=2) + "\n")


def chart(path: Path, results: list[RunResult], title: str) -> bool:
    """Throughput and latency by run; False (and no file) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = [r.name for r in results]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    rates = [r.events_per_s or 0 for r in results]
    bars = left.bar(names, rates, color=["tab:blue" if r.ok else "tab:gray" for r in results])
    left.bar_label(bars, labels=[f"{v:,.0f}" if v else "" for v in rates], fontsize=8)
    if any(rates):
        left.set_yscale("log")
    left.set_ylabel("events/s to convergence (log)")
    left.set_title("throughput (gray: stopped at its time limit)")
    left.tick_params(axis="x", labelrotation=20)
    width = 0.27
    for n, (key, color) in enumerate(
        (("p50", "tab:green"), ("p95", "tab:orange"), ("p99", "tab:red"))
    ):
        xs = [i + (n - 1) * width for i in range(len(results))]
        left_values = [r.latency_ms.get(key, 0) / 1000 for r in results]
        right.bar(xs, left_values, width, label=key, color=color)
    right.set_xticks(range(len(results)), names)
    if any(r.latency_ms for r in results):
        right.set_yscale("log")
    right.set_ylabel("s, event (or run start) to final doc (log)")
    right.tick_params(axis="x", labelrotation=20)
    right.set_title("latency")
    right.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True
