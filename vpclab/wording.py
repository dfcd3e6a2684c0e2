"""Words for what people read: counts with the right plural."""
from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """`1 VPC`, `2 VPCs`, `0 instances`: the noun agrees with the count."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
