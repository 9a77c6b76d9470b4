"""Sweeps through a real SLURM scheduler (hydra/launcher=slurm): a one-node cluster from Debian's
packages (tests/slurm_cluster.py), jobs submitted with sbatch, states read back with sacct."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, TINY, run_py, study_trials
from slurm_cluster import ClusterUnavailable, SlurmCluster
from test_pruning import FAST, SEARCH
from test_resume import results

import analysis
from ntm import run_format as fmt

# One cluster for the module, on one pytest worker.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slurm")]
PARTITION = "debug"
ON_SLURM = ["hydra/launcher=slurm", f"hydra.launcher.partition={PARTITION}", "hydra.launcher.mem_gb=2"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    try:
        cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"), partition=PARTITION).start()
    except ClusterUnavailable as reason:
        pytest.skip(f"no test SLURM cluster: {reason}")
    yield cluster
    cluster.stop()


@pytest.fixture
def on_cluster(cluster, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", str(cluster.conf))  # sbatch, squeue and sacct of run.py's jobs
    return cluster


def job_states(cluster: SlurmCluster) -> dict[str, str]:
    """JobID -> State of every job and step SLURM's accounting holds."""
    out = cluster.answers(["sacct", "-a", "-X", "-n", "-o", "JobID,State", "--parsable2"])
    return dict(line.split("|", 1) for line in out.splitlines())


def new_jobs(cluster: SlurmCluster, before: set[str]) -> dict[str, str]:
    return {job: state for job, state in job_states(cluster).items() if job not in before}


def job_training_in(run_dir: Path) -> str:
    """The SLURM job whose process holds run_dir's lock (the lock file names the process; the
    test cluster's one node is this machine)."""
    pid = (run_dir / fmt.LOCK_FILE).read_text().split()[1]
    environ = dict(v.split("=", 1) for v in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in v)
    return environ["SLURM_JOB_ID"]


def test_a_pruning_sweep_runs_as_slurm_jobs(tmp_path, on_cluster):
    before = set(job_states(on_cluster))
    sweep_dir = tmp_path / "hpo"
    result = run_py("-m", *SEARCH, *FAST, *ON_SLURM, "hydra.sweeper.n_trials=4", f"hydra.sweep.dir={sweep_dir}",
                    cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    # Job states come from SLURM's accounting, as on a site: no poll fell back to guessing.
    assert "Bypassing sacct error" not in result.stdout + result.stderr
    # A job's result file comes before SLURM records the job's end: wait for accounting.
    deadline = time.monotonic() + 60
    while set((jobs := new_jobs(on_cluster, before)).values()) != {"COMPLETED"} and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(jobs) == 4 and set(jobs.values()) == {"COMPLETED"}, jobs
    trials = study_trials(sweep_dir, "hpo")
    states = [t.state.name for t in trials]  # jobs on the nodes report to the study, and are pruned
    assert len(trials) == 4 and "PRUNED" in states and set(states) <= {"COMPLETE", "PRUNED"}
    runs = analysis.load_runs(sweep_dir)
    assert len(runs) == 4 and runs["status"].notna().all()
    for job in jobs:  # each job's own log, written on the node
        assert list((sweep_dir / ".submitit" / job).glob("*_log.out"))


# Long enough for a requeue to land mid-training, short enough for the suite.
# Eager steps, so that a job is still training when it is requeued (fused, it would often be done).
REQUEUED = [*TINY, "seed=3", "train.steps=1000", "train.batch_size=2", "train.report_interval=50",
            "train.eval_interval=250", "train.checkpoint_interval=50", "train.stop_at_convergence=false",
            "train.compile=false"]  # fmt: skip


def test_a_requeued_job_checkpoints_when_signalled_and_resumes_exactly(tmp_path, on_cluster):
    reference = tmp_path / "reference"  # the same run, uninterrupted, trained meanwhile
    uninterrupted = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *REQUEUED, f"hydra.run.dir={reference}"],
                                     cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    sweep_dir = tmp_path / "sweep"
    sweep = subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), "-m", *REQUEUED, *ON_SLURM, f"hydra.sweep.dir={sweep_dir}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    run_dir = sweep_dir / "0"
    deadline = time.monotonic() + 120
    while not (run_dir / "checkpoints" / "last.pt").exists():
        assert sweep.poll() is None and time.monotonic() < deadline, "the job never reached its first checkpoint"
        time.sleep(0.05)
    job = on_cluster.answers(["squeue", "-h", "-o", "%i"])
    subprocess.run(["scontrol", "requeue", job], check=True, env=on_cluster.env)  # SIGTERM, then back in the queue
    # A requeued job waits about two minutes before it may start again; an administrator's nudge:
    deadline = time.monotonic() + 60
    while "BeginTime" not in on_cluster.answers(["squeue", "-h", "-j", job, "-o", "%r"]):
        assert time.monotonic() < deadline, "the job did not go back to the queue"
        time.sleep(0.2)
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True, env=on_cluster.env)
    stdout, stderr = sweep.communicate(timeout=300)
    assert sweep.returncode == 0, stderr[-3000:]
    assert uninterrupted.wait(timeout=300) == 0, uninterrupted.stderr.read()[-2000:]

    log = (run_dir / "run.log").read_text()
    assert "Stopped by SIGTERM" in log and "Resumed from" in log
    assert results(run_dir) == results(reference)


