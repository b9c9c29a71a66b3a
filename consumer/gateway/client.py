"""The WorkfloPlus gateway client: POST basicSync and classify what came back.

:func:`classify` is the outcome table of docs/contract.md §7 as a pure function of the response;
:class:`GatewayClient` is the aiohttp shell around it. Expected failures (4xx, 5xx, timeouts,
connection errors, a token endpoint that is down or refuses us) are returned as
:data:`SyncOutcome` values, never raised, so the scheduler handles every case with one ``match``:

=====================================  ============  ===========================================
response                               outcome       scheduler
=====================================  ============  ===========================================
2xx                                    Accepted      success record, remember version and jobId
401 (after one free token refresh),    Systemic      systemic or per-job, judged by evidence
403, 404, 405, 3xx, a 2xx web page,                  across jobs (consumer.sync.diagnosis)
token endpoint refusing us
408, 429, 5xx, timeout, connection,    Retryable     backoff with full jitter, >= retry_after;
token endpoint down                                  a timeout or a connection lost after
                                                     sending is *in doubt*: no new post until
                                                     the old one can no longer land
other 4xx                              Rejected      final failure record with truncated body
=====================================  ============  ===========================================
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeAlias
from urllib.parse import quote

import aiohttp
import orjson
import structlog

from consumer.domain.results import MAX_ERROR_BODY_CHARS, truncate_body
from consumer.errors import AuthRejected, TokenUnavailable
from consumer.gateway.answer import read_answer
from consumer.gateway.auth import TokenProvider
from consumer.gateway.proxy import Proxy, proxy_kwargs
from consumer.gateway.timely_body import TimelyBody

log = structlog.get_logger(__name__)

BASIC_SYNC_PATH = "/jobs/v1/basicSync"
#: The reason of a request not sent: its send deadline passed before its body could leave.
SEND_DEADLINE_PASSED = "send_deadline_passed"
#: The reason prefix of an answer that says no basicSync answered (404, 405, a 2xx web page).
NO_BASICSYNC = "no_basicsync"
_WEB_PAGE_TYPES = frozenset({"text/html", "application/xhtml+xml"})


@dataclass(frozen=True, slots=True)
class Accepted:
    """2xx: WorkfloPlus stored the document. ``body`` is the stored job JSON as text."""

    status: int
    job_id: str | None
    body: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """Other 4xx: this document will never be accepted as is; a final failure.

    ``body_truncated`` is the response body as the failure record carries it, cut by
    :func:`consumer.domain.results.truncate_body` (one limit, with a marker).
    """

    status: int
    body_truncated: str


@dataclass(frozen=True, slots=True)
class Retryable:
    """Try again later: 408, 429, 5xx, timeout, connection error, token endpoint down.

    ``status`` is ``None`` when no gateway response arrived; ``retry_after`` is in seconds.
    ``in_doubt`` is True when the request may have reached WorkfloPlus and still be applied
    (a timeout, or the connection lost after it was sent): the job is *in doubt* then.
    """

    status: int | None
    retry_after: float | None
    reason: str
    in_doubt: bool = False


@dataclass(frozen=True, slots=True)
class Systemic:
    """Every request would fail the same way (403, 401 after a fresh token, 404 or 405 from
    basicSync, a 2xx web page, a 3xx, bad credentials), unless other jobs get through: judged by
    evidence. ``body_truncated``: a 404's, 405's or web page's body, for the failure record if
    it is the job's own."""

    status: int | None
    reason: str
    body_truncated: str | None = None


SyncOutcome: TypeAlias = Accepted | Rejected | Retryable | Systemic


