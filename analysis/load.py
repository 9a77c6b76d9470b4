"""Find run folders below some paths and read them into pandas DataFrames.

Works on folders copied from another machine: reads only the files a run writes (.hydra/*.yaml,
summary.json, metrics.csv, and whether .lock is held), never the training code or checkpoints.

Besides the statuses of summary.json (ntm.run_format.STATUSES), a run is "running" while a process holds
its .lock (its row holds the latest metrics.csv values; a continued run's older summary.json is ignored),
and "unfinished" when it has no summary.json and no process holds its lock (killed or interrupted).
"""

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from ntm import run_format as fmt

from .common import Report, display_path, natural_key, warn
from .optuna_trials import Study, join_trials, read_studies

try:
    import fcntl
except ImportError:  # no flock (Windows): no run can be seen running
    fcntl = None

SUMMARY_NUMBERS = set(fmt.SUMMARY_NUMBER_KEYS)
REQUIRED_METRICS = fmt.REQUIRED_METRICS
META_COLUMNS = ("run_dir", "overrides", "job_num")
RUNNING, UNFINISHED = "running", "unfinished"  # statuses of runs without a final summary.json
IN_PROGRESS = (RUNNING, UNFINISHED)

try:  # the C loader is several times faster on sweeps with many runs
    _YamlLoader = yaml.CSafeLoader
except AttributeError:
    _YamlLoader = yaml.SafeLoader


class RunError(Exception):
    """A run folder that cannot be used; the message says why."""


@dataclass
class Run:
    """One readable run: its table row, its learning curve, and the values Optuna trial params are matched with."""

    row: dict
    curve: pd.DataFrame | None
    config_columns: list[str]
    match_values: dict = field(default_factory=dict)


@dataclass
class Loaded:
    """Everything read from some paths: one row per run, the long learning curves, the problems reported, and the
    Optuna studies found (trials joined to runs as trial.* columns)."""

    runs: pd.DataFrame
    curves: pd.DataFrame
    problems: list[str]
    studies: list[Study] = field(default_factory=list)


def load(*paths: str | Path, report: Report = warn) -> Loaded:
    """Read every run below paths; broken runs are reported (one line each) and left out.

    Raises FileNotFoundError / NotADirectoryError for a path that is not a folder.
    """
    problems: list[str] = []

    def note(message: str) -> None:
        problems.append(message)
        report(message)

    runs = []
    for run_dir in find_run_dirs(*paths):
        try:
            runs.append(read_run(run_dir, note))
        except RunError as error:
            note(f"skipping {display_path(run_dir)}: {error}")
    fill_added_keys(runs, note)
    table = runs_frame(runs)
    studies = []
    if runs:
        studies = read_studies([Path(p) for p in paths], [Path(run.row["run_dir"]) for run in runs], note)
        match_values = {run.row["run_dir"]: run.match_values for run in runs}
        table = join_trials(table, match_values, studies)
    return Loaded(table, curves_frame(runs), problems, studies)


def load_runs(*paths: str | Path, report: Report = warn) -> pd.DataFrame:
    """One row per run below paths: run_dir, summary.json keys, dotted config keys, overrides, job_num, trial.*."""
    return load(*paths, report=report).runs


def load_curves(*paths: str | Path, report: Report = warn) -> pd.DataFrame:
    """Learning curves of the runs below paths, long format: run_dir plus the metrics.csv columns."""
    return load(*paths, report=report).curves


def find_run_dirs(*paths: str | Path) -> list[Path]:
    """Every folder below paths that looks like a run, resolved and listed once even when paths overlap."""
    found: dict[Path, None] = {}
    for path in paths:
        root = Path(path)
        if not root.exists():
            raise FileNotFoundError(f"path does not exist: {path}")
        if not root.is_dir():
            raise NotADirectoryError(f"not a folder: {path}")
        for dirpath, dirnames, filenames in os.walk(root):
            if any(marker in dirnames or marker in filenames for marker in fmt.RUN_MARKERS):
                found.setdefault(Path(dirpath).resolve(), None)
            # Hidden folders (.hydra, .git) and checkpoints never hold runs.
            dirnames[:] = [name for name in dirnames if not name.startswith(".") and name not in fmt.NEVER_RUN_DIRS]
    return sorted(found, key=natural_key)


