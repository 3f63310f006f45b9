"""The committed JSON Schemas and layout files are current and valid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bumpconv.format.profile import PROFILES, Profile, load_profile
from bumpconv.format.schema_export import EXPORTED, render

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


@pytest.mark.parametrize("name", sorted(EXPORTED))
def test_committed_json_schema_is_not_stale(name: str) -> None:
    committed = (SCHEMAS / name).read_text(encoding="utf-8")
    assert committed == render(EXPORTED[name]), f"schemas/{name} is stale: run `make schemas`"


@pytest.mark.parametrize("profile", PROFILES)
def test_layout_files_validate_and_round_trip(profile: str) -> None:
    raw = json.loads((SCHEMAS / f"{profile}.profile.json").read_text())
    model = Profile.model_validate(raw)
    assert model == load_profile(profile)
    assert model.profile == profile and model.magic.startswith("BUMPWGT")


def test_layout_validation_rejects_a_bad_rule() -> None:
    raw = json.loads((SCHEMAS / "bumpwgt5.profile.json").read_text())
    raw["tensors"][0]["axes"] = [1, 0]  # would move the streamed (last) axis
    with pytest.raises(ValueError, match="last axis must stay last"):
        Profile.model_validate(raw)
