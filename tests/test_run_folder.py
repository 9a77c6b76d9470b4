"""A run folder is reused only as its contract says: continued, returned, resumed or refused, never silently wrong."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT, TINY, compose_config, run_py

from ntm import run_folder
from ntm import run_format as fmt
from ntm.config import validate
from ntm.errors import RunFolderError
from ntm.train import DIVERGED_OBJECTIVE, Job, train, train_in

BASE = [*TINY, "train.batch_size=2", "train.report_interval=5", "train.eval_interval=10", "train.checkpoint_interval=5"]


def config(*overrides):
    return validate(compose_config([*BASE, *overrides]))


def results(run_dir: Path) -> tuple[str, dict]:
    """metrics.csv without its timing column, and summary.json without timing and continuation keys."""
    lines = (run_dir / fmt.METRICS_FILE).read_text().splitlines()
    header = lines[0].split(",")
    keep = [i for i, name in enumerate(header) if name != "seq_per_s"]
    metrics = "\n".join(",".join(line.split(",")[i] for i in keep) for line in lines)
    summary = json.loads((run_dir / fmt.SUMMARY_FILE).read_text())
    return metrics, {k: v for k, v in summary.items() if k not in (*fmt.TIMING_KEYS, "continued_from")}


def test_a_run_stopped_at_its_budget_continues_with_more_steps_exactly(tmp_path):
    first = train(config("train.steps=20"), tmp_path / "run")
    assert (first["status"], first["steps"], first["final"]) == ("completed", 20, False)
    extended = train(config("train.steps=40"), tmp_path / "run")
    assert (extended["steps"], extended["continued_from"]) == (40, 20)
    train(config("train.steps=40"), tmp_path / "straight")
    assert results(tmp_path / "run") == results(tmp_path / "straight")
    stored = yaml.safe_load((tmp_path / "run" / fmt.CONFIG_FILE).read_text())
    assert stored["train"]["steps"] == 40, "the record describes the run now in the folder"


def test_the_same_config_twice_returns_the_stored_result(tmp_path):
    run_dir = tmp_path / "run"
    first = train(config("train.steps=10"), run_dir)
    before = (run_dir / fmt.SUMMARY_FILE).read_text()
    assert train(config("train.steps=10"), run_dir) == first
    # Keys that do not change results may differ.
    not_results = ["train.threads=2", "train.flush_denormal=false", "train.checkpoint_interval=0", "train.progress=true"]
    again = train(config("train.steps=10", *not_results), run_dir)
    assert again == first
    assert (run_dir / fmt.SUMMARY_FILE).read_text() == before


def test_fewer_steps_than_a_finished_run_are_refused(tmp_path):
    train(config("train.steps=20"), tmp_path)
    with pytest.raises(RunFolderError, match=r"finished after 20 steps; train.steps=10 cannot shorten it"):
        train(config("train.steps=10"), tmp_path)


@pytest.mark.parametrize("checkpoint_interval", [5, 0])
def test_another_config_is_refused_before_anything_is_rewritten(tmp_path, checkpoint_interval):
    train(config("train.steps=10", f"train.checkpoint_interval={checkpoint_interval}"), tmp_path)
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file() and path.name != fmt.LOCK_FILE}
    for change in ("model.memory.n=8", "train.steps=20 optimizer.lr=0.01", "seed=2", "task.max_len=4"):
        with pytest.raises(RunFolderError, match="written by a different config") as error:
            train(config(f"train.checkpoint_interval={checkpoint_interval}", *change.split()), tmp_path)
        assert change.split()[-1].split("=")[0] in str(error.value)
    after = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file() and path.name != fmt.LOCK_FILE}
    assert after == before


def test_a_key_missing_from_an_older_folder_counts_as_its_default(tmp_path):
    train(config("train.steps=10"), tmp_path)
    path = tmp_path / fmt.CONFIG_FILE
    stored = yaml.safe_load(path.read_text())
    del stored["model"]["shift_range"]  # as if the key had been added to the schema after this run
    path.write_text(yaml.safe_dump(stored))
    assert train(config("train.steps=10"), tmp_path)["steps"] == 10
    with pytest.raises(RunFolderError, match="model.shift_range: stored 1, now 2"):
        train(config("train.steps=10", "model.shift_range=2"), tmp_path)


def test_a_folder_from_when_train_compile_was_a_bool_is_reused(tmp_path):
    finished = train(config("train.steps=10", "train.compile=false"), tmp_path)
    path = tmp_path / fmt.CONFIG_FILE
    stored = yaml.safe_load(path.read_text())
    stored["train"]["compile"] = False  # as written before train.compile took auto
    path.write_text(yaml.safe_dump(stored))
    assert train(config("train.steps=10", "train.compile=false"), tmp_path) == finished
    with pytest.raises(RunFolderError, match="train.compile: stored False, now 'true'"):
        train(config("train.steps=10", "train.compile=true"), tmp_path)


def test_a_converged_run_that_stopped_there_is_final(tmp_path):
    converged = train(config("train.steps=20", "task.converge_threshold=1e9"), tmp_path)
    assert (converged["status"], converged["steps"], converged["final"]) == ("converged", 10, True)
    assert train(config("train.steps=40", "task.converge_threshold=1e9"), tmp_path) == converged


def test_a_converged_run_that_went_on_to_its_budget_can_continue(tmp_path):
    overrides = ("task.converge_threshold=1e9", "train.stop_at_convergence=false")
    first = train(config("train.steps=20", *overrides), tmp_path)
    assert (first["status"], first["final"], first["converged_at"]) == ("converged", False, 20)
    extended = train(config("train.steps=30", *overrides), tmp_path)
    assert (extended["steps"], extended["converged_at"], extended["continued_from"]) == (30, 20, 20)


def test_a_diverged_run_is_final(tmp_path):
    diverging = ("optimizer=adam", "optimizer.lr=1e30", "train.grad_clip=none", "model.controller_clip=0")
    diverged = train(config("train.steps=20", *diverging), tmp_path)
    assert (diverged["status"], diverged["final"], diverged["objective"]) == ("diverged", True, DIVERGED_OBJECTIVE)
    assert train(config("train.steps=40", *diverging), tmp_path) == diverged


def test_a_run_without_checkpoints_cannot_be_continued(tmp_path):
    train(config("train.steps=10", "train.checkpoint_interval=0"), tmp_path)
    with pytest.raises(RunFolderError, match="no checkpoint of its last step 10"):
        train(config("train.steps=20", "train.checkpoint_interval=0"), tmp_path)


def unfinished_run(tmp_path: Path) -> Path:
    """A 20-step run killed after its last checkpoint: checkpoints at steps 15 and 20, no summary."""
    run_dir = tmp_path / "run"
    train(config("train.steps=20"), run_dir)
    (run_dir / fmt.SUMMARY_FILE).unlink()
    return run_dir


def test_a_damaged_last_checkpoint_resumes_from_the_previous_one(tmp_path, caplog):
    run_dir = unfinished_run(tmp_path)
    last = run_dir / fmt.CHECKPOINT_DIR / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])  # cut short, as by a full disk
    assert torch.load(run_dir / fmt.CHECKPOINT_DIR / "previous.pt", weights_only=False)["step"] == 15
    train(config("train.steps=20"), run_dir)
    assert "previous.pt" in caplog.text and "last.pt" in caplog.text
    train(config("train.steps=20"), tmp_path / "straight")
    assert results(run_dir) == results(tmp_path / "straight")


@pytest.mark.slow
def test_no_loadable_checkpoint_is_one_clear_error_naming_the_files(tmp_path):
    run_dir = unfinished_run(tmp_path)
    for name in fmt.CHECKPOINT_FILES:
        (run_dir / fmt.CHECKPOINT_DIR / name).write_text("not a checkpoint")
    result = run_py(*BASE, "train.steps=20", f"hydra.run.dir={run_dir}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: no checkpoint loads"), result.stderr
    assert "last.pt" in lines[0] and "previous.pt" in lines[0]


def test_a_damaged_summary_resumes_from_the_checkpoint_or_says_so(tmp_path):
    run_dir = tmp_path / "run"
    train(config("train.steps=20"), run_dir)
    expected = results(run_dir)
    (run_dir / fmt.SUMMARY_FILE).write_text('{"status": "compl')  # cut short
    train(config("train.steps=20"), run_dir)
    assert results(run_dir) == expected
    (run_dir / fmt.SUMMARY_FILE).write_text("")
    for name in fmt.CHECKPOINT_FILES:
        (run_dir / fmt.CHECKPOINT_DIR / name).unlink()
    with pytest.raises(RunFolderError, match=r"summary.json is damaged \(empty file\) and no checkpoint"):
        train(config("train.steps=20"), run_dir)


HOLD_LOCK = """
import sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
from ntm.run_folder import locked
with locked(Path({run_dir!r})):
    print("locked", flush=True)
    time.sleep(120)
