"""Where else a run's numbers go while it trains (conf/logger/): metrics.csv is always written and
stays the source of truth; a logger mirrors it for the tools researchers watch runs in.

    python run.py logger=tensorboard        # events in RUN_DIR/tensorboard/
    tensorboard --logdir multirun/NAME      # every run of a sweep, HParams view included
    python run.py -m sweep=hpo logger=mlflow   # one MLflow run per job, in ./mlruns.db
    mlflow ui --backend-store-uri sqlite:///mlruns.db
    python run.py 'logger=[tensorboard,mlflow]'

A logger gets every metrics.csv row at its x (sequences seen), a flush at each checkpoint, and
the run's hyperparameters with its final numbers at the end. A resumed run logs each x once:
TensorBoard purges what the killed run logged after the checkpoint it resumes from; MLflow,
which cannot forget a point, skips the x it already holds (a resumed run computes the same
values again).
"""

import fcntl
import importlib.util
import time
from pathlib import Path

from ntm import run_format as fmt
from ntm.checks import ConfigError
from ntm.files import write_text

# Each logger's optional extra: `pip install -e ".[NAME]"`.
PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow"}
MLFLOW_DEFAULT_DB = "mlruns.db"  # in the directory the command runs in, as MLflow's own ./mlruns


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


class MLflowLogger:
    """One MLflow run per run folder (its id in RUN_DIR/mlflow_run_id), under an experiment named
    for the sweep (the run folder's parent folder) unless logger.mlflow.experiment says: params
    the flattened config, metrics at their x, summary.json and metrics.csv as artifacts, the
    summary's status as the tag `status`."""

    def __init__(self, settings, run_dir: Path, resumed_at: int | None):
        from mlflow.tracking import MlflowClient

        run_dir = Path(run_dir).resolve()
        uri = settings.tracking_uri or f"sqlite:///{Path.cwd().resolve() / MLFLOW_DEFAULT_DB}"
        self.client = MlflowClient(tracking_uri=uri)
        name = settings.experiment or run_dir.parent.name
        lock = sqlite_lock(uri)
        # Artifacts beside a SQLite store (MLflow's default, ./mlruns, depends on the directory).
        artifacts = None if lock.path is None else (lock.path.parent / "mlruns" / name).as_uri()
        with lock:  # a new SQLite store creates its tables; two jobs must not race
            experiment = self.client.get_experiment_by_name(name)
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name, artifacts)
        id_file = run_dir / fmt.MLFLOW_RUN_FILE
        self.logged_up_to = -1  # the largest x this MLflow run already holds
        if id_file.exists():
            self.run_id = id_file.read_text().strip()
            held = [m.step for m in self.client.get_metric_history(self.run_id, "loss")]
            self.logged_up_to = max(held, default=-1)
            self.params_logged = True
        else:
            self.run_id = self.client.create_run(experiment_id, run_name=run_dir.name).info.run_id
            write_text(id_file, self.run_id)
            self.params_logged = False
        self.run_dir = run_dir

    def log_row(self, row: dict) -> None:
        from mlflow.entities import Metric

        x = row["sequences"]
        if x <= self.logged_up_to:
            return
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, x) for k, v in row.items() if k not in ("step", "sequences") and v is not None]
        self.client.log_batch(self.run_id, metrics=metrics)

    def flush(self) -> None:
        pass  # every call above has written to the store

    def log_params(self, config: dict) -> None:
        from mlflow.entities import Param

        params = [Param(k, str(v)) for k, v in fmt.flatten(config).items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params a call
            self.client.log_batch(self.run_id, params=params[start : start + 100])
        self.params_logged = True

    def finish(self, config: dict, summary: dict) -> None:
        if not self.params_logged:
            self.log_params(config)
        self.client.set_tag(self.run_id, "status", summary["status"])
        for name in (fmt.SUMMARY_FILE, fmt.METRICS_FILE):
            self.client.log_artifact(self.run_id, str(self.run_dir / name))
        self.client.set_terminated(self.run_id, "FINISHED")

    def close(self) -> None:
        pass


class sqlite_lock:
    """An exclusive flock beside a SQLite tracking store (no-op for other stores)."""

    def __init__(self, uri: str):
        self.path = Path(uri.removeprefix("sqlite:///") + ".lock") if uri.startswith("sqlite:///") else None

    def __enter__(self):
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = self.path.open("a")
            fcntl.flock(self.file, fcntl.LOCK_EX)

    def __exit__(self, *exc):
        if self.path is not None:
            self.file.close()


def open_loggers(logger_config, run_dir: Path, resumed_at: int | None) -> list:
    """The loggers the config asks for, open in run_dir; resumed_at: the checkpoint's sequences."""
    loggers = []
    if logger_config.tensorboard is not None:
        loggers.append(TensorBoardLogger(run_dir, resumed_at))
    if logger_config.mlflow is not None:
        loggers.append(MLflowLogger(logger_config.mlflow, run_dir, resumed_at))
    return loggers
