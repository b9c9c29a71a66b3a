"""Demo jobs: realistic job event streams, what each must become, and putting them on Kafka.

- ``jobs``: pure, seeded generation (``DemoPlan`` -> ``build_demo`` -> events and each job's
  expected basicSync body); no I/O.
- ``example``: the documented basicSync example as a job (its body and events).
- ``sender``: the one kind-to-topic table, the encoding and the send loop.

Used by ``basicsync demo``, ``basicsync run --embedded``, the integration tests and the
benchmarks.
"""

from consumer.demo.jobs import DemoJobs, DemoPlan, build_demo, demo_job
from consumer.demo.sender import demo_records, send_events, send_records

__all__ = [
    "DemoJobs",
    "DemoPlan",
    "build_demo",
    "demo_job",
    "demo_records",
    "send_events",
    "send_records",
]
