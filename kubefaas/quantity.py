"""Kubernetes resource quantities ("256Mi", "1G", "1.5Gi", "500000000") as bytes.

Only what memory and storage sizes need: binary (Ki..Ei) and decimal (k..E) suffixes and
plain or exponent numbers. Milli-units ("100m") make no sense for byte sizes and are refused.
"""

import re
from decimal import Decimal, InvalidOperation

_SUFFIXES = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
# The same grammar the API server accepts for sizes (without the milli suffix).
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?([eE][0-9]+|Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"
_QUANTITY_RE = re.compile(QUANTITY_PATTERN)


def parse_quantity(text: str) -> int:
    """Return the number of bytes in `text`, rounded up; ValueError names the rule broken."""
    if not isinstance(text, str) or not _QUANTITY_RE.match(text):
        raise ValueError(
            f"{text!r} is not a size quantity such as 256Mi, 1Gi or 500M "
            "(a number with an optional Ki/Mi/Gi/Ti or k/M/G/T suffix)"
        )
    match = re.match(r"^([0-9.]+(?:[eE][0-9]+)?)(.*)$", text)
    assert match is not None
    number, suffix = match.groups()
    try:
        value = Decimal(number) * _SUFFIXES[suffix]
    except (InvalidOperation, KeyError) as exc:  # pragma: no cover - the regex rules these out
        raise ValueError(f"{text!r} is not a valid quantity") from exc
    return int(value.to_integral_value(rounding="ROUND_CEILING"))


def mebibytes(text: str) -> int:
    """Size in MiB, rounded up (what Lambda's `memory_limit_in_mb` reports)."""
    return -(-parse_quantity(text) // 2**20)
