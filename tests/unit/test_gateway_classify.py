"""The outcome table of docs/contract.md §7 as a pure function, and Retry-After parsing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from consumer.domain.results import MAX_ERROR_BODY_CHARS, TRUNCATION_SUFFIX, truncate_body
from consumer.gateway.client import (
    Accepted,
    Rejected,
    Retryable,
    Systemic,
    classify,
    parse_retry_after,
    redacted,
)

NOW = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)


class TestClassify:
    @pytest.mark.parametrize("status", [200, 201, 204])
    def test_2xx_is_accepted_with_job_id(self, status: int) -> None:
        """Any 2xx is a success; the server's jobId is taken from the stored job JSON."""
        body = json.dumps({"jobId": "j-42", "metadata": {"clientJobId": "c-1"}})
        assert classify(status, {}, body, NOW) == Accepted(status=status, job_id="j-42", body=body)

    def test_2xx_with_job_in_array(self) -> None:
        """A job returned inside a JSON array (as GET returns it) still yields its jobId."""
        outcome = classify(200, {}, '[{"jobId": "j-7"}]', NOW)
        assert isinstance(outcome, Accepted)
        assert outcome.job_id == "j-7"

    def test_job_id_of_a_document_holding_an_integer_beyond_64_bits(self) -> None:
        values = json.dumps({"singleStep": {"values": [2**70]}})
        body = f'{{"jobId": "j-9", "completedSteps": [{values}]}}'
        assert classify(200, {}, body, NOW) == Accepted(status=200, job_id="j-9", body=body)

    @pytest.mark.parametrize("body", ["", "not json", "{}", '{"jobId": true}', "[]"])
    def test_2xx_without_job_id_is_still_accepted(self, body: str) -> None:
        """The document was stored even when the answer carries no usable jobId."""
        assert classify(200, {}, body, NOW) == Accepted(status=200, job_id=None, body=body)

    @pytest.mark.parametrize(
        ("content_type", "body"),
        [
            ("text/html; charset=utf-8", "<html><body>The requested URL was rejected</body>"),
            ("TEXT/HTML", ""),
            ("application/xhtml+xml", "<?xml version='1.0'?><html/>"),
            ("text/plain", "\n  <!DOCTYPE html><title>Sign in</title>"),
            (None, "<HTML><HEAD><TITLE>Access Denied</TITLE>"),
        ],
    )
    def test_a_2xx_web_page_is_not_basicsyncs_answer(
        self, content_type: str | None, body: str
    ) -> None:
        """A firewall's block page, a login portal or a web app at the base URL answers 200
        with HTML. Accepted, the job would be settled as synced while WorkfloPlus never saw it;
        refused instead, judged by evidence like a 404, with the page for a failure record."""
        headers = {} if content_type is None else {"content-type": content_type}
        assert classify(200, headers, body, NOW) == Systemic(
            status=200, reason="no_basicsync_web_page_200", body_truncated=body or None
        )

    @pytest.mark.parametrize(
        ("content_type", "body"),
        [
            ("application/json", '{"jobId": "j-1"}'),
            ("application/problem+json", "{}"),
            ("text/plain", "ok <html> later"),
            (None, ""),
            ("application/json", '"<html>"'),
        ],
    )
    def test_a_2xx_that_is_no_web_page_is_accepted(
        self, content_type: str | None, body: str
    ) -> None:
        headers = {} if content_type is None else {"Content-Type": content_type}
        assert isinstance(classify(200, headers, body, NOW), Accepted)

    @pytest.mark.parametrize("status", [404, 405])
    def test_404_and_405_are_judged_by_evidence_with_their_body(self, status: int) -> None:
        """basicSync creates a job it does not know, so a 404 or 405 says the URL has no
        basicSync (a wrong base URL or route, every job alike), not that the job is wrong:
        refused and judged by evidence like a 403, keeping the body for a failure record in
        case it is the job's own after all."""
        assert classify(status, {}, '{"error":"nope"}', NOW) == Systemic(
            status=status, reason=f"no_basicsync_{status}", body_truncated='{"error":"nope"}'
        )
        assert classify(status, {}, "", NOW) == Systemic(
            status=status, reason=f"no_basicsync_{status}", body_truncated=None
        )

    @pytest.mark.parametrize("status", [400, 409, 413, 422])
    def test_other_4xx_is_rejected_with_body(self, status: int) -> None:
        """Plain 4xx is a final failure that carries the response body."""
        assert classify(status, {}, '{"error":"bad"}', NOW) == Rejected(
            status=status, body_truncated='{"error":"bad"}'
        )

    def test_rejected_body_is_truncated_once_with_the_marker(self) -> None:
        """Huge error bodies are cut, with the marker, to the one limit of failure records; the
        record built from it carries the same text (cutting again changes nothing)."""
        outcome = classify(400, {}, "x" * (MAX_ERROR_BODY_CHARS * 3), NOW)
        assert isinstance(outcome, Rejected)
        assert outcome.body_truncated == "x" * MAX_ERROR_BODY_CHARS + TRUNCATION_SUFFIX
        assert truncate_body(outcome.body_truncated) == outcome.body_truncated

    @pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
    def test_transient_statuses_are_retryable(self, status: int) -> None:
        """408, 429 and 5xx are retried with backoff."""
        assert classify(status, {}, "", NOW) == Retryable(
            status=status, retry_after=None, reason=f"http_{status}"
        )

    def test_403_is_systemic(self) -> None:
        """403: the client lacks the scope or permission, so every job would fail alike."""
        assert classify(403, {}, "", NOW) == Systemic(status=403, reason="forbidden")

    def test_401_is_systemic_once_it_reaches_classify(self) -> None:
        """The client retries a 401 once with a fresh token; a 401 classified here is final."""
        outcome = classify(401, {}, "", NOW)
        assert isinstance(outcome, Systemic)
        assert outcome.status == 401

    @pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
    def test_redirect_is_systemic(self, status: int) -> None:
        """A redirect means a wrong base URL, the same for every job: Systemic, not Rejected."""
        assert classify(status, {}, "", NOW) == Systemic(
            status=status, reason=f"unexpected_status_{status}"
        )

    def test_retry_after_seconds(self) -> None:
        """``Retry-After: 2`` on a 429 asks for two seconds."""
        outcome = classify(429, {"Retry-After": "2"}, "", NOW)
        assert outcome == Retryable(status=429, retry_after=2.0, reason="http_429")

    def test_retry_after_header_name_is_case_insensitive(self) -> None:
        """Header names are case-insensitive, even in a plain dict."""
        outcome = classify(503, {"retry-after": "7"}, "", NOW)
        assert isinstance(outcome, Retryable)
        assert outcome.retry_after == 7.0

    def test_retry_after_http_date(self) -> None:
        """``Retry-After`` as an HTTP-date is turned into seconds from ``now``."""
        header = format_datetime(NOW + timedelta(seconds=90), usegmt=True)
        outcome = classify(503, {"Retry-After": header}, "", NOW)
        assert isinstance(outcome, Retryable)
        assert outcome.retry_after == 90.0


