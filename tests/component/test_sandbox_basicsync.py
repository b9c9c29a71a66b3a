"""Contract tests of basicSync and get-job in the sandbox: body rules and job lifecycle."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from consumer.testing.workfloplus.examples import DOCS_EXAMPLE, docs_example_strict, job_document
from tests.fixtures.sandbox import SandboxHandle


class Client:
    """A bearer-authenticated test client for one sandbox."""

    def __init__(self, handle: SandboxHandle, session: aiohttp.ClientSession, token: str) -> None:
        self.handle = handle
        self.session = session
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    async def post(self, body: bytes | dict[str, Any]) -> tuple[int, Any]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        url = self.handle.basic_sync_url
        async with self.session.post(url, data=data, headers=self.headers) as response:
            return response.status, await response.json()

    async def get(self, client_job_id: str) -> tuple[int, Any]:
        url = self.handle.job_url(client_job_id)
        async with self.session.get(url, headers=self.headers) as response:
            return response.status, await response.json()


@pytest.fixture
async def client(sandbox: SandboxHandle, sandbox_http: aiohttp.ClientSession) -> Client:
    return Client(sandbox, sandbox_http, await sandbox.token(sandbox_http))


def _with(document: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    changed: dict[str, Any] = json.loads(json.dumps(document))
    changed["metadata"].update(metadata)
    return changed


class TestDocumentedExample:
    async def test_docs_example_is_accepted_and_read_back_identically(self, client: Client) -> None:
        """The documented body (trailing comma removed) is stored and GET returns it exactly,
        as a one-element array, with only ``jobId`` added."""
        sent = json.loads(docs_example_strict())
        status, created = await client.post(docs_example_strict())
        assert status == 200
        job_id = created.pop("jobId")
        assert isinstance(job_id, str)
        assert job_id
        assert created == sent
        status, fetched = await client.get(sent["metadata"]["clientJobId"])
        assert status == 200
        assert fetched == [{**sent, "jobId": job_id}]

    async def test_docs_example_with_trailing_comma_is_rejected(self, client: Client) -> None:
        """The literal documented body is not strict JSON: 400 naming the trailing comma."""
        status, body = await client.post(DOCS_EXAMPLE)
        assert status == 400
        assert "trailing comma" in body["message"]


class TestMalformedBodies:
    @pytest.mark.parametrize(
        ("raw", "fragment"),
        [
            (b"", "not valid JSON"),
            (b"{'metadata': {}}", "not valid JSON"),
            (b'{"metadata": {"clientJobId": "a", "workflowId": "w"}, "packetIds": [NaN]}', "JSON"),
            (
                b'{"metadata": {"clientJobId": "a", "workflowId": "w"}, "packetIds": [-Infinity]}',
                "JSON",
            ),
            (b"[1, 2]", "not a basicSync job document"),
        ],
    )
    async def test_non_strict_json_is_400(self, client: Client, raw: bytes, fragment: str) -> None:
        """Empty bodies, single quotes, NaN/Infinity (even in free-form fields) and non-objects
        get 400 with a clear message."""
        status, body = await client.post(raw)
        assert status == 400
        assert fragment in body["message"]

    @pytest.mark.parametrize(
        ("mutate", "where"),
        [
            (lambda d: d["metadata"].pop("clientJobId"), "metadata.clientJobId"),
            (lambda d: d["metadata"].pop("workflowId"), "metadata.workflowId"),
            (lambda d: d["metadata"].update(clientJobId=42), "metadata.clientJobId"),
            (lambda d: d.pop("metadata"), "metadata"),
            (lambda d: d.update(completedSteps={"a": 1}), "completedSteps"),
            (lambda d: d["completedSteps"][0]["singleStep"].update(stepNumber="1"), "stepNumber"),
            (lambda d: d["metadata"].update(metadata={"k": 1}), "metadata.metadata.k"),
            (lambda d: d.update(excluded="false"), "excluded"),
            (lambda d: d.update(jobExclusion={}), "jobExclusion"),
            (lambda d: d.update(client_job_id="x"), "client_job_id"),
            (lambda d: d["metadata"].update(jobtitle="x"), "metadata.jobtitle"),
        ],
    )
    async def test_wrong_shape_is_400_naming_the_field(
        self, client: Client, mutate: Any, where: str
    ) -> None:
        """Missing ids, wrong types and unknown keys get 400 naming the offending field."""
        document = job_document()
        mutate(document)
        status, body = await client.post(document)
        assert status == 400
        assert where in body["message"]
        assert await client.handle.control.jobs() == {}

    async def test_unknown_status_passes_through(self, client: Client) -> None:
        """Status strings are not validated: an unknown one is stored unchanged."""
        document = job_document(status="SomethingNew")
        status, body = await client.post(document)
        assert status == 200
        assert body["metadata"]["status"] == "SomethingNew"

    async def test_nan_inside_a_string_is_fine(self, client: Client) -> None:
        """The strict-JSON check does not trip on the text ``NaN`` inside a string."""
        document = job_document(status="NaN Infinity")
        status, body = await client.post(document)
        assert status == 200
        assert body["metadata"]["status"] == "NaN Infinity"

    async def test_minimal_document_with_only_the_ids_is_accepted(self, client: Client) -> None:
        """Only ``metadata.clientJobId`` and ``metadata.workflowId`` are required."""
        status, _ = await client.post({"metadata": {"clientJobId": "min", "workflowId": "w"}})
        assert status == 200


class TestLifecycle:
    async def test_create_then_update_keeps_the_job_id(self, client: Client) -> None:
        """A new clientJobId creates a job with a jobId; a later post updates the same job."""
        document = job_document("job-1", status="InProgress")
        status, created = await client.post(document)
        assert status == 200
        updated_doc = _with(document, status="Paused", jobTitle="renamed")
        status, updated = await client.post(updated_doc)
        assert status == 200
        assert updated["jobId"] == created["jobId"]
        assert updated["metadata"]["jobTitle"] == "renamed"
        outcomes = [r.outcome for r in await client.handle.control.requests("job-1")]
        assert outcomes == ["created", "updated"]

    async def test_status_aborted_aborts_the_job(self, client: Client) -> None:
        """Posting an existing job with status Aborted aborts it (recorded as ``aborted``)."""
        document = job_document("job-2")
        await client.post(document)
        status, body = await client.post(_with(document, status="Aborted", abandonReason="x"))
        assert status == 200
        assert body["metadata"]["status"] == "Aborted"
        _, fetched = await client.get("job-2")
        assert fetched[0]["metadata"]["status"] == "Aborted"
        posts = await client.handle.control.requests("job-2", path="/jobs/v1/basicSync")
        assert [r.outcome for r in posts] == ["created", "aborted"]

    async def test_aborting_a_completed_job_is_409(self, client: Client) -> None:
        """A Completed job cannot be aborted: 409 saying why, and the stored job is unchanged."""
        document = job_document("job-3", status="Completed")
        await client.post(document)
        status, body = await client.post(_with(document, status="Aborted"))
        assert status == 409
        assert body["error"] == "job_completed"
        assert "only incomplete jobs can be aborted" in body["message"]
        _, fetched = await client.get("job-3")
        assert fetched[0]["metadata"]["status"] == "Completed"
        assert len(await client.handle.control.history("job-3")) == 1

    async def test_get_unknown_job_is_404(self, client: Client) -> None:
        """GET of a clientJobId never posted is 404."""
        status, body = await client.get("never-posted")
        assert status == 404
        assert body["error"] == "not_found"

    async def test_get_needs_a_valid_token(
        self, client: Client, sandbox: SandboxHandle, sandbox_http: aiohttp.ClientSession
    ) -> None:
        """GET without a token is 401 even for a stored job."""
        await client.post(job_document("job-4"))
        async with sandbox_http.get(sandbox.job_url("job-4")) as response:
            assert response.status == 401
