"""Step texts packed in memory (consumer.domain.step_packing): exact, and smaller."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from consumer.demo import DemoPlan, build_demo
from consumer.domain.state import Step, kept_step
from consumer.domain.step_packing import pack_step_text, unpack_step_text


@given(st.text())
def test_any_text_comes_back_exactly(text: str) -> None:
    """Whatever the text (empty, non-ASCII, surrogate-free Unicode), unpacking gives it back."""
    assert unpack_step_text(pack_step_text(text)) == text


def test_a_large_step_comes_back_exactly() -> None:
    """Far longer than the dictionary (a step with a long note) and nothing like it."""
    text = '{"singleStep":{"note":"' + "é ü 漢字 " * 20_000 + '"},"reportStep":null}'
    assert unpack_step_text(pack_step_text(text)) == text


def test_demo_steps_take_half_their_text_or_less() -> None:
    """The point of packing: a typical step is held in at most half the bytes of its text."""
    steps = [e.step for e in build_demo(DemoPlan(jobs=20, seed=5)).events if e.step is not None]
    assert len(steps) > 100
    text_bytes = sum(len(s.json.encode()) for s in steps)
    packed_bytes = sum(len(s.packed) for s in steps)
    assert packed_bytes <= text_bytes / 2, (packed_bytes, text_bytes)


def test_a_kept_step_reads_as_the_text_it_was_made_from() -> None:
    event = next(e for e in build_demo(DemoPlan(jobs=1, seed=5)).events if e.step is not None)
    step = event.step
    assert isinstance(step, Step)
    assert step.json == unpack_step_text(step.packed)
    assert kept_step(event.data) == step  # type: ignore[arg-type]
    assert step.json.startswith('{"singleStep":{"values":')
