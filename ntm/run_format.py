"""The run folder: the only interface between training (ntm/) and analysis (analysis/).

Defined once, here, for both sides; this module imports neither torch nor Hydra, so analysis
works on folders copied to a machine without them. A run folder holds:

    .hydra/config.yaml      the composed config (written by the run after its checks pass)
    .hydra/overrides.yaml   the command-line overrides (Hydra runs only)
    .hydra/hydra.yaml       Hydra's own config: job number, group choices (Hydra runs only)
    provenance.json         format version, git commit, library versions, one entry per start
    metrics.csv             one row per report interval (REQUIRED_METRICS, eval columns)
    summary.json            written once at the end: SUMMARY_KEYS
    snapshots.pt            what figures of training need (ntm.show), when train.snapshot_interval > 0
    checkpoints/last.pt     the newest checkpoint; checkpoints/previous.pt the one before it
    .lock                   held (flock) by the process training in the folder
    tensorboard/            TensorBoard's event files, with logger=tensorboard (ntm.loggers)
    mlflow_run_id           the MLflow run this folder logs to, with logger=mlflow

Every file is written to a temporary name and renamed over the old one (but TensorBoard's
event files, which TensorBoard appends to).
"""

import json
import math
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

# Version 1: folders written before provenance.json existed (no format_version anywhere).
FORMAT_VERSION = 2

CONFIG_DIR = ".hydra"
CONFIG_FILE = f"{CONFIG_DIR}/config.yaml"
OVERRIDES_FILE = f"{CONFIG_DIR}/overrides.yaml"
HYDRA_FILE = f"{CONFIG_DIR}/hydra.yaml"
PROVENANCE_FILE = "provenance.json"
METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.json"
SNAPSHOTS_FILE = "snapshots.pt"  # outputs on fixed probes and cost per length over training (ntm.show)
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_FILES = ("last.pt", "previous.pt")  # newest first
LOCK_FILE = ".lock"
TENSORBOARD_DIR = "tensorboard"  # logger=tensorboard's event files (ntm.loggers)
MLFLOW_RUN_FILE = "mlflow_run_id"  # logger=mlflow: the MLflow run this folder logs to

# Any of these makes a folder a run (perhaps a broken one); folders that never hold runs.
RUN_MARKERS = (CONFIG_DIR, SUMMARY_FILE, METRICS_FILE)
NEVER_RUN_DIRS = (CHECKPOINT_DIR, TENSORBOARD_DIR, "__pycache__")

# summary.json "status". A completed run stopped at its step budget and can be continued with a
# larger train.steps; a run that converged is final when it stopped there (summary "final").
STATUSES = ("completed", "converged", "diverged", "pruned")
ALWAYS_FINAL_STATUSES = ("diverged", "pruned")

# summary.json keys; eval_cost_<set> keys (one per generalisation set) come beside eval_cost.
SUMMARY_NUMBER_KEYS = (
    "steps",
    "sequences",
    "loss",
    "cost",
    "eval_cost",
    "converged_at",
    "converged_time_s",
    "lr_dropped_at",  # sequences seen when train.lr_drop_below was met (None: not met, or not set)
    "wall_time_s",
    "seq_per_s",
    "objective",
    "continued_from",
    "optimal_cost",  # tasks with a known optimum (N-grams)
)
SUMMARY_KEYS = ("status", "final", "format_version", *SUMMARY_NUMBER_KEYS)
EVAL_COST_PREFIX = "eval_cost"
REQUIRED_METRICS = ("step", "sequences", "loss", "cost")
TIMING_KEYS = ("wall_time_s", "seq_per_s", "converged_time_s")  # differ between identical runs

# Config keys (and everything under them) that never change a run's results: they may differ
# when a run resumes, and a results table never groups by them.
NON_RESULT_KEYS = (
    "logger",
    "train.progress",
    "train.threads",
    # It zeroes only values below 1.2e-38: every run checked gave the same numbers bit for bit.
    "train.flush_denormal",
    "train.checkpoint_interval",
    "train.max_memory_gb",
    "train.snapshot_interval",
)
# Config keys that may grow when a finished run is continued.
EXTENDABLE_KEYS = ("train.steps",)


def is_result_key(key: str) -> bool:
    """Whether a flat config key can change a run's results (see NON_RESULT_KEYS)."""
    return not any(key == k or key.startswith(f"{k}.") for k in NON_RESULT_KEYS)


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def summary_problem(summary: object) -> str | None:
    """Why a parsed summary.json cannot be used, or None when it follows the format."""
    if not isinstance(summary, dict):
        return "not a JSON object"
    if summary.get("status") not in STATUSES:
        return f"status {summary.get('status')!r}, expected one of {', '.join(STATUSES)}"
    for key, value in summary.items():
        if (key in SUMMARY_NUMBER_KEYS or key.startswith(EVAL_COST_PREFIX)) and not (value is None or is_number(value)):
            return f"{key} is {value!r}, not a number"
    return None


def read_summary(run_dir: Path) -> dict:
    """summary.json of run_dir, checked; FileNotFoundError when absent, ValueError saying why when damaged."""
    path = Path(run_dir) / SUMMARY_FILE
    text = path.read_text()
    try:
        summary = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError("empty file" if not text else f"not JSON ({error})") from None
    problem = summary_problem(summary)
    if problem:
        raise ValueError(problem)
    return summary


def is_final(summary: dict) -> bool:
    """True when more train.steps cannot continue the run (it converged and stopped, diverged or was pruned)."""
    return bool(summary.get("final", summary["status"] != "completed"))


def flatten(config: dict, prefix: str = "") -> dict:
    """{'model.memory.n': 128, ...}: nested mappings as dotted keys; other values as they are."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def config_differences(stored: dict, current: dict, defaults: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """'key: stored X, now Y' for each result-changing key that differs between two configs.

    A key absent from the stored config counts as its default (from `defaults`, flat), so
    adding a config key later does not lock folders written before it existed.
    """
    stored, current = flatten(stored), flatten(current)
    diffs = []
    for key in sorted(set(stored) | set(current)):
        if key in ignore or not is_result_key(key):
            continue
        old = stored.get(key, defaults.get(key, "<absent>"))
        new = current.get(key, "<absent>")
        if not _same(old, new):
            diffs.append(f"{key}: stored {old!r}, now {new!r}")
    return diffs


def _same(a: object, b: object) -> bool:
    if isinstance(a, bool) != isinstance(b, bool) and isinstance(a, bool | str) and isinstance(b, bool | str):
        return (
            str(a).lower() == str(b).lower()
        )  # train.compile: true/false in older run folders, the string "true"/"false" in the schema
    if is_number(a) and is_number(b):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b


def provenance() -> dict:
    """Where and with what a run segment was made: format version, git commit, library versions."""
    versions = {}
    for package in ("torch", "hydra-core", "optuna", "omegaconf", "hydra-optuna-sweeper"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    commit = _git(["rev-parse", "HEAD"])
    return {
        "format_version": FORMAT_VERSION,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": commit,
        "git_dirty": None if commit is None else bool(_git(["status", "--porcelain", "--untracked-files=no"])),
        "versions": versions,
    }


def _git(args: list[str]) -> str | None:
    """Output of a git command in the project's checkout, or None outside one (an installed copy)."""
    try:
        out = subprocess.run(
            ["git", *args], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()
