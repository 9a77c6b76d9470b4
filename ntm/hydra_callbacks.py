"""Hydra callbacks: check a run before Hydra writes anything into its folder."""

import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict

from ntm.checks import ConfigError
from ntm.config import Config, validate
from ntm.train import CheckpointMismatch, check_checkpoint


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


class ValidateConfig(Callback):
    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        checked = _validate(config)
        try:
            check_checkpoint(checked, Path(config.hydra.run.dir))
        except CheckpointMismatch as error:
            _fail(error)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        # The sweep's own parameters are checked per job in run.py; this catches the base config.
        _validate(config)
        # An SQLite study file lives in the sweep folder, which must exist before the sweeper opens it.
        Path(config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)
