"""The one JSON loader: every JSON document bumpconv reads goes through :func:`parse_json`.

JSON can fail in more ways than ``json.JSONDecodeError``: bytes that are not UTF-8, nesting deep
enough to exhaust the recursion limit, integers too long to convert (Python refuses more than
4300 digits), ``NaN``/``Infinity`` tokens that are not JSON at all, duplicated keys (the
standard library silently keeps the last one), and a top level of the wrong type. Each becomes
one error naming the document.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..format.errors import BumpError
from .inputs import read_regular


class _Duplicate(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Duplicate(key)
        out[key] = value
    return out


def _no_constants(token: str) -> None:
    raise ValueError(f"{token} is not a JSON value")


def parse_json(data: bytes, where: str, error: type[BumpError],
               top: type = dict) -> Any:
    """Decode ``data`` (UTF-8 JSON whose top level must be a ``top``); any failure raises
    ``error`` with a message that starts with ``where``."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{where}: not UTF-8 (byte 0x{data[exc.start]:02x} at offset "
                    f"{exc.start})") from None
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates,
                           parse_constant=_no_constants)
    except _Duplicate as exc:
        raise error(f"{where}: duplicate key {str(exc)!r}") from None
    except json.JSONDecodeError as exc:
        raise error(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno} column "
                    f"{exc.colno})") from None
    except RecursionError:
        raise error(f"{where}: JSON nested too deeply") from None
    except ValueError as exc:  # over-long integers, NaN/Infinity
        raise error(f"{where}: not valid JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(value, top):
        kind = {dict: "an object", list: "an array"}.get(top, top.__name__)
        raise error(f"{where}: the top level must be {kind}, not {type(value).__name__}")
    return value


def load_json(path: Path, error: type[BumpError], what: str = "JSON file",
              limit: int = 64 << 20, top: type = dict) -> Any:
    """Read and decode a JSON file (a regular file of at most ``limit`` bytes)."""
    return parse_json(read_regular(path, error, what, limit), str(path), error, top)
