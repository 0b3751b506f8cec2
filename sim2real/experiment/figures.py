"""The transfer report's figures: learning curves with CI bands (curves.png) and gains over scratch (gain.png)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator

from sim2real.experiment.curves import AXIS_LABELS
from sim2real.experiment.plan import BASELINE
from sim2real.formatting import number


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()


def _colors(names: Sequence[str]) -> dict[str, str]:
    """A stable colour per strategy: black for scratch, grey for zero_shot, tab10 for the rest."""
    fixed = {BASELINE: "black", "zero_shot": "tab:gray"}
    palette = iter(("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
                    "tab:olive", "tab:cyan"))
    return {name: fixed.get(name) or next(palette, "tab:blue") for name in names}


def plot_curves(curves: Mapping[str, Mapping[str, Sequence[float]]], summary: Mapping[str, Any]) -> bytes:
    """curves.png: IQM learning curve with CI band per strategy against target steps, threshold dashed."""
    threshold = summary["threshold"]
    colors = _colors(list(curves))
    figure = Figure(figsize=(8, 5), layout="constrained")
    axes = figure.add_subplot()
    for name, series in curves.items():
        style = "--" if name == BASELINE else ":" if name == "zero_shot" else "-"
        axes.plot(series["steps"], series["iqm"], style, marker="o", markersize=3, color=colors[name],
                  label=name)
        axes.fill_between(series["steps"], series["low"], series["high"], color=colors[name], alpha=0.15,
                          linewidth=0)
    label = f"threshold ({number(threshold['value'])})"
    axes.axhline(threshold["value"], color="crimson", linestyle="--", linewidth=1, label=label)
    axes.annotate(label, (0, threshold["value"]), xycoords=("axes fraction", "data"), xytext=(4, 3),
                  textcoords="offset points", color="crimson", fontsize="small")
    axes.set_xlabel("target environment steps")
    axes.xaxis.set_major_formatter(FuncFormatter(
        lambda value, _: f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"))
    axes.set_ylabel(AXIS_LABELS[threshold["metric"]])
    target = summary["target"] if isinstance(summary["target"], str) else ", ".join(summary["target"])
    confidence = f"{summary['confidence']:.0%}"
    axes.set_title(f"Learning curves on {target} (IQM over seeds, {confidence} CI)")
    axes.grid(alpha=0.3)
    axes.legend(loc="best", fontsize="small")
    return _png(figure)


def plot_gain(summary: Mapping[str, Any]) -> bytes:
    """gain.png: sample-efficiency gain per strategy, IQM with CI bars on a log scale, 1× marked."""
    entries = {name: entry for name, entry in summary["strategies"].items() if not entry["baseline"]}
    colors = _colors(list(summary["strategies"]))
    figure = Figure(figsize=(max(4.0, 1.2 * len(entries) + 2), 4.5), layout="constrained")
    axes = figure.add_subplot()
    markers = {"exact": ("o", "exact"), "lower_bound": ("^", "includes lower bounds (≥)"),
               "upper_bound": ("v", "includes upper bounds (≤)"), "undetermined": ("x", "undetermined")}
    shown = set()
    for x, (name, entry) in enumerate(entries.items()):
        gain = entry["sample_efficiency_gain"]
        kinds = gain["kinds"]
        kind = ("undetermined" if kinds["undetermined"] == entry["seeds"] else
                "lower_bound" if kinds["lower_bound"] else "upper_bound" if kinds["upper_bound"] else "exact")
        marker, label = markers[kind]
        if gain["iqm"] is None:  # no gain to draw: say so at the foot of the axes, away from the 1× line
            axes.annotate("undetermined:\nneither reached\nthe threshold", (x, 0.03),
                          xycoords=("data", "axes fraction"), ha="center", va="bottom", fontsize="small")
            continue
        ci = gain["ci"] or [gain["iqm"], gain["iqm"]]
        error = [[gain["iqm"] - ci[0]], [ci[1] - gain["iqm"]]]
        axes.errorbar([x], [gain["iqm"]], yerr=error, fmt=marker, markersize=9, capsize=5, color=colors[name],
                      markeredgecolor="black", label=None if kind in shown else label)
        shown.add(kind)
        value, seeds = f"{number(gain['iqm'])}×", entry["seeds"]
        text = {"exact": value, "lower_bound": f"≥ {value} ({kinds['lower_bound']}/{seeds} seeds)",
                "upper_bound": f"≤ {value} ({kinds['upper_bound']}/{seeds} seeds)",
                "undetermined": "undetermined"}[kind]
        axes.annotate(text, (x, gain["iqm"]), textcoords="offset points", xytext=(10, 0), va="center",
                      fontsize="small")
    axes.axhline(1.0, color="black", linestyle="--", linewidth=1, label="1× (as scratch)")
    axes.set_yscale("log")
    times = FuncFormatter(lambda value, _: f"{value:g}×")
    axes.yaxis.set_major_formatter(times)
    axes.yaxis.set_minor_locator(LogLocator(subs=(2.0, 3.0, 5.0)))
    axes.yaxis.set_minor_formatter(times)
    # Keep 1× and every interval in view, with a margin in log space.
    ends = [1.0, *(bound for entry in entries.values()
                   for bound in (entry["sample_efficiency_gain"]["ci"] or [entry["sample_efficiency_gain"]["iqm"]] * 2)
                   if bound is not None)]
    low, high = min(ends), max(ends)
    pad = max((high / low) ** 0.08, 1.2)
    axes.set_ylim(low / pad, high * pad)
    axes.set_xticks(range(len(entries)), list(entries))
    axes.set_xlim(-0.6, max(len(entries), 1) - 0.4)
    axes.set_ylabel("sample-efficiency gain over scratch (×)")
    axes.set_title(f"Sample-efficiency gain over scratch\n(steps to threshold, IQM, {summary['confidence']:.0%} CI)",
                   fontsize="medium")
    axes.grid(alpha=0.3, which="both", axis="y")
    axes.legend(loc="best", fontsize="small")
    return _png(figure)
