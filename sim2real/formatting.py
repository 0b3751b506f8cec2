"""How numbers read in every table, card and message: one spelling of a rate, a count, a gain."""

from __future__ import annotations

import math


def percent(rate: float | None, digits: int = 0) -> str:
    """A rate in [0, 1] as "80 %" (the one spelling everywhere); "—" when there is none."""
    return "—" if rate is None else f"{100 * rate:.{digits}f} %"


def count(number: int, noun: str, plural: str | None = None) -> str:
    """ "1 episode", "3 episodes": a count with its noun in the right number."""
    return f"{number:,} {noun if number == 1 else plural or noun + 's'}"


def score(metric: str, success: float | None, mean_return: float | None) -> str:
    """An evaluation as its task scores it: success and return, or the return alone for a task scored by return."""
    shown_return = "—" if mean_return is None else f"{mean_return:.2f}"
    if metric == "return":
        return f"return {shown_return}"
    return f"success {percent(success)}, return {shown_return}"


def number(value: float) -> str:
    """A number for people: thousands separators for large values, three significant digits otherwise."""
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"
