"""The launcher's config schema, registered in Hydra's ConfigStore as hydra/launcher=ensemble."""

from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class EnsembleLauncherConf:
    _target_: str = "hydra_plugins.ntm_ensemble.launcher.EnsembleLauncher"
    # Most jobs trained together in one process; bigger groups are split evenly.
    max_members: int = 16
    # Worker processes training groups at a time (one torch thread each by default: the machine's
    # 2 cores). 1: every group in the sweep's own process, one after another.
    n_jobs: int = 2
    # Jobs with a larger train.batch_size train alone: a batch that size already keeps a core
    # busy with arithmetic, and an ensemble, whose steps last as long as its longest member's
    # sequence, is slower than separate runs there (README, Performance).
    max_batch_size: int = 4
    # null: groups train in local worker processes. The settings of hydra/launcher=slurm
    # (hydra/launcher=ensemble_slurm sets them): each group is one SLURM job of up to max_members
    # runs, submitted through submitit; n_jobs does not apply (SLURM runs as many as it can).
    slurm: Any = None


ConfigStore.instance().store(group="hydra/launcher", name="ensemble", node=EnsembleLauncherConf, provider="ntm_ensemble")
