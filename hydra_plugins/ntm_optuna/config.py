"""The sweeper's config schema and its pruner options, registered in Hydra's ConfigStore."""

from dataclasses import dataclass, field
from typing import Any

import hydra_plugins.hydra_optuna_sweeper.config  # noqa: F401  (registers the hydra/sweeper/sampler options)
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class MedianPrunerConfig:
    """Stop a trial whose cost is worse than the median of earlier trials at the same progress."""

    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 2  # trials that run to the end before any is pruned
    # Sequences a trial trains before it may be pruned: NTMs sit on a plateau before they learn.
    n_warmup_steps: int = 3200
    interval_steps: int = 1
    n_min_trials: int = 1


@dataclass
class SuccessiveHalvingPrunerConfig:
    """Asynchronous successive halving: at min_resource * reduction_factor**k sequences, keep a
    trial only if it is among the best 1/reduction_factor of the trials that got there."""

    _target_: str = "optuna.pruners.SuccessiveHalvingPruner"
    min_resource: Any = 2000  # sequences seen before the first comparison ("auto": Optuna's guess)
    reduction_factor: int = 3
    min_early_stopping_rate: int = 0


@dataclass
class HyperbandPrunerConfig:
    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1
    max_resource: Any = "auto"
    reduction_factor: int = 3


@dataclass
class NTMOptunaSweeperConfig:
    _target_: str = "hydra_plugins.ntm_optuna.sweeper.NTMOptunaSweeper"
    # _self_ first: the chosen sampler and pruner options fill the fields below.
    # The median pruner by default: successive halving pruned the best trial (benchmarks/pruning.py).
    defaults: list[Any] = field(default_factory=lambda: ["_self_", {"sampler": "tpe"}, {"pruner": "median"}])
    sampler: Any = MISSING  # hydra/sweeper/sampler: tpe, random, grid, ... (hydra-optuna-sweeper's options)
    pruner: Any = None  # hydra/sweeper/pruner: median, successive_halving, hyperband; null: no pruning
    direction: str = "minimize"
    storage: Any = None
    study_name: str | None = None
    n_trials: int | None = 20  # the study's total: COMPLETE and PRUNED trials count; null: the grid's size
    n_jobs: int | None = 2  # trials launched at a time; null: all of n_trials in one batch
    max_failure_rate: float = 0.0  # failed trials per batch above this rate stop the sweep
    # Seconds between heartbeats of running trials; a trial without one for twice as long was
    # left by a killed sweep and is asked again.
    heartbeat_interval: int = 30
    params: dict[str, str] | None = None
    # Seeds each trial trains on, one job per seed (e.g. [1,2]; hydra/launcher=ensemble trains
    # them as one ensemble); the trial scores as its worst seed. null: one job, the config's seed.
    seeds: list[int] | None = None


cs = ConfigStore.instance()
cs.store(group="hydra/sweeper", name="ntm_optuna", node=NTMOptunaSweeperConfig, provider="ntm_optuna")
for name, node in (
    ("median", MedianPrunerConfig),
    ("successive_halving", SuccessiveHalvingPrunerConfig),
    ("hyperband", HyperbandPrunerConfig),
):
    cs.store(group="hydra/sweeper/pruner", name=name, node=node, provider="ntm_optuna")