def read_run(run_dir: Path, note: Report = warn) -> Run:
    """Read one run folder; raises RunError naming every problem that makes it unusable.

    A run whose .lock is held is "running", one without summary.json and without a held lock "unfinished"
    (noted): both get their latest metrics.csv values instead of a summary.
    """
    running = lock_held(run_dir)
    unfinished = not running and not (run_dir / fmt.SUMMARY_FILE).is_file()
    readers = [("config", read_config), ("curve", read_metrics)]
    if not running and not unfinished:
        readers.append(("summary", read_summary))
    parts, problems = {}, []
    for name, reader in readers:
        try:
            parts[name] = reader(run_dir)
        except RunError as error:
            problems.append(str(error))
    if problems:
        raise RunError("; ".join(problems))
    curve = parts["curve"]
    if running or unfinished:
        summary = progress_summary(curve, RUNNING if running else UNFINISHED)
    else:
        summary = parts["summary"]
    if unfinished:
        note(
            f"{display_path(run_dir)}: unfinished (no {fmt.SUMMARY_FILE}, and no process holds its {fmt.LOCK_FILE}: "
            "killed or interrupted?); shown with status unfinished and its last metrics"
        )
    elif curve is None and summary["status"] not in ("diverged", RUNNING):  # early divergence, or a run just started
        note(f"{display_path(run_dir)}: no metrics.csv rows; its learning curve is left out")
    config = flatten(parts["config"])
    overrides = read_overrides(run_dir, note)
    job_num, choices = read_hydra(run_dir)
    row = {
        "run_dir": str(run_dir),
        **summary,
        **config,
        "overrides": " ".join(overrides) if overrides is not None else None,
        "job_num": job_num,
    }
    # Sweepers pass every trial parameter as an override; matching on overrides alone avoids
    # "matching" a trial through a default value the run never swept.
    match_values = parse_overrides(overrides) if overrides is not None else {**choices, **config}
    return Run(row, curve, list(config), match_values)


def lock_held(run_dir: Path) -> bool:
    """True when a live process holds run_dir/.lock (the flock training takes; the kernel drops it with the process).

    Tested with a shared, non-blocking flock on a read-only descriptor, released at once: nothing is written.
    """
    if fcntl is None:
        return False
    try:
        fd = os.open(run_dir / fmt.LOCK_FILE, os.O_RDONLY)
    except OSError:  # no lock file: never trained here, or a copy without it
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # a file system without flock
        return False
    finally:
        os.close(fd)  # closing the descriptor releases a lock taken above
    return False


def progress_summary(curve: pd.DataFrame | None, status: str) -> dict:
    """Summary-like values of a run without a final summary.json: the last metrics.csv row, and the latest value of
    each evaluation column (evaluations are rarer than reports)."""
    summary: dict = {"status": status, "final": False}
    if curve is None or curve.empty:
        return summary
    last = curve.iloc[-1]
    summary["steps"] = last["step"]
    for key in ("sequences", "loss", "cost", "seq_per_s"):
        if key in curve:
            summary[key] = last[key]
    for column in curve.columns:
        if column.startswith(fmt.EVAL_COST_PREFIX):
            values = curve[column].dropna()
            summary[column] = values.iloc[-1] if not values.empty else None
    return summary


