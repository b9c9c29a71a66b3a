"""Peer, Quix Streams: the same assembly written as a Quix Streams user would write it.

Runs in its own virtualenv (``requirements-quix.txt``: Quix Streams pins pydantic below the
version the project uses, so it must not be installed into the project's venv) with the
repository on ``PYTHONPATH`` for the pure reducer. The three input topics are read as one
stream (``concat``); a stateful ``apply`` keeps each job's state in Quix's RocksDB store,
backed by its changelog topic, and emits the job's document after every event; a
``BatchingSink`` posts what accumulated at each checkpoint (Quix's default 5 s commit
interval), one request per emitted document, jobs in parallel over a thread pool, each job's
documents in order, skipping any older than one already posted. Runs until SIGTERM.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import requests
from quixstreams import Application, State  # type: ignore[import-not-found]
from quixstreams.sinks import BatchingSink, SinkBatch  # type: ignore[import-not-found]

from consumer.domain.basicsync import encode_body
from consumer.domain.events import InvalidEvent, decode_event
from consumer.domain.job import JobState, apply, is_postable
from consumer.domain.state_codec import decode_state, encode_state
from tests.bench.common import CLIENT_ID, CLIENT_SECRET, run_arguments


def assemble(value: bytes, key: Any, timestamp: int, headers: Any, state: State) -> Any:
    """Fold one event into the job's state; emit ``(version, body)`` or None."""
    try:
        event = decode_event(key, value, list(headers or ()))
    except InvalidEvent:
        return None
    held = state.get("job")
    previous = decode_state(held.encode()) if held else None
    result = apply(previous, event, datetime.now(UTC))
    if not isinstance(result, JobState):
        return None
    state.set("job", encode_state(result).decode())
    if not is_postable(result):  # WorkfloPlus answers 400 without workflowId
        return None
    return {"version": result.version, "body": encode_body(result).decode()}


class BasicSyncSink(BatchingSink):  # type: ignore[misc]
    """Posts each emitted document to WorkfloPlus's basicSync."""

    def __init__(self, base_url: str, concurrency: int) -> None:
        super().__init__()
        self._url = f"{base_url}/jobs/v1/basicSync"
        self._token_url = f"{base_url}/connect/token"
        self._pool = ThreadPoolExecutor(concurrency)
        self._local = threading.local()
        self._posted: dict[Any, int] = {}
        self._token = ""

    def setup(self) -> None:
        self._token = self._fetch_token()

    def _fetch_token(self) -> str:
        form = {
            "grant_type": "client_credentials",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        }
        response = requests.post(self._token_url, data=form, timeout=30)
        response.raise_for_status()
        token: str = response.json()["access_token"]
        return token

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _post_in_order(self, key: Any, items: list[dict[str, Any]]) -> None:
        session = self._session()
        for item in items:
            if item["version"] <= self._posted.get(key, 0):
                continue
            response = session.post(
                self._url,
                data=item["body"].encode(),
                headers={
                    "Authorization": f"Bearer {self._token}",
                    "Content-Type": "application/json",
                },
                timeout=30,
            )
            if response.status_code >= 500:
                response.raise_for_status()  # Quix stops; a user would add retries next
            self._posted[key] = item["version"]

    def write(self, batch: SinkBatch) -> None:
        by_job: dict[Any, list[dict[str, Any]]] = defaultdict(list)
        for item in batch:
            if item.value is not None:
                by_job[item.key].append(item.value)
        for future in [self._pool.submit(self._post_in_order, k, v) for k, v in by_job.items()]:
            future.result()


def main() -> None:
    args = run_arguments(__doc__.splitlines()[0]).parse_args()
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=args.state_dir,
        loglevel="WARNING",
    )
    frames = [
        app.dataframe(app.topic(name, key_deserializer="bytes", value_deserializer="bytes"))
        for name in args.topics.split(",")
    ]
    stream = frames[0]
    for other in frames[1:]:
        stream = stream.concat(other)
    stream = stream.apply(assemble, stateful=True, metadata=True)
    stream = stream.filter(lambda value: value is not None)
    stream.sink(BasicSyncSink(args.sandbox, args.concurrency))
    app.run()


if __name__ == "__main__":
    main()
