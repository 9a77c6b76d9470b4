"""Results table: runs grouped by config with seeds aggregated; convergence and cost statistics per group."""

import difflib
import math
import textwrap

import pandas as pd

from ntm import run_format as fmt

from .common import natural_key
from .load import META_COLUMNS, RUNNING, SUMMARY_NUMBERS, UNFINISHED

NOT_CONFIG = {*META_COLUMNS, *fmt.SUMMARY_KEYS, *SUMMARY_NUMBERS}


def config_columns(runs: pd.DataFrame) -> list[str]:
    """Columns of runs that came from .hydra/config.yaml (recorded by load_runs; guessed if that record is lost)."""
    recorded = runs.attrs.get("config_columns")
    if recorded:
        return [column for column in recorded if column in runs.columns]
    return [c for c in runs.columns if c not in NOT_CONFIG and not c.startswith(("eval_cost", "trial."))]


def varying_columns(runs: pd.DataFrame) -> list[str]:
    """Config columns whose value differs between runs, less seed, keys that never change results, and keys that
    follow a config group's name (see implied_columns)."""
    varying = all_varying_columns(runs)
    implied = implied_columns(runs, varying)
    return [column for column in varying if column not in implied]


def all_varying_columns(runs: pd.DataFrame) -> list[str]:
    """Config columns whose value differs between runs, less seed and keys that never change results."""
    # Grouping ignores seed (what a group aggregates over) and keys that never change results.
    return [c for c in config_columns(runs) if c != "seed" and fmt.is_result_key(c) and runs[c].nunique(dropna=False) > 1]


def implied_columns(runs: pd.DataFrame, varying: list[str] | None = None) -> dict[str, str]:
    """{column: group name column} for varying columns fixed by a varying config group's name.

    E.g. comparing optimizer=adam with optimizer=rmsprop makes optimizer.lr, .momentum, .beta1 ... vary too,
    each fixed by optimizer.name: grouping by them adds nothing, so they are left out of the default grouping.
    A key swept on its own (two lrs for one optimizer) is not fixed by the name, and stays.
    """
    varying = all_varying_columns(runs) if varying is None else varying
    implied = {}
    for column in varying:
        parts = column.split(".")
        for depth in range(len(parts) - 1, 0, -1):
            name_column = ".".join(parts[:depth]) + ".name"
            if name_column != column and name_column in varying and is_function_of(runs, column, name_column):
                implied[column] = name_column
                break
    return implied


def is_function_of(runs: pd.DataFrame, column: str, key: str) -> bool:
    """True when runs with the same key value always have the same column value."""
    return bool((runs.groupby(key, dropna=False)[column].nunique(dropna=False) <= 1).all())


def grouping_columns(runs: pd.DataFrame, group_by: str | list[str] | None = None) -> list[str]:
    """The columns to group by: group_by ('a,b' or a list) if given, else every varying config column.

    Raises ValueError naming an unknown key (and the closest known ones).
    """
    if group_by is None:
        return varying_columns(runs)
    keys = [key.strip() for key in (group_by.split(",") if isinstance(group_by, str) else group_by)]
    keys = [key for key in keys if key]
    for key in keys:
        if key not in runs.columns:
            close = difflib.get_close_matches(key, config_columns(runs) or list(runs.columns), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"unknown group-by key {key!r}{hint}")
    return keys


def eval_columns(runs: pd.DataFrame) -> list[str]:
    """eval_cost (training lengths) first, then the generalisation sets in natural order (len40 before len120)."""
    sets = sorted((c for c in runs.columns if c.startswith("eval_cost_")), key=natural_key)
    return (["eval_cost"] if "eval_cost" in runs.columns else []) + sets


def results_table(runs: pd.DataFrame, group_by: str | list[str] | None = None) -> pd.DataFrame:
    """One row per group of runs (config without seed, or group_by keys): key columns, then numeric statistics.

    Statistics: runs, seeds, converged (fraction), diverged, pruned, running and unfinished (counts),
    sequences_to_converge_{median,min,max} and minutes_to_converge_{median,min,max} over the converged runs,
    {cost,eval_cost,eval_cost_<set>}_{mean,std} and objective_mean over the finished runs (not running or
    unfinished), and trial_numbers when Optuna trials were joined.
    """
    if runs.empty:
        raise ValueError("no runs to tabulate")
    keys = grouping_columns(runs, group_by)
    if not keys:
        table = pd.DataFrame([group_stats(runs)])
    else:
        rows = [{**dict(zip(keys, values)), **group_stats(group)} for values, group in groups(runs, keys)]
        table = pd.DataFrame(rows)
    table.attrs["group_by"] = keys
    table.attrs["implied"] = implied_columns(runs) if group_by is None else {}
    return table