def test_a_sweep_killed_while_its_jobs_run_is_continued_and_trains_no_job_twice(tmp_path, on_cluster):
    """Killed, the sweep leaves its jobs running on the cluster and their trials without a
    heartbeat. The same command, run again, fails those trials and asks their points again; the
    old jobs train on, unreported, and the new ones (queued behind them for the node's cores, or
    waiting for their run folders) return their results."""
    sweep_dir = tmp_path / "grid"
    # The old jobs must still train when the rerun fails their trials: 900 steps ended first once,
    # on a machine busy with other training runs; compiled steps (fused ones end far sooner).
    args = ["-m", "sweep=seeds_memory", "seed=choice(1,2)", "model.memory.n=choice(16)", *FAST, "train.steps=2400",
            "train.compile=true",
            "train.eval_interval=20", "train.report_interval=20", "hydra.sweeper.heartbeat_interval=1", *ON_SLURM,
            f"hydra.sweep.dir={sweep_dir}"]  # fmt: skip
    sweep = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args], cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while len(list(sweep_dir.glob("*/metrics.csv"))) < 2:
        assert sweep.poll() is None and time.monotonic() < deadline, "the jobs never trained together"
        time.sleep(0.1)
    sweep.kill()  # the sweep process alone: its jobs are SLURM's
    sweep.wait()
    assert len(on_cluster.answers(["squeue", "-h", "-o", "%i"]).split()) == 2, "the jobs ended with their sweep"
    continued = run_py(*args, cwd=tmp_path)
    assert continued.returncode == 0, continued.stderr[-3000:]
    trials = study_trials(sweep_dir, "seeds_memory")
    assert sorted(t.state.name for t in trials) == ["COMPLETE", "COMPLETE", "FAIL", "FAIL"]
    runs = analysis.load_runs(sweep_dir)
    assert len(runs) == 2 and set(runs["status"]) <= {"completed", "converged"}
    objectives = dict(zip(runs["seed"], runs["objective"]))
    assert {t.params["seed"]: t.value for t in trials if t.state.name == "COMPLETE"} == objectives
    for run_dir in runs["run_dir"]:  # each trained once, from start to end: as an uninterrupted sweep
        assert len(json.loads((Path(run_dir) / fmt.PROVENANCE_FILE).read_text())["starts"]) == 1
        log = (Path(run_dir) / "run.log").read_text()
        assert "Resumed from" not in log and "was ended by its sweep; training goes on" in log


