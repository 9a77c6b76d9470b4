"""Train one NTM per composed config; returns the objective to Hydra sweepers.

python run.py task=copy model.num_heads=2
python run.py -m sweep=seeds_memory
python run.py -m seed=1,2,3 hydra/launcher=ensemble   # the seeds trained as one ensemble

hydra/launcher=ensemble (hydra_plugins/ntm_ensemble/launcher.py) trains groups of jobs without
calling main: it makes each job from the same parts (validate, trial_reporter, hydra_record).
"""

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from ntm.config import validate
from ntm.errors import reported
from ntm.hydra_glue import hydra_errors_reported, hydra_record, register_configs
from ntm.pruning import trial_reporter
from ntm.train import train

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    hydra_config = HydraConfig.get()
    in_sweep = hydra_config.mode == RunMode.MULTIRUN
    # Written into .hydra/ once the run folder's checks pass (hydra.output_subdir is null).
    hydra_files = hydra_record(hydra_config)
    # A sweep job's error becomes a failed trial and the sweep goes on; a sweep job waits for
    # another process training in its folder, then returns that run's result.
    with reported(reraise=in_sweep):
        config = validate(cfg)
        reporter = trial_reporter(hydra_config) if in_sweep else None
        return train(config, hydra_config.runtime.output_dir, hydra_files, wait=in_sweep, reporter=reporter)["objective"]


if __name__ == "__main__":
    with hydra_errors_reported():
        main()