def classify(
    status: int,
    headers: Mapping[str, str],
    body_text: str,
    now: datetime,
    *,
    token: str | None = None,
) -> SyncOutcome:
    """Classify a gateway response per docs/contract.md §7; ``now`` resolves HTTP-date Retry-After.

    A 401 classified here is final (:class:`Systemic`); the one free retry with a fresh token is
    the client's business, before it calls this. ``token``, the bearer token the request
    carried, is cut out of every body an outcome keeps (:func:`redacted`).
    """
    if 200 <= status < 300:
        if is_web_page(headers, body_text):
            # We ask for JSON; an HTML page is what a firewall's block page, a login portal or a
            # web app at the base URL answers, never basicSync. Accepted, the job would be
            # settled as synced while WorkfloPlus never saw it.
            body = _kept(body_text, token) or None
            return Systemic(
                status=status, reason=f"{NO_BASICSYNC}_web_page_{status}", body_truncated=body
            )
        return Accepted(status=status, job_id=_job_id(body_text), body=body_text)
    if status == 401:
        return Systemic(status=status, reason="unauthorized_after_token_refresh")
    if status == 403:
        return Systemic(status=status, reason="forbidden")
    if status in (408, 429) or status >= 500:
        retry_after = parse_retry_after(_header(headers, "Retry-After"), now)
        return Retryable(status=status, retry_after=retry_after, reason=f"http_{status}")
    if status in (404, 405):
        # basicSync creates a job it does not know, so neither says "no such job": the URL
        # has no basicSync (a wrong base URL or gateway route) for every job, unless others
        # get through. Final only as the job's own, after its budget.
        body = _kept(body_text, token) or None
        return Systemic(status=status, reason=f"{NO_BASICSYNC}_{status}", body_truncated=body)
    if 400 <= status < 500:
        return Rejected(status=status, body_truncated=_kept(body_text, token))
    # 3xx: we never follow redirects on POST (a 303 would turn it into a GET); a redirect means
    # the configured base URL is wrong (http vs https, old host) and every job would get it.
    return Systemic(status=status, reason=f"unexpected_status_{status}")


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP-date.

    Dates in the past give 0; unparseable values give ``None`` (fall back to our own backoff).
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if seconds == seconds and seconds != float("inf") else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; parsedate gives naive for "-0000"
        when = when.replace(tzinfo=UTC)
    return max((when - now).total_seconds(), 0.0)


#: What stands in a gateway's answer for the bearer token it echoed.
REDACTED = "[redacted]"


def redacted(text: str, token: str) -> str:
    """``text`` without ``token``: a gateway (or a proxy) in debugging mode echoes the request's
    headers in an error body, and the body goes into a failure record, which its readers keep.
    Also its URL-encoded form and JSON's escaped slashes (an opaque token may hold ``+``, ``/``
    and ``=``; a JWT holds none)."""
    for form in {token, quote(token, safe=""), token.replace("/", "\\/")}:
        if form and form in text:
            text = text.replace(form, REDACTED)
    return text


def _kept(body_text: str, token: str | None) -> str:
    """A body as a failure record keeps it: the token cut out first (it could straddle the
    cut), from what the cut keeps and a token's worth more, then cut to the record's limit."""
    if token:
        body_text = redacted(body_text[: MAX_ERROR_BODY_CHARS + 4 * len(token)], token)
    return truncate_body(body_text) or ""


def is_web_page(headers: Mapping[str, str], body_text: str) -> bool:
    """An HTML document: by its media type, or by how it starts when it is sent untyped or
    mistyped (a block page served as ``text/plain``)."""
    media_type = (_header(headers, "Content-Type") or "").partition(";")[0].strip().lower()
    if media_type in _WEB_PAGE_TYPES:
        return True
    start = body_text[:64].lstrip().lower()
    return start.startswith(("<!doctype html", "<html"))


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), None)


def _job_id(body_text: str) -> str | None:
    """``jobId`` of the stored job (an object, or an array holding one).

    The answer is the whole stored document, as large as the body posted: orjson reads it in a
    fraction of the standard parser's time (which took 3% of a backlog's CPU). orjson refuses
    integers beyond 64 bits, which a step's values may hold: the standard parser reads those.
    """
    try:
        payload = orjson.loads(body_text)
    except ValueError:
        try:
            payload = json.loads(body_text)
        except ValueError:
            return None
    if isinstance(payload, list) and payload:
        payload = payload[0]
    job_id = payload.get("jobId") if isinstance(payload, dict) else None
    return str(job_id) if isinstance(job_id, str | int) and not isinstance(job_id, bool) else None


#: The most read of a basicSync answer. A 2xx answer is the stored job, about the size of the
#: document sent (at most ``kafka.max_job_bytes``, 16 MiB by default); only its ``jobId`` is
#: used. Past this, the answer is cut and that ``jobId`` may be missing from the success record.
DEFAULT_MAX_ANSWER_BYTES = 64 * 1024 * 1024