class TestParseRetryAfter:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (None, None),
            ("0", 0.0),
            ("120", 120.0),
            (" 3 ", 3.0),
            ("-5", 0.0),
            ("soon", None),
            ("", None),
            ("nan", None),
            ("inf", None),
            ("Fri, 27 Nov 2026 12:00:30 GMT", 30.0),
            ("Fri, 27 Nov 2026 11:00:00 GMT", 0.0),
            ("Friday, 27-Nov-26 12:01:00 GMT", 60.0),
        ],
    )
    def test_values(self, value: str | None, expected: float | None) -> None:
        """Seconds, HTTP-dates (past ones give 0) and garbage (None: use our own backoff)."""
        assert parse_retry_after(value, NOW) == expected


class TestRedacted:
    @pytest.mark.parametrize(
        "echoed",
        ["tok+en/with=", "tok%2Ben%2Fwith%3D", "tok+en\\/with="],
        ids=["raw", "url-encoded", "json-escaped-slash"],
    )
    def test_every_form_of_the_token_is_cut_out(self, echoed: str) -> None:
        text = f'{{"Authorization": "Bearer {echoed}", "n": 1}}'
        assert redacted(text, "tok+en/with=") == '{"Authorization": "Bearer [redacted]", "n": 1}'

    def test_a_body_without_the_token_is_left_as_it_is(self) -> None:
        assert redacted("no token here", "eyJhbGciOi.e30.sig") == "no token here"

    def test_a_token_straddling_the_cut_is_cut_out_first(self) -> None:
        """The body is cut to the failure record's limit after the token is taken out, so no
        part of a token that crossed the limit is kept."""
        token = "eyJhbGciOi.e30.signature-part"
        body = "x" * (MAX_ERROR_BODY_CHARS - 10) + f"Bearer {token}" + "y" * 5000
        outcome = classify(400, {}, body, NOW, token=token)
        assert isinstance(outcome, Rejected)
        assert "eyJhbGciOi" not in outcome.body_truncated
        assert outcome.body_truncated.endswith(TRUNCATION_SUFFIX)
        web_page = classify(200, {"Content-Type": "text/html"}, f"<html>{token}", NOW, token=token)
        assert web_page == Systemic(200, "no_basicsync_web_page_200", "<html>[redacted]")
