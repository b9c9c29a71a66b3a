"""Job documents for tests, demos and benchmarks.

``DOCS_EXAMPLE`` is the request body from the basicSync documentation page, byte for byte,
including the trailing comma inside ``metadata.metadata`` that makes it invalid strict JSON;
``docs_example_strict()`` is the same body with that comma removed.

The body is kept once, as data: ``docs_example.jsonc`` beside this module (``.jsonc``: it is
the documentation's text, trailing comma included, so not strict JSON). The sandbox owns it
because the example is WorkfloPlus's, and the sandbox may import nothing of the consumer; the
consumer's demo (``consumer.demo.example``) reads the same file as package data, so neither
side imports the other's code for it.
"""

from __future__ import annotations

import json
import uuid
from importlib import resources
from typing import Any

DOCS_EXAMPLE: bytes = (
    resources.files("consumer.testing.workfloplus")
    .joinpath("docs_example.jsonc")
    .read_bytes()
    .rstrip(b"\n")
)


def docs_example_strict() -> bytes:
    """The documented example body with its trailing comma removed (valid strict JSON)."""
    return DOCS_EXAMPLE.replace(b'"Key1":"V1",', b'"Key1":"V1"')


def job_document(
    client_job_id: str | None = None, *, steps: int = 10, status: str = "InProgress"
) -> dict[str, Any]:
    """A realistic basicSync body with ``steps`` completed steps (every documented field set)."""
    client_job_id = client_job_id or str(uuid.uuid4())
    base: dict[str, Any] = json.loads(docs_example_strict())
    step_template = base["completedSteps"][0]
    completed = []
    for number in range(1, steps + 1):
        wrapper = json.loads(json.dumps(step_template))
        single = wrapper["singleStep"]
        single["uniqueStepId"] = str(uuid.uuid4())
        single["stepId"] = str(uuid.uuid4())
        single["stepNumber"] = number
        single["stepTitle"] = f"Step {number}"
        single["stepType"] = "Text" if number % 2 else "ConfirmStep"
        single["values"] = [f"value {number}"]
        single["timeEvents"] = {"2021-10-01T12:48:13.8Z": 1.5}
        completed.append(wrapper)
    base["metadata"]["clientJobId"] = client_job_id
    base["metadata"]["status"] = status
    base["completedSteps"] = completed
    return base
