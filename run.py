"""Train one NTM per composed config; returns the objective to Hydra sweepers.

python run.py task=copy model.num_heads=2
python run.py -m sweep=seeds_memory
"""

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from ntm.checks import ConfigError
from ntm.config import register_configs, validate
from ntm.train import CheckpointMismatch, Interrupted, train

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    hydra_config = HydraConfig.get()
    try:
        config = validate(cfg)
        return train(config, hydra_config.runtime.output_dir)["objective"]
    except (ConfigError, CheckpointMismatch, Interrupted) as error:
        if hydra_config.mode == RunMode.MULTIRUN:
            raise  # the sweeper records a failed trial and goes on
        interrupted = isinstance(error, Interrupted)
        print(f"{'Interrupted' if interrupted else 'Error'}: {error}", file=sys.stderr)
        sys.exit(130 if interrupted else 2)


if __name__ == "__main__":
    main()
