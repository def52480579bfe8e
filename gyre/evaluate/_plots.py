"""The evaluation report's plots: matplotlib figures drawn headless into PNG bytes.

Rules every plot keeps:

- matplotlib is imported inside the functions (importing gyre does not pay for it) and
  used through `Figure` objects on the Agg canvas: no pyplot, no backend switch, no global
  figure state, so plots can be drawn from any thread that owns its figure.
- Fixed DPI (100) and small figures, so each PNG weighs tens of kilobytes whatever the
  number of rows behind it; the PNG carries no `Software` entry and matplotlib writes no
  date, so the same summaries give the same bytes.
- Text from outside (model and slice names) is drawn literally: `$` is escaped so that
  mathtext never parses a name, long names are shortened, and a glyph missing from the
  font is drawn as a box instead of warning.
- A curve handed over with more points than a plot can show is thinned first
  (`_curves.thin`), so drawing time stays bounded too.

Each function takes the series to draw as `(label, summary)` pairs, challenger first; the
summaries are `_curves`' dicts.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from gyre.evaluate._curves import thin

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 100
COLOURS = ("#1f6fb4", "#e07b00")  # challenger, champion
_MAX_DRAWN = 1000  # points per curve drawn at most
_NAME_CHARS = 40

Series = Sequence[tuple[str, Mapping[str, Any]]]


def label(text: str) -> str:
    """`text` as matplotlib should draw it: literal, and short enough for a legend."""
    text = text if len(text) <= _NAME_CHARS else text[: _NAME_CHARS - 1] + "…"
    return text.replace("$", r"\$")


def roc_plot(series: Series, operating: Sequence[tuple[float, float] | None]) -> bytes:
    """ROC curves with the chance diagonal; `operating` marks each model's (fpr, tpr) at
    its threshold."""
    figure, axes = _figure(4.6, 4.2)
    axes.plot([0, 1], [0, 1], color="#999999", linestyle=":", linewidth=1)
    for (name, roc), colour, point in zip(series, COLOURS, operating, strict=False):
        x, y = _drawn(roc["fpr"], roc["tpr"])
        axes.plot(x, y, color=colour, linewidth=1.6, label=f"{label(name)} (AUC {roc['auc']:.3f})")
        if point is not None:
            axes.plot(*point, marker="o", color=colour, markersize=6)
    _unit(axes, "false positive rate", "true positive rate", "ROC")
    axes.legend(loc="lower right", fontsize=8)
    return _png(figure)


def pr_plot(series: Series, operating: Sequence[tuple[float, float] | None]) -> bytes:
    """Precision-recall curves with the prevalence of positives as the chance level;
    `operating` marks each model's (recall, precision) at its threshold."""
    figure, axes = _figure(4.6, 4.2)
    for (name, pr), colour, point in zip(series, COLOURS, operating, strict=False):
        x, y = _drawn(pr["recall"], pr["precision"])
        text = f"{label(name)} (AP {pr['average_precision']:.3f})"
        axes.plot(x, y, color=colour, linewidth=1.6, label=text)
        if point is not None:
            axes.plot(*point, marker="o", color=colour, markersize=6)
    if series:
        prevalence = float(series[0][1]["prevalence"])
        axes.axhline(prevalence, color="#999999", linestyle=":", linewidth=1)
    _unit(axes, "recall", "precision", "Precision-recall")
    axes.legend(loc="lower left", fontsize=8)
    return _png(figure)


def calibration_plot(series: Series) -> bytes:
    """Observed rate against mean predicted probability per bin, above the bins' counts."""
    figure, _ = _figure(4.6, 4.6, rows=2)
    top, bottom = figure.axes
    top.plot([0, 1], [0, 1], color="#999999", linestyle=":", linewidth=1)
    width = 0.8 / max(1, len(series))
    for i, ((name, cal), colour) in enumerate(zip(series, COLOURS, strict=False)):
        ece = cal["expected_calibration_error"]
        top.plot(
            cal["mean_predicted"],
            cal["observed_rate"],
            marker="o",
            markersize=4,
            color=colour,
            linewidth=1.4,
            label=f"{label(name)} (ECE {ece:.3f})",
        )
        bins = int(cal["bins"])
        centres = np.asarray(cal["mean_predicted"], dtype=np.float64)
        slot = np.minimum((centres * bins).astype(int), bins - 1)
        x = (slot + 0.1 + width * (i + 0.5)) / bins
        bottom.bar(x, cal["count"], width=width / bins, color=colour)
    _unit(top, "", "observed rate", "Calibration")
    top.legend(loc="upper left", fontsize=8)
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("mean predicted probability")
    bottom.set_ylabel("rows", fontsize=8)
    bottom.tick_params(labelsize=7)
    return _png(figure)


def confusion_plot(series: Series) -> bytes:
    """One 2-by-2 matrix per model, side by side: counts, and each row's share."""
    figure, _ = _figure(3.3 * max(1, len(series)), 3.2, columns=max(1, len(series)))
    for axes, (name, counts) in zip(figure.axes, series, strict=False):
        matrix = np.array([[counts["tn"], counts["fp"]], [counts["fn"], counts["tp"]]], float)
        shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1.0)
        axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
        for row in range(2):
            for column in range(2):
                text = f"{int(matrix[row, column]):,}\n{shares[row, column]:.1%}"
                colour = "white" if shares[row, column] > 0.6 else "black"
                axes.text(column, row, text, ha="center", va="center", color=colour, fontsize=9)
        axes.set_xticks([0, 1], ["predicted 0", "predicted 1"], fontsize=8)
        axes.set_yticks([0, 1], ["actual 0", "actual 1"], fontsize=8)
        axes.set_title(f"{label(name)}\nthreshold {counts['threshold']:.4g}", fontsize=9)
    return _png(figure)


