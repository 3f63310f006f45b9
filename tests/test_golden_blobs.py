"""Every blob bumpconv writes stays byte-identical across refactors: the SHA-256 of each
conversion of the tiny models and of SmolLM2-135M (fp32, bf16, sharded) is pinned in
golden_blobs.json (keys: ``<model>.<profile> [convert arguments]``). The bumpwgt5/bumpwgt3
digests were recorded before the restructure into packages by stage and have not changed since;
the engine-v7 and --quant ones when those arrived.

A deliberate format change updates the file (run this module with BUMPCONV_UPDATE_GOLDEN=1) and
says why in its commit. The digests depend on the pinned torch/transformers (the fixtures are built
with them) and on bumpconv's version string in the metadata.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import pytest

from runtime_helpers import convert

GOLDEN = Path(__file__).with_name("golden_blobs.json")
DIGESTS: dict[str, str] = json.loads(GOLDEN.read_text())


def _source(key: str, tiny: Callable[..., Path], smol_variant: Callable[[str], Path]) -> Path:
    model = key.split(".")[0]
    if model.startswith("smollm2-"):
        return smol_variant(model.removeprefix("smollm2-"))
    for suffix, kwargs in (("-bf16", {"dtype": "bfloat16"}), ("-fp16", {"dtype": "float16"}),
                           ("-v4", {"config_layout": "v4"})):
        if model.endswith(suffix):
            return tiny(model.removesuffix(suffix), **kwargs)
    return tiny(model)


@pytest.fixture(scope="module")
def smol_variant(cache_dir: Path) -> Callable[[str], Path]:
    from tools.fixtures import smollm2
    return lambda variant: smollm2(cache_dir, variant)


@pytest.mark.parametrize("key", sorted(DIGESTS))
def test_blob_bytes_are_unchanged(key: str, tiny, smol_variant, tmp_path: Path) -> None:
    profile, *args = key.split(".", 1)[1].split()
    out = convert(_source(key, tiny, smol_variant), tmp_path / "b.bump", profile, args)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    if os.environ.get("BUMPCONV_UPDATE_GOLDEN") == "1":
        DIGESTS[key] = digest
        GOLDEN.write_text(json.dumps(DIGESTS, indent=1, sort_keys=True) + "\n")
    assert digest == DIGESTS[key], f"{key}: the blob's bytes changed"
