"""Figures of a hyperparameter search (a search table, analysis.search_table): optimisation history, each
parameter's effect on the objective, parameter importances.

Drawn like analysis.plots, on matplotlib Figure objects without pyplot. Optuna 2.10's own matplotlib plots are
not used: they set pyplot's global style (ggplot), draw only COMPLETE trials, and have no compute axis.
"""

import math
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from .common import Report, natural_key, warn
from .plots import NoData, plot_learning_curves, write_figures
from .search import short_names
from .table import format_key

# Marker and colour per status: pruned and diverged trials stand out from the completed ones.
STATUS_STYLE = {
    "converged": {"marker": "o", "color": "tab:green"},
    "completed": {"marker": "o", "color": "tab:blue"},
    "pruned": {"marker": "v", "color": "tab:orange"},
    "diverged": {"marker": "X", "color": "tab:red"},
}
BEST_STATUSES = ("converged", "completed")  # trials that ran to the end: the best so far is over these, as in Optuna


def plot_search(
    table: pd.DataFrame,
    out_dir: str | Path,
    importances: dict[str, float] | None = None,
    runs: pd.DataFrame | None = None,
    curves: pd.DataFrame | None = None,
    report: Report = warn,
    importance_method: str = "optuna.importance",
) -> list[Path]:
    """Write optimization_history.png, param_effects.png, param_importances.png (when importances are given, computed
    as importance_method says) and learning_curves.png (when runs and curves are) to out_dir; returns the paths
    written."""
    figures = {
        "optimization_history.png": partial(plot_optimization_history, table=table),
        "param_effects.png": partial(plot_param_effects, table=table),
    }
    if importances:
        figures["param_importances.png"] = partial(plot_param_importances, importances=importances, method=importance_method)
    if runs is not None and curves is not None:
        figures["learning_curves.png"] = partial(plot_learning_curves, runs=runs, curves=curves)
    return write_figures(figures, out_dir, report)


def scored(table: pd.DataFrame) -> pd.DataFrame:
    """Rows with an objective value, in trial order (run order where there are no trial numbers)."""
    data = table[table["objective"].notna() & np.isfinite(table["objective"].astype(float))]
    if data.empty:
        raise NoData("no trial has an objective value yet")
    return data.sort_values("trial", kind="stable", na_position="last")


def y_values(ax, data: pd.DataFrame) -> pd.Series:
    """Objective values to draw: a log axis when all are positive; diverged runs (objective 1e6) drawn at the top
    edge, so they do not squash the others."""
    values = data["objective"].astype(float)
    log = bool((values > 0).all())
    if log:
        ax.set_yscale("log")
    diverged = data["status"] == "diverged"
    regular = values[~diverged]
    if diverged.any() and not regular.empty:
        top = regular.max() * 3 if log else regular.max() + 0.1 * (regular.max() - regular.min() or 1)
        values = values.where(~diverged, top)
    return values


def scatter_by_status(ax, x: pd.Series, y: pd.Series, status: pd.Series, labels: bool = True) -> None:
    """One scatter per status, each with its marker; legend labels count them."""
    for name in [*STATUS_STYLE, *sorted(set(status.dropna()) - set(STATUS_STYLE))]:
        mask = status == name
        if not mask.any():
            continue
        style = STATUS_STYLE.get(name, {"marker": "s", "color": "tab:gray"})
        label = f"{name} ({int(mask.sum())})" + (" drawn at the top" if name == "diverged" else "") if labels else None
        ax.scatter(x[mask], y[mask], s=28, alpha=0.8, label=label, zorder=3, **style)


