"""Proof against the ground truth, transformers' own model: the reference and its hooks, the
parity check of logits, layers and stages, its thresholds, report and plot, and HF carrying a
quantized blob's dequantized weights."""
