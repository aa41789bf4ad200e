"""What ``pgq`` prints: aligned text tables, JSON, ages and notes.

Everything goes through ``sys.stdout``/``sys.stderr`` looked up at call time, so output can
be captured (tests, ``contextlib.redirect_stdout``).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from enum import Enum
from typing import Any
from uuid import UUID

MAX_CELL = 60  # characters of a free-text cell (result, error) in a table


def emit(text: str = "") -> None:
    """One line (or block) of regular output, flushed so pipes see it at once."""
    print(text, file=sys.stdout, flush=True)


def note(text: str) -> None:
    """An informational line on stderr, so stdout stays clean for scripts."""
    print(f"pgq: {text}", file=sys.stderr, flush=True)


def _json_default(value: object) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.hex()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def to_json(value: object) -> str:
    """JSON text with ISO 8601 datetimes, UUIDs as strings, bytes as UTF-8 (else hex)."""
    return json.dumps(value, default=_json_default, indent=2, ensure_ascii=False)


def emit_json(value: object) -> None:
    emit(to_json(value))


def shorten(text: str, limit: int = MAX_CELL) -> str:
    """One line, at most ``limit`` characters (``...`` marks a cut)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.astimezone().isoformat(timespec="seconds")
    return str(value)


def _numeric(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain text table: a header, a rule, and columns padded to their widest cell.

    Numbers are right-aligned, everything else left-aligned.
    """
    texts = [[cell(value) for value in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in texts:
        for index, text in enumerate(row):
            widths[index] = max(widths[index], len(text))
    right = [bool(rows) and all(_numeric(row[i]) for row in rows) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        parts = [
            value.rjust(width) if align else value.ljust(width)
            for value, width, align in zip(values, widths, right, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out = [line(list(headers)), line(["-" * w for w in widths])]
    out.extend(line(row) for row in texts)
    return "\n".join(out)


def age(seconds: float | None) -> str:
    """A short human duration: ``0.4s``, ``42s``, ``3m05s``, ``2h03m``, ``3d04h``."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{max(seconds, 0):.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def id_list(ids: Sequence[int]) -> str:
    return ", ".join(str(i) for i in ids)
