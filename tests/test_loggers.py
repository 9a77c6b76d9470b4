"""logger=tensorboard: what a run logs, read back through TensorBoard's own reader."""

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
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.hparams import plugin_data_pb2  # noqa: E402

SHORT = [*TINY, "logger=tensorboard", "train.steps=60", "train.report_interval=5", "train.eval_interval=10",
         "train.checkpoint_interval=20", "train.stop_at_convergence=false"]  # fmt: skip


def logged(run_dir) -> EventAccumulator:
    events = EventAccumulator(str(run_dir / fmt.TENSORBOARD_DIR))
    events.Reload()
    return events


def metrics(run_dir) -> list[dict]:
    return list(csv.DictReader((run_dir / fmt.METRICS_FILE).open()))


def test_every_metrics_row_is_logged_at_its_sequences_with_the_hparams(tmp_path):
    run_dir = tmp_path / "run"
    summary = train(validate(compose_config([*SHORT, "train.batch_size=2"])), run_dir)
    events, rows = logged(run_dir), metrics(run_dir)
    assert [(e.step, pytest.approx(e.value)) for e in events.Scalars("loss")] == [
        (int(r["sequences"]), float(r["loss"])) for r in rows
    ]
    evaluated = [r for r in rows if r.get("eval_cost")]
    assert [e.step for e in events.Scalars("eval_cost")] == [int(r["sequences"]) for r in evaluated]
    # The HParams view: the flattened config and the final numbers.
    start = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info.hparams
    assert hparams["train.batch_size"].number_value == 2 and hparams["task.name"].string_value == "copy"
    assert events.Scalars("final/eval_cost")[0].value == pytest.approx(summary["eval_cost"])


def test_a_resumed_run_logs_each_x_once(tmp_path):
    run_dir = tmp_path / "run"
    train(validate(compose_config(SHORT)), run_dir)
    # A crash after step 60's rows were logged but before its checkpoint: the run resumes at 40.
    checkpoints = run_dir / fmt.CHECKPOINT_DIR
    shutil.copy(checkpoints / "previous.pt", checkpoints / "last.pt")
    (run_dir / fmt.SUMMARY_FILE).unlink()
    train(validate(compose_config(SHORT)), run_dir)
    steps = [e.step for e in logged(run_dir).Scalars("loss")]
    assert steps == sorted(set(steps)) == [int(r["sequences"]) for r in metrics(run_dir)]
    assert steps[-1] == 60


def test_a_missing_logger_package_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(ntm.loggers.PACKAGES, "tensorboard", "no_such_package_for_this_test")
    with pytest.raises(ConfigError, match=r'logger=tensorboard needs .*pip install -e "\.\[tensorboard\]"'):
        validate(compose_config(["logger=tensorboard"]))


def test_a_logger_never_locks_a_run_folder(tmp_path):
    """Loggers change no result: a run resumes or continues with or without them."""
    run_dir = tmp_path / "run"
    plain = [o for o in SHORT if o != "logger=tensorboard"]
    train(validate(compose_config([*plain, "train.steps=20"])), run_dir)
    summary = train(validate(compose_config([*SHORT, "train.steps=40"])), run_dir)
    assert summary["steps"] == 40 and summary["continued_from"] is not None
