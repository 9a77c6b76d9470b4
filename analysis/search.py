"""The search view of a hyperparameter search: one row per trial, best objective first, swept parameters and key results.

The grouped results table (analysis.results_table) aggregates seeds per configuration; a search (Optuna TPE,
random) runs each configuration once, so there a table sorted by objective says more, as Optuna's own views do.
"""

import json
import math

import pandas as pd

from .common import Report, is_missing, warn
from .load import IN_PROGRESS, Loaded
from .optuna_trials import PARAM_PREFIX, Study, param_importances
from .table import format_key, format_number, groups, varying_columns

# A trial's state, as a run status, for trials without a run folder (and FAIL / PRUNED trials with one).
STATE_STATUS = {"COMPLETE": "completed", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}
RESULT_COLUMNS = ("sequences", "steps", "converged_at", "wall_time_s", "cost")  # besides eval_cost*, in the table
SHOWN_RESULTS = (("eval_cost", "eval cost"), ("sequences", "sequences"), ("minutes", "minutes"))  # printed


def is_search(runs: pd.DataFrame) -> bool:
    """True when the runs come from an Optuna study and each configuration (less seed) ran once: a search,
    not a grid repeated over seeds (which the grouped table aggregates)."""
    if "trial.number" not in runs or runs["trial.number"].isna().all():
        return False
    keys = varying_columns(runs)
    return bool(keys) and max(len(group) for _, group in groups(runs, keys)) <= 1


def used_studies(loaded: Loaded) -> list[Study]:
    """The studies at least one run was matched to."""
    runs = loaded.runs
    if "trial.study_file" not in runs:
        return []
    used = set(zip(runs["trial.study_file"].dropna(), runs["trial.study"].dropna()))
    return [study for study in loaded.studies if (str(study.file), study.name) in used]


def search_table(loaded: Loaded, importances: dict[str, float] | None = None) -> pd.DataFrame:
    """One row per run and per trial of its study without a run folder (e.g. failed before training), best first.

    Columns: study (when runs come from several), trial, status (running, unfinished, failed and waiting besides
    the summary statuses), each swept parameter (Optuna's params, or the varying config keys without a study),
    objective (summary.json's, else the trial's value), eval_cost*, sequences, steps, converged_at, wall_time_s,
    cost, run_dir. Sorted by objective (the study's direction), then trial number; rows without an objective last.
    attrs: params (ordered by importance when importances are given), direction, distributions.
    """
    studies = used_studies(loaded)
    runs = loaded.runs
    params = list(dict.fromkeys(name for study in studies for name in study_params(study))) or varying_columns(runs)
    evals = [column for column in runs.columns if column.startswith("eval_cost")]
    rows = [run_row(run, params, evals) for run in runs.to_dict("records")]
    matched = {(run.get("trial.study_file"), run.get("trial.number")) for run in runs.to_dict("records")}
    for study in studies:
        for trial in study.trial_list():
            if (str(study.file), trial.number) not in matched:
                row = {"study": study.name, "trial": trial.number, "status": STATE_STATUS.get(trial.state, trial.state.lower())}
                rows.append({**row, **{key: trial.params.get(key) for key in params}, "objective": trial.value})
    table = pd.DataFrame(rows)
    for column in ("objective", *evals, *RESULT_COLUMNS):
        table[column] = pd.to_numeric(table[column], errors="coerce") if column in table else math.nan
    table["trial"] = table["trial"].astype("Int64") if "trial" in table else pd.array([pd.NA] * len(table), "Int64")
    if table["study"].nunique() <= 1:
        table = table.drop(columns="study")
    directions = {study.direction for study in studies}
    direction = "maximize" if directions == {"maximize"} else "minimize"
    sign = -1 if direction == "maximize" else 1
    order = pd.DataFrame(
        {
            "missing": table["objective"].isna(),
            "objective": table["objective"] * sign,
            "trial": table["trial"].astype("Float64").fillna(math.inf),
            "run_dir": table.get("run_dir", pd.Series("", index=table.index)).fillna(""),
        }
    )
    table = table.loc[order.sort_values(list(order.columns), kind="stable").index].reset_index(drop=True)
    if importances:
        params = sorted(params, key=lambda key: -importances.get(key, -1.0))
    distributions = {key: kind for study in studies for key, kind in study.distributions.items()}
    table.attrs.update(params=params, direction=direction, distributions=distributions)
    return table


