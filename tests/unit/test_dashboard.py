"""deploy/grafana/basicsync.json: the dashboard queries only metrics a consumer exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.fixtures.served_metrics import served_series

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "basicsync.json"
#: What the dashboard must show (issue: lag, throughput, requests by outcome, circuit state,
#: latency, memory), each as a metric some panel queries.
REQUIRED = {
    "basicsync_consumer_lag",
    "basicsync_events_consumed_total",
    "basicsync_sync_requests_total",
    "basicsync_circuit_state",
    "basicsync_partitions_paused",
    "basicsync_sync_request_seconds_bucket",
    "basicsync_intent_commit_seconds_bucket",
    "basicsync_event_to_sync_seconds_bucket",
    "process_resident_memory_bytes",
}


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def _queried() -> set[str]:
    """Metric names in the panels' PromQL: an identifier right before a selector or range."""
    names: set[str] = set()
    for panel in _dashboard()["panels"]:
        for target in panel["targets"]:
            names |= set(re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[{\[]", target["expr"]))
    return names


class TestDashboard:
    async def test_every_queried_metric_is_served(self) -> None:
        """Each metric a panel queries is in the /metrics output of a consumer's endpoint,
        so no panel is empty because of a renamed or missing metric."""
        queried = _queried()
        assert queried
        missing = queried - await served_series()
        assert not missing, f"the dashboard queries metrics nobody exports: {sorted(missing)}"

    def test_shows_what_operators_look_for(self) -> None:
        """Lag, throughput, requests by outcome, circuit state, latency and memory each have
        a panel."""
        assert _queried() >= REQUIRED

    def test_panels_are_well_formed(self) -> None:
        """Unique panel ids, a Prometheus datasource variable, and a title and unit on every
        panel."""
        panels = _dashboard()["panels"]
        assert len({p["id"] for p in panels}) == len(panels)
        variables = {v["name"]: v for v in _dashboard()["templating"]["list"]}
        assert variables["datasource"]["query"] == "prometheus"
        for panel in panels:
            assert panel["title"]
            assert panel["fieldConfig"]["defaults"]["unit"]
            assert panel["datasource"]["uid"] == "${datasource}"
