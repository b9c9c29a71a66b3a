"""The pure parts of ``basicsync demo``: the records it sends (``consumer.demo.sender``)."""

from __future__ import annotations

import socket
from collections import Counter

import pytest

from consumer.demo import DemoPlan, build_demo, demo_records
from consumer.demo.sender import TOPIC_OF_KIND
from consumer.domain.events import EventType, InvalidEvent, decode_event
from consumer.domain.results import FailureReason

TOPICS = ["upserts", "steps", "statuses"]


class TestDemoRecords:
    def test_without_invalid_share_every_event_decodes_and_goes_to_its_kind_topic(self) -> None:
        """All demo events are sent once, decodable, keyed by their subject, by kind."""
        plan = DemoPlan(jobs=5, steps=3, seed=1)
        records, invalid = demo_records(plan, TOPICS, 0.0)
        assert invalid == 0
        assert len(records) == len(build_demo(plan).events)
        for topic, key, value, headers in records:
            event = decode_event(key, value, headers)
            assert event.subject.encode() == key
            expected = {"com.workfloplus.job.upserted": "upserts"}.get(event.type.value)
            assert expected is None or topic == expected
        assert {topic for topic, *_ in records} == set(TOPICS)

    def test_invalid_share_adds_each_kind_of_invalid_event(self) -> None:
        """The invalid share is extra events: bad JSON, unknown type, key mismatch in turn."""
        plan = DemoPlan(jobs=10, steps=3, seed=2)
        records, invalid = demo_records(plan, TOPICS, 0.2)
        valid = len(build_demo(plan).events)
        assert invalid == round(valid * 0.2)
        assert len(records) == valid + invalid
        reasons: Counter[str] = Counter()
        for _, key, value, headers in records:
            try:
                decode_event(key, value, headers)
            except InvalidEvent as exc:
                reasons[exc.reason.value] += 1
        assert sum(reasons.values()) == invalid
        assert set(reasons) == {
            FailureReason.invalid_event.value,
            FailureReason.unknown_event_type.value,
            FailureReason.key_mismatch.value,
        }

    def test_every_event_type_has_an_input_topic(self) -> None:
        """The one kind-to-topic table covers every event type."""
        assert set(TOPIC_OF_KIND) == set(EventType)

    def test_the_same_seed_gives_the_same_records(self) -> None:
        """A demo can be repeated exactly."""
        plan = DemoPlan(jobs=3, steps=2, seed=9)
        assert demo_records(plan, TOPICS, 0.3) == demo_records(plan, TOPICS, 0.3)


class TestOptions:
    @pytest.mark.parametrize("share", ["-0.1", "1.5"])
    def test_shares_outside_0_1_are_refused(self, share: str) -> None:
        """``--invalid-share`` and friends are fractions."""
        from consumer.cli import main

        with pytest.raises(SystemExit) as exit_info:
            main(["demo", "--invalid-share", share])
        assert exit_info.value.code == 2

    def test_an_unreachable_broker_exits_3_as_the_other_tools_do(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Kafka trouble is exit 3 with one line saying why, as for ``inspect`` and
        ``redrive`` (``demo`` said 1 before, and worded an ACL denial as a bare error)."""
        from consumer.cli import main

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        monkeypatch.setenv("BASICSYNC_KAFKA__BOOTSTRAP_SERVERS", f"127.0.0.1:{port}")
        assert main(["demo", "--jobs", "1"]) == 3
        last = capsys.readouterr().err.splitlines()[-1]  # after aiokafka's own warning
        assert last.startswith("basicsync demo: Kafka failed: "), last
        assert last.endswith(f"(127.0.0.1:{port}: Connection refused)"), last
