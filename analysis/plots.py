"""PNG figures of a set of runs: learning curves, cost per sequence length, sequences-to-converge vs memory size.

Figures are drawn on matplotlib Figure objects with the Agg canvas directly (no pyplot): nothing global is
changed, so this works headless and inside notebooks alike.
"""

from collections.abc import Callable
from functools import partial
from pathlib import Path

import pandas as pd

from .common import Report, warn
from .table import eval_columns, group_labels, grouping_columns, label_order

FLOOR = 1e-3  # costs are >= 0 bits; a log axis draws 0 at this value
MEMORY_KEY = "model.memory.n"
TASK_KEY = "task.name"
MAX_LEGEND = 20  # more groups than this (e.g. a search) make a legend useless


class NoData(Exception):
    """A figure's data is absent; the message says what is missing."""


def plot_all(
    runs: pd.DataFrame, curves: pd.DataFrame, out_dir: str | Path, group_by: str | list[str] | None = None, report: Report = warn
) -> list[Path]:
    """Write learning_curves.png, generalisation.png, convergence_vs_memory.png and (runs of several
    tasks) tasks.png to out_dir.

    Groups are those of the results table (group_by as there). A figure without data is skipped with a
    note through report. Returns the paths written.
    """
    figures = {
        "learning_curves.png": plot_learning_curves,
        "generalisation.png": plot_generalisation,
        "convergence_vs_memory.png": plot_convergence_vs_memory,
        "tasks.png": plot_tasks,
    }
    plots = {name: partial(plot, runs=runs, curves=curves, group_by=group_by) for name, plot in figures.items()}
    return write_figures(plots, out_dir, report)


def write_figures(figures: dict[str, Callable], out_dir: str | Path, report: Report = warn) -> list[Path]:
    """Draw each figure (a callable taking a matplotlib Figure) and save it as out_dir/name; one without data
    (NoData) is skipped with a note through report. Returns the paths written."""
    from matplotlib.figure import Figure  # imported here: tables and loading do not need matplotlib

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, plot in figures.items():
        figure = Figure(figsize=(7, 4.8), layout="constrained")
        try:
            plot(figure)
        except NoData as reason:
            report(f"skipping figure {name}: {reason}")
            continue
        figure.savefig(out_dir / name, dpi=120)
        written.append(out_dir / name)
    return written


def plot_learning_curves(figure, runs: pd.DataFrame, curves: pd.DataFrame, group_by=None) -> None:
    """Training cost (and evaluation cost, where evaluated) vs sequences seen: median and min-max band per group."""
    if curves.empty or not {"sequences", "cost"} <= set(curves.columns):
        raise NoData("no metrics.csv rows")
    labels = dict(zip(runs["run_dir"], group_labels(runs, group_by)))
    data = curves.assign(group=curves["run_dir"].map(labels)).dropna(subset=["group"])
    panels = [("cost", "training cost")]
    if "eval_cost" in data and data["eval_cost"].notna().any():
        panels.append(("eval_cost", "eval cost at training lengths"))
    figure.set_size_inches(6.4 * len(panels), 4.8)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    order = [label for label in label_order(runs, group_by) if label in set(data["group"])]
    colors = palette(len(order))
    held = set(runs.loc[runs["status"] == "converged", "run_dir"]) if "status" in runs else set()
    for ax, (column, title) in zip(axes, panels):
        for label, color in zip(order, colors):
            group = data[data["group"] == label]
            band = curve_band(group, column, held)
            if band.empty:
                continue
            ax.plot(band.index, band["median"], color=color, label=f"{label} ({group['run_dir'].nunique()} runs)")
            ax.fill_between(band.index, band["min"], band["max"], color=color, alpha=0.2, linewidth=0)
        ax.set_yscale("log")
        ax.set_xscale("log")  # runs that stop early and runs that go on for long share one axis
        ax.set_xlabel("sequences seen")
        ax.set_ylabel(f"cost (bits per sequence; log, 0 drawn at {FLOOR:g})")
        ax.set_title(title.capitalize())
    figure.suptitle("Learning curves: median and min-max band over the runs of each group (converged runs hold their last value)")
    add_legend(figure, axes[0], len(order))


