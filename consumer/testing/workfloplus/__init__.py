"""The WorkfloPlus sandbox: a test double of the WorkfloPlus API (token server, basicSync and
get-job), with inspection and fault injection.

Run it with ``basicsync sandbox`` or in-process with ``run_sandbox``; drive it from tests with
``SandboxControl`` (HTTP, any process) or the ``Sandbox`` object's ``state`` and ``faults``.
Names say which side they are on: the endpoints it imitates are in ``api_routes``, its own
inspection and fault endpoints (under ``/_sandbox``) in ``control_routes``, their client in
``control_client``; the bodies it receives are ``Received*`` models (``received_body``), the
jobs it holds ``StoredJob`` (``state``), the 4xx it injects ``InjectedRejection`` (``faults``).

It imports nothing of the consumer (see ``consumer.testing``). See README.md beside this file.
"""

from consumer.testing.workfloplus.control_client import SandboxControl, SandboxControlError
from consumer.testing.workfloplus.control_models import Overlaps, RecordedRequest
from consumer.testing.workfloplus.faults import (
    ExponentialLatency,
    FaultConfig,
    Faults,
    FixedLatency,
    InjectedRejection,
    UniformLatency,
)
from consumer.testing.workfloplus.server import Sandbox, run_sandbox
from consumer.testing.workfloplus.settings import JOB_READ, WORKFLOW_EXECUTE, SandboxSettings

__all__ = [
    "JOB_READ",
    "WORKFLOW_EXECUTE",
    "ExponentialLatency",
    "FaultConfig",
    "Faults",
    "FixedLatency",
    "InjectedRejection",
    "Overlaps",
    "RecordedRequest",
    "Sandbox",
    "SandboxControl",
    "SandboxControlError",
    "SandboxSettings",
    "UniformLatency",
    "run_sandbox",
]
