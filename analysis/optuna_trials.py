"""Optuna studies stored in SQLite files inside sweep folders: read through Optuna's API, read-only, joined to runs.

A study file is opened through SQLite's read-only URI (sqlite:///file:PATH?mode=ro&uri=true), so nothing here can
write to it: not Optuna's storage, which creates missing tables and stamps schema versions when it opens a file,
and not a sweep's own code. optuna is imported only when a study file is found; without it, runs are analysed
without trial columns (one warning line says so).
"""

import functools
import json
import os
import sqlite3
import urllib.parse
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ntm import run_format as fmt

from .common import Report, display_path, is_missing, same_value, warn

STUDY_SUFFIXES = (".db", ".sqlite", ".sqlite3")
SWEEP_MARKERS = ("multirun.yaml", "optimization_results.yaml")  # Hydra's basic sweeper / the Optuna sweeper
TRIAL_COLUMNS = ("trial.study", "trial.study_file", "trial.number", "trial.state", "trial.value", "trial.params")
TRIAL_ATTRS = ("number", "value", "state", "params", "datetime_start", "datetime_complete")
LOCK_TIMEOUT_S = 1.0  # a sweep writing the file holds its lock only briefly; never hang on a stuck one
PARAM_PREFIX = "params_"  # Optuna's trials_dataframe names param columns params_<name>
INSTALL_HPO = "pip install -e '.[hpo]' (or pip install scikit-learn)"


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
    study_file: str = ""


@dataclass
class Study:
    """One study of an Optuna storage file: its trials as Optuna's trials_dataframe, and how each param was sampled."""

    file: Path
    name: str
    direction: str  # "minimize" or "maximize"
    trials: pd.DataFrame  # number, value, state (COMPLETE, PRUNED, FAIL, RUNNING, WAITING), params_<name>, datetimes
    distributions: dict[str, str] = field(default_factory=dict)  # param -> "categorical", "log" or "linear"

    @property
    def label(self) -> str:
        return f"{self.name} ({display_path(self.file)})"

    def trial_list(self) -> list[Trial]:
        """The trials as Trial records; a param a trial lacks (NaN in the dataframe) is left out of its params."""
        params = [column for column in self.trials.columns if column.startswith(PARAM_PREFIX)]
        trials = []
        for row in self.trials.to_dict("records"):
            values = {name.removeprefix(PARAM_PREFIX): plain(row[name]) for name in params if not is_missing(row[name])}
            value = None if is_missing(row.get("value")) else float(row["value"])
            trials.append(Trial(self.name, int(row["number"]), str(row["state"]), value, values, str(self.file)))
        return trials


def plain(value):
    """numpy scalars from the dataframe as Python values (JSON-able, comparable); integral floats as ints."""
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


# Finding and reading study files


def read_studies(paths: list[Path], run_dirs: list[Path], report: Report = warn) -> list[Study]:
    """Every study in the SQLite files below paths and in the sweep folders of run_dirs; unreadable files reported."""
    files = find_study_files(paths + sweep_dirs(run_dirs))
    if not files:
        return []
    try:
        import optuna  # noqa: F401
    except ImportError:
        names = ", ".join(display_path(file) for file in files)
        report(f"optuna is not installed: Optuna studies not read ({names}); runs are shown without trial columns")
        return []
    studies = []
    for study_file in files:
        try:
            studies.extend(read_study_file(study_file))
        except StudyError as error:
            report(f"{display_path(study_file)}: cannot read Optuna study ({error}); continuing without its trials")
    return studies


def readonly_connection(study_file: Path) -> sqlite3.Connection:
    """A read-only SQLite connection to study_file, through an SQLite URI whose path is percent-encoded
    (spaces, '#', '%', '?', braces are safe). Opened here, not from a SQLAlchemy URL: SQLAlchemy 1.4 and 2
    unquote such a URL differently."""
    uri = f"file:{urllib.parse.quote(str(Path(study_file).resolve()))}?mode=ro"
    return sqlite3.connect(uri, uri=True, timeout=LOCK_TIMEOUT_S, check_same_thread=False)


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's log lines and warnings (experimental APIs, SQLAlchemy 2.0 deprecations) kept off the output."""
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)


@contextmanager
def open_storage(study_file: Path):
    """Optuna's RDB storage on study_file, read-only; closed (every connection) on exit. StudyError when unreadable."""
    import optuna

    with quiet_optuna():
        try:
            storage = optuna.storages.RDBStorage(
                "sqlite://", engine_kwargs={"creator": functools.partial(readonly_connection, study_file)}
            )
        except Exception as error:  # SQLAlchemy, SQLite and Optuna's own errors alike: report the file, go on
            raise StudyError(describe(error)) from None
        try:
            yield storage
        except StudyError:
            raise
        except Exception as error:
            raise StudyError(describe(error)) from None
        finally:
            storage.scoped_session.remove()
            storage.engine.dispose()


