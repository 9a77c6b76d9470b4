"""Nothing lost: kill a run at any moment, run the same command again, get the same results."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, TINY, run_py

# Eager steps: slow enough to be killed between checkpoints (fused, the run would often end first).
OVERRIDES = [
    *TINY, "train.steps=300", "train.batch_size=2", "train.report_interval=20", "train.eval_interval=100",
    "train.checkpoint_interval=50", "train.stop_at_convergence=false", "train.compile=false",
]  # fmt: skip
TIMING = {"wall_time_s", "seq_per_s", "converged_time_s"}
# Every test here trains in subprocesses, several times over; one worker trains the reference.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("resume")]


def results(run_dir: Path) -> tuple[list[dict], dict]:
    """metrics.csv and summary.json without their timing values, which differ between runs."""
    rows = [{k: v for k, v in row.items() if k != "seq_per_s"} for row in csv.DictReader((run_dir / "metrics.csv").open())]
    summary = {k: v for k, v in json.loads((run_dir / "summary.json").read_text()).items() if k not in TIMING}
    return rows, summary


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    result = run_py(*OVERRIDES, f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    return run_dir


def start_run(run_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), *OVERRIDES, f"hydra.run.dir={run_dir}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def wait_for_checkpoint(run_dir: Path, process: subprocess.Popen) -> None:
    deadline = time.time() + 120
    while not (run_dir / "checkpoints" / "last.pt").exists():
        assert process.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.05)


def test_resume_after_sigkill_is_exact(tmp_path, reference):
    run_dir = tmp_path / "run"
    process = start_run(run_dir)
    wait_for_checkpoint(run_dir, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (run_dir / "summary.json").exists(), "killed too late to test resuming"
    result = run_py(*OVERRIDES, f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    assert "Resumed from" in result.stderr + result.stdout
    assert results(run_dir) == results(reference)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_a_checkpoint_and_says_how_to_resume(tmp_path, reference, sig):
    run_dir = tmp_path / "run"
    process = start_run(run_dir)
    wait_for_checkpoint(run_dir, process)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Run the same command again to resume" in stderr
    result = run_py(*OVERRIDES, f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    assert results(run_dir) == results(reference)


def interrupt_sweep(sweep_dir: Path, *args: str) -> subprocess.CompletedProcess:
    """Start `python run.py -m ARGS` in a session of its own, Ctrl-C it (SIGINT to its process
    group, as a terminal does) once a job has written a checkpoint, and return how it ended."""
    command = [sys.executable, str(ROOT / "run.py"), "-m", *args, f"hydra.sweep.dir={sweep_dir}"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)  # fmt: skip
    deadline = time.time() + 120
    while not list(sweep_dir.glob("*/checkpoints/last.pt")):
        assert process.poll() is None and time.time() < deadline, "the sweep ended before its first checkpoint"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def test_ctrl_c_stops_a_sweep_not_just_its_job(tmp_path, reference):
    """Hydra's basic launcher trains its jobs in the sweep's process: Ctrl-C ends the sweep (the
    second job never starts), and the same command resumes the first job exactly."""
    sweep_dir = tmp_path / "sweep"
    args = ["seed=1,2", *OVERRIDES]
    stopped = interrupt_sweep(sweep_dir, *args)
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    assert "Interrupted: " in stopped.stderr and "Run the same command again to resume" in stopped.stderr
    assert not (sweep_dir / "1").exists(), "the sweep went on to its next job"
    result = run_py("-m", *args, f"hydra.sweep.dir={sweep_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resumed from" in (sweep_dir / "0" / "run.log").read_text()
    assert results(sweep_dir / "0") == results(reference)
    assert (sweep_dir / "1" / "summary.json").exists()


def test_ctrl_c_puts_a_searchs_trial_back_for_the_next_invocation(tmp_path):
    """An Optuna search stopped by Ctrl-C fails the trial it was training and queues its
    parameters again: the same command asks them first and continues that job's run folder."""
    sweep_dir = tmp_path / "sweep"
    args = ["sweep=hpo", "hydra/launcher=basic", "hydra.sweeper.n_trials=1", "hydra.sweeper.n_jobs=1", *OVERRIDES]
    stopped = interrupt_sweep(sweep_dir, *args)
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    import optuna

    storage = f"sqlite:///{sweep_dir}/optuna.db"
    study = optuna.load_study(study_name="hpo", storage=storage)
    assert [t.state.name for t in study.trials] == ["FAIL", "WAITING"]
    asked = study.trials[0].params
    result = run_py("-m", *args, f"hydra.sweep.dir={sweep_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    trials = optuna.load_study(study_name="hpo", storage=storage).trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"] and trials[1].params == asked
    (job,) = [path.parent for path in sweep_dir.glob("*/summary.json")]
    assert "Resumed from" in (job / "run.log").read_text()


