"""Real training through run.py and train(): files written, learning, divergence."""

import csv
import json
import math

import pytest
import torch
from conftest import compose_config, run_py

from ntm.config import validate
from ntm.train import DIVERGED_OBJECTIVE, MAX_SKIPPED_STEPS, train


@pytest.mark.slow
def test_run_py_writes_the_run_folder(tmp_path, tiny):
    run_dir = tmp_path / "run"
    result = run_py(
        "task=copy", "model.num_heads=2", "train.steps=20", "train.batch_size=2", "train.report_interval=5",
        "train.eval_interval=10", "train.checkpoint_interval=10", *tiny, f"hydra.run.dir={run_dir}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (run_dir / ".hydra" / "config.yaml").exists() and (run_dir / ".hydra" / "overrides.yaml").exists()
    summary = json.loads((run_dir / "summary.json").read_text())
    for key in ("status", "steps", "sequences", "loss", "cost", "eval_cost", "converged_at", "wall_time_s", "seq_per_s"):
        assert key in summary
    assert summary["status"] in ("completed", "converged")
    assert (summary["steps"], summary["sequences"]) == (20, 40)
    assert math.isfinite(summary["objective"]) and "eval_cost_len8" in summary
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows] == [5, 10, 15, 20]
    assert {"step", "sequences", "loss", "cost", "seq_per_s", "eval_cost", "eval_cost_len8"} <= set(rows[0])
    assert rows[1]["eval_cost"] != "" and rows[0]["eval_cost"] == ""
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)
    assert ckpt["step"] == 20 and {"model", "optimizer", "data_rng", "torch_rng", "config"} <= set(ckpt)


@pytest.mark.slow
def test_short_copy_run_learns(tmp_path, tiny):
    config = validate(compose_config([
        *tiny, "optimizer=adam", "optimizer.lr=3e-3", "train.steps=300", "train.batch_size=16",
        "train.report_interval=50", "train.eval_interval=0", "train.checkpoint_interval=0",
    ]))  # fmt: skip
    train(config, tmp_path)
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    first, last = float(rows[0]["loss"]), float(rows[-1]["loss"])
    assert first > 0.6 and last < 0.8 * first, (first, last)
    assert float(rows[-1]["cost"]) < float(rows[0]["cost"])


def test_same_seed_same_numbers(tmp_path, tiny):
    overrides = [*tiny, "train.steps=10", "train.batch_size=2", "train.report_interval=5", "train.checkpoint_interval=0"]
    a = train(validate(compose_config(overrides)), tmp_path / "a")
    b = train(validate(compose_config(overrides)), tmp_path / "b")
    c = train(validate(compose_config([*overrides, "seed=2"])), tmp_path / "c")
    assert (a["loss"], a["eval_cost"]) == (b["loss"], b["eval_cost"])
    assert a["loss"] != c["loss"]

    def curve(run):  # everything but the timing column
        rows = csv.DictReader((tmp_path / run / "metrics.csv").open())
        return [{k: v for k, v in row.items() if k != "seq_per_s"} for row in rows]

    assert curve("a") == curve("b")


def test_divergence_stops_with_a_finite_objective(tmp_path, tiny):
    config = validate(compose_config([
        *tiny, "optimizer=adam", "optimizer.lr=1e30", "train.grad_clip=none", "model.controller_clip=0",
        "train.steps=50", "train.batch_size=2", "train.report_interval=5", "train.checkpoint_interval=5",
    ]))  # fmt: skip
    summary = train(config, tmp_path)
    assert summary["status"] == "diverged"
    assert summary["objective"] == DIVERGED_OBJECTIVE and summary["steps"] < 50
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "diverged"


def test_a_step_with_an_overflowing_gradient_is_skipped_and_ten_in_a_row_diverge(tmp_path, tiny, monkeypatch):
    # The loss is finite but the gradient's norm overflows (as NTMs' sometimes do): no update,
    # training goes on; MAX_SKIPPED_STEPS such steps in a row are divergence.
    real_norm = torch.nn.utils.get_total_norm
    calls = []

    def overflowing_at(steps):
        def norm(*args, **kwargs):
            calls.append(1)
            return torch.tensor(float("inf")) if len(calls) in steps else real_norm(*args, **kwargs)

        return norm

    overrides = [*tiny, "train.steps=30", "train.report_interval=5", "train.compile=false"]
    monkeypatch.setattr(torch.nn.utils, "get_total_norm", overflowing_at({3, 4}))
    summary = train(validate(compose_config(overrides)), tmp_path / "skips")
    assert summary["status"] != "diverged" and summary["steps"] == 30
    calls.clear()
    monkeypatch.setattr(torch.nn.utils, "get_total_norm", overflowing_at(set(range(5, 100))))
    summary = train(validate(compose_config(overrides)), tmp_path / "overflows")
    assert summary["status"] == "diverged" and summary["steps"] == 4 + MAX_SKIPPED_STEPS - 1


def test_a_skipped_step_is_logged_in_its_run_folder_s_lines(tmp_path, tiny, monkeypatch, caplog):
    real_norm = torch.nn.utils.get_total_norm
    calls = []

    def norm(*args, **kwargs):
        calls.append(1)
        return torch.tensor(float("inf")) if len(calls) == 2 else real_norm(*args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "get_total_norm", norm)
    with caplog.at_level("WARNING", logger="ntm.train"):
        train(validate(compose_config([*tiny, "train.steps=4", "train.compile=false"])), tmp_path)
    (record,) = [r for r in caplog.records if "no update made" in r.getMessage()]
    assert record.getMessage().startswith("Step 2: loss ") and record.run_dir == str(tmp_path)
