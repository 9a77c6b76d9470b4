"""Hydra callbacks: check a run before Hydra writes anything into its folder; keep sweeps going."""

import fcntl
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from ntm.checks import ConfigError
from ntm.config import Config, validate
from ntm.train import CheckpointMismatch, load_checkpoint


def _validate(config: DictConfig) -> Config:
    task_config = config.copy()
    with open_dict(task_config):
        del task_config["hydra"]
    try:
        return validate(task_config)
    except ConfigError as error:
        _fail(error)


def _fail(error: Exception) -> None:
    # One clear line instead of a traceback; no run file has been written yet.
    print(f"Error: {error}", file=sys.stderr)
    sys.exit(2)


def prepare_sqlite_storage(storage) -> None:
    """Create an SQLite study file's folder and tables once, under a file lock.

    Two sweeps started together on a new file would otherwise both create its tables, and one
    of them fail. Other storages (PostgreSQL, MySQL) are left to Optuna.
    """
    if not isinstance(storage, str) or not storage.startswith("sqlite:///"):
        return
    import optuna

    path = Path(storage.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        optuna.storages.RDBStorage(storage)


def tolerate_grid_stop() -> None:
    """Keep a grid sweep going when a trial fails.

    hydra-optuna-sweeper 1.3.0 reports trials to Optuna outside Study.optimize. When a reported
    trial completes the grid, optuna 2.10's GridSampler.after_trial calls Study.stop(), which
    raises there. The sweeper ignores that error for successful trials but not for failed ones,
    so one crashed job in the last batch aborts the whole sweep. Ignore it for failed ones too.
    """
    import optuna

    original = optuna.samplers.GridSampler.after_trial
    if getattr(original, "tolerates_stop", False):
        return

    def after_trial(self, study, trial, state, values):
        try:
            original(self, study, trial, state, values)
        except RuntimeError as error:
            if "Study.stop" not in str(error):
                raise

    after_trial.tolerates_stop = True
    optuna.samplers.GridSampler.after_trial = after_trial


class ValidateConfig(Callback):
    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        checked = _validate(config)
        try:
            load_checkpoint(checked, Path(config.hydra.run.dir))
        except CheckpointMismatch as error:
            _fail(error)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        # The sweep's own parameters are checked per job in run.py; this catches the base config.
        _validate(config)
        prepare_sqlite_storage(OmegaConf.select(config, "hydra.sweeper.storage"))
        tolerate_grid_stop()