KILL_DURING_CHECKPOINT = """
import os, signal, sys
sys.path[:0] = [{root!r}, {tests!r}]
from conftest import compose_config
from ntm.config import validate
from ntm.train import train

real_replace, renames = os.replace, []

def dying_replace(src, dst):
    if str(dst).endswith("last.pt"):
        renames.append(dst)
        if len(renames) == 3:  # the third checkpoint is fully written to its temporary file, not renamed
            os.kill(os.getpid(), signal.SIGKILL)
    real_replace(src, dst)

os.replace = dying_replace
train(validate(compose_config({overrides!r})), {run_dir!r})
"""


def test_kill_between_checkpoint_write_and_rename_leaves_a_resumable_run(tmp_path, reference):
    run_dir = tmp_path / "run"
    script = KILL_DURING_CHECKPOINT.format(root=str(ROOT), tests=str(ROOT / "tests"), overrides=OVERRIDES, run_dir=str(run_dir))
    killed = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (run_dir / "checkpoints" / ".last.pt.tmp").exists() and not (run_dir / "summary.json").exists()
    result = run_py(*OVERRIDES, f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    assert results(run_dir) == results(reference)


def test_finished_run_is_not_trained_again(reference):
    before = (reference / "summary.json").read_text()
    result = run_py(*OVERRIDES, f"hydra.run.dir={reference}")
    assert result.returncode == 0, result.stderr
    assert "already finished" in result.stderr + result.stdout
    assert (reference / "summary.json").read_text() == before


def test_checkpoint_of_another_config_is_refused(reference):
    config_before = (reference / ".hydra" / "config.yaml").read_text()
    checkpoint_before = (reference / "checkpoints" / "last.pt").read_bytes()
    result = run_py(*OVERRIDES, "model.memory.n=32", f"hydra.run.dir={reference}")
    assert result.returncode == 2
    assert "model.memory.n" in result.stderr and "different config" in result.stderr
    assert (reference / ".hydra" / "config.yaml").read_text() == config_before
    assert (reference / "checkpoints" / "last.pt").read_bytes() == checkpoint_before


def test_pool_worker_stops_when_its_sweep_is_killed(tmp_path, reference):
    """`kill -9` on a joblib sweep's process alone (not its process group, as Ctrl-C signals): its
    worker checkpoints and ends instead of training on, and the same command resumes the job."""
    sweep_dir = tmp_path / "sweep"
    command = [sys.executable, str(ROOT / "run.py"), "-m", "hydra/launcher=joblib", *OVERRIDES, f"hydra.sweep.dir={sweep_dir}"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    run_dir, log = sweep_dir / "0", sweep_dir / "0" / "run.log"
    try:
        wait_for_checkpoint(run_dir, process)
        worker = Path("/proc") / (run_dir / ".lock").read_text().split()[1]  # "process PID on HOST (...)"
        process.send_signal(signal.SIGKILL)
        process.wait()
        deadline = time.time() + 60
        while "Stopped by the end of its parent process" not in log.read_text():
            assert not (run_dir / "summary.json").exists(), "the worker trained on after its sweep was killed"
            assert time.time() < deadline, log.read_text()
            time.sleep(0.1)
        while worker.exists() and "Z" not in (worker / "stat").read_text().rsplit(")", 1)[1].split()[0]:
            assert time.time() < deadline, "the worker stays after its run stopped"
            time.sleep(0.1)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # loky's idle worker (it had no job) and resource trackers
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Resumed from" in log.read_text()
    assert results(run_dir) == results(reference)
