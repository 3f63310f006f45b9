"""What ``convert --dry-run`` prints: the plan, tensor by tensor, and the exact output size."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace

from ..format.dtypes import DType, dtype_named
from ..format.profile import bits_per_weight
from ..format.quant_policy import choose_dtype, load_policies
from ..format.spec import describe_spec
from ..format.text import safe, table
from .manifest import output_size
from .plan import KEEP, Plan
from .tensor_source import TensorSource

#: A row length every block type divides: the policy's choice on it is its choice before any
#: fallback (derived from the block table, not a literal).
_EVERY_BLOCK = math.lcm(*(d.block.elements for d in DType))


def format_plan(plan: Plan, source: TensorSource, tensors: bool = True) -> str:
    """The `--dry-run` report: every output tensor (unless ``tensors`` is False), its sources,
    offset and size; why a policy's type fell back; the exact output size."""
    lines = [f"plan: {plan.profile.profile} ({plan.profile.magic}) from {safe(source.root)}"]
    lines += ["model: " + line for line in describe_spec(plan.spec)]
    if tensors:
        rows = [[str(i), t.name, "x".join(map(str, t.slot.shape)), t.dtype.label,
                 str(t.offset), f"{t.nbytes:,}", _sources(t.slot.sources, t.slot.content)]
                for i, t in enumerate(plan.tensors)]
        lines += table(rows, ["#", "tensor", "shape", "dtype", "offset", "bytes", "sources"])
    if plan.ignored_sources:
        lines.append("ignored (derived buffers): " + ", ".join(plan.ignored_sources))
    lines += fallback_notes(plan)
    size = output_size(plan, source)
    params = plan.parameter_count()
    lines.append(f"output: {size:,} bytes ({len(plan.tensors)} tensors, {params:,} parameters, "
                 f"payload {plan.payload_end - plan.payload_offset:,} bytes, "
                 f"{bits_per_weight(plan.tensors):.3f} bits per weight"
                 + (f", --quant {plan.quant}" if plan.quant else "") + ")")
    return "\n".join(lines)


def _sources(sources: tuple[str, ...], content: str) -> str:
    if content == "tokenizer":
        return "(the source's tokenizer)"
    return ", ".join(sources) or "(zeros)"


def fallback_notes(plan: Plan) -> list[str]:
    """One line per type a ``--quant`` policy asked for but could not use: a block type's
    block must divide the packed row (e.g. SmolLM2's rows of 576 values are not whole 256-value
    q4_K blocks, so q4_k_m gives those matrices q5_0, as llama.cpp's Q4_K_M does)."""
    if plan.quant is None or plan.quant == KEEP:
        return []
    fell: Counter[tuple[str, str, int]] = Counter()
    for t in plan.tensors:
        wide = replace(t.slot, shape=(*t.slot.shape[:-1], _EVERY_BLOCK))
        wanted = choose_dtype(plan.quant, wide, plan.spec.num_layers,
                              plan.spec.tie_word_embeddings)
        if wanted != t.dtype:
            fell[(wanted.label, t.dtype.label, t.slot.shape[-1])] += 1
    chain = load_policies().fallback
    return [f"fallback: {n} tensor(s) get {got} instead of {wanted}: their packed rows of "
            f"{row} values are not whole {_blocks(wanted)}"
            + (f" nor {_blocks(chain[wanted])}" if chain.get(wanted) not in (None, got) else "")
            + " (schemas/quant.policy.json 'fallback', as llama.cpp does)"
            for (wanted, got, row), n in sorted(fell.items())]


def _blocks(label: str) -> str:
    return f"{label} blocks of {dtype_named(label).block.elements}"