def test_jobs_slurm_cancels_or_kills_for_their_memory_are_failed_trials_and_the_sweep_goes_on(tmp_path, on_cluster):
    """Three grid points, one SLURM job each: the first (memory.n=16) is cancelled while it trains; the
    third has a memory of 500,000 rows, about 3 GB, above the jobs' 1 GB, and SLURM kills it (the
    test cluster enforces --mem, as sites do). Each is a failed trial with SLURM's reason in the
    sweep's log; the second completes."""
    sweep_dir = tmp_path / "grid"
    sweep = subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), "-m", "sweep=seeds_memory", "seed=choice(1)",
         "model.memory.n=choice(16,17,500000)", *FAST, "train.steps=600", "train.compile=false", *ON_SLURM,
         "hydra.launcher.mem_gb=1", f"hydra.sweep.dir={sweep_dir}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not (trained := list(sweep_dir.glob("*memory.n=16,*/metrics.csv"))):
        assert sweep.poll() is None and time.monotonic() < deadline, "the first job never trained"
        time.sleep(0.2)
    first = job_training_in(trained[0].parent)
    subprocess.run(["scancel", first], check=True, env=on_cluster.env)
    stdout, stderr = sweep.communicate(timeout=300)
    assert sweep.returncode == 0, stderr[-3000:]
    # SLURM's reasons, in the sweep's log (without cgroups SLURM 22.05 ends a job over its memory
    # FAILED, not OUT_OF_MEMORY)
    assert "CANCELLED" in stdout + stderr and "Exceeded job memory limit" in stdout + stderr
    trials = study_trials(sweep_dir, "seeds_memory")
    assert {t.params["model.memory.n"]: t.state.name for t in trials} == {16: "FAIL", 17: "COMPLETE", 500000: "FAIL"}


def test_ensembles_run_as_one_slurm_job_per_group_and_a_requeued_group_resumes_exactly(tmp_path, on_cluster):
    """Seeds 1-3 in groups of at most 2: two SLURM jobs. Both are requeued mid-training; every
    member ends as the same seeds trained as local ensembles, uninterrupted."""
    seeds = [*(o for o in REQUEUED if not o.startswith(("seed=", "train.steps="))), "train.steps=400", "seed=1,2,3",
             "hydra.launcher.max_members=2"]  # fmt: skip
    reference = subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), "-m", *seeds, "hydra/launcher=ensemble", f"hydra.sweep.dir={tmp_path / 'local'}"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    before = set(job_states(on_cluster))
    sweep_dir = tmp_path / "slurm"
    on_slurm = ["hydra/launcher=ensemble_slurm", f"hydra.launcher.slurm.partition={PARTITION}", "hydra.launcher.slurm.mem_gb=2"]
    sweep = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "-m", *seeds, *on_slurm, f"hydra.sweep.dir={sweep_dir}"],
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not all((sweep_dir / str(job) / "checkpoints" / "last.pt").exists() for job in range(3)):
        assert sweep.poll() is None and time.monotonic() < deadline, "the members never reached their first checkpoints"
        time.sleep(0.05)
    jobs = on_cluster.answers(["squeue", "-h", "-o", "%i"]).split()
    assert len(jobs) == 2, "one job per group"
    for job in jobs:
        subprocess.run(["scontrol", "requeue", job], check=True, env=on_cluster.env)
    deadline = time.monotonic() + 60
    while on_cluster.answers(["squeue", "-h", "-o", "%r"]).split().count("BeginTime") < 2:
        assert time.monotonic() < deadline, "the jobs did not go back to the queue"
        time.sleep(0.2)
    for job in jobs:
        subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True, env=on_cluster.env)
    stdout, stderr = sweep.communicate(timeout=300)
    assert sweep.returncode == 0, stderr[-3000:]
    assert reference.wait(timeout=300) == 0, reference.stderr.read()[-2000:]
    assert sorted(new_jobs(on_cluster, before)) == sorted(jobs)
    for job in range(3):
        log = (sweep_dir / str(job) / "run.log").read_text()
        assert "Stopped by SIGTERM" in log and "Resumed from" in log
        assert results(sweep_dir / str(job)) == results(tmp_path / "local" / str(job))
