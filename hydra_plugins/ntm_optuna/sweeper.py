"""The plugin Hydra finds (`hydra/sweeper=ntm_optuna`). Hydra imports every plugin module when it
starts, a single `python run.py` included, and optuna takes seconds to import: the sweep
itself lives in _impl.py, a module Hydra's scan skips, imported when a sweep starts (as
hydra-optuna-sweeper does)."""

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class NTMOptunaSweeper(Sweeper):
    def __init__(self, **config: Any) -> None:
        from hydra_plugins.ntm_optuna._impl import OptunaSweep

        self.optuna_sweep = OptunaSweep(**config)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.optuna_sweep.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        self.optuna_sweep.sweep(arguments)
