"""The plots of sweeps and searches (`results.png`): honest about what they show.

- a swept value is drawn where it is: numbers at their true positions, on a log
  axis when they span two decades or more (0 included: a symmetric-log axis), other
  values in grid order, never sorted by result;
- an outlier (a width of 1, a learning rate that does not learn) does not squeeze
  the others into a line: the axis is clipped to the rest, and the outlier is marked
  at the edge with its value written beside it;
- every figure says what the points and error bars are, and over how many seeds.
"""

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from keras_mlp.reporting import save_figure

OUTLIER = "#c0392b"


def numbers(values):
    """The values as floats when every one is a plain number, else `None`."""
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        return None


def log_scale(xs):
    """`"log"`, `"symlog"` (a 0 among positive values) or `None`, for values spanning two
    decades or more."""
    positive = [x for x in xs if x > 0]
    if len(positive) < 2 or min(xs) < 0 or max(positive) / min(positive) < 100:
        return None
    return "symlog" if 0 in xs else "log"


def outliers(means, stds=()):
    """Indexes of the means far below the rest: more than ten times their typical
    spread (the median absolute deviation, or the seeds' median standard deviation)
    under their median. Robust: the outlier itself does not widen the fence."""
    means = np.asarray(means, dtype=float)
    if len(means) < 3:
        return []
    middle = np.median(means)
    spread = max(
        np.median(np.abs(means - middle)), np.median([s for s in stds if s] or [0.0]), 0.002
    )
    return [i for i, m in enumerate(means) if m < middle - 10 * spread]


def what_is_shown(entries):
    """The figure's note: the statistic, the error bars and n."""
    ns = sorted({e["n"] for e in entries})
    n = f"n = {ns[0]}" if len(ns) == 1 else f"n = {ns[0]}-{ns[-1]}"
    if ns[-1] < 2:
        return f"validation accuracy, one run per point ({n} seed, no error bars)"
    return f"mean validation accuracy; error bars: ±1 sample std over seeds ({n} per point)"


def _clip(ax, values, low_errors, marked, horizontal=False):
    """Clips the value axis to the points not in `marked`, and draws those at its edge."""
    kept = [
        v - e for i, (v, e) in enumerate(zip(values, low_errors, strict=True)) if i not in marked
    ]
    high = max(v for v in values)
    bottom = min(kept) - 0.15 * (high - min(kept) + 1e-3)
    (ax.set_xlim if horizontal else ax.set_ylim)(bottom, None)
    return bottom


def plot_sweep(path, summary, keys):
    """Mean validation accuracy per grid point: a line over one swept flag, a heatmap
    over two, bars over more. Nothing is drawn when no point finished."""
    done = [e for e in summary if e["n"]]
    if not done:
        return
    if len(keys) == 1:
        fig = _line(done, keys[0])
    elif len(keys) == 2:
        fig = _heatmap(summary, keys)
    else:
        fig = _bars(done, keys)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def _line(done, key):
    labels = [e[key] for e in done]
    xs = numbers(labels)
    scale = log_scale(xs) if xs else None
    positions = xs if xs else list(range(len(done)))
    means = [e["val_accuracy_mean"] for e in done]
    stds = [e["val_accuracy_std"] or 0.0 for e in done]
    marked = outliers(means, stds)
    fig = Figure(figsize=(6.4, 4))
    ax = fig.subplots()
    kept = [i for i in range(len(done)) if i not in marked]
    ax.errorbar(
        [positions[i] for i in kept],
        [means[i] for i in kept],
        yerr=[stds[i] for i in kept],
        fmt="o-",
        capsize=4,
    )
    if marked:
        bottom = _clip(ax, means, stds, marked)
        for i in marked:
            ax.plot(positions[i], bottom, "v", color=OUTLIER, markersize=9, clip_on=False)
            # Beside the marker, toward the plot's middle: clear of the axis labels.
            inward = 1 if i < len(done) / 2 else -1
            ax.annotate(
                f"{means[i]:.3f} ± {stds[i]:.3f}\n(below the axis)",
                (positions[i], bottom),
                textcoords="offset points",
                xytext=(8 * inward, 6),
                ha="left" if inward > 0 else "right",
                fontsize=7,
                color=OUTLIER,
            )
    if scale == "symlog":
        ax.set_xscale("symlog", linthresh=min(x for x in xs if x > 0))
    elif scale:
        ax.set_xscale("log")
    ax.set_xticks(positions, labels, rotation=30)
    ax.minorticks_off()
    ax.set_xlabel(key + (" (log scale)" if scale else ""))
    ax.set_ylabel("validation accuracy")
    ax.set_title(what_is_shown(done), fontsize=9)
    ax.grid(True, alpha=0.3)
    return fig


