"""The stage table is the one home of the tapped stages: the C struct, the docs and the shapes
derived from it must agree with it (fast lane: no torch)."""

from __future__ import annotations

import re
from pathlib import Path

from bumpconv.format.registry import RUNTIME_IMPLEMENTED
from bumpconv.format.stages import FINAL_NORM, STAGES, stages_for, tap_shapes
from bumpconv.native import native

DOCS = Path(__file__).resolve().parents[1] / "docs" / "runtime-api.md"


def test_c_taps_struct_has_one_field_per_stage_in_table_order() -> None:
    """One C field per stage the C runtime computes: those of the operations it implements
    (a stage's condition names its operation: q/k norms, post norms)."""
    fields = [name for name, _ in native().ffi.typeof("bump_taps").fields]
    runs = [s.key for s in STAGES if s.when is None or s.when in RUNTIME_IMPLEMENTED]
    assert fields == ["layer", *runs, FINAL_NORM.key, "hidden"]


def test_docs_stage_table_matches() -> None:
    rows = re.findall(r"^\| `(\w+)` \| (\[[^\]]*\]) \|", DOCS.read_text(encoding="utf-8"), re.M)
    assert rows == [(s.key, "[" + ", ".join(s.shape) + "]") for s in STAGES]


def test_tap_shapes_follow_the_flags() -> None:
    dims = {"E": 8, "I": 12, "H": 4, "KV": 2, "D": 6}
    plain = tap_shapes(dims, {"qk_norm": False, "post_norms": False}, 3)
    assert "q_norm" not in plain and plain["scores"] == (4, 3, 3) and plain["attn"] == (3, 24)
    assert plain["final_norm"] == (3, 8)
    qwen3 = tap_shapes(dims, {"qk_norm": True, "post_norms": False}, 3)
    assert qwen3["k_norm"] == (3, 2, 6) and "post_ffn_norm" not in qwen3
    gemma = tap_shapes(dims, {"qk_norm": True, "post_norms": True}, 3)
    assert gemma["post_attention_norm"] == gemma["post_ffn_norm"] == (3, 8)
    assert [s.key for s in stages_for({"qk_norm": True, "post_norms": True})] == \
        [s.key for s in STAGES]


def test_every_profile_role_is_one_c_runs_or_data_it_skips() -> None:
    """The C runtime's role table and the profiles agree: every weight role a profile can fill
    from sources is a C role, and every C role is filled by some profile; the rest are the
    tokenizer's arrays or slots the profile defines as zeros (which Python checks, not C)."""
    from bumpconv.format.profile import PROFILES, load_profile
    from bumpconv.format.registry import registry
    roles = registry().roles
    lib = native().lib
    c_roles = {name[len("BUMP_ROLE_"):].lower() for name in dir(lib)
               if name.startswith("BUMP_ROLE_")}
    used = set()
    for name in PROFILES:
        for rule in load_profile(name).rules():
            if rule.content == "tokenizer" or not rule.sources:
                continue
            if any(roles[r].when not in (None, *RUNTIME_IMPLEMENTED) for r in rule.sources):
                assert rule.role not in c_roles, (name, rule.role)  # a feature C lacks
                continue
            assert rule.role in c_roles, (name, rule.role)
            used.add(rule.role)
    assert used == c_roles
