"""JSON as the indexer accepts it from a package: UTF-8 text, finite numbers, integers within signed 64 bits,
no duplicate keys and bounded nesting, so whatever we keep can be written back as JSON and msgpack.

Python's json module accepts NaN, Infinity, 10**5000, lone surrogates ("\\ud800") and repeated keys; clients
(rattler's serde, msgpack) refuse each of them, so they are refused here, with a one-line reason.
"""

from __future__ import annotations

import json
from typing import Any

MAX_NESTING = 32
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


class StrictJsonError(ValueError):
    """The bytes are not JSON the indexer accepts; the message is a one-line reason."""


def load_strict_json(raw: bytes) -> Any:
    """Parse `raw` or raise StrictJsonError."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise StrictJsonError(f"not UTF-8 (byte {error.start})") from None
    try:
        value = json.loads(
            text,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
            parse_int=_int64,
            object_pairs_hook=_unique_keys,
        )
    except StrictJsonError:
        raise
    except RecursionError:
        raise StrictJsonError(f"nested deeper than {MAX_NESTING} levels") from None
    except ValueError as error:  # JSONDecodeError included
        raise StrictJsonError(str(error).splitlines()[0][:200]) from None
    _check_tree(value)
    return value


def dump_json(value: Any) -> str:
    """Compact, key-sorted JSON that never holds NaN or Infinity (ValueError instead)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"), sort_keys=True)


def _refuse_constant(name: str) -> Any:
    raise StrictJsonError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    number = float(text)
    if number in (float("inf"), float("-inf")):
        raise StrictJsonError(f"number {text[:32]} is out of range")
    return number


def _int64(text: str) -> int:
    if len(text) > 20:
        raise StrictJsonError(f"integer {text[:20]}… is out of the signed 64-bit range")
    number = int(text)
    if not INT64_MIN <= number <= INT64_MAX:
        raise StrictJsonError(f"integer {text} is out of the signed 64-bit range")
    return number


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise StrictJsonError(f"key {key[:64]!r} appears twice in one object")
            seen.add(key)
    return document


def _check_tree(value: Any) -> None:
    """Depth and text checks, without recursion: a hostile document must not cost a deep Python stack."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, dict | list):
            if depth > MAX_NESTING:
                raise StrictJsonError(f"nested deeper than {MAX_NESTING} levels")
            if isinstance(item, dict):
                for key, child in item.items():
                    _check_text(key)
                    pending.append((child, depth + 1))
            else:
                pending.extend((child, depth + 1) for child in item)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise StrictJsonError(
            "text holds a lone UTF-16 surrogate (\\ud800-\\udfff), not encodable as UTF-8"
        ) from None
