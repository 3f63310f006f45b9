"""Pass criteria of ``bumpconv eval``: a table of limits per weight type, kept as data.

The table (``schemas/eval-gates.json``, or a file given with ``--gates``) has one entry per
weight type, ordered from the most to the least precise, and one ``kernels`` entry. A blob is
held to the entry of its *least precise* weight type - the last entry of the table whose type
the blob stores (a Q4_K mix with Q6_K and fp32 tensors is a q4_k blob) - and a blob storing a
type the table does not list is refused before anything runs. The weight-type entry judges the
blob in the C runtime against HF fp32 (what the user gets); the ``kernels`` entry judges the
blob in the C runtime against HF running the blob's own dequantized weights (the kernels alone),
which is fp32 noise for every weight type. Limits are on the point estimates; the report shows
their standard errors beside them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..format.dtypes import DType
from ..format.errors import EvalError
from .stats import Summary

GATES_FILE = "eval-gates.json"


class Limits(BaseModel):
    """Upper/lower bounds on a comparison's statistics; an absent bound is not checked."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mean_kl_max: float | None = Field(default=None, gt=0, description="mean KL < this (nats)")
    same_top_min: float | None = Field(default=None, ge=0, le=1,
                                       description="same-top fraction >= this")
    ppl_ratio_max: float | None = Field(default=None, gt=0, description="PPL ratio < this")

    def check(self, s: Summary) -> list["Check"]:
        out = []
        if self.mean_kl_max is not None:
            out.append(Check("mean KL", s.kl_mean.value, "<", self.mean_kl_max))
        if self.same_top_min is not None:
            out.append(Check("same top", s.same_top.value, ">=", self.same_top_min))
        if self.ppl_ratio_max is not None:
            out.append(Check("PPL ratio", s.ppl_ratio.value, "<", self.ppl_ratio_max))
        return out


class WeightGate(Limits):
    """The limits for blobs whose least precise weight type is ``dtype``."""

    dtype: str = Field(description="a dtype label (fp32, q8_0, q4_k, ...)")

    @model_validator(mode="after")
    def _known(self) -> "WeightGate":
        if self.dtype.upper() not in DType.__members__:
            raise ValueError(f"unknown dtype {self.dtype!r}")
        return self


class GateTable(BaseModel):
    """The whole table (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    kernels: Limits
    weights: tuple[WeightGate, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> "GateTable":
        names = [w.dtype for w in self.weights]
        if len(set(names)) != len(names):
            raise ValueError("a dtype is listed twice in weights")
        return self

    def for_types(self, dtypes: set[DType], blob: str, source: str) -> WeightGate:
        """The entry of the least precise of ``dtypes`` (every one must be listed)."""
        listed = {w.dtype: w for w in self.weights}
        missing = sorted(d.label for d in dtypes if d.label not in listed)
        if missing:
            raise EvalError(f"{blob}: stores {', '.join(missing)}, which the gate table "
                            f"{source} does not list (it has {', '.join(listed)}); pass "
                            "--gates FILE with an entry for it")
        return [w for w in self.weights if DType[w.dtype.upper()] in dtypes][-1]


@dataclass(frozen=True)
class Check:
    """One statistic against one limit."""

    metric: str
    value: float
    op: Literal["<", ">="]
    limit: float

    @property
    def passed(self) -> bool:
        return self.value < self.limit if self.op == "<" else self.value >= self.limit


def load_gates(path: Path | None = None) -> tuple[GateTable, str]:
    """The gate table and where it came from: ``path``, or the packaged default."""
    if path is None:
        text = resources.files("bumpconv.schemas").joinpath(GATES_FILE).read_text("utf-8")
        source = f"bumpconv/schemas/{GATES_FILE}"
    else:
        try:
            text = path.read_text("utf-8")
        except OSError as exc:
            raise EvalError(f"{path}: cannot read the gate table ({exc.strerror})") from None
        source = str(path)
    try:
        return GateTable.model_validate(json.loads(text)), source
    except (json.JSONDecodeError, ValidationError) as exc:
        first = str(exc).splitlines()[0] if isinstance(exc, json.JSONDecodeError) else \
            "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise EvalError(f"{source}: not a valid gate table ({first})") from None
