"""The defective blobs of parity_helpers are well-formed files holding the intended damage.

A mutation test is only meaningful if its blob opens and passes integrity checks (so parity,
not the reader, must catch it) and if the damage is where the defect says (so the attribution
parity is held to is the right one). Neither needs the runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from bumpconv.format.errors import VerifyError
from bumpconv.blob.check import check_blob
from bumpconv.blob.reader import open_blob
from bumpconv.conversion.source import open_source
from bumpconv.blob.verify import verify_against
from bumpconv.format.packing import unpack
from parity_helpers import (TINY_DEFECTS, Defect, build_defective, bump_wq_element, convert,
                            wo_row_major)

#: What `verify --against` must report for each defect: the first packed tensor that differs.
DAMAGED = {
    "gate/up swapped": "layer.1.w1",
    "wo row-major": "layer.1.wo",
    "K heads permuted": "layer.1.wk",
    "Q/K in GGUF interleaved order": "layer.0.wq",
    "q/k/v bias dropped": "layer.0.bq",
    "v bias dropped": "layer.1.bv",
    "w2[3,5] of layer 1 changed": "layer.1.w2",
}


@pytest.mark.parametrize("model,defect", TINY_DEFECTS, ids=[d.name for _, d in TINY_DEFECTS])
def test_defective_blob_opens_passes_integrity_and_differs_where_intended(
        model: str, defect: Defect, tiny: Callable[..., Path], tmp_path: Path) -> None:
    src = tiny(model)
    out = build_defective(src, tmp_path / "bad.bump", defect)
    with open_blob(out) as bf, open_source(str(src)) as source:
        assert check_blob(bf).ok
        if defect.name in DAMAGED:
            with pytest.raises(VerifyError, match=f"tensor '{DAMAGED[defect.name]}' differs"):
                verify_against(bf, source)
        elif defect.stage == "ln1":  # only the metadata changed
            verify_against(bf, source)
            assert (bf.spec.rms_norm_eps, source.spec.rms_norm_eps) == (1e-6, 1e-5)
        else:  # tied: one tensor fewer, and the spec says tied
            assert bf.spec.tie_word_embeddings and not source.spec.tie_word_embeddings
            with pytest.raises(VerifyError, match="18 tensors but .* needs 19"):
                verify_against(bf, source)


def test_an_unedited_conversion_verifies(tiny: Callable[..., Path], tmp_path: Path) -> None:
    src = tiny("qwen3")
    with open_blob(convert(src, tmp_path / "ok.bump")) as bf, open_source(str(src)) as source:
        verify_against(bf, source)


def test_row_major_wo_matches_the_row_major_byte_layout(tiny: Callable[..., Path],
                                                         tmp_path: Path) -> None:
    """The per-head packing of the edited o_proj is byte for byte o_proj written row-major."""
    src = tiny("llama-tied")
    out = build_defective(src, tmp_path / "wo.bump", wo_row_major(0))
    with open_blob(out) as bf, open_source(str(src)) as source:
        packed = bf.array("layer.0.wo")
        original = source.read_all("model.layers.0.self_attn.o_proj.weight")
        assert packed.tobytes() == original.tobytes()


def test_row_major_wo_is_refused_where_padding_makes_it_ambiguous(tiny: Callable[..., Path],
                                                                   tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no padding"):
        build_defective(tiny("llama-gqa-pad"), tmp_path / "x.bump", wo_row_major(0))


def test_the_nudged_wq_element_is_the_only_change(tiny: Callable[..., Path],
                                                  tmp_path: Path) -> None:
    """bump_wq_element changes one element of one layer's q_proj by delta, nothing else."""
    src = tiny("llama-untied")
    out = build_defective(src, tmp_path / "wq.bump", bump_wq_element(1, row=5, col=7, delta=3e-3))
    with open_blob(out) as bf, open_source(str(src)) as source:
        assert check_blob(bf).ok
        with pytest.raises(VerifyError, match="tensor 'layer.1.wq' differs"):
            verify_against(bf, source)
        name = "model.layers.1.self_attn.q_proj.weight"
        original = source.read_all(name)
        placed = next(t for t in bf.tensors if t.name == "layer.1.wq")
        packed = dict(zip(placed.slot.sources, unpack(placed.slot, bf.array(placed.name))))[name]
        changed = np.argwhere(packed != original)
        assert changed.tolist() == [[5, 7]]
        assert packed[5, 7] - original[5, 7] == pytest.approx(3e-3, rel=1e-4)
