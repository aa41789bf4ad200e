from __future__ import annotations

import json
from decimal import Decimal

import pytest

from pgqueuer.errors import PayloadError
from pgqueuer.payloads import encode_payload


def test_json_values_and_bytes() -> None:
    assert encode_payload(None, "t") is None
    assert encode_payload(b"\x00raw", "t") == b"\x00raw"
    assert json.loads(encode_payload({"a": [1, 2.5, None, True, "x"]}, "t") or b"") == {
        "a": [1, 2.5, None, True, "x"]
    }


@pytest.mark.parametrize(
    ("payload", "type_name", "where"),
    [
        ({"when": object()}, "object", "payload['when']"),
        ({"deep": [1, {"s": {1}}]}, "set", "payload['deep'][1]['s']"),
        ({"n": Decimal("1.5")}, "Decimal", "payload['n']"),
        ({"x": float("inf")}, "float", "payload['x']"),
        ({(1, 2): "tuple key"}, "tuple", "payload key (1, 2)"),
    ],
)
def test_offending_type_and_place_are_named(payload: object, type_name: str, where: str) -> None:
    with pytest.raises(TypeError) as caught:
        encode_payload(payload, "my_task")
    assert isinstance(caught.value, PayloadError)
    message = str(caught.value)
    assert f"Object of type {type_name} is not JSON serializable" in message
    assert where in message
    assert "my_task" in message
