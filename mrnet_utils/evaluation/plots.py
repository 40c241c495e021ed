"""The figures of the notebooks: one function per figure, each returning a matplotlib Figure.

Inputs are plain tensors, arrays and DataFrames, so this module knows nothing of the
models or the evaluation code. Images are shown grey-scale with the colour limits
fixed to the value range (model space [-1, 1] unless stated): per-image autoscaling
would stretch every panel to full contrast and hide the intensity errors we look for.

Figures are built with `matplotlib.figure.Figure`, not pyplot, so they are never
registered with pyplot: a batch run does not accumulate open figures, and in Jupyter
a figure shows exactly once when it is the cell's last expression (a pyplot figure
would also be shown by the inline backend, i.e. twice). The notebook pattern is
`fig = plots.plot_...(...)`, `plots.save_figure(fig, path)`, then `fig`.
"""

from __future__ import annotations

import io
import math
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib import patheffects
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from PIL import Image

from mrnet_utils.errors import MRNetError
from mrnet_utils.files import write_atomically

MODEL_RANGE = (-1.0, 1.0)
UINT8_RANGE = (0.0, 255.0)
# Forest plots: a difference whose interval excludes zero, and one whose interval includes it (or has none).
CLEAR = "C3"
UNCLEAR = "0.55"


def _to_numpy(values, name: str) -> np.ndarray:
    if torch.is_tensor(values):
        values = values.detach().cpu().float().numpy()
    array = np.asarray(values)
    if array.size == 0:
        raise MRNetError(f"{name} is empty; pass at least one image")
    return array


def _as_images(images, name: str) -> np.ndarray:
    """(N, 1, H, W), (N, H, W) or (H, W) -> (N, H, W)."""
    array = _to_numpy(images, name)
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    elif array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise MRNetError(
            f"{name} has shape {tuple(array.shape)}; pass grey-scale images shaped (N, 1, H, W), (N, H, W) or (H, W)"
        )
    return array


def _show(ax: Axes, image: np.ndarray, value_range: tuple[float, float], interpolation: str = "antialiased") -> None:
    ax.imshow(image, cmap="gray", vmin=value_range[0], vmax=value_range[1], interpolation=interpolation)
    # set_*ticks([]) rather than axis("off"), so that a y-label can still name the row.
    ax.set_xticks([])
    ax.set_yticks([])