def plot_optimization_history(figure, table: pd.DataFrame) -> None:
    """The objective of each trial and the best so far, against trial number and against training time spent
    (summed over trials: parallel jobs add up), with pruned and diverged trials marked."""
    data = scored(table)
    direction = table.attrs.get("direction", "minimize")
    x_trial = data["trial"].astype(float) if data["trial"].notna().all() else pd.Series(range(len(data)), index=data.index)
    trial_label = "trial number" if data["trial"].notna().all() else "run (in order)"
    x_compute, compute_label = compute_spent(table, data)
    figure.set_size_inches(12, 4.8)
    axes = figure.subplots(1, 2, sharey=True)
    for ax, x, label in ((axes[0], x_trial, trial_label), (axes[1], x_compute, compute_label)):
        y = y_values(ax, data)
        scatter_by_status(ax, x, y, data["status"], labels=ax is axes[0])
        best = data["status"].isin(BEST_STATUSES)
        if best.any():
            order = x[best].sort_values(kind="stable").index
            running = y[order].cummax() if direction == "maximize" else y[order].cummin()
            ax.step(x[order], running, where="post", color="black", linewidth=1.2, label="best so far" if ax is axes[0] else None)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"objective ({direction}; {'log' if axes[0].get_yscale() == 'log' else 'linear'})")
    figure.suptitle(f"Optimisation history: {len(data)} trials with an objective")
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 6), fontsize="small")


def compute_spent(table: pd.DataFrame, data: pd.DataFrame) -> tuple[pd.Series, str]:
    """x of each scored row: training time (or sequences) summed over every trial up to and including it."""
    ordered = table.sort_values("trial", kind="stable", na_position="last")
    if ordered.loc[data.index, "wall_time_s"].notna().all():
        total = ordered["wall_time_s"].fillna(0).cumsum()
        hours = total.max() > 3 * 3600
        unit, seconds = ("h", 3600) if hours else ("min", 60)
        return (total / seconds)[data.index], f"training time spent, summed over trials ({unit})"
    return ordered["sequences"].fillna(0).cumsum()[data.index], "sequences trained, summed over trials"


def plot_param_effects(figure, table: pd.DataFrame) -> None:
    """One panel per swept parameter: each trial's objective against the parameter's value, on a categorical axis
    for choices and a log axis for log-sampled (or widely spread positive) numbers."""
    params = table.attrs.get("params", [])
    if not params:
        raise NoData("no swept parameters")
    data = scored(table)
    kinds = table.attrs.get("distributions", {})
    names = short_names(params)
    columns = min(3, len(params))
    rows = math.ceil(len(params) / columns)
    figure.set_size_inches(4 * columns, 3.2 * rows + 0.8)
    axes = figure.subplots(rows, columns, squeeze=False, sharey=True).ravel()
    for ax, key in zip(axes, params):
        values = data[key] if key in data else pd.Series(None, index=data.index)
        kind = kinds.get(key) or guess_kind(values)
        if kind == "categorical":
            categories = sorted({format_key(v) for v in values}, key=natural_key)
            x = values.map(format_key).map({category: i for i, category in enumerate(categories)})
            ax.set_xticks(range(len(categories)), categories, rotation=30 if len(categories) > 4 else 0)
            ax.set_xlim(-0.5, len(categories) - 0.5)
        else:
            x = pd.to_numeric(values, errors="coerce")
            if kind == "log":
                from matplotlib.ticker import NullFormatter

                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())  # labels at 2x, 3x ... overlap on a narrow panel
        scatter_by_status(ax, x, y_values(ax, data), data["status"], labels=ax is axes[0])
        ax.set_title(names[key] + (" (log)" if kind == "log" else ""), fontsize="medium")
        ax.grid(alpha=0.3)
    for ax in axes[len(params) :]:
        ax.set_visible(False)
    for ax in axes[::columns]:
        ax.set_ylabel("objective")
    figure.suptitle("Objective vs each parameter (one point per trial)")
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=max(len(labels), 1), fontsize="small")


def guess_kind(values: pd.Series) -> str:
    """Without a study's distributions: 'categorical' for text, 'log' for positive numbers spanning 2 decades."""
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.isna().any():
        return "categorical"
    if (numbers > 0).all() and numbers.max() >= 100 * numbers.min():
        return "log"
    return "linear"


def plot_param_importances(figure, importances: dict[str, float], method: str = "optuna.importance") -> None:
    """Horizontal bars, most important at the top."""
    ordered = sorted(importances.items(), key=lambda item: item[1])
    names = short_names([key for key, _ in ordered])
    figure.set_size_inches(6.4, 1.2 + 0.4 * len(ordered))
    ax = figure.subplots()
    ax.barh([names[key] for key, _ in ordered], [value for _, value in ordered], color="tab:blue")
    ax.set_xlabel("importance (normalised to sum to 1)")
    ax.set_title(f"Parameter importances ({method})")
