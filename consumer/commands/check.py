"""``basicsync check``: are the settings, Kafka, the topics and WorkfloPlus ready for ``run``?

Prints one line per check, ``ok`` or ``FAIL``, and never a secret (the client secret, SASL
password and tokens are used, not shown). Checks that do not depend on a failed one still run,
so one invocation shows everything that is wrong. The exit code names the first failing area:

====  ==================================================================================
0     everything ok
2     settings invalid (nothing else can be checked)
3     Kafka unreachable (brokers, TLS, SASL) or no broker configured
4     topics: an input topic missing, inputs not co-partitioned, an internal topic missing
      while ``BASICSYNC_KAFKA__CREATE_TOPICS=false``, or a changelog with the wrong partition
      count or not compacted
5     WorkfloPlus: no gateway configured, its CA file unreadable, no token issued (an untrusted
      certificate included), or the gateway not answering
====  ==================================================================================
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from consumer.config import Settings, load_settings
from consumer.errors import ConfigError, GatewayError, TopicLayoutError
from consumer.gateway.auth import ClientCredentialsTokenProvider
from consumer.gateway.client import GatewayClient
from consumer.gateway.tls import gateway_ssl
from consumer.kafka.access import explain_denial
from consumer.kafka.admin import partition_counts
from consumer.kafka.connection import client_kwargs, security_problem
from consumer.kafka.diagnose import describe, explain
from consumer.observability.logging import configure_logging
from consumer.sync.diagnosis import ProbeResult, probe_result

EXIT_OK = 0
EXIT_SETTINGS = 2
EXIT_KAFKA = 3
EXIT_TOPICS = 4
EXIT_GATEWAY = 5


@dataclass(frozen=True)
class Check:
    """One printed line: what was checked, whether it passed, and a detail without secrets."""

    name: str
    ok: bool
    detail: str
    exit_code: int

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'}  {self.name}: {self.detail}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Exit codes: 0 all ok, 2 settings, 3 Kafka, 4 topics, 5 gateway or token "
        "(the first failing area)."
    )
    parser.add_argument(
        "--timeout", type=float, default=15.0, help="seconds allowed for each network check"
    )


def main(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(Check("settings", False, str(exc), EXIT_SETTINGS).line())
        return EXIT_SETTINGS
    configure_logging(settings.observability.log_format, "error")
    checks = [Check("settings", True, "valid", EXIT_OK)]
    checks += asyncio.run(_network_checks(settings, args.timeout))
    for check in checks:
        print(check.line(), flush=True)
    failed = [check.exit_code for check in checks if not check.ok]
    return min(failed, default=EXIT_OK)


async def _network_checks(settings: Settings, limit_s: float) -> list[Check]:
    kafka, gateway = await asyncio.gather(
        _kafka_checks(settings, limit_s), _gateway_checks(settings, limit_s)
    )
    return [*kafka, *gateway]


async def _kafka_checks(settings: Settings, limit_s: float) -> list[Check]:
    servers = settings.kafka.bootstrap_servers
    if servers is None:
        detail = "BASICSYNC_KAFKA__BOOTSTRAP_SERVERS is not set (run would start a local broker)"
        return [Check("kafka", False, detail, EXIT_KAFKA)]
    admin = AIOKafkaAdminClient(
        **client_kwargs(settings.kafka, servers), request_timeout_ms=int(limit_s * 1000)
    )
    try:
        await asyncio.wait_for(admin.start(), limit_s)
        cluster = await asyncio.wait_for(admin.describe_cluster(), limit_s)
    except (KafkaError, OSError, TimeoutError) as exc:
        await admin.close()
        problem = await security_problem(settings.kafka, servers, limit_s)
        if problem is not None:
            return [Check("kafka", False, str(problem), EXIT_KAFKA)]
        detail = f"cannot reach {','.join(servers)}: {await explain(exc, servers)}"
        return [Check("kafka", False, detail, EXIT_KAFKA)]
    brokers = len(cluster.get("brokers", []))
    checks = [Check("kafka", True, f"{','.join(servers)} ({brokers} brokers)", EXIT_OK)]
    try:
        return checks + await asyncio.wait_for(_topic_checks(admin, settings), limit_s)
    except (KafkaError, TopicLayoutError, TimeoutError) as exc:
        denied = explain_denial(exc, settings)
        detail = str(denied) if denied is not None else describe(exc)
        return [*checks, Check("topics", False, detail, EXIT_TOPICS)]
    finally:
        await admin.close()


async def _topic_checks(admin: AIOKafkaAdminClient, settings: Settings) -> list[Check]:
    """The same rules as the consumer's start (``ensure_topology``), reported, not enforced."""
    inputs = settings.topics.input
    internal = [settings.state_topic, settings.topics.succeeded, settings.topics.failed]
    counts = await partition_counts(admin, [*inputs, *internal])
    checks: list[Check] = []
    missing = [topic for topic in inputs if topic not in counts]
    if missing:
        checks.append(
            Check("input topics", False, f"do not exist: {', '.join(missing)}", EXIT_TOPICS)
        )
    else:
        layout = ", ".join(f"{topic}={counts[topic]}" for topic in inputs)
        same = len({counts[topic] for topic in inputs}) == 1
        detail = f"{layout} partitions" + ("" if same else " (not co-partitioned)")
        checks.append(Check("input topics", same, detail, EXIT_TOPICS))
    partitions = counts.get(inputs[0]) if not missing else None
    creatable = settings.kafka.create_topics
    for topic in internal:
        if topic in counts:
            ok = topic != settings.state_topic or partitions in (None, counts[topic])
            detail = f"{topic} exists ({counts[topic]} partitions)"
            if not ok:
                detail += f"; the changelog needs one per input partition ({partitions})"
            if topic == settings.state_topic:
                policy = await _cleanup_policy(admin, topic)
                if "compact" not in policy.split(","):
                    ok = False
                    detail += f"; cleanup.policy is {policy!r}, the changelog must be compacted"
            checks.append(Check("topic", ok, detail, EXIT_TOPICS))
        elif creatable:
            checks.append(Check("topic", True, f"{topic} missing, created at start", EXIT_OK))
        else:
            detail = f"{topic} missing and BASICSYNC_KAFKA__CREATE_TOPICS=false"
            checks.append(Check("topic", False, detail, EXIT_TOPICS))
    return checks