class GatewayClient:
    """POSTs job documents to ``{base_url}/jobs/v1/basicSync`` and classifies the answer."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        token_provider: TokenProvider,
        *,
        request_timeout: float,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
        proxy: Proxy | None = None,
    ) -> None:
        self._session = session
        self._proxy = proxy_kwargs(proxy)
        self._max_answer_bytes = max_answer_bytes
        self._base_url = base_url.rstrip("/")
        self._tokens = token_provider
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._wall_clock = wall_clock

    def __repr__(self) -> str:
        return f"GatewayClient(base_url={self._base_url!r})"

    async def post_basic_sync(self, body: bytes, send_by: float | None = None) -> SyncOutcome:
        """POST one job document (JSON bytes); never raises for expected failures.

        ``send_by`` (``time.monotonic()`` seconds): no byte of the request is sent after it (a
        slow token fetch or connection, a process paused), so the caller can bound when a
        request it announced can still land; it comes back as a ``Retryable`` that is not in
        doubt. The deadline is checked as the body goes to the socket (:mod:`.timely_body`).
        """
        url = self._base_url + BASIC_SYNC_PATH
        for refreshed in (False, True):
            token = await self._token()
            if not isinstance(token, str):
                return token
            sent = TimelyBody(body, send_by)
            try:
                async with self._session.post(
                    url,
                    data=sent,
                    headers=_headers(token, content_type=True),
                    timeout=self._timeout,
                    allow_redirects=False,
                    **self._proxy,
                ) as response:
                    status = response.status
                    if status == 401 and not refreshed:
                        await self._tokens.invalidate(token)
                        log.info("gateway_unauthorized_refreshing_token")
                        continue
                    answer = await read_answer(response, self._max_answer_bytes)
                    headers = dict(response.headers)
                if answer.cut:
                    log.warning(
                        "gateway_answer_cut", status=status, limit_bytes=self._max_answer_bytes
                    )
            except (TimeoutError, aiohttp.ClientError) as exc:
                return _unanswered(sent, exc)
            return classify(status, headers, answer.text, self._wall_clock(), token=token)
        raise AssertionError("unreachable: the second pass always returns")  # pragma: no cover

    async def probe(self) -> int | None:
        """Is the gateway up? The HTTP status of a cheap call with our token; ``None`` when no
        token could be had or no answer came (timeout, connection error).

        Sends ``GET {base_url}/jobs/v1/basicsync-probe-<random>``, a job that cannot exist: 404
        (the sandbox's answer) or 2xx means the gateway is up and accepted our token. 403 means
        up too, but says less: the real gateway guards that GET with the ``Job_Read`` policy,
        which a least-privilege client (``workflow.execute`` only) lacks, so it cannot tell a
        refused job from a revoked scope. 401 drops the token so the next probe fetches a fresh
        one. What each status is worth as evidence is
        :func:`consumer.sync.diagnosis.probe_result`'s business.
        """
        token = await self._token()
        if not isinstance(token, str):
            log.info("gateway_probe_failed", reason=getattr(token, "reason", None))
            return None
        url = f"{self._base_url}/jobs/v1/basicsync-probe-{uuid.uuid4().hex}"
        try:
            async with self._session.get(
                url,
                headers=_headers(token, content_type=False),
                timeout=self._timeout,
                **self._proxy,
            ) as response:
                status = response.status
                await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.info("gateway_probe_failed", reason=_network_reason(exc))
            return None
        if status == 401:
            await self._tokens.invalidate(token)
        log.info("gateway_probe", status=status)
        return status

    async def _token(self) -> str | SyncOutcome:
        try:
            return await self._tokens.token()
        except AuthRejected as exc:
            return Systemic(status=None, reason=f"token_rejected: {exc}")
        except TokenUnavailable as exc:
            return Retryable(status=None, retry_after=None, reason=f"token_unavailable: {exc}")


def _unanswered(sent: TimelyBody, exc: TimeoutError | aiohttp.ClientError) -> Retryable:
    """No answer: in doubt only if the body left (a connection lost after it, a timeout).

    A request that never connected, or failed before its body was handed over, sent nothing;
    sealing the body first keeps it so, whatever aiohttp's writer task does later.
    """
    sent.seal()
    if sent.refused:
        return Retryable(status=None, retry_after=None, reason=SEND_DEADLINE_PASSED)
    reason = _network_reason(exc)
    return Retryable(status=None, retry_after=None, reason=reason, in_doubt=sent.handed_over)


def _headers(token: str, *, content_type: bool) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    if content_type:
        headers["Content-Type"] = "application/json"
    return headers


def _network_reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        # The class name alone does not say which check failed: an unknown CA (a private or
        # renewed one missing from BASICSYNC_GATEWAY__SSL_CAFILE), a name or a date.
        cause = exc.certificate_error
        detail = getattr(cause, "verify_message", None) or type(cause).__name__
        return f"connection_error: {type(exc).__name__}: {detail}"
    if isinstance(exc, aiohttp.ClientConnectionError):
        return f"connection_error: {type(exc).__name__}"
    return f"client_error: {type(exc).__name__}"
