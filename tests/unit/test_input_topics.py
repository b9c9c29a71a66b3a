"""Which topics are the inputs (``consumer.kafka.input_topics``), the pattern setting that
names them, and the ACLs that cover them (``consumer.kafka.acls``)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.config import KafkaSettings, Settings, TopicSettings
from consumer.errors import ConfigError, TopicLayoutError
from consumer.kafka.acls import PatternType, input_resources, literal_prefix, required_acls
from consumer.kafka.input_topics import InputTopics, select_inputs, starting_partition_count

OWN = frozenset({"g.job-state", "ok", "bad"})


def _pattern(regex: str) -> InputTopics:
    return InputTopics(pattern=re.compile(regex), own=OWN)


def _settings(**topics: object) -> Settings:
    return Settings(
        kafka=KafkaSettings(bootstrap_servers=["b:9092"], group_id="g"),
        topics=TopicSettings(succeeded="ok", failed="bad", **topics),
    )


class TestMatching:
    def test_a_list_is_taken_as_it_is_whatever_exists(self) -> None:
        listed = InputTopics(listed=("b", "a"), own=OWN)
        assert listed.matching(["x"]) == ["b", "a"]

    def test_a_pattern_matches_whole_names_only(self) -> None:
        """As Kafka's Java clients match a subscription pattern: ``jobs`` is not ``jobsx``."""
        found = _pattern(r"jobs\.[a-z]+").matching(["jobs.eu", "jobs.eu2", "xjobs.eu", "jobs."])
        assert found == ["jobs.eu"]

    def test_the_services_own_and_kafkas_internal_topics_never_match(self) -> None:
        """Reading its own changelog or results would feed its output back in."""
        existing = ["g.job-state", "ok", "bad", "__consumer_offsets", "__transaction_state", "in"]
        assert _pattern(".*").matching(existing) == ["in"]


class TestStartingPartitionCount:
    def test_a_listed_topic_missing_stops_the_start(self) -> None:
        with pytest.raises(TopicLayoutError, match="do not exist: b"):
            starting_partition_count(InputTopics(listed=("a", "b")), {"a": 3}, None)

    def test_listed_topics_that_disagree_stop_it_even_with_a_changelog(self) -> None:
        with pytest.raises(TopicLayoutError, match="a=3, b=4"):
            starting_partition_count(InputTopics(listed=("a", "b")), {"a": 3, "b": 4}, 3)

    def test_a_pattern_matching_nothing_stops_it_naming_the_pattern(self) -> None:
        with pytest.raises(TopicLayoutError, match=r"no topic matches the input pattern 'j\.\*'"):
            starting_partition_count(_pattern("j.*"), {}, 6)

    def test_under_a_pattern_the_changelog_decides(self) -> None:
        """It holds the jobs' state by partition: a topic that disagrees is the odd one."""
        assert starting_partition_count(_pattern(".*"), {"a": 3, "b": 6}, 6) == 6

    def test_without_a_changelog_the_matched_topics_must_agree(self) -> None:
        assert starting_partition_count(_pattern(".*"), {"a": 6, "b": 6}, None) == 6
        with pytest.raises(TopicLayoutError, match="not co-partitioned"):
            starting_partition_count(_pattern(".*"), {"a": 3, "b": 6}, None)


class TestSelectInputs:
    def test_topics_with_another_count_are_refused_and_the_rest_read(self) -> None:
        selection = select_inputs(_pattern(".*"), {"a": 6, "b": 3, "c": 6}, 6)
        assert selection.read == ("a", "c")
        assert dict(selection.refused) == {"b": 3}

    def test_a_topic_already_read_is_kept_when_its_count_changes(self) -> None:
        """Its state is kept by the old count: the layout check stops the member instead of
        the topic being silently dropped."""
        selection = select_inputs(_pattern(".*"), {"a": 8, "b": 6}, 6, reading=("a", "b"))
        assert selection.read == ("a", "b")
        assert not selection.refused

    def test_a_list_is_never_refused(self) -> None:
        listed = InputTopics(listed=("a", "b"))
        assert select_inputs(listed, {"a": 3, "b": 6}, 6).read == ("a", "b")

    @given(st.dictionaries(st.from_regex(r"[a-z]{1,4}", fullmatch=True), st.integers(1, 8)))
    def test_every_matched_topic_is_read_or_refused_never_both(
        self, counts: dict[str, int]
    ) -> None:
        selection = select_inputs(_pattern(".*"), counts, 4)
        assert set(selection.read) | set(selection.refused) == set(counts)
        assert not set(selection.read) & set(selection.refused)
        assert all(counts[topic] == 4 for topic in selection.read)


