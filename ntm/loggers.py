"""Where else a run's numbers go while it trains (conf/logger/): metrics.csv is always written and
stays the source of truth; a logger mirrors it for the tools researchers watch runs in.

    python run.py logger=tensorboard        # events in RUN_DIR/tensorboard/
    tensorboard --logdir multirun/NAME      # every run of a sweep, HParams view included

A logger gets every metrics.csv row at its x (sequences seen), a flush at each checkpoint, and
the run's hyperparameters with its final numbers at the end. A resumed run purges what its
killed predecessor logged after the checkpoint it resumes from, so that no x is logged twice.
"""

import importlib.util
from pathlib import Path

from ntm import run_format as fmt
from ntm.checks import ConfigError

# Each logger's optional extra: `pip install -e ".[NAME]"`.
PACKAGES = {"tensorboard": "tensorboard"}


def check_installed(name: str) -> None:
    if importlib.util.find_spec(PACKAGES[name]) is None:
        raise ConfigError(f'logger={name} needs the {PACKAGES[name]} package: pip install -e ".[{name}]"')


class TensorBoardLogger:
    """Scalars and HParams in RUN_DIR/tensorboard/ through torch's SummaryWriter."""

    def __init__(self, run_dir: Path, resumed_at: int | None):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: TensorBoard hides events this file's predecessors wrote at x >= it.
        purge = None if resumed_at is None else resumed_at + 1
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / fmt.TENSORBOARD_DIR), purge_step=purge, flush_secs=30)

    def log_row(self, row: dict) -> None:
        x = row["sequences"]
        for key, value in row.items():
            if key not in ("step", "sequences") and value is not None:
                self.writer.add_scalar(key, value, x)

    def flush(self) -> None:
        self.writer.flush()

    def finish(self, config: dict, summary: dict) -> None:
        params = {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in fmt.flatten(config).items()}
        final = {f"final/{k}": v for k, v in summary.items() if fmt.is_number(v) and k != "format_version"}
        self.writer.add_hparams(params, final, run_name=".")
        self.close()

    def close(self) -> None:
        self.writer.close()


def open_loggers(logger_config, run_dir: Path, resumed_at: int | None) -> list:
    """The loggers the config asks for, open in run_dir; resumed_at: the checkpoint's sequences."""
    loggers = []
    if logger_config.tensorboard is not None:
        loggers.append(TensorBoardLogger(run_dir, resumed_at))
    return loggers
