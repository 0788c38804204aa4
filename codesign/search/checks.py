"""One-line validation of values parsed from YAML: each failure is a `CodesignError` naming the
file, the key path and what is valid (with "did you mean" for near misses)."""

from __future__ import annotations

import contextlib
import difflib
import math
from typing import Any

from codesign.errors import CodesignError

__all__ = ["choice", "fail", "int_list", "override", "parse_tile", "section", "typed"]


def fail(path: str, key: str, message: str):
    raise CodesignError(f"{path}: {key}: {message}")


def section(data: Any, key: str, path: str, allowed: tuple[str, ...]) -> dict:
    mapping = {} if data is None else data
    if not isinstance(mapping, dict):
        fail(path, key, f"must be a mapping with keys {', '.join(allowed)}")
    for name in mapping:
        if name not in allowed:
            close = difflib.get_close_matches(str(name), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            full = f"{key}.{name}" if key else str(name)
            fail(path, full, f"unknown key{hint}; valid keys: {', '.join(allowed)}")
    return mapping


def typed(mapping: dict, key: str, where: str, path: str, kind, default, low=None, high=None):
    value = mapping.get(key, default)
    full = f"{where}.{key}" if where else key
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is float and isinstance(value, str):
        with contextlib.suppress(ValueError):  # YAML reads 1e-6 as a string
            value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        fail(path, full, f"must be {kind.__name__}, got {value!r}")
    if kind is float and not math.isfinite(value):
        fail(path, full, f"must be a finite number, got {value!r}")
    if low is not None and value < low or high is not None and value > high:
        fail(path, full, f"must lie in [{low}, {high}], got {value!r}")
    return value


def choice(value, key: str, path: str, valid) -> str:
    if value not in valid:
        close = difflib.get_close_matches(str(value), [str(v) for v in valid], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        fail(path, key, f"unknown value {value!r}{hint}; valid: {', '.join(map(str, valid))}")
    return value


# Valid range (and whether a whole number) of the Accelerator fields a space may override; any
# other field must be a finite number >= 0.
OVERRIDE_RANGES = {
    "tile_rows": (1, 65536, True),
    "tile_cols": (1, 65536, True),
    "tiles": (0, 1e9, True),
    "cell_bits": (1, 16, True),
    "dac_bits": (1, 16, True),
    "adc_bits": (1, 16, True),
    "weight_bits": (1, 32, True),
    "activation_bits": (1, 32, True),
    "accumulator_bits": (1, 64, True),
    "mac_rows": (1, 65536, True),
    "mac_cols": (1, 65536, True),
    "zero_skip": (0, 1, False),
    "sram_bytes": (0, 1e15, False),
    "gate_idle": (0, 1, False),
    "zigzag_counting": (0, 1, False),
    "zigzag_digital": (0, 1, False),
    "columns_per_adc": (1, 1024, True),
    "digital_slice_bits": (1, 32, True),
    "batch": (1, 1e9, True),
    "node_nm": (1, 1000, False),
    "vdd": (0.05, 5, False),
}


def override(mapping: dict, key: str, path: str) -> float:
    low, high, whole = OVERRIDE_RANGES.get(key, (0, math.inf, False))
    value = typed(mapping, key, "hardware.overrides", path, float, None)
    full = f"hardware.overrides.{key}"
    if not math.isfinite(value) or not low <= value <= high:
        fail(path, full, f"must be a finite number in [{low:g}, {high:g}], got {value!r}")
    if whole and value != int(value):
        fail(path, full, f"must be a whole number, got {value!r}")
    return value


def parse_tile(value, key: str, path: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return (value, value)
    if isinstance(value, str):
        parts = value.lower().split("x")
        if len(parts) == 2 and all(p.isdigit() and int(p) > 0 for p in parts):
            return (int(parts[0]), int(parts[1]))
    fail(path, key, f"{value!r} is not a tile size: an int (square) or 'ROWSxCOLS'")


def int_list(value, key: str, path: str, low: int = 0) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        fail(path, key, f"must be a non-empty list of integers, got {value!r}")
    for v in value:
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            fail(path, key, f"must hold integers >= {low}, got {v!r}")
    return tuple(value)
