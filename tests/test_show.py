"""python -m ntm.show draws the figures of a run folder: from its checkpoint and from the snapshots training kept."""

import subprocess
import sys

import pytest
import torch
from conftest import ROOT, TINY, compose_config
from PIL import Image

from ntm import run_format as fmt
from ntm import snapshots
from ntm.config import validate
from ntm.model import NTM
from ntm.show import MAX_PROBE_STEPS, main, show
from ntm.tasks import make_task
from ntm.tasks.copy import CopyConfig, CopyTask
from ntm.tasks.ngram import NGramConfig
from ntm.train import train

SHORT = [*TINY, "train.steps=12", "train.batch_size=2", "train.report_interval=4", "train.eval_interval=4"]


@pytest.fixture(scope="module")
def copy_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("copy") / "run"
    train(validate(compose_config(SHORT)), run_dir)
    return run_dir


def test_show_writes_the_three_figures(copy_run, tmp_path):
    written = show(copy_run, tmp_path)
    assert sorted(written) == ["cost_by_length.png", "sequence.png", "training.gif"]
    for name in ("sequence.png", "cost_by_length.png"):
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 200
    with Image.open(tmp_path / "training.gif") as gif:
        assert gif.format == "GIF" and gif.n_frames == 3  # snapshots at steps 4, 8, 12


def test_snapshots_keep_the_probes_and_cost_per_length_at_every_evaluation(copy_run):
    recorded = snapshots.load(copy_run)
    assert [record["step"] for record in recorded["records"]] == [4, 8, 12]
    assert sorted(recorded["probes"]) == ["len5", "len8"]  # max_len and the generalisation length of TINY
    inputs, targets = recorded["probes"]["len8"]
    assert inputs.shape == (9, 9) and targets.shape == (8, 8)
    for record in recorded["records"]:
        assert record["outputs"]["len8"].dtype == torch.float16 and record["outputs"]["len8"].shape == (8, 8)
        assert sorted(record["costs"]["length"]) == [1, 2, 3, 4, 5]


