"""The 24 GB presets by the memory sums of docs/architecture.md (llm/model/memory.py)."""

from __future__ import annotations

import json

import pytest

from llm.model.config import from_preset
from llm.model.memory import training_memory
from tests.helpers import REPO

CARD_GIB = 24.0
VOCAB = 8192  # the built-in tokenizer's


def _micro_batch() -> int:
    return int(json.loads((REPO / "ds_configs" / "3090.json").read_text())["train_micro_batch_size_per_gpu"])


def test_the_default_gpu_preset_leaves_a_fifth_of_a_24gb_card() -> None:
    memory = training_memory(from_preset("3090", vocab_size=VOCAB), micro_batch=_micro_batch())
    assert memory.headroom(CARD_GIB) >= 0.20, f"{memory.total:.2f} GiB of {CARD_GIB} GiB"


def test_the_tight_preset_is_the_1b_model_that_just_fits() -> None:
    memory = training_memory(from_preset("1b-24gb-tight", vocab_size=VOCAB), micro_batch=_micro_batch())
    assert memory.parameters == 1_026_043_904
    assert 0 < memory.headroom(CARD_GIB) < 0.05  # fits, with about 0.5 GiB to spare


def test_the_sums_are_the_ones_the_docs_show() -> None:
    """docs/architecture.md quotes these figures; a change to either must change both."""
    docs = (REPO / "docs" / "architecture.md").read_text()
    for name in ("3090", "1b-24gb-tight"):
        memory = training_memory(from_preset(name, vocab_size=VOCAB), micro_batch=2)
        for figure in (
            memory.steady_state,
            memory.optimizer_step,
            memory.end_of_backward,
            memory.activations,
            memory.total,
        ):
            assert f"{figure:.2f} GiB" in docs, (name, figure)
        assert f"{memory.parameters:,}" in docs
    assert training_memory(from_preset("1b-24gb-tight", vocab_size=VOCAB), micro_batch=2).reduce_bucket == (
        pytest.approx(0.93, abs=0.005)
    )