def study_params(study: Study) -> list[str]:
    """The study's parameters, in Optuna's order (by name)."""
    return [column.removeprefix(PARAM_PREFIX) for column in study.trials.columns if column.startswith(PARAM_PREFIX)]


def run_row(run: dict, params: list[str], evals: list[str]) -> dict:
    """A search-table row of one run: its trial's params, else its overrides, else its config."""
    trial_params = json.loads(run["trial.params"]) if isinstance(run.get("trial.params"), str) else {}
    overrides = dict(item.partition("=")[::2] for item in (run.get("overrides") or "").split() if "=" in item)
    overrides = {key.lstrip("+~"): value for key, value in overrides.items()}
    values = {}
    for key in params:
        if key in trial_params:
            values[key] = trial_params[key]
        elif key in run and not is_missing(run[key]):
            values[key] = run[key]
        else:
            values[key] = overrides.get(key)
    status = run.get("status")
    state = run.get("trial.state")
    if state in ("FAIL", "PRUNED"):  # the study's word: a crashed job, or one the sweeper stopped
        status = STATE_STATUS[state]
    objective = run.get("objective")
    if status in IN_PROGRESS or is_missing(objective):
        objective = run.get("trial.value") if status not in IN_PROGRESS else None
    return {
        "study": run.get("trial.study"),
        "trial": run.get("trial.number"),
        "status": status,
        **values,
        "objective": objective,
        **{column: run.get(column) for column in (*evals, *RESULT_COLUMNS)},
        "run_dir": run["run_dir"],
    }


def short_names(keys: list[str]) -> dict[str, str]:
    """Column titles: 'optimizer.lr' as 'lr', 'model.memory.m' as 'memory.m' (the first part dropped) where
    that stays unique; other keys in full."""
    shortened = {key: key.split(".", 1)[1] if "." in key else key for key in keys}
    counts = pd.Series(list(shortened.values())).value_counts()
    return {key: short if counts[short] == 1 and short not in keys else key for key, short in shortened.items()}


def format_search(table: pd.DataFrame) -> pd.DataFrame:
    """A search table as short text: trial, [study,] objective, status, the parameters (most important first when
    importances were given), eval cost, sequences seen and training minutes; numbers to 3 significant digits."""
    params = table.attrs.get("params", [])
    names = short_names(params)
    shown = pd.DataFrame(index=table.index)
    shown["trial"] = table["trial"].map(lambda n: "-" if n is pd.NA or pd.isna(n) else str(int(n)))
    if "study" in table:
        shown["study"] = table["study"].map(format_key)
    shown["objective"] = table["objective"].map(format_number)
    shown["status"] = table["status"].map(format_key)
    keep = len(shown.columns)
    for key in params:
        shown[names[key]] = table[key].map(format_key) if key in table else "-"
    minutes = table["wall_time_s"] / 60
    for column, title in SHOWN_RESULTS:
        values = minutes if column == "minutes" else table[column]
        if values.notna().any():
            shown[title] = values.map(format_number)
    shown.attrs.update(keep=keep)
    return shown


def study_importances(studies: list[Study], report: Report = warn) -> list[tuple[Study, dict[str, float] | None, str]]:
    """(study, importances or None, how or why not) for each study, through optuna.importance."""
    return [(study, *param_importances(study, report)) for study in studies]


def format_importances(importances: dict[str, float]) -> str:
    """'lr 0.52, batch_size 0.21, ...': short names, largest first, 3 significant digits."""
    names = short_names(list(importances))
    ordered = sorted(importances.items(), key=lambda item: -item[1])
    return ", ".join(f"{names[key]} {format_number(value)}" for key, value in ordered)


def status_counts(table: pd.DataFrame) -> str:
    """'6 completed, 2 converged, 2 pruned, 1 running': how many rows have each status, commonest first."""
    counts = table["status"].fillna("unknown").value_counts()
    return ", ".join(f"{count} {status}" for status, count in counts.items())