def groups(runs: pd.DataFrame, keys: list[str]):
    """(key values, runs) per group, sorted by key values when they are comparable."""
    try:
        return list(runs.groupby(keys, dropna=False, sort=True))
    except TypeError:  # a key column mixing e.g. numbers and text
        return list(runs.groupby(keys, dropna=False, sort=False))


def group_stats(group: pd.DataFrame) -> dict:
    """Statistics of one group of runs (see results_table)."""
    status = column(group, "status")
    converged = column(group, "converged_at").notna() | (status == "converged")
    sequences = pd.to_numeric(column(group, "converged_at")[converged], errors="coerce").dropna()
    minutes = (pd.to_numeric(column(group, "converged_time_s")[converged], errors="coerce") / 60).dropna()
    finished = group[~status.isin([RUNNING, UNFINISHED])]  # results; in-progress values are only counted
    stats = {
        "runs": len(group),
        "seeds": group["seed"].nunique() if "seed" in group else len(group),
        "converged": float(converged.mean()),
        "diverged": int((status == "diverged").sum()),
        "pruned": int(((status == "pruned") | (column(group, "trial.state") == "PRUNED")).sum()),
        "running": int((status == RUNNING).sum()),
        "unfinished": int((status == UNFINISHED).sum()),
        **spread("sequences_to_converge", sequences),
        **spread("minutes_to_converge", minutes),
    }
    evaluated = eval_columns(group)
    # The optimal cost (N-grams) beside the model's, where the task has one.
    optimum = ["optimal_cost"] if "optimal_cost" in group else []
    for name in ["cost", *evaluated[:1], *optimum, *evaluated[1:]]:
        values = pd.to_numeric(column(finished, name), errors="coerce")
        stats[f"{name}_mean"], stats[f"{name}_std"] = values.mean(), values.std()
    if "objective" in group:
        stats["objective_mean"] = pd.to_numeric(finished["objective"], errors="coerce").mean()
    if "trial.number" in group:
        numbers = sorted(int(n) for n in group["trial.number"].dropna())
        stats["trial_numbers"] = ",".join(map(str, numbers))
    return stats


def column(frame: pd.DataFrame, name: str) -> pd.Series:
    """frame[name], or all-missing values when the column is absent (e.g. no run converged)."""
    return frame[name] if name in frame else pd.Series(math.nan, index=frame.index)


def spread(name: str, values: pd.Series) -> dict:
    """{name_median, name_min, name_max}: robust for the handful of seeds a group usually has."""
    return {f"{name}_median": values.median(), f"{name}_min": values.min(), f"{name}_max": values.max()}


def format_table(table: pd.DataFrame) -> pd.DataFrame:
    """The results table as short text for people: 'median [min-max]', 'mean ± std', '3/4' converged, numbers to 3
    significant digits. Running and unfinished counts appear only when some run is. (A search table's
    formatter is analysis.search.format_search.)"""
    keys = list(table.attrs.get("group_by", table.columns[: list(table.columns).index("runs")]))
    shown = pd.DataFrame({key: table[key].map(format_key) for key in keys}, index=table.index)
    shown["runs"] = table["runs"].astype(int).astype(str)
    shown["converged"] = [f"{round(f * n)}/{n}" for f, n in zip(table["converged"], table["runs"])]
    for name in ("diverged", "pruned", "running", "unfinished"):
        if name in table and (name in ("diverged", "pruned") or table[name].any()):
            shown[name] = table[name].astype(int).astype(str)
    for name, title in (("sequences_to_converge", "sequences to converge"), ("minutes_to_converge", "minutes to converge")):
        shown[title] = [format_spread(*values) for values in table[[f"{name}_{s}" for s in ("median", "min", "max")]].values]
    means = [c for c in table.columns if c.endswith("_mean") and c not in keys and c != "objective_mean"]
    for name in [c.removesuffix("_mean") for c in means]:
        titles = {"cost": "train cost", "eval_cost": "eval cost", "optimal_cost": "optimal cost"}
        title = titles.get(name, f"eval {name.removeprefix('eval_cost_')}")
        shown[title] = [format_mean_std(m, s) for m, s in zip(table[f"{name}_mean"], table[f"{name}_std"])]
    if "objective_mean" in table:
        shown["objective"] = table["objective_mean"].map(format_number)
    if "trial_numbers" in table:
        shown["trials"] = table["trial_numbers"].map(lambda text: text if len(text) <= 20 else f"{text.count(',') + 1} trials")
    shown.attrs.update(keep=len(keys), left=keys)  # group keys: left-aligned, never left out for width
    return shown


