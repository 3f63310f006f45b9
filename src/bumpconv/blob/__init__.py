"""Reading a blob back: the reader (one parse, a guarded mapping), integrity checks, ``verify``
against the source, and what ``inspect`` prints. No torch."""
