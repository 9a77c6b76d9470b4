"""Hydra callback that checks config values before Hydra creates any run folder."""

import sys

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict

from ntm.checks import ConfigError
from ntm.config import validate


def _check(config: DictConfig) -> None:
    task_config = config.copy()
    with open_dict(task_config):
        del task_config["hydra"]
    try:
        validate(task_config)
    except ConfigError as error:
        # One clear line instead of a traceback; nothing has been written yet.
        print(f"Config error: {error}", file=sys.stderr)
        sys.exit(2)


class ValidateConfig(Callback):
    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        _check(config)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        # The sweep's own parameters are checked per job in run.py; this catches the base config.
        _check(config)
