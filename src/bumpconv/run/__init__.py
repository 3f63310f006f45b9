"""Running a blob: the C runtime through cffi (:class:`~bumpconv.run.runtime.BumpModel`), greedy
generation, and the tokenizer the blob carries (or the source's). No torch."""
