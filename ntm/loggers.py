"""Where else a run's numbers go while it trains (conf/logger/): metrics.csv is always written and
stays the source of truth; a logger mirrors it for the tools researchers watch runs in.

    python run.py logger=tensorboard        # events in RUN_DIR/tensorboard/
    tensorboard --logdir multirun/NAME      # every run of a sweep, HParams view included
    python run.py -m sweep=hpo logger=mlflow   # one MLflow run per job, in ./mlruns.db
    mlflow ui --backend-store-uri sqlite:///mlruns.db
    python run.py 'logger=[tensorboard,mlflow]'

A logger gets every metrics.csv row at its x (sequences seen), each snapshot's probe sequences
as images (targets above, the model's outputs below: what `python -m ntm.show` draws as
sequence.png), a flush at each checkpoint, and the run's hyperparameters with its final numbers
at the end. A resumed run logs each x once:
TensorBoard purges what the killed run logged after the checkpoint it resumes from; MLflow,
which cannot forget a point, skips the x it already holds (a resumed run computes the same
values again).
"""

import importlib.util
import time
from pathlib import Path

from ntm import run_format as fmt
from ntm.checks import ConfigError
from ntm.config import to_container
from ntm.files import sqlite_file_lock, write_text

# Each logger's optional extra: `pip install -e ".[NAME]"`.
PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow"}
MLFLOW_DEFAULT_DB = "mlruns.db"  # in the directory the command runs in, as MLflow's own ./mlruns


def scalars(row: dict) -> dict:
    """A metrics.csv row's values to log at its x (row["sequences"])."""
    return {k: v for k, v in row.items() if k not in ("step", "sequences") and v is not None}


def snapshot_images(snapshots) -> dict:
    """The latest snapshot's probe sequences as grey images in [0, 1], one per probe: rows the
    target's channels, a grey separator, then the output's channels; columns the output steps."""
    import torch

    record, images = snapshots.records[-1], {}
    for name, (_, targets) in snapshots.probes.items():
        target, output = targets[:, 0].float().T, record["outputs"][name].float().T  # (O, T) each
        images[name] = torch.cat([target, torch.full_like(target[:1], 0.5), output]).clamp(0, 1).numpy()
    return images


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
        for key, value in scalars(row).items():
            self.writer.add_scalar(key, value, row["sequences"])

    def log_snapshot(self, snapshots) -> None:
        x = snapshots.records[-1]["sequences"]
        for name, image in snapshot_images(snapshots).items():
            self.writer.add_image(f"sequence/{name}", image, x, dataformats="HW")

    def flush(self) -> None:
        self.writer.flush()

    def finish(self, config: dict, summary: dict) -> None:
        params = {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in hyperparameters(config).items()}
        final = {f"final/{k}": v for k, v in summary.items() if fmt.is_number(v) and k != "format_version"}
        self.writer.add_hparams(params, final, run_name=".")
        self.close()

    def close(self) -> None:
        self.writer.close()


def hyperparameters(config: dict) -> dict:
    """The flattened config without the loggers' own settings, which change no number."""
    return {key: value for key, value in fmt.flatten(config).items() if not key.startswith("logger.")}


class MLflowLogger:
    """One MLflow run per run folder (its id in RUN_DIR/mlflow_run_id), under an experiment named
    for the sweep (the run folder's parent folder) unless logger.mlflow.experiment says: params
    the flattened config, metrics at their x, summary.json and metrics.csv as artifacts, the
    summary's status as the tag `status`."""

    def __init__(self, settings, config: dict, run_dir: Path):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.run_dir = Path(run_dir).resolve()
        uri = settings.tracking_uri or f"sqlite:///{Path.cwd().resolve() / MLFLOW_DEFAULT_DB}"
        self.client = MlflowClient(tracking_uri=uri)
        name = settings.experiment or self.run_dir.parent.name
        # Artifacts beside a SQLite store (MLflow's default, ./mlruns, depends on the directory).
        store = uri.removeprefix("sqlite:///")
        artifacts = (Path(store).parent / "mlruns" / name).as_uri() if store != uri else None
        with sqlite_file_lock(uri):  # a new SQLite store creates its tables; two jobs must not race
            experiment = self.client.get_experiment_by_name(name)
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name, artifacts)
        id_file = self.run_dir / fmt.MLFLOW_RUN_FILE
        if id_file.exists():  # a resumed or continued run: go on where its MLflow run stands
            self.run_id = id_file.read_text().strip()
            self.logged_up_to = max((m.step for m in self.client.get_metric_history(self.run_id, "loss")), default=-1)
            return
        self.run_id = self.client.create_run(experiment_id, run_name=self.run_dir.name).info.run_id
        self.logged_up_to = -1  # the largest x this MLflow run holds
        params = [Param(k, str(v)) for k, v in hyperparameters(config).items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params a call
            self.client.log_batch(self.run_id, params=params[start : start + 100])
        write_text(id_file, self.run_id)

    def log_row(self, row: dict) -> None:
        from mlflow.entities import Metric

        x = row["sequences"]
        if x <= self.logged_up_to:
            return
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, x) for k, v in scalars(row).items()])

    def log_snapshot(self, snapshots) -> None:
        x = snapshots.records[-1]["sequences"]
        if x <= self.logged_up_to:
            return
        for name, image in snapshot_images(snapshots).items():
            self.client.log_image(self.run_id, image, key=f"sequence_{name}", step=x)

    def flush(self) -> None:
        pass  # every call above has written to the store

    def finish(self, config: dict, summary: dict) -> None:
        self.client.set_tag(self.run_id, "status", summary["status"])
        for name in (fmt.SUMMARY_FILE, fmt.METRICS_FILE):
            self.client.log_artifact(self.run_id, str(self.run_dir / name))
        self.client.set_terminated(self.run_id, "FINISHED")

    def close(self) -> None:
        pass


def open_loggers(config, run_dir: Path, resumed_at: int | None) -> list:
    """The loggers a run's config (ntm.config.Config) asks for, open in run_dir; resumed_at: the
    sequences of the checkpoint it resumes from."""
    loggers = []
    if config.logger.tensorboard is not None:
        loggers.append(TensorBoardLogger(run_dir, resumed_at))
    if config.logger.mlflow is not None:
        loggers.append(MLflowLogger(config.logger.mlflow, to_container(config), run_dir))
    return loggers