def describe(error: Exception) -> str:
    """One line for a storage error: SQLite's message without SQLAlchemy's wrapping."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    if text.startswith("(") and ") " in text:  # "(sqlite3.OperationalError) database is locked"
        text = text.split(") ", 1)[1]
    if "readonly database" in text:  # the storage tried to create its tables or stamp a schema version
        return f"not an Optuna study: Optuna would have to write to it to open it ({text})"
    return text


def read_study_file(study_file: Path) -> list[Study]:
    """Every study in one Optuna storage file, read-only."""
    import optuna

    studies = []
    with open_storage(study_file) as storage:
        for summary in optuna.get_all_study_summaries(storage):
            study = optuna.load_study(study_name=summary.study_name, storage=storage)
            trials = study.trials_dataframe(attrs=TRIAL_ATTRS, multi_index=False)
            if trials.empty:
                trials = pd.DataFrame(columns=["number", "value", "state"])
            direction = "maximize" if study.direction == optuna.study.StudyDirection.MAXIMIZE else "minimize"
            distributions = {}
            for trial in study.get_trials(deepcopy=False):
                for name, distribution in trial.distributions.items():
                    distributions.setdefault(name, distribution_kind(distribution))
            studies.append(Study(Path(study_file), summary.study_name, direction, trials, distributions))
    return studies


def distribution_kind(distribution) -> str:
    """'categorical', 'log' (log-uniform floats or ints, any Optuna version) or 'linear'."""
    name = type(distribution).__name__
    if name == "CategoricalDistribution":
        return "categorical"
    if getattr(distribution, "log", False) or "Log" in name:
        return "log"
    return "linear"


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


# Joining trials to runs


def join_trials(runs: pd.DataFrame, match_values: dict[str, dict], studies: list[Study]) -> pd.DataFrame:
    """runs plus trial.* columns for runs whose overrides equal a trial's params (runs unchanged if none match).

    match_values maps run_dir to the values a trial's params are compared with (normally the run's overrides).
    A study's trials are matched only to runs inside its sweep folder.
    """
    scoped = [(study_scope(study.file), study.trial_list()) for study in studies]
    job_nums = runs["job_num"] if "job_num" in runs else pd.Series([None] * len(runs))
    matched = {}
    for run_dir, job_num in zip(runs["run_dir"], job_nums):
        candidates = [
            trial
            for scope, trials in scoped
            if Path(run_dir).is_relative_to(scope)
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
    runs["trial.study_file"] = trial_of.map(lambda t: t.study_file, na_action="ignore")
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


# Parameter importances


def param_importances(study: Study, report: Report = warn) -> tuple[dict[str, float] | None, str]:
    """(importances, how they were computed) or (None, why not), through optuna.importance.

    fANOVA (Optuna's default evaluator) first; where it fails (optuna 2.10's fANOVA breaks on numpy 2: reported)
    the mean decrease in impurity of the same random forest. Both need scikit-learn. The study is reopened read-only.
    """
    complete = int((study.trials["state"] == "COMPLETE").sum()) if "state" in study.trials else 0
    if complete < 2:
        return None, f"not computed for study {study.name}: it needs 2 complete trials, it has {complete}"
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, MeanDecreaseImpurityImportanceEvaluator

    try:
        with quiet_optuna():
            evaluators = [("fANOVA", FanovaImportanceEvaluator(seed=0))]
            evaluators.append(("mean decrease impurity", MeanDecreaseImpurityImportanceEvaluator(seed=0)))
    except ImportError:
        return None, f"not computed: they need scikit-learn, which is not installed; {INSTALL_HPO}"
    failures = []
    try:
        with open_storage(study.file) as storage, quiet_optuna():
            loaded = optuna.load_study(study_name=study.name, storage=storage)
            for name, evaluator in evaluators:
                try:
                    importances = optuna.importance.get_param_importances(loaded, evaluator=evaluator)
                except (ValueError, TypeError, RuntimeError) as error:
                    failures.append(f"{name} fails with optuna {optuna.__version__} here ({first_sentence(error)})")
                    continue
                if failures:
                    report(f"parameter importances of {study.name}: {'; '.join(failures)}; {name} instead")
                return {key: float(value) for key, value in importances.items()}, f"{name}, {complete} complete trials"
    except StudyError as error:
        return None, f"not computed: cannot reopen {study.label} ({error})"
    return None, f"not computed for study {study.name}: {'; '.join(failures)}"


def first_sentence(error: Exception) -> str:
    """The start of an error's message, up to its first full stop: enough to recognise it on one line."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text.split(". ")[0].rstrip(".")
