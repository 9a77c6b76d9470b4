"""Hydra callbacks (conf/config.yaml, hydra.callbacks), one job each."""

import fcntl
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from ntm.config import validate
from ntm.errors import ConfigError, reported


def _check(config: DictConfig) -> None:
    """Validate the task config (everything but hydra.*) and the one Hydra setting run.py relies on."""
    task_config = config.copy()
    with open_dict(task_config):
        del task_config["hydra"]
    validate(task_config)
    if config.hydra.output_subdir is not None:
        raise ConfigError(
            f"hydra.output_subdir={config.hydra.output_subdir!r} is not allowed: must be null "
            "(run.py writes .hydra/ itself, once the run folder's checks pass)"
        )


def check_sweep_params(config: DictConfig) -> None:
    """Refuse a swept key that the composed config does not have, e.g. sweep=hpo's
    model.memory.m with model=lstm: else every job of the sweep fails on its own."""
    choices = config.hydra.runtime.choices
    missing = object()
    for key in OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}:
        name = key.lstrip("+~")
        if name not in choices and OmegaConf.select(config, name, default=missing) is missing:
            chosen = ", ".join(f"{group}={choices[group]}" for group in ("task", "model") if group in choices)
            raise ConfigError(f"hydra.sweeper.params.{key} is not allowed: {name} is not a key of the composed config ({chosen})")


# Presets kept for one more version under an old name: name -> what to use instead.
DEPRECATED_PRESETS = {
    "seed": "preset=pytorch_ntm, the same settings ('seed' reads as the random seed)",
    "repeat_copy_fast": "preset=repeat_copy, which solves repeat copy on every seed tried in a tenth of the sequences",
}


def warn_deprecated(config: DictConfig) -> None:
    """One line on stderr when the composed config uses a deprecated preset."""
    preset = config.hydra.runtime.choices.get("preset")
    if preset in DEPRECATED_PRESETS:
        instead = DEPRECATED_PRESETS[preset]
        print(f"Deprecated: preset={preset} will be removed in the next version; use {instead}.", file=sys.stderr)


class CheckBeforeWriting(Callback):
    """Refuse a bad config with one line before Hydra creates any folder.

    Each sweep job's own parameters are checked again by run.py when the job starts.
    """

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        warn_deprecated(config)
        with reported():
            _check(config)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        warn_deprecated(config)
        with reported():
            _check(config)
            check_sweep_params(config)


class PrepareSQLiteStudy(Callback):
    """Create an Optuna SQLite study file's folder and tables once, under a file lock.

    Two sweeps started together on a new file would otherwise both create its tables, and one
    of them fail. Other storages (PostgreSQL, MySQL) are left to Optuna.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        storage = OmegaConf.select(config, "hydra.sweeper.storage")
        if not isinstance(storage, str) or not storage.startswith("sqlite:///"):
            return
        import optuna

        path = Path(storage.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            optuna.storages.RDBStorage(storage)
