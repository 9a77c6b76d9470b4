"""A sweep rerun while its first invocation still runs waits for the jobs in flight instead of training them twice."""

import json
import subprocess
import sys
import time

import pytest
from conftest import ROOT, TINY

from ntm import run_format as fmt

ARGS = [
    "-m", "sweep=seeds_memory", "seed=choice(1,2)", "model.memory.n=choice(16)",
    *TINY[1:], "train.steps=300", "train.batch_size=2", "train.report_interval=50", "train.eval_interval=100",
]  # fmt: skip


@pytest.mark.slow
def test_a_rerun_during_the_sweep_trains_no_job_twice(tmp_path):
    sweep_dir = tmp_path / "sweep"

    def start():
        return subprocess.Popen([sys.executable, str(ROOT / "run.py"), *ARGS, f"hydra.sweep.dir={sweep_dir}"], cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip

    first = start()
    deadline = time.time() + 240
    while len(list(sweep_dir.glob(f"*/{fmt.CHECKPOINT_DIR}/last.pt"))) < 2:
        assert first.poll() is None and time.time() < deadline, "the first sweep ended before the rerun started"
        time.sleep(0.05)
    second = start()
    for process in (first, second):
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]
    jobs = sorted(path.parent for path in sweep_dir.glob(f"*/{fmt.SUMMARY_FILE}"))
    assert len(jobs) == 2
    for job in jobs:
        starts = json.loads((job / fmt.PROVENANCE_FILE).read_text())["starts"]
        assert len(starts) == 1, f"{job.name} was trained {len(starts)} times"
        assert json.loads((job / fmt.SUMMARY_FILE).read_text())["steps"] == 300