def _heatmap(summary, keys):
    rows_axis, cols_axis = (list(dict.fromkeys(e[k] for e in summary)) for k in keys)
    means = np.full((len(rows_axis), len(cols_axis)), np.nan)
    done = [e for e in summary if e["n"]]
    for e in done:
        means[rows_axis.index(e[keys[0]]), cols_axis.index(e[keys[1]])] = e["val_accuracy_mean"]
    values = [e["val_accuracy_mean"] for e in done]
    marked = outliers(values, [e["val_accuracy_std"] or 0.0 for e in done])
    low = min(v for i, v in enumerate(values) if i not in marked)
    cmap = colormaps["viridis"].with_extremes(under="#d9d9d9", bad="white")
    fig = Figure(figsize=(1.3 * len(cols_axis) + 2.8, 0.7 * len(rows_axis) + 2.2))
    ax = fig.subplots()
    image = ax.imshow(means, cmap=cmap, vmin=low, vmax=np.nanmax(means), aspect="auto")
    middle = low + (np.nanmax(means) - low) / 2
    for e in done:
        i, j = rows_axis.index(e[keys[0]]), cols_axis.index(e[keys[1]])
        text = f"{e['val_accuracy_mean']:.3f}"
        if e["val_accuracy_std"] is not None:
            text += f"\n±{e['val_accuracy_std']:.3f}"
        dark_cell = means[i, j] < middle and means[i, j] >= low
        ax.text(
            j,
            i,
            text,
            ha="center",
            va="center",
            fontsize=7,
            color="white" if dark_cell else "black",
        )
    ax.set_xticks(range(len(cols_axis)), cols_axis, rotation=30)
    ax.set_yticks(range(len(rows_axis)), rows_axis)
    ax.set_xlabel(keys[1])
    ax.set_ylabel(keys[0])
    note = what_is_shown(done).replace("; error bars:", "\n(± in the cells:")
    note += ")" if "(±" in note else ""
    if marked:
        note += f"\ngray: below {low:.3f}, outside the colour scale"
    ax.set_title(note, fontsize=8)
    fig.colorbar(image, label="validation accuracy", extend="min" if marked else "neither")
    return fig


def _bars(done, keys):
    labels = [", ".join(f"{k}={e[k]}" for k in keys) for e in done][::-1]
    means = [e["val_accuracy_mean"] for e in done][::-1]
    stds = [e["val_accuracy_std"] or 0.0 for e in done][::-1]
    marked = outliers(means, stds)
    fig = Figure(figsize=(6.4, 0.3 * len(done) + 1.8))
    ax = fig.subplots()
    ax.errorbar(means, range(len(done)), xerr=stds, fmt="o", capsize=3)
    ax.set_yticks(range(len(done)), labels)
    if marked:
        left = _clip(ax, means, stds, marked, horizontal=True)
        for i in marked:
            ax.plot(left, i, "<", color=OUTLIER, clip_on=False)
            ax.annotate(
                f"{means[i]:.3f}",
                (left, i),
                xytext=(8, -3),
                textcoords="offset points",
                fontsize=7,
                color=OUTLIER,
            )
    ax.set_xlabel("validation accuracy")
    ax.set_title(what_is_shown(done) + " (grid order, top first)", fontsize=8)
    ax.grid(True, axis="x", alpha=0.3)
    return fig


def plot_search(path, rows, best=None, test_accuracy=None):
    """Each trial's validation accuracy by trial number: finished, pruned (at the epoch
    it stopped), failed at the bottom; the best so far as a line; the winner marked
    with its test accuracy."""
    fig = Figure(figsize=(6.8, 4))
    ax = fig.subplots()
    scored = [r for r in rows if r.get("val_accuracy") not in (None, "")]
    values = [r["val_accuracy"] for r in scored]
    marked = set(outliers(values))
    kept = [v for i, v in enumerate(values) if i not in marked] or [0.0]
    bottom = min(kept) - 0.1 * (max(kept) - min(kept) + 1e-3)
    for status, style in (("done", dict(marker="o")), ("pruned", dict(marker="x", color="gray"))):
        part = [r for r in scored if r["status"] == status]
        label = "pruned (accuracy at the epoch it stopped)" if status == "pruned" else status
        ax.scatter(
            [r["number"] for r in part],
            [max(r["val_accuracy"], bottom) for r in part],
            label=label,
            **style,
        )
    low = [r for r in rows if r["status"] in ("failed", "diverged")] + [scored[i] for i in marked]
    if low:
        ax.scatter(
            [r["number"] for r in low],
            [bottom] * len(low),
            marker="v",
            color=OUTLIER,
            clip_on=False,
            label="failed, diverged or below the axis",
        )
    done = sorted((r for r in scored if r["status"] == "done"), key=lambda r: r["number"])
    if done:
        ax.step(
            [r["number"] for r in done],
            np.maximum.accumulate([r["val_accuracy"] for r in done]),
            where="post",
            alpha=0.5,
            label="best so far",
        )
    if best is not None:
        _mark_winner(ax, best, test_accuracy)
    ax.set_ylim(bottom, None)
    ax.set_xlabel("trial")
    ax.set_ylabel("validation accuracy (held-out split, last epoch run)")
    ax.set_title(f"{len(rows)} trials, one run each", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def _mark_winner(ax, best, test_accuracy):
    """The search's winner as a star, with its validation and test accuracy beside it."""
    ax.scatter(
        [best["number"]],
        [best["val_accuracy"]],
        marker="*",
        s=220,
        color="gold",
        edgecolor="black",
        zorder=3,
    )
    shown = f"{best['trial']}: validation {best['val_accuracy']:.4f}"
    if test_accuracy is not None:
        shown += f"\nretrained, test accuracy {test_accuracy:.4f}"
    ax.annotate(
        shown,
        (best["number"], best["val_accuracy"]),
        xytext=(8, -24),
        textcoords="offset points",
        fontsize=8,
    )
