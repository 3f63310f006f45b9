"""tools/reference_noise.py: HF fp32 and the runtime against HF in float64, per layer."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from parity_helpers import convert


def test_every_layer_is_printed_and_both_sides_are_near_float64(
        tiny: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tools import reference_noise
    src = tiny("llama-tied")
    blob = convert(src, tmp_path / "b.bump", "engine-v7", [])
    assert reference_noise.main([str(src), str(blob)]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [int(r[0]) for r in rows] == [0, 1]  # every layer, the last one included
    for row in rows:
        hf32, hf32_b, run64, run64_b, run32, run32_b = map(float, row[1:])
        # a tiny fp32 model: both sides within fp32 rounding of float64, and of each other
        assert 0 < hf32 < 1e-5 and 0 < run64 < 1e-5 and run32 < 1e-5
        # (b)'s denominator is at least the output's own: never a larger relative error
        assert hf32_b <= hf32 and run64_b <= run64 and run32_b <= run32
    assert reference_noise.main([str(src), str(blob), "--layers", "1", "--stages"]) == 0
    (row,) = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert row[0] == "1" and len(row) == 11 and float(row[8]) < 1e-5 and float(row[10]) < 1e-5
    with pytest.raises(SystemExit):
        reference_noise.main([str(src), str(blob), "--layers", "99"])


def test_a_missing_blob_is_one_line_and_exit_1(tiny: Callable[..., Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from tools import reference_noise
    missing = tmp_path / "nope.bump"
    assert reference_noise.main([str(tiny("llama-tied")), str(missing)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("reference_noise: error: ") and "nope.bump" in err
