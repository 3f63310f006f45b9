"""What the reference side hands to the metrics, as plain data: a prompt's token ids (the
reference's and the runtime side's) and one HF forward pass's arrays.

These live apart from :mod:`.reference` (which loads transformers and torch) so that the
metrics and the report read them without importing the reference side; the import contract
in pyproject.toml forbids :mod:`.metrics` -> :mod:`.reference`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PromptTokens:
    """One prompt as token ids, with the runtime-side encoding to compare against."""

    text: str | None
    ids: tuple[int, ...]
    runtime_ids: tuple[int, ...] | None

    @property
    def synthetic(self) -> bool:
        return self.text is None

    @property
    def first_mismatch(self) -> int | None:
        """First index where the runtime-side ids differ (or the shorter length), else None."""
        if self.runtime_ids is None or self.runtime_ids == self.ids:
            return None
        for i, (a, b) in enumerate(zip(self.ids, self.runtime_ids)):
            if a != b:
                return i
        return min(len(self.ids), len(self.runtime_ids))



@dataclass
class ReferenceRun:
    """What one HF forward pass produced, as fp32 numpy arrays (batch dimension dropped)."""

    logits: np.ndarray                      # [n, V]
    hidden_states: np.ndarray               # [L + 1, n, E]: embeddings, then each layer's output
    final_norm: np.ndarray                  # [n, E]
    stages: dict[int, dict[str, np.ndarray]]  # layer -> stage name -> array (docs/runtime-api.md)