class TestPatternSetting:
    def test_a_pattern_that_does_not_compile_is_a_settings_error(self) -> None:
        with pytest.raises(ValueError, match="not a regular expression"):
            _settings(input_pattern="jobs.(")

    def test_topics_named_beside_a_pattern_must_match_it(self) -> None:
        """They are the ones the demo writes to: unmatched, nothing would read them."""
        with pytest.raises(ValueError, match="do not match input_pattern"):
            _settings(input=["events"], input_pattern=r"jobs\..*")
        assert _settings(input=["jobs.a"], input_pattern=r"jobs\..*").topics.input == ["jobs.a"]

    def test_the_default_list_beside_a_pattern_is_no_error(self) -> None:
        settings = _settings(input_pattern=r"jobs\..*")
        inputs = settings.input_topics()
        assert inputs.listed == ()
        assert inputs.own == OWN
        assert inputs.describe() == r"pattern 'jobs\\..*'"

    def test_the_environment_sets_it(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from consumer.config import load_settings

        monkeypatch.setenv("BASICSYNC_KAFKA__BOOTSTRAP_SERVERS", "b:9092")
        monkeypatch.setenv("BASICSYNC_TOPICS__INPUT_PATTERN", "jobs(")
        with pytest.raises(ConfigError, match="BASICSYNC_TOPICS__INPUT_PATTERN"):
            load_settings()


class TestPatternAcls:
    @pytest.mark.parametrize(
        ("regex", "prefix", "whole"),
        [
            (r"jobs\..*", "jobs.", False),
            (r"^jobs\.(eu|us)$", "jobs.", False),
            (r"team\.jobs\.v1", "team.jobs.v1", True),
            (r"jobs-?x", "jobs", False),
            (r"a\d+", "a", False),
            (".*", "", False),
            ("jobs|events", "", False),
            (r"(jobs|events)\..*", "", False),
            ("a[|]b.*", "a", False),
        ],
    )
    def test_the_literal_start_of_a_pattern(self, regex: str, prefix: str, whole: bool) -> None:
        assert literal_prefix(regex) == (prefix, whole)

    @given(st.from_regex(r"[a-z.\-|()?*+\\]{0,12}", fullmatch=True), st.text("abc.-", max_size=8))
    def test_every_name_a_pattern_matches_starts_with_its_prefix(
        self, regex: str, name: str
    ) -> None:
        """The grant covers every topic the pattern can read (over-granting is the only
        direction allowed)."""
        try:
            compiled = re.compile(regex)
        except re.error:
            return
        prefix, whole = literal_prefix(regex)
        if compiled.fullmatch(name) is not None:
            assert name.startswith(prefix)
            if whole:
                assert name == prefix

    def test_a_pattern_is_granted_by_prefix_or_on_every_topic(self) -> None:
        prefixed = _settings(input_pattern=r"jobs\..*")
        assert input_resources(prefixed) == [("jobs.", PatternType.PREFIXED)]
        assert input_resources(_settings(input_pattern=".*")) == [("*", PatternType.LITERAL)]
        assert input_resources(_settings(input_pattern="one")) == [("one", PatternType.LITERAL)]
        reads = {
            (acl.name, acl.pattern)
            for acl in required_acls(prefixed, tools=False)
            if acl.operation.name == "READ"
        }
        assert ("jobs.", PatternType.PREFIXED) in reads
        assert ("workfloplus.job-events", PatternType.LITERAL) not in reads