"""


def hold_lock(run_dir: Path) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK.format(root=str(ROOT), run_dir=str(run_dir))], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "locked"
    return holder


@pytest.mark.slow
def test_a_second_process_on_a_run_folder_is_refused_at_once(tmp_path):
    holder = hold_lock(tmp_path)
    try:
        start = time.monotonic()
        result = run_py(*BASE, "train.steps=10", f"hydra.run.dir={tmp_path}")
        assert time.monotonic() - start < 60
        assert result.returncode == 2
        assert f"{tmp_path} is in use by process {holder.pid}" in result.stderr
        assert not (tmp_path / fmt.SUMMARY_FILE).exists() and not (tmp_path / fmt.CONFIG_DIR).exists()
    finally:
        holder.kill()
        holder.wait()
    # The kernel dropped the killed holder's lock: no stale lock is left behind.
    assert train(config("train.steps=10"), tmp_path)["steps"] == 10


def test_a_sweep_job_waits_for_the_process_in_its_folder_then_returns_its_result(tmp_path):
    job = {}
    same = config("train.steps=10")
    with run_folder.locked(tmp_path):
        waiter = threading.Thread(target=lambda: job.update(train(same, tmp_path, wait=True)))
        waiter.start()
        time.sleep(1)
        assert waiter.is_alive() and not job, "the job must wait while the folder is held"
        # Meanwhile the holder trains the run, as the first sweep's job would.
        stored = train_in([Job(same, tmp_path)], [run_folder.plan(same, tmp_path)])[0]
    waiter.join(timeout=120)
    assert job == stored


def test_the_folder_records_its_provenance(tmp_path):
    summary = train(config("train.steps=5"), tmp_path)
    provenance = json.loads((tmp_path / fmt.PROVENANCE_FILE).read_text())
    assert summary["format_version"] == provenance["format_version"] == fmt.FORMAT_VERSION
    start = provenance["starts"][0]
    assert start["versions"]["torch"] == torch.__version__
    assert start["versions"]["hydra-core"] and start["versions"]["optuna"]
    assert len(start["git_commit"]) == 40  # the tests run in the project's checkout
    train(config("train.steps=10"), tmp_path)
    assert len(json.loads((tmp_path / fmt.PROVENANCE_FILE).read_text())["starts"]) == 2


@pytest.mark.slow
def test_sigkilled_run_leaves_no_stale_lock(tmp_path):
    process = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *BASE, "train.steps=100000", "train.compile=false",
                                f"hydra.run.dir={tmp_path}"],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 120
    while not (tmp_path / fmt.CHECKPOINT_DIR / "last.pt").exists():
        assert process.poll() is None and time.time() < deadline
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    with run_folder.locked(tmp_path):
        pass


def test_a_run_folder_of_version_0_2_continues_exactly_as_a_new_one(tmp_path):
    """0.2.0 wrote no optimizer.centered, task.curriculum, train.lr_half_life or train.lr_min (nor
    train.lr_drop_below and lr_drop_factor, added later), in its config nor its checkpoints: such a
    folder continues, and to the same numbers as a run of today."""
    train(config("train.steps=10"), tmp_path / "old")
    added = {"optimizer": ["centered"], "task": ["curriculum"],
             "train": ["lr_half_life", "lr_min", "lr_drop_below", "lr_drop_factor"]}  # fmt: skip

    def strip(stored: dict) -> None:
        for group, keys in added.items():
            for key in keys:
                del stored[group][key]

    path = tmp_path / "old" / fmt.CONFIG_FILE
    stored = yaml.safe_load(path.read_text())
    strip(stored)
    path.write_text(yaml.safe_dump(stored))
    for name in fmt.CHECKPOINT_FILES:
        checkpoint_path = tmp_path / "old" / fmt.CHECKPOINT_DIR / name
        checkpoint = torch.load(checkpoint_path, weights_only=False)
        strip(checkpoint["config"])
        torch.save(checkpoint, checkpoint_path)
    continued = train(config("train.steps=20"), tmp_path / "old")
    assert (continued["steps"], continued["continued_from"]) == (20, 10)
    train(config("train.steps=20"), tmp_path / "new")
    assert results(tmp_path / "old") == results(tmp_path / "new")
