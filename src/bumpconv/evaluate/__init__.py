"""How far a blob is from its HF model on real text, in llama.cpp's statistics.

``corpus`` (what to evaluate on), ``stats`` (per-token scores and their summary, plain numpy),
``gates`` (pass criteria per weight type, as data), ``lockstep`` (one reference pass with every
blob beside it, chunk by chunk), ``eval_report`` (text and JSON), ``eval_plot`` (the PNG).
"""
