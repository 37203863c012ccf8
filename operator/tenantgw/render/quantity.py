"""Kubernetes quantities in the canonical form the API server writes back.

The API server re-serialises every quantity (`0.5` becomes `500m`, `1024Mi` becomes `1Gi`).
Rendering the canonical form keeps the rendered object a subset of the live one, so an
unchanged tenant costs no write. Mirrors `resource.Quantity.CanonicalizeBytes`
(k8s.io/apimachinery) for the values a Pod spec can hold.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

_NUMBER = re.compile(r"^([+-]?)(\d+(?:\.\d*)?|\.\d+)(.*)$")
_EXPONENT = re.compile(r"^[eE]([+-]?\d+)$")
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_DECIMAL_SUFFIX = {exponent: suffix for suffix, exponent in _DECIMAL.items()}
_BINARY_SUFFIX = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]
_NANO = 10**9


def canonical_quantity(text: str) -> str:
    """The canonical form of a quantity: `1.5` -> `1500m`, `1.5Gi` -> `1536Mi`, `1000m` -> `1`."""
    parsed = _NUMBER.match(text.strip())
    if parsed is None:
        raise ValueError(f"{text!r} is not a Kubernetes quantity")
    sign, number, suffix = parsed.groups()
    value = Fraction(number)
    exponent_match = _EXPONENT.match(suffix)
    if suffix in _BINARY:
        fmt = "binary"
        value *= 1024 ** _BINARY[suffix]
    elif suffix in _DECIMAL:
        fmt = "decimal"
        value *= Fraction(10) ** _DECIMAL[suffix]
    elif exponent_match is not None:
        fmt = "exponent"
        value *= Fraction(10) ** int(exponent_match.group(1))
    else:
        raise ValueError(f"{text!r} is not a Kubernetes quantity")
    # The API server rounds up to whole nano units: asking for a little gets a little.
    nanos = math.ceil(value * _NANO)
    if nanos == 0:
        return "0"
    prefix = "-" if sign == "-" else ""
    if fmt == "binary" and nanos >= 1024 * _NANO and nanos % _NANO == 0:
        mantissa, power = nanos // _NANO, 0
        while mantissa % 1024 == 0 and power < len(_BINARY_SUFFIX) - 1:
            mantissa, power = mantissa // 1024, power + 1
        return f"{prefix}{mantissa}{_BINARY_SUFFIX[power]}"
    # Decimal: the largest exponent (a multiple of 3) that keeps the mantissa whole.
    mantissa, exponent = nanos, -9
    while mantissa % 1000 == 0:
        mantissa, exponent = mantissa // 1000, exponent + 3
    if fmt == "exponent":
        return f"{prefix}{mantissa}" + (f"e{exponent}" if exponent else "")
    if exponent > max(_DECIMAL_SUFFIX):
        mantissa, exponent = mantissa * 10 ** (exponent - 18), 18
    return f"{prefix}{mantissa}{_DECIMAL_SUFFIX[exponent]}"


def canonical_resources(values: dict[str, str]) -> dict[str, str]:
    """A requests or limits map with canonical quantities, keys sorted."""
    return {name: canonical_quantity(values[name]) for name in sorted(values)}
