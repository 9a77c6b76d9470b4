"""logger=tensorboard and logger=mlflow: what a run logs, read back through each tool's own reader."""

import csv
import shutil

import pytest
from conftest import TINY, compose_config

import ntm.loggers
from ntm import run_format as fmt
from ntm.checks import ConfigError
from ntm.config import validate
from ntm.train import train

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.hparams import plugin_data_pb2  # noqa: E402

SHORT = [*TINY, "train.steps=60", "train.report_interval=5", "train.eval_interval=10",
         "train.checkpoint_interval=20", "train.stop_at_convergence=false"]  # fmt: skip


def both_loggers(tmp_path) -> list[str]:
    """Both loggers at once (the group's list form); MLflow's store in tmp_path."""
    return ["logger=[tensorboard,mlflow]", f"logger.mlflow.tracking_uri=sqlite:///{tmp_path}/mlruns.db"]


def tensorboard_events(run_dir) -> EventAccumulator:
    events = EventAccumulator(str(run_dir / fmt.TENSORBOARD_DIR), size_guidance={"images": 0})  # 0: keep every image
    events.Reload()
    return events


def tensorboard_points(run_dir, key: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in tensorboard_events(run_dir).Scalars(key)]


def mlflow_run(tmp_path, run_dir):
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlruns.db")
    return client, client.get_run((run_dir / fmt.MLFLOW_RUN_FILE).read_text())


def mlflow_points(tmp_path, run_dir, key: str) -> list[tuple[int, float]]:
    client, run = mlflow_run(tmp_path, run_dir)
    return sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))


def metrics(run_dir) -> list[dict]:
    return list(csv.DictReader((run_dir / fmt.METRICS_FILE).open()))


@pytest.mark.slow  # MLflow creates its SQLite store: seconds
def test_every_metrics_row_is_logged_at_its_sequences_with_the_config(tmp_path):
    run_dir = tmp_path / "sweep" / "run"
    summary = train(validate(compose_config([*SHORT, *both_loggers(tmp_path), "train.batch_size=2"])), run_dir)
    rows = metrics(run_dir)
    expected = [(int(r["sequences"]), pytest.approx(float(r["loss"]), rel=1e-6)) for r in rows]
    evaluated = [int(r["sequences"]) for r in rows if r.get("eval_cost")]
    for points in (lambda key: tensorboard_points(run_dir, key), lambda key: mlflow_points(tmp_path, run_dir, key)):
        assert points("loss") == expected
        assert [x for x, _ in points("eval_cost")] == evaluated
    # TensorBoard's HParams view: the flattened config and the final numbers.
    start = tensorboard_events(run_dir).PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info.hparams
    assert hparams["train.batch_size"].number_value == 2 and hparams["task.name"].string_value == "copy"
    assert not [key for key in hparams if key.startswith("logger.")], "the loggers' settings are no hyperparameters"
    assert tensorboard_points(run_dir, "final/eval_cost")[0][1] == pytest.approx(summary["eval_cost"])
    # MLflow: one run under the sweep's experiment, the config as params, status, artifacts.
    client, run = mlflow_run(tmp_path, run_dir)
    assert client.get_experiment(run.info.experiment_id).name == "sweep"
    assert run.data.params["train.batch_size"] == "2" and run.data.params["task.name"] == "copy"
    assert not [key for key in run.data.params if key.startswith("logger.")]
    assert run.data.tags["status"] == summary["status"] and run.info.status == "FINISHED"
    assert {fmt.SUMMARY_FILE, fmt.METRICS_FILE} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    # Each snapshot's probe sequence as an image, at its x, in both tools.
    snapshots = [int(r["sequences"]) for r in rows if r.get("eval_cost")]
    images = tensorboard_events(run_dir).Images("sequence/len5")
    assert [image.step for image in images] == snapshots
    assert images[0].height == 2 * 8 + 1 and images[0].width == 5  # target and output (8 channels), one probe of length 5
    logged = client.list_artifacts(run.info.run_id, "images")
    assert len([a for a in logged if a.path.endswith(".png") and "sequence_len5" in a.path]) == len(snapshots)


@pytest.mark.slow
def test_a_resumed_run_logs_each_x_once(tmp_path):
    run_dir = tmp_path / "run"
    config = validate(compose_config([*SHORT, *both_loggers(tmp_path)]))
    train(config, run_dir)
    # A crash after step 60's rows were logged but before its checkpoint: the run resumes at 40.
    checkpoints = run_dir / fmt.CHECKPOINT_DIR
    shutil.copy(checkpoints / "previous.pt", checkpoints / "last.pt")
    (run_dir / fmt.SUMMARY_FILE).unlink()
    train(config, run_dir)
    expected = [int(r["sequences"]) for r in metrics(run_dir)]
    assert expected[-1] == 60
    assert [x for x, _ in tensorboard_points(run_dir, "loss")] == expected
    assert [x for x, _ in mlflow_points(tmp_path, run_dir, "loss")] == expected
    snapshots = [int(r["sequences"]) for r in metrics(run_dir) if r.get("eval_cost")]
    assert [image.step for image in tensorboard_events(run_dir).Images("sequence/len5")] == snapshots
    client, run = mlflow_run(tmp_path, run_dir)
    logged = [a.path for a in client.list_artifacts(run.info.run_id, "images") if "sequence_len5" in a.path]
    assert len([path for path in logged if path.endswith(".png")]) == len(snapshots)


def test_a_missing_logger_package_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(ntm.loggers.PACKAGES, "mlflow", "no_such_package_for_this_test")
    with pytest.raises(ConfigError, match=r'logger=mlflow needs .*pip install -e "\.\[mlflow\]"'):
        validate(compose_config(["logger=mlflow"]))


def test_a_logger_never_locks_a_run_folder(tmp_path):
    """Loggers change no result: a run resumes or continues with or without them."""
    run_dir = tmp_path / "run"
    train(validate(compose_config([*SHORT, "train.steps=20"])), run_dir)
    summary = train(validate(compose_config([*SHORT, "logger=tensorboard", "train.steps=40"])), run_dir)
    assert summary["steps"] == 40 and summary["continued_from"] is not None
