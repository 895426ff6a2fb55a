"""Numbers as the figures and tables print them (shared by every tab's figure module)."""

from __future__ import annotations


def ms(seconds: float | None) -> str:
    """Seconds as milliseconds, with more digits for short times."""
    if seconds is None:
        return "–"
    value = seconds * 1000
    return f"{value:,.0f} ms" if value >= 100 else f"{value:.1f} ms" if value >= 1 else f"{value:.2f} ms"


def nbytes(n: float | None) -> str:
    """Bytes in decimal units (1 MB = 1,000,000 bytes), as the formulas' numbers multiply out."""
    if n is None or n != n:  # None or NaN: nothing measured
        return "–"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:,.2f} {unit}"
    return f"{n:,.0f} B"