async def _cleanup_policy(admin: AIOKafkaAdminClient, topic: str) -> str:
    """The topic's ``cleanup.policy`` (``delete`` would lose job state after retention)."""
    wanted = ConfigResource(ConfigResourceType.TOPIC, topic, {"cleanup.policy": None})
    responses: Any = await admin.describe_configs([wanted])
    for _code, _message, _type, _name, entries in responses[0].resources:
        for name, value, *_ in entries:
            if name == "cleanup.policy":
                return str(value)
    return "delete"  # the broker default


async def _gateway_checks(settings: Settings, limit_s: float) -> list[Check]:
    gateway = settings.gateway
    if gateway.base_url is None:
        detail = "BASICSYNC_GATEWAY__BASE_URL is not set (run would start the local sandbox)"
        return [Check("gateway", False, detail, EXIT_GATEWAY)]
    # Enforced by GatewaySettings when base_url is set.
    assert gateway.token_url
    assert gateway.client_id
    assert gateway.client_secret
    try:
        connector = aiohttp.TCPConnector(ssl=gateway_ssl(gateway))
    except ConfigError as exc:
        return [Check("gateway", False, str(exc), EXIT_GATEWAY)]
    async with aiohttp.ClientSession(connector=connector) as session:
        tokens = ClientCredentialsTokenProvider(
            session,
            gateway.token_url,
            gateway.client_id,
            gateway.client_secret,
            gateway.scope,
            timeout=limit_s,
        )
        try:
            await tokens.token()
        except GatewayError as exc:  # messages never carry the secret or a token
            return [Check("token", False, f"{gateway.token_url}: {exc}", EXIT_GATEWAY)]
        checks = [Check("token", True, f"issued by {gateway.token_url}", EXIT_OK)]
        client = GatewayClient(session, gateway.base_url, tokens, request_timeout=limit_s)
        status = await client.probe()
        up = probe_result(status) is not ProbeResult.DOWN
        detail = f"{gateway.base_url} {'answers' if up else 'does not answer (down or refusing)'}"
        checks.append(Check("gateway", up, detail, EXIT_GATEWAY))
        return checks
