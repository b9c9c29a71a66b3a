"""What judging a failed sync costs at a given request rate, half of the requests failing.

Run ``python -m tests.bench.bench_diagnosis``. A load balancer with one of two nodes down
fails every other request, for every job: each failure is judged against the other jobs'
outcomes of the last minute (``consumer.sync.diagnosis``). The figure is CPU time of this
process per failure, and the share of a core that judging takes at that rate; compare runs
made close together on one machine.
"""

from __future__ import annotations

import argparse
import random
import time

from consumer.sync.diagnosis import FailureKind, GatewayEvidence


def judged(rate: int, seconds: float, failing: float) -> tuple[float, float]:
    """CPU microseconds per failure, and the share of a core, over ``seconds`` at ``rate``
    requests per second of distinct jobs, ``failing`` of them failed."""
    evidence = GatewayEvidence(window=60.0)
    draw = random.Random(1)
    failures = 0
    started = time.process_time()
    for n in range(int(rate * seconds)):
        now = n / rate
        if draw.random() < failing:
            evidence.failed(f"job-{n}", FailureKind.UNAVAILABLE, now)
            failures += 1
        else:
            evidence.succeeded(f"job-{n}", now)
    cpu = time.process_time() - started
    return cpu * 1e6 / max(failures, 1), cpu / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="simulated time per rate")
    parser.add_argument("--failing", type=float, default=0.5, help="share of requests failed")
    args = parser.parse_args()
    for rate in (100, 500, 900):
        per_failure, share = judged(rate, args.seconds, args.failing)
        print(
            f"{rate:>4} requests/s, {args.failing:.0%} failing: {per_failure:8.1f} us per "
            f"failure, {share:6.1%} of a core"
        )


if __name__ == "__main__":
    main()