def residual_histogram_plot(series: Series) -> bytes:
    """Each model's histogram of residuals (observed - predicted) as a step outline."""
    figure, axes = _figure(5.6, 3.9)
    for (name, hist), colour in zip(series, COLOURS, strict=False):
        outside = int(hist["below"]) + int(hist["above"])
        text = f"{label(name)} (mean {hist['mean']:.3g}, sd {hist['std']:.3g}"
        text += f", {outside:,} outside)" if outside else ")"
        axes.stairs(hist["counts"], hist["edges"], color=colour, linewidth=1.4, label=text)
    axes.axvline(0.0, color="#999999", linestyle=":", linewidth=1)
    axes.set_xlabel("residual (observed - predicted)")
    axes.set_ylabel("rows")
    axes.set_title("Residuals", fontsize=10)
    figure.legend(loc="outside lower center", ncols=1, fontsize=8, frameon=False)
    return _png(figure)


def residual_vs_predicted_plot(series: Series) -> bytes:
    """Mean residual per prediction bin, with the bins' 10th-90th percentile band."""
    figure, axes = _figure(5.6, 3.9)
    for (name, binned), colour in zip(series, COLOURS, strict=False):
        x = binned["mean_predicted"]
        axes.fill_between(
            x, binned["residual_p10"], binned["residual_p90"], color=colour, alpha=0.18, linewidth=0
        )
        axes.plot(x, binned["mean_residual"], color=colour, linewidth=1.4, label=label(name))
    axes.axhline(0.0, color="#999999", linestyle=":", linewidth=1)
    axes.set_xlabel("predicted")
    axes.set_ylabel("residual (mean, 10th-90th pct)")
    axes.set_title("Residuals against predictions", fontsize=10)
    figure.legend(loc="outside lower center", ncols=1, fontsize=8, frameon=False)
    return _png(figure)


def slices_plot(
    names: Sequence[str],
    models: Sequence[tuple[str, Sequence[Mapping[str, Any] | None]]],
    failed: Sequence[bool],
    reference: float | None,
) -> bytes:
    """Horizontal bars of each slice's metric per model, with interval error bars; a failed
    gate's slice is labelled in red; `reference` is the overall value, drawn dashed.

    The axis starts at 0 unless every interval lies well above it (AUCs of 0.8 to 0.9): it
    then starts just below the lowest interval, and the title says so."""
    bars = max(1, len(models))
    figure, axes = _figure(6.4, 1.2 + 0.12 * len(names) * (bars + 1))
    rows = np.arange(len(names), dtype=np.float64)
    height = 0.8 / bars
    edges: list[float] = []
    for i, ((name, values), colour) in enumerate(zip(models, COLOURS, strict=False)):
        kept = [j for j, v in enumerate(values) if v is not None and _finite(v.get("value"))]
        value = np.array([float(values[j]["value"]) for j in kept])  # type: ignore[index]
        low = np.array([_or(values[j], "low", v) for j, v in zip(kept, value, strict=True)])
        high = np.array([_or(values[j], "high", v) for j, v in zip(kept, value, strict=True)])
        edges += [*low.tolist(), *high.tolist()]
        error = np.vstack([np.maximum(value - low, 0.0), np.maximum(high - value, 0.0)])
        axes.barh(
            rows[kept] - 0.4 + height * (i + 0.5),
            value,
            height=height * 0.9,
            color=colour,
            label=label(name),
            xerr=error,
            error_kw={"elinewidth": 0.8, "capsize": 2},
        )
    title = "Slices"
    if edges and min(edges) > 0 and max(edges) - min(edges) < 0.3 * max(edges):
        start = min(edges) - 0.15 * (max(edges) - min(edges) or abs(min(edges)))
        axes.set_xlim(left=start)
        title += f" (axis from {start:.3g}, not 0)"
    if reference is not None:
        axes.axvline(reference, color="#444444", linestyle="--", linewidth=0.9)
    axes.set_yticks(rows, [label(n) for n in names], fontsize=8)
    for tick, bad in zip(axes.get_yticklabels(), failed, strict=True):
        if bad:
            tick.set_color("#c0392b")
    axes.set_ylim(len(names) - 0.5, -0.5)
    axes.tick_params(axis="x", labelsize=8)
    axes.grid(axis="x", color="#eeeeee", linewidth=0.6)
    axes.set_axisbelow(True)
    axes.set_title(title, fontsize=10)
    if models:
        figure.legend(loc="outside lower center", ncols=bars, fontsize=8, frameon=False)
    return _png(figure)


def _figure(width: float, height: float, rows: int = 1, columns: int = 1) -> tuple[Figure, Axes]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    if rows == 2:
        grid = figure.add_gridspec(2, 1, height_ratios=(3, 1))
        figure.add_subplot(grid[0])
        figure.add_subplot(grid[1], sharex=figure.axes[0])
    else:
        for column in range(columns):
            figure.add_subplot(1, columns, column + 1)
    return figure, figure.axes[0]


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from", category=UserWarning)
        figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _unit(axes: Axes, xlabel: str, ylabel: str, title: str) -> None:
    axes.set_xlim(-0.01, 1.01)
    axes.set_ylim(-0.01, 1.01)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title, fontsize=10)
    axes.grid(color="#eeeeee", linewidth=0.6)


def _drawn(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(xs) > _MAX_DRAWN:
        kept = thin(xs, ys, _MAX_DRAWN)
        xs, ys = xs[kept], ys[kept]
    return xs, ys


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and bool(np.isfinite(value))


def _or(interval: Mapping[str, Any] | None, key: str, default: float) -> float:
    value = None if interval is None else interval.get(key)
    return float(value) if value is not None and _finite(value) else default