def plot_image_grid(
    images,
    nrow: int = 8,
    title: str | None = None,
    labels: Sequence[str] | None = None,
    value_range: tuple[float, float] = MODEL_RANGE,
) -> Figure:
    """A grid of slices, `nrow` images per row (torchvision's `make_grid` convention)."""
    stack = _as_images(images, "images")
    if nrow < 1:
        raise MRNetError(f"nrow={nrow}: the number of images per row must be at least 1")
    if labels is not None and len(labels) != len(stack):
        raise MRNetError(f"labels has {len(labels)} entries for {len(stack)} images; pass one label per image")
    ncols = min(nrow, len(stack))
    nrows = math.ceil(len(stack) / ncols)
    fig = Figure(figsize=(1.6 * ncols, 1.6 * nrows + 0.4 * (title is not None)), layout="constrained")
    for index, ax in enumerate(fig.subplots(nrows, ncols, squeeze=False).ravel()):
        if index >= len(stack):
            fig.delaxes(ax)
            continue
        _show(ax, stack[index], value_range)
        if labels is not None:
            ax.set_title(labels[index], fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


def plot_planes(
    examples: Mapping[str, Sequence],
    title: str | None = None,
    value_range: tuple[float, float] = UINT8_RANGE,
) -> Figure:
    """Example slices per plane: one row per plane (e.g. coronal, sagittal, axial), one column per exam.

    Defaults to raw MRNet intensities (uint8, 0-255).
    """
    if not examples:
        raise MRNetError("examples is empty; pass {plane: [slice, ...]} with at least one plane")
    ncols = max(len(slices) for slices in examples.values())
    fig = Figure(figsize=(2.2 * ncols + 0.4, 2.2 * len(examples) + 0.4 * (title is not None)), layout="constrained")
    axes = fig.subplots(len(examples), ncols, squeeze=False)
    for row, (plane, slices) in zip(axes, examples.items()):
        for col, ax in enumerate(row):
            if col >= len(slices):
                fig.delaxes(ax)
                continue
            _show(ax, _as_images(slices[col], f"examples[{plane!r}][{col}]")[0], value_range)
        row[0].set_ylabel(plane, fontsize=12)
    if title:
        fig.suptitle(title)
    return fig


# Line styles cycled with the colours, so that runs whose curves coincide (Swin and no Swin early in
# training) stay distinguishable: a dashed line over a solid one shows both.
LINE_STYLES = ("-", "--", ":", "-.")


def ema(values: pd.Series, smooth: float) -> pd.Series:
    """The bias-corrected exponential moving average of `values`, with weight `smooth` on the past.

    m_t = smooth * m_{t-1} + (1 - smooth) * x_t from m_{-1} = 0, divided by 1 - smooth**(t + 1): the
    bias correction of Adam (Kingma & Ba 2015, sec. 3), which TensorBoard's smoothing also applies.
    Without it, the average starts at the first logged value and lags behind the logged loss for
    about 1 / (1 - smooth) points. pandas' `adjust=True` average is exactly this quotient.
    """
    if not 0.0 <= smooth < 1.0:
        raise MRNetError(f"smooth={smooth}: the EMA weight must be in [0, 1)")
    return values.ewm(alpha=1.0 - smooth, adjust=True).mean()


def default_smoothing(points: int) -> float:
    """The EMA weight that averages over about a tenth of a run's logged points (none below 20 points)."""
    return 1.0 - 1.0 / max(1.0, points / 10)


def _draw_losses(ax: Axes, logs: Mapping[str, pd.DataFrame], smooth: float | None) -> None:
    for index, (name, log) in enumerate(logs.items()):
        missing = {"step", "loss"} - set(log.columns)
        if missing:
            raise MRNetError(f"the log of run {name!r} lacks the column(s) {sorted(missing)}; pass the training log CSV")
        style = {"color": f"C{index % 10}", "linestyle": LINE_STYLES[index % len(LINE_STYLES)]}
        ax.plot(log["step"], log["loss"], alpha=0.3, linewidth=0.8, **style)
        weight = default_smoothing(len(log)) if smooth is None else smooth
        ax.plot(log["step"], ema(log["loss"], weight), linewidth=2.0, label=name, **style)
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("loss (lower is better)")
    ax.grid(True, which="both", alpha=0.3)
    if logs:
        ax.legend(title="faint: logged, bold: EMA", fontsize=8, title_fontsize=8)


def plot_loss_curves(
    logs: Mapping[str, pd.DataFrame], smooth: float | None = None, title: str | None = "Training loss"
) -> Figure:
    """Training loss of several runs in one panel: the logged values faint, their bias-corrected EMA bold, log y.

    `smooth` is the EMA weight of the past (TensorBoard's smoothing slider; 0 leaves the curve as
    logged); None averages over about a tenth of each run's logged points (`default_smoothing`).
    Each run has its own colour and line style.
    """
    return plot_loss_panels({title or "": logs}, smooth, title=None)


def plot_loss_panels(
    panels: Mapping[str, Mapping[str, pd.DataFrame]], smooth: float | None = None, title: str | None = None
) -> Figure:
    """`plot_loss_curves` in one panel per group of runs (e.g. one per stage, its variants as lines), side by side."""
    if not panels:
        raise MRNetError("panels is empty; pass {panel title: {run name: training log}} with at least one panel")
    columns = min(len(panels), 4)
    rows = math.ceil(len(panels) / columns)
    fig = Figure(figsize=(max(7.0, 3.6 * columns), 3.2 * rows + 0.8 * (rows == 1) + 0.3 * bool(title)),
                 layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, (name, logs) in zip(axes, panels.items()):
        _draw_losses(ax, logs, smooth)
        ax.set_title(name)
    for ax in axes[len(panels):]:
        fig.delaxes(ax)
    if title:
        fig.suptitle(title)
    return fig


def plot_grids_over_training(
    images: Mapping[int, np.ndarray],
    title: str | None = None,
    value_range: tuple[float, float] = UINT8_RANGE,
) -> Figure:
    """Saved sample grids (H x W grey or H x W x 3/4 colour, as read from PNG) in a row, ordered and titled by step.

    `value_range` fixes the grey-scale limits (uint8 by default); colour images carry their own.
    """
    if not images:
        raise MRNetError("images is empty; pass {step: grid image} for at least one step")
    grids = {step: _to_numpy(images[step], f"images[{step}]") for step in sorted(images)}
    aspect = max(grid.shape[0] / grid.shape[1] for grid in grids.values())
    fig = Figure(figsize=(3.2 * len(grids), 3.2 * aspect + 0.4 + 0.4 * (title is not None)), layout="constrained")
    for ax, (step, grid) in zip(fig.subplots(1, len(grids), squeeze=False)[0], grids.items()):
        if grid.ndim == 2:
            _show(ax, grid, value_range)
        elif grid.ndim == 3 and grid.shape[2] in (3, 4):
            ax.imshow(grid)
            ax.set_xticks([])
            ax.set_yticks([])
        else:
            raise MRNetError(
                f"images[{step}] has shape {grid.shape}; pass a grid image shaped (H, W), (H, W, 3) or (H, W, 4)"
            )
        ax.set_title(f"step {step:,}")
    if title:
        fig.suptitle(title)
    return fig


def _add_zoom_inset(
    ax: Axes, image: np.ndarray, region: tuple[float, float, float, float], value_range: tuple[float, float]
) -> None:
    """Magnify `region` = (y0, x0, height, width), in this image's pixels, in an inset in the corner farthest from it."""
    y0, x0, height, width = region
    rows, cols = image.shape
    # Corners in axes coordinates (origin bottom-left); the image's y axis points down.
    left = 0.56 if x0 + width / 2 < cols / 2 else 0.02
    bottom = 0.02 if y0 + height / 2 < rows / 2 else 0.56
    inset = ax.inset_axes([left, bottom, 0.42, 0.42])
    _show(inset, image, value_range, interpolation="nearest")
    # Pixel centres sit on integers, so pixel i spans [i - 0.5, i + 0.5].
    inset.set_xlim(x0 - 0.5, x0 + width - 0.5)
    inset.set_ylim(y0 + height - 0.5, y0 - 0.5)
    # White lines edged in black: visible on dark and bright tissue alike, and the figure stays grey
    # (saved as 8-bit grey, save_figure).
    outline = [patheffects.withStroke(linewidth=2.5, foreground="black")]
    for spine in inset.spines.values():
        spine.set(edgecolor="white", path_effects=outline)
    zoom = ax.indicate_inset_zoom(inset, edgecolor="white", alpha=1.0)
    for artist in [zoom.rectangle, *zoom.connectors]:
        artist.set_path_effects(outline)


def centre_zoom(side: int, fraction: float = 0.25) -> tuple[int, int, int]:
    """(y0, x0, size) of a centred square `fraction` of the side wide: the joint, in these images."""
    size = max(1, round(side * fraction))
    return (side - size) // 2, (side - size) // 2, size


def plot_sr_comparison(
    low_res,
    candidates: Mapping[str, object],
    ground_truth,
    zoom: tuple[int, int, int] | None = None,
    scores: Mapping[str, Sequence[float]] | None = None,
    value_range: tuple[float, float] = MODEL_RANGE,
    score_format: str = "PSNR {:.2f} dB",
) -> Figure:
    """Super-resolution side by side, one row per example: low-res input | each candidate | ground truth.

    `zoom` = (y0, x0, size) is a square region in ground-truth pixels, magnified in an inset on
    every panel (on the low-res panel, scaled to its size). `scores` maps panel names to one
    value per example, written under the name with `score_format`. Pixels are drawn with
    nearest-neighbour interpolation so that the display adds no smoothing of its own.
    """
    truth = _as_images(ground_truth, "ground_truth")
    low = _as_images(low_res, "low_res")
    panels = {"low-res input": low}
    for name, images in candidates.items():
        panels[name] = _as_images(images, f"candidates[{name!r}]")
        if panels[name].shape != truth.shape:
            raise MRNetError(
                f"candidates[{name!r}] has shape {panels[name].shape}, ground_truth {truth.shape}; "
                "pass candidates at the ground truth's resolution"
            )
    panels["ground truth"] = truth
    count, rows, cols = truth.shape
    if len(low) != count:
        raise MRNetError(f"low_res holds {len(low)} examples, ground_truth {count}; pass the same examples to both")
    for name, values in (scores or {}).items():
        if name not in panels:
            raise MRNetError(f"scores[{name!r}] names no panel; use one of {list(panels)}")
        if len(values) != count:
            raise MRNetError(f"scores[{name!r}] holds {len(values)} values for {count} examples; pass one per example")
    if zoom is not None:
        y0, x0, size = zoom
        if size < 1 or y0 < 0 or x0 < 0 or y0 + size > rows or x0 + size > cols:
            raise MRNetError(f"zoom={zoom} does not fit in the {rows}x{cols} ground truth; pass (y0, x0, size) inside it")

    fig = Figure(figsize=(2.3 * len(panels), 2.5 * count + 0.3), layout="constrained")
    axes = fig.subplots(count, len(panels), squeeze=False)
    for example in range(count):
        for ax, (name, stack) in zip(axes[example], panels.items()):
            image = stack[example]
            _show(ax, image, value_range, interpolation="nearest")
            lines = [name] if example == 0 else []
            if scores and name in scores:
                lines.append(score_format.format(scores[name][example]))
            ax.set_title("\n".join(lines), fontsize=10)
            if zoom is not None:
                scale_y, scale_x = image.shape[0] / rows, image.shape[1] / cols
                region = (zoom[0] * scale_y, zoom[1] * scale_x, zoom[2] * scale_y, zoom[2] * scale_x)
                _add_zoom_inset(ax, image, region, value_range)
    return fig


def _numeric(table: pd.DataFrame, column: str) -> pd.Series:
    """The column as floats; cells such as 'not computed: ...' (or a missing column) become NaN."""
    if column not in table.columns:
        return pd.Series(np.nan, index=table.index)
    return pd.to_numeric(table[column], errors="coerce")


def direction(metric: str, higher_is_better: Mapping[str, bool | None] | None, target: float | None = None) -> str:
    """Which way is better for `metric`, as a panel says it: higher, lower, or closer to a target value."""
    if target is not None:
        return "closer to the dashed line is better"
    better = (higher_is_better or {}).get(metric)
    if better is None:
        raise MRNetError(f"no direction for {metric!r}: say in higher_is_better whether higher is better, "
                         "or give the value it should approach in targets")
    return "higher is better" if better else "lower is better"


def _dots_and_intervals(ax: Axes, rows: np.ndarray, mean: np.ndarray, low: np.ndarray, high: np.ndarray) -> bool:
    """One panel: each method's mean as a dot on its row, with its interval as a line where it has one
    (one colour per method); whether any interval was drawn."""
    drawn = False
    for index, row in enumerate(rows):
        if not np.isfinite(mean[index]):
            continue
        colour = f"C{index % 10}"
        if np.isfinite(low[index]) and np.isfinite(high[index]):
            ax.plot([low[index], high[index]], [row, row], color=colour, linewidth=2.2, solid_capstyle="butt")
            drawn = True
        ax.plot([mean[index]], [row], "o", color=colour, markersize=5)
    return drawn


def plot_metric_intervals(
    table: pd.DataFrame,
    metrics: Sequence[str],
    higher_is_better: Mapping[str, bool | None] | None = None,
    targets: Mapping[str, float] | None = None,
    target_label: str = "the real slices' value",
    title: str | None = None,
    per_row: int = 4,
) -> Figure:
    """Dot-and-interval chart: one panel per metric, one row per method (the table's index).

    Reads the evaluation table's '<metric>_mean' and, where present, '<metric>_ci_low' and
    '<metric>_ci_high': the dot is the mean, the line its 95% interval, drawn from low to high (a
    bootstrap interval of a biased statistic, such as FID, need not contain the full-sample value).
    Each axis spans the values, not zero, so that differences between methods show. Each panel says
    which way is better: from `higher_is_better`, or "closer to the dashed line" for a metric in
    `targets`, whose value is drawn as that line (`target_label` in the caption: e.g. the real
    slices' sharpness). A metric
    without a number for any method (e.g. 'not computed: ...' cells) gets no panel: the caption under
    the figure names it once, as it names a method without a number in a panel.
    """
    if not metrics:
        raise MRNetError("metrics is empty; name at least one metric of the table")
    available = [column[: -len("_mean")] for column in table.columns if str(column).endswith("_mean")]
    for metric in metrics:
        if f"{metric}_mean" not in table.columns:
            raise MRNetError(f"the table has no column '{metric}_mean'; the metrics it holds are {available}")
    targets = dict(targets or {})
    titles = {metric: direction(metric, higher_is_better, targets.get(metric)) for metric in metrics}
    means = {metric: _numeric(table, f"{metric}_mean").to_numpy() for metric in metrics}
    drawn = [metric for metric in metrics if np.isfinite(means[metric]).any()]
    methods = [str(method) for method in table.index]
    rows = np.arange(len(methods))[::-1]
    columns = max(1, min(per_row, len(drawn)))
    grid = max(1, math.ceil(len(drawn) / columns))
    label_width = 0.075 * max(len(method) for method in methods) + 0.3
    fig = Figure(figsize=(2.7 * columns + label_width, grid * (0.27 * len(methods) + 1.1) + 0.4 * bool(title) + 0.3),
                 layout="constrained")
    axes = fig.subplots(grid, columns, squeeze=False, sharey=True).ravel()
    caption, intervals = [], False
    for ax, metric in zip(axes, drawn):
        mean = means[metric]
        low, high = (_numeric(table, f"{metric}_ci_{end}").to_numpy() for end in ("low", "high"))
        intervals = _dots_and_intervals(ax, rows, mean, low, high) or intervals
        if metric in targets:
            ax.axvline(targets[metric], color="0.3", linestyle="--", linewidth=1)
        missing = [method for method, value in zip(methods, mean) if not np.isfinite(value)]
        if missing:
            caption.append(f"{metric}: no value for {', '.join(missing)}")
        ax.set_title(f"{metric}\n({titles[metric]})", fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
        ax.grid(True, axis="x", alpha=0.3)
        ax.margins(x=0.08, y=0.04)
    for ax in axes[len(drawn):]:
        fig.delaxes(ax)
    if drawn:
        axes[0].set_yticks(rows, methods)
    not_computed = [metric for metric in metrics if metric not in drawn]
    if not_computed:
        caption.insert(0, f"not computed: {', '.join(not_computed)} (the table says why)")
    if intervals:
        caption.append("dot: mean, line: its 95% interval")
    if set(targets) & set(drawn):
        caption.append(f"dashed line: {target_label}")
    if caption:
        fig.supxlabel("; ".join(caption), fontsize=9, color="0.3")
    if title:
        fig.suptitle(title)
    return fig


def plot_comparisons(
    table: pd.DataFrame, title: str | None = None, higher_is_better: Mapping[str, bool] | None = None
) -> Figure:
    """A forest plot: one panel per metric, one row per pair "A - B", the difference and its interval.

    Reads a comparison table (tables.comparison_table: index (a, b, metric), columns
    `difference`, `ci_low`, `ci_high`). The dashed line is no difference; a row whose
    interval misses it is drawn in colour, one that straddles it in grey; the legend says so.
    `higher_is_better` maps a metric to its direction, which the panel's axis label turns into
    the side on which A is better. A table with a `per_seed` column (the Swin question: each
    training seed's difference, "d1, d2, ...") also shows each seed's difference as a cross, so
    that the seed spread stands beside the interval.
    """
    if table.empty:
        raise MRNetError("the comparison table is empty; there is nothing to plot")
    metrics = list(dict.fromkeys(table.index.get_level_values("metric")))
    pairs = list(dict.fromkeys(zip(table.index.get_level_values("a"), table.index.get_level_values("b"))))
    label_width = 0.07 * max(len(f"{a} - {b}") for a, b in pairs) + 0.3
    fig = Figure(figsize=(2.8 * len(metrics) + label_width, 0.3 * len(pairs) + 1.9 + 0.3 * (title is not None)),
                 layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False, sharey=True)[0]
    rows = np.arange(len(pairs))[::-1]
    for ax, metric in zip(axes, metrics):
        for row, (a, b) in zip(rows, pairs):
            if (a, b, metric) not in table.index:
                continue
            entry = table.loc[(a, b, metric)]
            low, high, difference = entry["ci_low"], entry["ci_high"], entry["difference"]
            clear = np.isfinite(low) and (low > 0 or high < 0)
            colour = CLEAR if clear else UNCLEAR
            if np.isfinite(low):
                ax.plot([low, high], [row, row], color=colour, linewidth=2)
            ax.plot([difference], [row], "o", color=colour)
            if "per_seed" in table.columns:
                seeds = [float(value) for value in str(entry["per_seed"]).split(",")]
                ax.plot(seeds, [row] * len(seeds), "x", color="black", markersize=6)
        ax.axvline(0, color="black", linestyle="--", linewidth=1)
        better = (higher_is_better or {}).get(metric)
        side = "" if better is None else "\n(A better to the right)" if better else "\n(A better to the left)"
        ax.set_title(metric)
        ax.set_xlabel(f"A - B{side}", fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
        ax.grid(True, axis="x", alpha=0.3)
    axes[0].set_yticks(rows, [f"{a} - {b}" for a, b in pairs])
    legend = [
        Line2D([], [], color=CLEAR, marker="o", linewidth=2, label="difference, 95% interval excluding 0"),
        Line2D([], [], color=UNCLEAR, marker="o", linewidth=2, label="interval including 0 (or none)"),
    ]
    if "per_seed" in table.columns:
        legend.append(Line2D([], [], color="black", marker="x", linestyle="none", label="each training seed"))
    fig.legend(handles=legend, loc="outside lower center", ncols=len(legend), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    return fig


# The generation table's charted columns: panel name, and True/False for higher/lower is better or
# None where the real slices' value (the table's real row) is the one to approach.
GENERATION_CHART = {
    "fid": ("FID", False),
    "kid_mean": ("KID", False),
    "is_mean": ("IS", True),
    "diversity_ms_ssim": ("diversity MS-SSIM", None),
    "histogram_w1": ("histogram W1", False),
    "spectrum_distance": ("spectrum distance", False),
    "nearest_train_correlation": ("nearest-train correlation", None),
}


def plot_label_agreement(table: pd.DataFrame) -> Figure:
    """Does the label show? One panel per request: the probe's share of guided samples on the requested side
    against the guidance scale, and the share for real slices of that label as a dashed line.

    Reads study.labels.agreement's table: index (request, guidance), columns `share`, `real_share`.
    """
    if table.empty:
        raise MRNetError("the agreement table is empty; there is nothing to plot")
    requests = list(dict.fromkeys(table.index.get_level_values("request")))
    fig = Figure(figsize=(2.4 * len(requests), 2.6), layout="constrained")
    axes = fig.subplots(1, len(requests), sharey=True, squeeze=False)[0]
    for ax, request in zip(axes, requests):
        rows = table.xs(request, level="request")
        ax.plot(rows.index, rows["share"], "o-", color="C0", label="guided samples")
        ax.axhline(rows["real_share"].iloc[0], color="0.3", linestyle="--", label="real slices")
        ax.set(title=request, xlabel="guidance scale", ylim=(-0.03, 1.03))
    axes[0].set_ylabel("share the probe assigns\nthe requested label")
    axes[0].legend(fontsize=8, loc="lower right")
    return fig


def plot_auc(table: pd.DataFrame) -> Figure:
    """Are synthetic knees useful? Per task, the probe's exam-level AUC for each training set, with its
    95% interval (none drawn where too few exams). Reads study.labels.usefulness's table."""
    if table.empty:
        raise MRNetError("the AUC table is empty; there is nothing to plot")
    sets = list(dict.fromkeys(table.index.get_level_values("trained on")))
    tasks = list(dict.fromkeys(table.index.get_level_values("task")))
    fig = Figure(figsize=(2.6 * len(tasks) + 1.5, 0.45 * len(sets) + 1.4), layout="constrained")
    axes = fig.subplots(1, len(tasks), sharey=True, squeeze=False)[0]
    rows = np.arange(len(sets))[::-1]
    for ax, task in zip(axes, tasks):
        for row, name in zip(rows, sets):
            entry = table.loc[(name, task)]
            if np.isfinite(entry["ci_low"]):
                ax.plot([entry["ci_low"], entry["ci_high"]], [row, row], color="C0", linewidth=2)
            ax.plot([entry["auc"]], [row], "o", color="C0")
        ax.axvline(0.5, color="0.5", linestyle="--", linewidth=1)
        ax.set(title=task, xlabel="AUC on real exams\n(higher is better)", xlim=(0, 1))
    axes[0].set_yticks(rows, sets)
    fig.supxlabel("dot: AUC, line: its 95% interval (none: too few exams); dashed line: chance", fontsize=9, color="0.3")
    return fig


def plot_generation_metrics(table: pd.DataFrame, real_row: str) -> Figure:
    """Dots of the generation table's metrics for each model; the real slices' value as the target where it has one."""
    names = {column: name for column, (name, _) in GENERATION_CHART.items()}
    real = {column: float(_numeric(table, column).get(real_row, np.nan)) for column in GENERATION_CHART}
    targets = {names[column]: real[column] for column, (_, better) in GENERATION_CHART.items()
               if better is None and np.isfinite(real[column])}
    values = table.drop(index=real_row, errors="ignore")[list(GENERATION_CHART)]
    values = values.rename(columns=lambda column: f"{names[column]}_mean")
    directions = {name: better for name, better in GENERATION_CHART.values()}
    title = "Generation: each model's samples against the real held-out slices"
    return plot_metric_intervals(values, list(names.values()), directions, targets, "the real slices' value", title=title)


def plot_histograms(
    samples: Mapping[str, object],
    real,
    bins: int = 64,
    value_range: tuple[float, float] = MODEL_RANGE,
    log_density: bool = False,
    title: str | None = "Intensity histograms",
) -> Figure:
    """Intensity densities of generated sets (lines) against the real images (filled), on shared bins.

    Values outside `value_range` are clipped into the edge bins, not dropped, so that
    out-of-range intensities stay visible; the legend gives the fraction clipped.
    `log_density` puts the density on a log axis, which shows the tails next to the
    background peak at -1.
    """
    edges = np.linspace(value_range[0], value_range[1], bins + 1)
    fig = Figure(figsize=(7.0, 4.5), layout="constrained")
    ax = fig.subplots()
    sets = {"real": real, **samples}
    for index, (name, values) in enumerate(sets.items()):
        flat = _to_numpy(values, f"samples[{name!r}]" if index else "real").ravel()
        outside = np.mean((flat < value_range[0]) | (flat > value_range[1]))
        density, _ = np.histogram(np.clip(flat, *value_range), bins=edges, density=True)
        label = name if outside == 0 else f"{name} ({outside:.1%} clipped)"
        if index == 0:
            ax.stairs(density, edges, fill=True, color="0.7", label=label)
        else:
            ax.stairs(density, edges, color=f"C{(index - 1) % 10}", linewidth=1.6, label=label,
                      linestyle=LINE_STYLES[(index - 1) % len(LINE_STYLES)])
    if log_density:
        ax.set_yscale("log")
    ax.set_xlim(*value_range)
    ax.set_xlabel("intensity")
    ax.set_ylabel("density")
    ax.legend(fontsize=9)
    if title:
        ax.set_title(title)
    return fig


# Saved figures are for reading on a screen: charts at SAVE_DPI, figures of slices at SLICES_DPI (a 2.2-inch
# panel is 176 pixels, about a 256-pixel slice as a page shows it), and at most SAVE_WIDTH pixels wide and
# SAVE_PIXELS in all (the SR comparison panels are 25 inches wide; a grid of 6 x 6 slices 13 inches square).
SAVE_DPI = 100
SLICES_DPI = 80
SAVE_WIDTH = 1400
SAVE_PIXELS = 2_000_000
# Where each figure was last saved (save_figure), so that a page can link the file instead of embedding it again.
_SAVED: weakref.WeakKeyDictionary[Figure, Path] = weakref.WeakKeyDictionary()


def shows_slices(fig: Figure) -> bool:
    """Whether a figure holds images (slices), rather than only a chart."""
    return any(ax.images for ax in fig.axes)


def save_dpi(fig: Figure) -> float:
    """SAVE_DPI for a chart, SLICES_DPI for slices, or less for a figure that would be wider than SAVE_WIDTH
    or larger than SAVE_PIXELS pixels."""
    width, height = fig.get_size_inches()
    dpi = SLICES_DPI if shows_slices(fig) else SAVE_DPI
    return min(dpi, SAVE_WIDTH / width, math.sqrt(SAVE_PIXELS / (width * height)))


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write `fig` as a PNG at screen resolution (creating the folder), atomically, close it, and return the path.

    Figures without colour (slices, grey panels and black text) are stored as 8-bit grey, other
    opaque ones with slices without their alpha channel: the same pixels in a third or three
    quarters of the bytes. Charts (no slices) are stored with a palette of 256 colours: their few
    colours exactly, their anti-aliased edges to the nearest of them; a third of the bytes.
    `saved_path(fig)` then returns the path.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise MRNetError(f"{path}: figures are saved as PNG; give the file a .png suffix")
    path.parent.mkdir(parents=True, exist_ok=True)
    dpi = save_dpi(fig)
    write_atomically(path, lambda handle: _write_png(fig, handle, dpi), "figure")
    _SAVED[fig] = path.resolve()
    # Only matters for figures made with pyplot (ours are not registered with it): frees them in long runs.
    plt.close(fig)
    return path


def saved_path(fig: Figure) -> Path | None:
    """The file `fig` was last saved to by save_figure (absolute), or None."""
    return _SAVED.get(fig)


def _write_png(fig: Figure, handle, dpi: float) -> None:
    rendered = io.BytesIO()
    fig.savefig(rendered, dpi=dpi, format="png")
    with Image.open(rendered) as image:
        pixels = np.asarray(image.convert("RGBA"))
    opaque = bool((pixels[..., 3] == 255).all())
    grey = opaque and bool((pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all())
    kept = Image.fromarray(np.ascontiguousarray(pixels[..., 0] if grey else pixels[..., :3] if opaque else pixels))
    if opaque and not grey and not shows_slices(fig):
        kept = kept.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    kept.save(handle, format="PNG", optimize=True, dpi=(dpi, dpi))
