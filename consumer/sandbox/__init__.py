"""A local WorkfloPlus: token server, basicSync and get-job, with inspection and faults.

Run it with ``basicsync sandbox`` or in-process with ``run_sandbox``; drive it from tests with
``SandboxControl`` (HTTP, any process) or the ``Sandbox`` object's ``state`` and ``faults``.
The endpoints it imitates are in ``api``; its own inspection and fault endpoints, under
``/_sandbox``, are listed in ``control_api``.
"""

from consumer.sandbox.control import SandboxControl, SandboxControlError
from consumer.sandbox.faults import (
    ExponentialLatency,
    FaultConfig,
    Faults,
    FixedLatency,
    Rejection,
    UniformLatency,
)
from consumer.sandbox.models import Overlaps, RecordedRequest
from consumer.sandbox.server import Sandbox, run_sandbox
from consumer.sandbox.settings import JOB_READ, WORKFLOW_EXECUTE, SandboxSettings

__all__ = [
    "JOB_READ",
    "WORKFLOW_EXECUTE",
    "ExponentialLatency",
    "FaultConfig",
    "Faults",
    "FixedLatency",
    "Overlaps",
    "RecordedRequest",
    "Rejection",
    "Sandbox",
    "SandboxControl",
    "SandboxControlError",
    "SandboxSettings",
    "UniformLatency",
    "run_sandbox",
]
