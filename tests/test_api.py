"""The front door: ``import bumpconv`` and its verbs, end to end on a numpy-built checkpoint
(fast lane: no torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

import bumpconv


def test_convert_inspect_verify_open_generate(synthetic: Callable[..., Path],
                                              tmp_path: Path) -> None:
    src = synthetic("llama-untied")
    out = tmp_path / "m.bump"
    result = bumpconv.convert(src, out)
    assert out.stat().st_size == result.size
    info = bumpconv.inspect(out, check=True)
    assert info["checksum_status"] == "ok" and info["profile"] == "engine-v7"
    assert bumpconv.verify(out, src).elements == info["totals"]["parameters"]
    with bumpconv.open(out) as model:
        logits = model.forward([1, 2, 3])
        tokens = model.generate([1, 2, 3], 5)
    assert logits.shape == (3, info["model"]["vocab_size"])
    assert len(tokens) == 5 and tokens[0] == int(logits[-1].argmax())
    with pytest.raises(bumpconv.BumpError, match="already exists"):
        bumpconv.convert(src, out)
    assert bumpconv.__version__ and set(bumpconv.__all__) >= {"convert", "open", "parity"}