@pytest.mark.slow
def test_a_probe_of_another_length_and_the_command_line(copy_run, tmp_path):
    result = subprocess.run([sys.executable, "-m", "ntm.show", str(copy_run), "--length", "8", "--out", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "copy len8:" in result.stdout and "error bits per sequence" in result.stdout
    assert "cost per length at step 12: 1: " in result.stdout
    assert (tmp_path / "training.gif").exists()
    bad = subprocess.run([sys.executable, "-m", "ntm.show", str(copy_run), "--repeats", "3"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.strip() == "Error: task copy draws its sequences with --length, not --repeats"


@pytest.mark.parametrize(
    "length, message",
    [
        (0, "Error: --length 0 is not allowed: must be >= 1"),
        (-3, "Error: --length -3 is not allowed: must be >= 1"),
        (1_000_000,
         f"Error: --length 1000000 makes a sequence of 2,000,001 time steps; figures draw at most {MAX_PROBE_STEPS:,}"),
    ],
)  # fmt: skip
def test_a_length_too_small_or_too_long_to_draw_is_refused_in_one_line(copy_run, tmp_path, capsys, length, message):
    with pytest.raises(SystemExit) as exit:
        main([str(copy_run), "--length", str(length), "--out", str(tmp_path / "figures")])
    assert exit.value.code == 2
    assert capsys.readouterr().err.strip() == message
    assert not (tmp_path / "figures").exists()


def test_a_run_without_snapshots_still_gets_its_sequence(tmp_path):
    run_dir = tmp_path / "run"
    train(validate(compose_config([*SHORT, "train.snapshot_interval=0"])), run_dir)
    assert not (run_dir / fmt.SNAPSHOTS_FILE).exists()
    written = show(run_dir, tmp_path / "figures", length=7)
    assert "sequence.png" in written and "training.gif" not in written
    assert "cost_by_length.png" in written  # from metrics.csv's generalisation columns


def test_repeat_copy_figures_have_length_and_repeat_axes(tmp_path):
    run_dir = tmp_path / "run"
    overrides = [o for o in SHORT if not o.startswith("task.")]
    train(validate(compose_config(["task=repeat_copy", "task.max_len=3", "task.max_repeats=3", "task.eval_lengths=[4]",
                                   "task.eval_repeats=[4]", "task.eval_batches=2", *overrides])), run_dir)  # fmt: skip
    recorded = snapshots.load(run_dir)
    assert sorted(recorded["probes"]) == ["len3_reps3", "len3_reps4", "len4_reps3"]
    assert sorted(recorded["records"][-1]["costs"]) == ["length", "repeats"]
    written = show(run_dir, tmp_path / "figures", length=3, repeats=4)
    assert sorted(written) == ["cost_by_length.png", "sequence.png", "training.gif"]


def test_recorded_weightings_sum_to_one_over_memory_rows():
    task = CopyTask(CopyConfig(max_len=5))
    model = NTM(task.input_size, task.output_size, memory_n=16, memory_m=8, controller_size=16, head_order="rrw")
    inputs, targets = task.sample(3, torch.Generator().manual_seed(0))
    with torch.no_grad():
        with model.recording() as states:
            logits = task.predict(model, inputs, targets)
        torch.testing.assert_close(logits, task.predict(model, inputs, targets))
    weights = torch.stack([state.weights for state in states])
    assert weights.shape == (inputs.shape[0] + targets.shape[0], 3, 3, 16)
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
    assert states[-1].memory.shape == (3, 16, 8)


def test_ngram_figures_follow_the_task_alignment_and_draw_the_optimal_estimator(tmp_path):
    run_dir = tmp_path / "run"
    overrides = [o for o in SHORT if not o.startswith("task.")]
    train(validate(compose_config(["task=ngram", "task.seq_len=12", "task.eval_batches=2", *overrides])), run_dir)
    written = show(run_dir, tmp_path / "figures")
    assert {"sequence.png", "predictions.png"} <= set(written)
    with Image.open(written["predictions.png"]) as image:
        assert image.format == "PNG" and image.size[0] > 300


def test_the_ngram_reference_is_the_optimal_estimator_whose_cost_the_task_reports():
    task = make_task(NGramConfig(seq_len=50))
    inputs, targets = task.sample(4, torch.Generator().manual_seed(3))
    p_one = task.reference_probabilities(inputs, targets).double()
    bits = torch.where(targets == 1, p_one, 1 - p_one).log2().neg().sum(dim=(0, 2))
    torch.testing.assert_close(bits, task.optimal_cost(targets.squeeze(-1).long()))
    assert make_task(CopyConfig()).reference_probabilities(inputs, targets) is None


@pytest.mark.parametrize(
    "task, axis, values",
    [
        (["task=associative_recall", "task.max_items=4", "task.eval_items=[6]"], "items", [2, 3, 4, 6]),
        (["task=priority_sort", "task.num_inputs=6", "task.num_outputs=4", "task.eval_inputs=[8]"], "inputs", [4, 5, 6, 7, 8]),
    ],
)
def test_new_tasks_draw_their_sequence_training_and_cost_by_size(tmp_path, task, axis, values):
    run_dir = tmp_path / "run"
    overrides = [o for o in SHORT if not o.startswith("task.")]
    train(validate(compose_config([*task, "task.eval_batches=2", *overrides])), run_dir)
    written = show(run_dir, tmp_path / "figures")
    sorting = ["sorting.png"] if axis == "inputs" else []  # priority sort: writes against priority, the read order
    assert sorted(written) == sorted(["cost_by_length.png", "sequence.png", "training.gif", *sorting])
    assert all(path.read_bytes()[:4] == b"\x89PNG" for name, path in written.items() if name.endswith(".png"))
    recorded = snapshots.load(run_dir)
    assert [list(record["costs"][axis]) for record in recorded["records"]] == [values] * 3


def test_snapshots_of_a_run_at_the_seed_settings_fit_the_size_budget(tmp_path):
    """50,000 steps with an evaluation every 500 keep 100 snapshots: under 25 MB besides checkpoints."""
    run_dir = tmp_path / "run"
    steps = 3
    config = validate(compose_config(["model.controller_size=16", f"train.steps={steps}", "train.eval_interval=1",
                                      "train.report_interval=1", "train.progress=false", "task.eval_batches=1"]))  # fmt: skip
    train(config, run_dir)
    size = (run_dir / fmt.SNAPSHOTS_FILE).stat().st_size
    per_snapshot = size / steps  # an upper bound: the fixed probe inputs are counted in it too
    metrics_per_row = (run_dir / fmt.METRICS_FILE).stat().st_size / steps
    assert 101 * (per_snapshot + metrics_per_row) < 25e6
