"""Job documents for tests, demos and benchmarks.

``DOCS_EXAMPLE`` is the request body from the basicSync documentation page, byte for byte,
including the trailing comma inside ``metadata.metadata`` that makes it invalid strict JSON;
``docs_example_strict()`` is the same body with that comma removed.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

DOCS_EXAMPLE = b"""{
  "metadata":{
    "clientJobId":"cb3dc8dc-4162-47c4-af05-3575034f99e5",
    "workflowId":"b62f2507-b4e7-4248-83d3-29c03a158fbe",
    "workflowVersionId":"2831f333-af02-4d89-875d-0bceadeb16ed",
    "jobTitle":"Api Test 2",
    "metadata":{
      "Key1":"V1",
    },
    "created":"2021-10-01T12:48:12.215Z",
    "updated":"2021-10-01T12:48:13.824Z",
    "modified":"2021-10-01T12:48:14Z",
    "status":"Completed",
    "userId":"5d8cac54860b8103316b1987",
    "currentStep":null,
    "abandonReason":null,
    "username":"api.user1@example.com",
    "workflowName":"Example Workflow"
  },
  "completedSteps":[
    {
      "singleStep":{
        "values":[
        ],
        "valueResourceIds":[
        ],
        "uniqueStepId":"c025f569-8148-4a75-a2e8-a9bc19da911d",
        "previousUniqueStepId":"",
        "userId":"5d8cac54860b8103316b1987",
        "userName":"api.user1@example.com",
        "deviceId":null,
        "stepId":"ec7eee0d-5115-4141-847a-64c28694dde2",
        "stepNumber":1,
        "stepTitle":"Instruction",
        "stepDescription":"",
        "stepType":"ConfirmStep",
        "connectionType":null,
        "started":"2021-10-01T12:48:12.265Z",
        "completed":"2021-10-01T12:48:13.8Z",
        "updated":"2021-10-01T12:48:13.8Z",
        "cancelled":null,
        "timeEvents":null,
        "note":null,
        "noteResourceFilenames":null,
        "coordinates":null,
        "parentStepId":null,
        "parentUniqueStepId":null,
        "parentStepTitle":null,
        "parentStepDescription":null,
        "metadata":{
          "tags":""
        }
      },
      "reportStep":null
    }],
  "cancelledSteps":null,
  "team":"apiteam",
  "hierarchyStack":null,
  "packetIds":null,
  "jobExclusion":[
  ],
  "excluded":false
}"""


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
