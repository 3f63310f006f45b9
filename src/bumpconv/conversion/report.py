"""What ``convert --dry-run`` prints: the plan, tensor by tensor, and the exact output size."""

from __future__ import annotations

from ..format.profile import bits_per_weight
from ..format.spec import describe_spec
from ..format.text import safe, table
from .manifest import output_size
from .plan import Plan
from .source import Source


def format_plan(plan: Plan, source: Source) -> str:
    """The `--dry-run` report: every output tensor, its sources, offset and size."""
    lines = [f"plan: {plan.profile.profile} ({plan.profile.magic}) from {safe(source.root)}"]
    lines += ["model: " + line for line in describe_spec(plan.spec)]
    rows = [[str(i), t.name, "x".join(map(str, t.slot.shape)), t.dtype.label,
             str(t.offset), f"{t.nbytes:,}", ", ".join(t.slot.sources) or "(zeros)"]
            for i, t in enumerate(plan.tensors)]
    lines += table(rows, ["#", "tensor", "shape", "dtype", "offset", "bytes", "sources"])
    if plan.ignored_sources:
        lines.append("ignored (derived buffers): " + ", ".join(plan.ignored_sources))
    size = output_size(plan, source)
    params = plan.parameter_count()
    lines.append(f"output: {size:,} bytes ({len(plan.tensors)} tensors, {params:,} parameters, "
                 f"payload {plan.payload_end - plan.payload_offset:,} bytes, "
                 f"{bits_per_weight(plan.tensors):.3f} bits per weight"
                 + (f", --quant {plan.quant}" if plan.quant else "") + ")")
    return "\n".join(lines)
