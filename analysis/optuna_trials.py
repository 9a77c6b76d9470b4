"""Optuna studies stored in SQLite files inside sweep folders: read them read-only and join their trials to runs.

Plain sqlite3 rather than optuna's API: it opens the file truly read-only (optuna's storage may create
tables or migrate the schema), and it works where optuna is not installed.
"""

import json
import math
import os
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ntm import run_format as fmt

from .common import Report, display_path, same_value, warn

STUDY_SUFFIXES = (".db", ".sqlite", ".sqlite3")
SWEEP_MARKERS = ("multirun.yaml", "optimization_results.yaml")  # Hydra's basic sweeper / the Optuna sweeper
TRIAL_COLUMNS = ("trial.study", "trial.number", "trial.state", "trial.value", "trial.params")


class StudyError(Exception):
    """A study file that cannot be read; the message says why."""


@dataclass(frozen=True)
class Trial:
    """One Optuna trial: params as the sweeper suggested them (choices decoded, ints as ints)."""

    study: str
    number: int
    state: str
    value: float | None
    params: dict


def join_trials(runs: pd.DataFrame, match_values: dict[str, dict], paths: list[Path], report: Report = warn) -> pd.DataFrame:
    """runs plus trial.* columns for runs whose overrides equal a trial's params (runs unchanged if none match).

    match_values maps run_dir to the values a trial's params are compared with (normally the run's overrides).
    Study files are looked for below paths and in the sweep folder of every run.
    """
    run_dirs = [Path(run_dir) for run_dir in runs["run_dir"]]
    studies = {}
    for study_file in find_study_files(paths + sweep_dirs(run_dirs)):
        try:
            studies[study_file] = read_trials(study_file)
        except StudyError as error:
            report(f"{display_path(study_file)}: cannot read Optuna study ({error}); continuing without its trials")
    scopes = {study_file: study_scope(study_file) for study_file in studies}
    job_nums = runs["job_num"] if "job_num" in runs else pd.Series([None] * len(runs))
    matched = {}
    for run_dir, job_num in zip(runs["run_dir"], job_nums):
        candidates = [
            trial
            for study_file, trials in studies.items()
            if Path(run_dir).is_relative_to(scopes[study_file])
            for trial in trials
            if trial.params and params_match(trial.params, match_values.get(run_dir, {}))
        ]
        if candidates:
            matched[run_dir] = best_candidate(candidates, job_num)
    if not matched:
        return runs
    runs = runs.copy()  # copy() keeps attrs (config_columns), unlike merge
    trial_of = runs["run_dir"].map(matched)
    runs["trial.study"] = trial_of.map(lambda t: t.study, na_action="ignore")
    runs["trial.number"] = trial_of.map(lambda t: t.number, na_action="ignore").astype("Int64")
    runs["trial.state"] = trial_of.map(lambda t: t.state, na_action="ignore")
    runs["trial.value"] = pd.to_numeric(trial_of.map(lambda t: t.value, na_action="ignore"))
    runs["trial.params"] = trial_of.map(lambda t: json.dumps(t.params), na_action="ignore")
    return runs


def params_match(params: dict, values: dict) -> bool:
    """True when every trial param equals the run's value for that key."""
    return all(key in values and same_value(value, values[key]) for key, value in params.items())


def best_candidate(candidates: list[Trial], job_num) -> Trial:
    """Among trials with the run's params (a resumed study can repeat them) prefer the trial numbered like the job,
    then a completed one, then the latest."""
    has_job_num = job_num is not None and not pd.isna(job_num)
    return max(candidates, key=lambda t: (has_job_num and t.number == job_num, t.state == "COMPLETE", t.number))


def sweep_dirs(run_dirs: list[Path]) -> list[Path]:
    """The sweep folders holding run_dirs (so a study is found when only a job folder is given)."""
    found = {}
    for run_dir in run_dirs:
        for folder in (run_dir.parent, run_dir.parent.parent):
            if any((folder / marker).is_file() for marker in SWEEP_MARKERS):
                found.setdefault(folder, None)
                break
        else:
            if run_dir.name.isdigit():  # Hydra's default job folder name is the job number
                found.setdefault(run_dir.parent, None)
    return list(found)


def study_scope(study_file: Path) -> Path:
    """The folder whose runs a study may belong to: the sweep folder around the file, else the file's folder."""
    folder = study_file.resolve().parent
    for candidate in (folder, folder.parent, folder.parent.parent):
        if any((candidate / marker).is_file() for marker in SWEEP_MARKERS):
            return candidate
    return folder


def find_study_files(roots: list[Path]) -> list[Path]:
    """SQLite files (*.db, *.sqlite, *.sqlite3) below roots, resolved, each once."""
    found: dict[Path, None] = {}
    for root in roots:
        if not root.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [name for name in dirnames if not name.startswith(".") and name not in fmt.NEVER_RUN_DIRS]
            for name in filenames:
                if name.endswith(STUDY_SUFFIXES):
                    found.setdefault((Path(dirpath) / name).resolve(), None)
    return sorted(found)


def read_trials(study_file: Path) -> list[Trial]:
    """All trials of all studies in an Optuna SQLite file, opened read-only; StudyError if locked, corrupt or foreign."""
    uri = study_file.resolve().as_uri() + "?mode=ro"
    try:
        # A short timeout: a sweep writing the file holds its lock only briefly; never hang on a stuck one.
        with closing(sqlite3.connect(uri, uri=True, timeout=1.0)) as connection:
            return query_trials(connection)
    except sqlite3.Error as error:
        raise StudyError(str(error)) from None


def query_trials(connection: sqlite3.Connection) -> list[Trial]:
    """Trials from Optuna's RDB schema (the same tables in optuna 2.x and 3.x)."""
    tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not {"studies", "trials", "trial_params", "trial_values"} <= tables:
        raise StudyError("not an Optuna study: no studies/trials tables")
    params: dict[int, dict] = {}
    for trial_id, name, internal, distribution in connection.execute(
        "SELECT trial_id, param_name, param_value, distribution_json FROM trial_params"
    ):
        params.setdefault(trial_id, {})[name] = external_value(internal, distribution)
    values = {}
    for trial_id, value in connection.execute("SELECT trial_id, value FROM trial_values WHERE objective = 0"):
        values[trial_id] = float(value) if value is not None else None
    if "value_type" in {row[1] for row in connection.execute("PRAGMA table_info(trial_values)")}:
        # optuna 3 stores infinities as NULL plus a type
        for trial_id, kind in connection.execute("SELECT trial_id, value_type FROM trial_values WHERE objective = 0"):
            values[trial_id] = {"INF_POS": math.inf, "INF_NEG": -math.inf}.get(kind, values.get(trial_id))
    query = "SELECT t.trial_id, t.number, t.state, s.study_name FROM trials t JOIN studies s ON s.study_id = t.study_id"
    return [
        Trial(study, number, str(state), values.get(trial_id), params.get(trial_id, {}))
        for trial_id, number, state, study in connection.execute(query)
    ]


def external_value(internal: float, distribution_json: str):
    """A param as the objective saw it: Optuna stores categorical choices as their index, ints as floats."""
    try:
        distribution = json.loads(distribution_json)
        name, attributes = distribution["name"], distribution.get("attributes", {})
        if name == "CategoricalDistribution":
            return attributes["choices"][int(internal)]
        if name.startswith("Int"):
            return int(round(internal))
        return float(internal)
    except (KeyError, IndexError, TypeError, ValueError) as error:
        raise StudyError(f"unreadable trial parameter ({error!r})") from None
