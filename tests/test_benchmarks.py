"""benchmarks/speed.py --seed-repo: pytorch-ntm's train_batch is timed through its own interface.

The real pytorch-ntm cannot be fetched here (no network at test time), so a stand-in with the same
interface (train.TASKS, init_seed, train_batch, attrs params with the old `convert=` keyword) is
timed instead: it proves the bridge and the plumbing, not pytorch-ntm's speed.
"""

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("attr")

ROOT = Path(__file__).resolve().parents[1]

STAND_IN_TRAIN = """
import random
import time
import torch
from attr import attrs, attrib
import argcomplete  # pytorch-ntm imports it for shell completion

CALLS = []

@attrs
class Params:
    batch_size = attrib(default=1, convert=int)
    num_batches = attrib(default=10, convert=int)

@attrs
class Training:
    params = attrib()
    def __attrs_post_init__(self):
        self.net = self.criterion = self.optimizer = None
        self.dataloader = ((i, torch.zeros(3, self.params.batch_size, 2), None)
                           for i in range(self.params.num_batches))

TASKS = {"copy": (Training, Params), "repeat-copy": (Training, Params)}

def init_seed(seed):
    random.seed(seed)

def train_batch(net, criterion, optimizer, x, y):
    time.sleep(0.002 * x.size(1))  # 2 ms per sequence
    return 0.0, 0.0
"""


def load_speed():
    spec = importlib.util.spec_from_file_location("speed", ROOT / "benchmarks" / "speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_seed_timer_runs_the_seeds_train_batch(tmp_path):
    (tmp_path / "train.py").write_text(STAND_IN_TRAIN)
    speed = load_speed()
    ms, threads = speed.time_seed(tmp_path, "repeat_copy", batch_size=2, steps=4, repeats=3, threads=1)
    assert 1.9 < ms < 20  # the stand-in sleeps 2 ms per sequence
    assert threads == 1
    _, default_threads = speed.time_seed(tmp_path, "copy", batch_size=1, steps=4, repeats=1, threads=0)
    assert default_threads >= 1


@pytest.mark.slow
def test_a_failing_seed_is_reported_with_its_error(tmp_path):
    (tmp_path / "train.py").write_text("raise ImportError('no module named nowhere')\n")
    with pytest.raises(SystemExit, match="no module named nowhere"):
        load_speed().time_seed(tmp_path, "copy", batch_size=1, steps=1, repeats=1, threads=1)


@pytest.mark.slow
def test_seed_repo_without_train_py_is_refused(tmp_path):
    import subprocess

    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--seed-repo", str(tmp_path)],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 2
    assert "no train.py there" in done.stderr


@pytest.mark.slow
def test_the_ensemble_benchmark_times_the_sweeps_it_is_asked_for():
    import subprocess

    cmd = [sys.executable, str(ROOT / "benchmarks" / "ensemble.py"), "--no-throughput", "--sweeps", "2", "--steps", "30",
           "task.max_len=4", "model.memory.n=16", "train.eval_interval=10",
           "--launchers", "joblib", "ensemble_fused"]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith(("| joblib", "| ensemble"))]
    assert [row.split(" | ")[0] for row in rows] == ["| joblib (2 at a time)", "| ensemble, fused (members one by one)"]
    assert rows[0].split(" | ")[2] == "1.00x" and rows[1].split(" | ")[3].endswith("/2")


@pytest.mark.slow
def test_time_to_solve_runs_preset_fast_and_the_defaults_side_by_side():
    from conftest import TINY

    # A threshold no evaluation misses: both runs converge at their first evaluation, 10 steps in.
    quick = [*TINY, "train.steps=20", "train.eval_interval=10", "train.compile=false", "task.converge_threshold=1000"]
    lines = load_speed().solve_table(1, quick)
    assert lines[0] == ("| seed | preset=fast: sequences | preset=fast: seconds | plain defaults: sequences "
                        "| plain defaults: seconds |")  # fmt: skip
    row = lines[2].split(" | ")
    assert row[0] == "| 1" and row[1] == "160" and row[3] == "10"  # preset=fast trains batches of 16, the defaults of 1
    assert any(line.startswith("median seconds to solve, plain defaults / preset=fast: ") for line in lines)


def test_speed_table_leaves_the_fused_column_empty_for_a_model_fused_cannot_run(monkeypatch):
    """A two-layer controller (no fused path) gets a row with "-" for fused, not a crash. The
    compiled paths run eager here: the table's plumbing is under test, not the compiler."""
    from types import SimpleNamespace

    from conftest import TINY

    speed = load_speed()
    eager = {path: speed.PATHS["eager"] for path in speed.PATHS if path != "fused"}
    monkeypatch.setattr(speed, "PATHS", {**eager, "fused": speed.PATHS["fused"]})
    args = SimpleNamespace(tasks=["copy"], batch_sizes=[1], sequences=32, repeats=1, seed_repo=None,
                           overrides=[*TINY, "model.controller_layers=2"])  # fmt: skip
    row = speed.speed_table(args)[2].split(" | ")
    assert row[0] == "| copy" and row[6] == "-" and row[10] == "-"
    assert row[7].endswith("x") and row[12] == "compiled"