def render(shown: pd.DataFrame, markdown: bool = False, width: int | None = None) -> str:
    """A formatted table (format_table's or format_search's) as aligned text, or a markdown pipe table.

    width: the most characters a line may have; columns are left out from the right (the group keys, or a
    search's trial, objective and status, always stay) and a last line names them.
    """
    keep = shown.attrs.get("keep", 0)
    left = shown.attrs.get("left")
    text, hidden = fit_width(shown, markdown, width, keep, left)
    if hidden:
        count = f"{len(hidden)} column{'s' if len(hidden) > 1 else ''}"
        message = f"({count} not shown at width {width}: {', '.join(hidden)}; --wide or --csv FILE for all)"
        text += "\n" + textwrap.fill(message, width)
    return text


def fit_width(
    shown: pd.DataFrame, markdown: bool, width: int | None, keep: int, left: list[str] | None = None
) -> tuple[str, list[str]]:
    """(the table as text, the columns left out): the rightmost columns past the first `keep` are dropped one at
    a time until every line fits in width. left: the left-aligned columns (default: those not all numbers)."""
    hidden = []
    while True:
        text = tabulate_text(shown, markdown, left)
        too_wide = width is not None and max(map(len, text.splitlines()), default=0) > width
        if not too_wide or len(shown.columns) <= max(keep, 1):
            return text, hidden[::-1]
        hidden.append(shown.columns[-1])
        shown = shown.iloc[:, :-1]


def tabulate_text(shown: pd.DataFrame, markdown: bool, left: list[str] | None = None) -> str:
    """Aligned text: the left columns (default: those whose cells are not all numbers) left-aligned, others right."""
    try:
        from tabulate import tabulate
    except ImportError:  # tabulate is a soft dependency: pandas can print a plain table alone
        return shown.to_string(index=False)
    align = ["left" if (name in left if left is not None else not looks_numeric(shown[name])) else "right" for name in shown]
    if markdown:
        shown = shown.apply(lambda texts: texts.astype(str).str.replace("|", "\\|", regex=False))
    style = "pipe" if markdown else "simple"
    return tabulate(shown, headers="keys", tablefmt=style, showindex=False, disable_numparse=True, colalign=align)


def looks_numeric(texts: pd.Series) -> bool:
    """True when every cell is a formatted number (commas, '±', brackets and '-' allowed)."""
    return bool(texts.astype(str).str.fullmatch(r"[-+0-9.,e ±\[\]/]*").all())


def format_key(value) -> str:
    """A config value: 64 rather than 64.0, floats to 3 significant digits (0.00123, not 0.0012345678901234),
    '-' for a key the run's config lacks."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "-"
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()  # numpy scalars
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.3g}"
    return str(value)


def format_number(value) -> str:
    """3 significant digits, thousands separators for large numbers, '-' for missing."""
    if value is None or pd.isna(value):
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def format_spread(median, low, high) -> str:
    """'median [min-max]', or just the median when all values are equal."""
    if pd.isna(median):
        return "-"
    if low == high:
        return format_number(median)
    return f"{format_number(median)} [{format_number(low)}-{format_number(high)}]"


def format_mean_std(mean, std) -> str:
    """'mean ± std'; the mean alone for a single run."""
    if pd.isna(mean):
        return "-"
    return format_number(mean) if pd.isna(std) else f"{format_number(mean)} ± {format_number(std)}"


def group_labels(runs: pd.DataFrame, group_by: str | list[str] | None = None) -> pd.Series:
    """A legend label per run ('model.memory.n=64, optimizer.name=adam', or 'all runs'), indexed like runs."""
    keys = grouping_columns(runs, group_by)
    if not keys:
        return pd.Series("all runs", index=runs.index)
    return runs[keys].apply(lambda row: ", ".join(f"{key}={format_key(row[key])}" for key in keys), axis=1)


def label_order(runs: pd.DataFrame, group_by: str | list[str] | None = None) -> list[str]:
    """Group labels in the results table's order."""
    labels = group_labels(runs, group_by)
    keys = grouping_columns(runs, group_by)
    return list(dict.fromkeys(labels[group.index[0]] for _, group in groups(runs, keys))) if keys else ["all runs"]