def plot_tasks(figure, runs: pd.DataFrame, curves: pd.DataFrame, group_by=None) -> None:
    """One panel per task, as the paper's figures: evaluation cost vs sequences seen, a line per
    group of the other keys (e.g. NTM vs LSTM), median and min-max band over seeds; the
    Bayes-optimal cost dashed where the task has one (N-grams). The cost axis is logarithmic
    where a panel's costs span more than two decades."""
    if TASK_KEY not in runs or runs[TASK_KEY].nunique() < 2:
        raise NoData("runs of one task: learning_curves.png shows them")
    if curves.empty or "eval_cost" not in curves or curves["eval_cost"].isna().all():
        raise NoData("no evaluation costs in metrics.csv")
    keys = [key for key in grouping_columns(runs, group_by) if key != TASK_KEY]
    labels = dict(zip(runs["run_dir"], group_labels(runs, keys)))
    order = label_order(runs, keys)
    colors = dict(zip(order, palette(len(order))))
    held = set(runs.loc[runs["status"] == "converged", "run_dir"]) if "status" in runs else set()
    tasks = list(dict.fromkeys(runs[TASK_KEY]))
    columns = min(3, len(tasks))
    rows = -(-len(tasks) // columns)
    figure.set_size_inches(4.6 * columns, 3.6 * rows + 0.8)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, task in zip(axes, tasks):
        dirs = set(runs.loc[runs[TASK_KEY] == task, "run_dir"])
        data = curves[curves["run_dir"].isin(dirs)].assign(group=lambda frame: frame["run_dir"].map(labels))
        costs = data["eval_cost"].dropna()
        for label in order:
            group = data[data["group"] == label]
            band = curve_band(group, "eval_cost", held)
            if band.empty:
                continue
            ax.plot(band.index, band["median"], color=colors[label], label=label)
            ax.fill_between(band.index, band["min"], band["max"], color=colors[label], alpha=0.2, linewidth=0)
        if "optimal_cost" in data and data["optimal_cost"].notna().any():
            ax.axhline(data["optimal_cost"].median(), color="black", linestyle="--", linewidth=1, label="optimal (Bayes)")
        if costs.clip(lower=FLOOR).max() / costs.clip(lower=FLOOR).min() > 100:
            ax.set_yscale("log")
        ax.set_title(task.replace("_", " "))
        ax.set_xlabel("sequences seen")
        ax.set_ylabel("eval cost (bits per sequence)")
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
    for ax in axes[len(tasks) :]:
        ax.set_axis_off()
    figure.suptitle("Each task: evaluation cost, median and min-max band over seeds")
    handles = {}
    for ax in axes[: len(tasks)]:
        handles.update(zip(*reversed(ax.get_legend_handles_labels())))
    if handles:
        ncols = min(len(handles), 4)
        figure.legend(list(handles.values()), list(handles), loc="outside lower center", fontsize="small", ncols=ncols)


def curve_band(group: pd.DataFrame, column: str, held: set[str]) -> pd.DataFrame:
    """median/min/max of column across the group's runs at each sequences value.

    Runs in held (those that stopped at convergence) keep their last value to the end of the group's longest
    run, so the median does not jump when they stop; other runs drop out where their curve ends.
    """
    rows = group.dropna(subset=[column])
    if rows.empty:
        return pd.DataFrame(columns=["median", "min", "max"])
    wide = rows.pivot_table(index="sequences", columns="run_dir", values=column, aggfunc="last").sort_index()
    # Runs reporting at different points (other batch sizes) are interpolated inside their own range only.
    wide = wide.interpolate(method="index", limit_area="inside").clip(lower=FLOOR)
    stopped = [run_dir for run_dir in wide.columns if run_dir in held]
    wide[stopped] = wide[stopped].ffill()
    return pd.DataFrame({"median": wide.median(axis=1), "min": wide.min(axis=1), "max": wide.max(axis=1)})


def plot_generalisation(figure, runs: pd.DataFrame, curves: pd.DataFrame, group_by=None) -> None:
    """Final evaluation cost at training lengths and at each generalisation set, mean and std per group."""
    sets = [c for c in eval_columns(runs) if pd.to_numeric(runs[c], errors="coerce").notna().any()]
    if not sets:
        raise NoData("no evaluation costs in summary.json")
    labels = group_labels(runs, group_by)
    order = label_order(runs, group_by)
    ax = figure.subplots()
    positions = range(len(sets))
    for label, color in zip(order, palette(len(order))):
        group = runs[labels == label][sets].apply(pd.to_numeric, errors="coerce")
        mean, std = group.mean().clip(lower=FLOOR), group.std().fillna(0)
        lower = (mean - std).clip(lower=FLOOR)  # keep error bars on the log axis
        yerr = [mean - lower, std]
        ax.errorbar(positions, mean, yerr=yerr, marker="o", capsize=3, color=color, label=f"{label} ({len(group)} runs)")
    ax.set_xticks(list(positions), [set_label(runs, name) for name in sets])
    ax.set_yscale("log")
    ax.set_xlabel("evaluation set (sequence length)")
    ax.set_ylabel(f"final eval cost (bits per sequence; log, 0 at {FLOOR:g})")
    ax.set_title("Generalisation: cost per sequence length, mean ± std over runs")
    add_legend(figure, ax, len(order))


def set_label(runs: pd.DataFrame, name: str) -> str:
    """Tick label of an evaluation set: 'training' for eval_cost, else the set's name, e.g. 'len40'."""
    return "training" if name == "eval_cost" else name.removeprefix("eval_cost_")


def plot_convergence_vs_memory(figure, runs: pd.DataFrame, curves: pd.DataFrame, group_by=None) -> None:
    """Sequences to converge vs memory size N: one point per converged run, a line through the medians."""
    if MEMORY_KEY not in runs:
        raise NoData(f"no {MEMORY_KEY} in the runs' configs")
    converged = runs[runs["converged_at"].notna()] if "converged_at" in runs else runs.iloc[:0]
    if converged.empty:
        raise NoData("no run converged")
    # Other grouping keys still separate the lines; the memory size is the x axis instead.
    keys = [key for key in grouping_columns(runs, group_by) if key != MEMORY_KEY]
    labels = group_labels(runs, keys)
    order = label_order(runs, keys)
    ax = figure.subplots()
    for label, color in zip(order, palette(len(order))):
        group = runs[labels == label]
        done = group[group["converged_at"].notna()]
        if done.empty:
            continue
        counts = group.groupby(MEMORY_KEY)["converged_at"].agg(["count", "size"])
        text = ", ".join(f"N={n:g}: {c}/{s}" for n, (c, s) in counts.iterrows())
        ax.scatter(done[MEMORY_KEY], done["converged_at"], color=color, alpha=0.6, s=18)
        medians = done.groupby(MEMORY_KEY)["converged_at"].median()
        ax.plot(medians.index, medians.values, color=color, marker="o", label=f"{label} (converged {text})")
    sizes = sorted(runs[MEMORY_KEY].dropna().unique())
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [f"{n:g}" for n in sizes])
    ax.set_xlabel(f"memory size N (rows, {MEMORY_KEY})")
    ax.set_ylabel("sequences to converge")
    ax.set_title("Sequences to converge vs memory size (converged runs)")
    add_legend(figure, ax, len(order))


def palette(count: int) -> list:
    """count distinct colours: tab10 for a few groups, viridis for many."""
    from matplotlib import colormaps

    if count <= 10:
        return [colormaps["tab10"](i) for i in range(count)]
    return [colormaps["viridis"](i / max(count - 1, 1)) for i in range(count)]


def add_legend(figure, ax, count: int) -> None:
    """A small legend below the plot, or none when there are too many groups to read it."""
    if 0 < count <= MAX_LEGEND and ax.get_legend_handles_labels()[0]:
        figure.legend(*ax.get_legend_handles_labels(), loc="outside lower center", fontsize="small", ncols=1)
