"""Text helpers for what bumpconv prints: escaping untrusted strings, aligned tables."""

from __future__ import annotations


def safe(text: object) -> str:
    """Printable rendering of untrusted text: control characters become escapes."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in str(text))


def table(rows: list[list[str]], header: list[str]) -> list[str]:
    """Columns padded to their widest cell; columns 0, 4 and 5 (index, offset, bytes) are
    right-aligned as numbers."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.rjust(w) if i in (0, 4, 5) else c.ljust(w)  # noqa: E731
                              for i, (c, w) in enumerate(zip(r, widths))).rstrip()
    return [fmt(header)] + [fmt(r) for r in rows]