def read_yaml(run_dir: Path, name: str):
    """Parsed .hydra/<name>; RunError when it is missing or not YAML."""
    path = run_dir / fmt.CONFIG_DIR / name
    if not path.is_file():
        raise RunError(f"missing .hydra/{name}")
    try:
        return yaml.load(path.read_text(), Loader=_YamlLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise RunError(f"malformed .hydra/{name} ({str(error).splitlines()[0]})") from None


def read_config(run_dir: Path) -> dict:
    """The composed config of a run (.hydra/config.yaml) as nested dicts."""
    config = read_yaml(run_dir, "config.yaml")
    if not isinstance(config, dict):
        raise RunError("malformed .hydra/config.yaml (not a mapping)")
    return config


def read_summary(run_dir: Path) -> dict:
    """summary.json, checked against the run-folder format (ntm.run_format)."""
    path = run_dir / fmt.SUMMARY_FILE
    if not path.is_file():
        raise RunError(f"no {fmt.SUMMARY_FILE} (unfinished, still running or killed?)")
    try:
        summary = fmt.read_summary(run_dir)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise RunError(f"malformed {fmt.SUMMARY_FILE} ({error})") from None
    return {key: json.dumps(value) if isinstance(value, list | dict) else value for key, value in summary.items()}


def read_metrics(run_dir: Path) -> pd.DataFrame | None:
    """metrics.csv as numbers (None when absent or without rows); RunError when truncated or garbled."""
    path = run_dir / fmt.METRICS_FILE
    if not path.is_file():
        return None
    try:
        text = path.read_text()
        rows = list(csv.reader(io.StringIO(text)))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise RunError(f"unreadable metrics.csv ({error})") from None
    if not text.strip():
        return None
    # The harness ends every line with a newline and writes atomically: a missing one means a cut copy.
    if not text.endswith("\n"):
        raise RunError("truncated metrics.csv (last line incomplete)")
    header, body = rows[0], rows[1:]
    missing = [column for column in REQUIRED_METRICS if column not in header]
    if missing:
        raise RunError(f"garbled metrics.csv (no {', '.join(missing)} column)")
    for line, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise RunError(f"truncated or garbled metrics.csv (line {line} has {len(row)} fields, the header {len(header)})")
    if not body:
        return None
    return metrics_as_numbers(pd.DataFrame(body, columns=header))


def metrics_as_numbers(frame: pd.DataFrame) -> pd.DataFrame:
    """Convert metrics columns to numbers; RunError on a non-number, or an empty cell where one is required."""
    for column in frame.columns:
        text = frame[column].str.strip()
        numbers = pd.to_numeric(text.where(text != ""), errors="coerce")
        bad = numbers.isna() & ((text != "") | (column in REQUIRED_METRICS))
        if bad.any():
            line = int(bad.to_numpy().nonzero()[0][0]) + 2
            raise RunError(f"garbled metrics.csv (line {line}: {column} is {frame[column].iloc[line - 2]!r}, not a number)")
        frame[column] = numbers
    return frame


def read_overrides(run_dir: Path, note: Report) -> list[str] | None:
    """The command-line overrides of a run; None (with a note) when .hydra/overrides.yaml is missing or broken."""
    try:
        overrides = read_yaml(run_dir, "overrides.yaml")
    except RunError as error:
        note(f"{display_path(run_dir)}: {error}; its overrides are unknown")
        return None
    if overrides is None:
        return []
    if not isinstance(overrides, list):
        note(f"{display_path(run_dir)}: malformed .hydra/overrides.yaml (not a list); its overrides are unknown")
        return None
    return [str(item) for item in overrides]


def parse_overrides(overrides: list[str]) -> dict[str, str]:
    """{'model.memory.n': '64', 'optimizer': 'adam'} from ['model.memory.n=64', '+optimizer=adam']."""
    parsed = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if sep:
            parsed[key.lstrip("+~")] = value
    return parsed


def read_hydra(run_dir: Path) -> tuple[int | None, dict[str, str]]:
    """(hydra.job.num or None, config group choices such as {'optimizer': 'adam'}); tolerant: both are extras."""
    try:
        hydra = (read_yaml(run_dir, "hydra.yaml") or {}).get("hydra", {})
        job_num = hydra.get("job", {}).get("num")
        choices = hydra.get("runtime", {}).get("choices", {}) or {}
    except (RunError, AttributeError):
        return None, {}
    job_num = job_num if isinstance(job_num, int) and not isinstance(job_num, bool) else None
    return job_num, {str(k): v for k, v in choices.items() if not str(k).startswith("hydra/") and v is not None}


def flatten(config: dict, prefix: str = "") -> dict:
    """{'model.memory.n': 128, 'task.eval_lengths': '[40, 80, 120]', ...}: nested keys dotted, lists as JSON text."""
    # Lists are unhashable: as text they stay groupable and printable.
    return {
        key: json.dumps(value) if isinstance(value, list | dict) else value for key, value in fmt.flatten(config, prefix).items()
    }


def fill_added_keys(runs: list[Run], note: Report = warn) -> None:
    """Give a run whose folder predates a config key that other runs have the key's default.

    The run behaved as the default (resuming counts it so too: ntm.run_folder), so it groups with
    the newer runs that kept the default. The defaults are the schema's, which imports torch: read
    only when some folder lacks a key; without torch such a key counts as a value of its own.
    """
    keys = {key for run in runs for key in run.config_columns}
    lacking = [run for run in runs if not keys <= set(run.config_columns)]
    if not lacking:
        return
    try:
        from ntm.config import schema_defaults
    except ImportError as error:
        note(
            f"{len(lacking)} runs predate some config keys of the others, whose defaults come from ntm's schema, "
            f"which needs {error.name}: here an absent key counts as a value of its own"
        )
        return
    for run in lacking:
        group_names = {
            key.split(".")[0]: {"name": run.row[key]}
            for key in run.config_columns
            if key.count(".") == 1 and key.endswith(".name")
        }
        defaults = flatten(schema_defaults(group_names))
        added = [key for key in keys if key not in run.config_columns and key in defaults]
        run.row.update({key: defaults[key] for key in added})
        run.config_columns.extend(added)


def runs_frame(runs: list[Run]) -> pd.DataFrame:
    """One row per run; df.attrs['config_columns'] lists the columns that came from the config."""
    table = pd.DataFrame([run.row for run in runs])
    if table.empty:
        table = pd.DataFrame(columns=list(META_COLUMNS) + ["status"])
    for column in table.columns:
        if column in SUMMARY_NUMBERS or column.startswith("eval_cost"):
            table[column] = pd.to_numeric(table[column], errors="coerce")
    if "job_num" in table:
        table["job_num"] = table["job_num"].astype("Int64")
    table.attrs["config_columns"] = list(dict.fromkeys(column for run in runs for column in run.config_columns))
    return table


def curves_frame(runs: list[Run]) -> pd.DataFrame:
    """Learning curves of all runs, long format (run_dir first)."""
    curves = [run.curve.assign(run_dir=run.row["run_dir"]) for run in runs if run.curve is not None]
    if not curves:
        return pd.DataFrame(columns=["run_dir", *REQUIRED_METRICS])
    frame = pd.concat(curves, ignore_index=True)
    return frame[["run_dir", *[column for column in frame.columns if column != "run_dir"]]]
