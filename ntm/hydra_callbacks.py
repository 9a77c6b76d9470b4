"""Hydra callbacks (conf/config.yaml, hydra.callbacks), one job each."""

import fcntl
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


class CheckBeforeWriting(Callback):
    """Refuse a bad config with one line before Hydra creates any folder.

    Each sweep job's own parameters are checked again by run.py when the job starts.
    """

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        with reported():
            _check(config)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        with reported():
            _check(config)


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


class KeepGridSweepsGoing(Callback):
    """Let a grid sweep go on when a trial of its last batch fails (see ntm.optuna_grid)."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        if str(OmegaConf.select(config, "hydra.sweeper.sampler._target_", default="")).endswith("GridSampler"):
            from ntm.optuna_grid import tolerate_grid_stop

            tolerate_grid_stop()
