"""Payload encoding: dicts and other JSON values for the seed API, bytes passed through."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from pgqueuer.errors import PayloadError, PayloadTooLarge

_JSON_SCALARS = (str, int, float, bool, type(None))


def _first_offender(value: Any, path: str) -> tuple[str, Any] | None:
    """Find where in ``value`` a non-JSON object sits, for a message that points at it."""
    if isinstance(value, float) and not math.isfinite(value):
        return path, value
    if isinstance(value, _JSON_SCALARS):
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str | int | float | bool) and key is not None:
                return f"{path} key {key!r}", key
            found = _first_offender(item, f"{path}[{key!r}]")
            if found:
                return found
        return None
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = _first_offender(item, f"{path}[{index}]")
            if found:
                return found
        return None
    return path, value


def encode_payload(payload: Any, task: str) -> bytes | None:
    """``bytes`` pass through; ``None`` stays ``None``; anything else must be JSON.

    Raises :class:`PayloadError` (a ``TypeError``) naming the offending type and where it
    sits, before anything is written.
    """
    if payload is None:
        return None
    if isinstance(payload, bytes | bytearray | memoryview):
        return bytes(payload)
    try:
        return json.dumps(payload, allow_nan=False, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        found = _first_offender(payload, "payload")
        where, offender = found if found else ("payload", payload)
        raise PayloadError(
            f"Object of type {type(offender).__name__} is not JSON serializable "
            f"(at {where}, enqueueing task {task!r}); payloads must be JSON values: dicts, "
            "lists, strings, numbers, booleans and None, or raw bytes"
        ) from exc


def check_payload_sizes(payloads: Iterable[tuple[str, bytes | None]], limit: int | None) -> None:
    """Refuse the whole batch if any payload is above ``limit`` bytes (``None``: no limit).

    Checked before anything is sent, so an oversized job costs neither a round trip nor
    the server's memory, and the batch stays all-or-nothing.
    """
    if limit is None:
        return
    for position, (entrypoint, payload) in enumerate(payloads):
        if payload is not None and len(payload) > limit:
            raise PayloadTooLarge(
                f"payload of job {position} ({entrypoint!r}) is {len(payload):,} bytes; the "
                f"limit is {limit:,} bytes (max_payload_bytes). Store large data elsewhere "
                "and enqueue a reference to it"
            )
