"""Pruning inside Hydra sweeps (hydra/sweeper=ntm_optuna), on SQLite and on a real PostgreSQL server."""

import json
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import optuna
import pytest
from conftest import TINY, run_py, run_py_here, run_sweep, run_sweeps_together, study_trials

import analysis
from ntm import run_format as fmt
from ntm.hydra_glue import job_dirname
from ntm.pruning import TrialReporter
from ntm.train import DIVERGED_OBJECTIVE

# Tiny jobs that report often.
FAST = [
    *(o for o in TINY if not o.startswith("model.memory.n")),
    "train.steps=40",
    "train.report_interval=5",
    "train.eval_interval=5",
]
# Successive halving from 10 sequences on prunes tiny jobs surely (hpo's median waits 4,800).
SEARCH = [
    "sweep=hpo",
    "hydra/sweeper/pruner=successive_halving",
    "hydra.sweeper.pruner.min_resource=10",
    "train.batch_size=choice(1,2)",
    "model.controller_size=choice(16,32)",
    "optimizer.lr=choice(1e-4,1e-2)",
]
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def sweep(sweep_dir: Path, *args: str, check: bool = True):
    return run_sweep(*SEARCH, *FAST, *args, sweep_dir=sweep_dir, check=check)


@pytest.mark.slow
def test_a_pruning_sweep_prunes_writes_whole_run_folders_and_is_continued_by_the_same_command(tmp_path):
    sweep_dir = tmp_path / "hpo"
    sweep(sweep_dir, "hydra.sweeper.n_trials=6")
    storage = f"sqlite:///{sweep_dir}/optuna.db"
    trials = study_trials(storage, "hpo")
    states = [t.state.name for t in trials]
    assert len(trials) == 6 and "PRUNED" in states and set(states) <= {"COMPLETE", "PRUNED"}
    for trial in trials:  # progress in sequences seen: an evaluation every 5 steps of batch_size sequences
        assert all(step % (5 * trial.params["train.batch_size"]) == 0 for step in trial.intermediate_values)
    runs = analysis.load_runs(sweep_dir)
    # Trials that repeat a parameter set share its job folder (and its result).
    pruned_sets = {tuple(sorted(t.params.items())) for t in trials if t.state.name == "PRUNED"}
    assert (runs["status"] == "pruned").sum() == len(pruned_sets)
    for run_dir in runs[runs["status"] == "pruned"]["run_dir"]:
        run_dir = Path(run_dir)
        summary = json.loads((run_dir / fmt.SUMMARY_FILE).read_text())
        assert summary["final"] and summary["objective"] < DIVERGED_OBJECTIVE and summary["steps"] < 40
        assert (run_dir / fmt.METRICS_FILE).read_text().splitlines()[-1].split(",")[0] == str(summary["steps"])
        assert (run_dir / fmt.CHECKPOINT_DIR / "last.pt").exists()
    pruned = runs[runs["status"] == "pruned"]
    assert set(pruned["trial.state"]) == {"PRUNED"}
    table = analysis.results_table(runs)
    assert table["pruned"].sum() == len(pruned_sets)

    # n_trials is the study's total: the same command again asks for nothing; a larger total
    # asks only for what is missing, and nothing that ran is trained again.
    sweep(sweep_dir, "hydra.sweeper.n_trials=6")
    assert len(study_trials(storage, "hpo")) == 6
    sweep(sweep_dir, "hydra.sweeper.n_trials=8")
    continued = study_trials(storage, "hpo")
    assert len(continued) == 8 and [t.params for t in continued[:6]] == [t.params for t in trials]
    for run_dir in runs["run_dir"]:
        assert len(json.loads((Path(run_dir) / fmt.PROVENANCE_FILE).read_text())["starts"]) == 1
    runs = analysis.load_runs(sweep_dir)
    assert runs["run_dir"].is_unique and len(runs) == len({tuple(sorted(t.params.items())) for t in continued})


@pytest.mark.slow
def test_trials_on_several_seeds_score_and_prune_by_their_worst_seed(tmp_path):
    sweep_dir = tmp_path / "hpo"
    sweep(sweep_dir, "hydra.sweeper.n_trials=6", "hydra.sweeper.seeds=[1,2]", "hydra/launcher=ensemble", "train.steps=20")
    trials = study_trials(sweep_dir, "hpo")
    assert "PRUNED" in {t.state.name for t in trials} and "COMPLETE" in {t.state.name for t in trials}
    runs = analysis.load_runs(sweep_dir)
    logs = "".join((Path(d) / "run.log").read_text() for d in runs["run_dir"])
    assert "Training 2 runs together as one ensemble: seeds [1, 2]." in logs
    for trial in trials:
        mine = runs[runs["trial.number"] == trial.number]
        assert sorted(mine["seed"]) == [1, 2], trial.number
        objectives = dict(zip(mine["seed"].astype(str), mine["objective"]))
        assert trial.user_attrs["seed_values"] == pytest.approx(objectives)
        if trial.state.name == "COMPLETE":
            assert trial.value == pytest.approx(max(objectives.values()))
        else:  # a pruned trial stops both of its seeds
            assert set(mine["status"]) == {"pruned"} and max(mine["steps"]) < 20
        for sequences, value in trial.intermediate_values.items():
            costs = [trial.system_attrs[f"ntm_cost:{sequences}:{seed}"] for seed in (1, 2)]
            assert value == pytest.approx(max(costs))


def test_seeds_whose_jobs_have_not_started_do_not_hold_back_the_others_reports(tmp_path):
    """4 seeds, 2 jobs at a time: seeds 1 and 2 report their worst without waiting for seeds 3
    and 4, which start after them; a seed that has started is waited for."""
    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(study_name="hpo", storage=storage)
    rdb = optuna.storages.RDBStorage(storage)
    trial_id = rdb.get_trial_id_from_study_id_trial_number(rdb.get_study_id_from_name("hpo"), study.ask().number)
    seeds = (1, 2, 3, 4)
    first, second = (TrialReporter(storage, "hpo", trial_id, None, seed, seeds) for seed in (1, 2))
    assert not first.should_stop(100, 5.0) and rdb.get_trial(trial_id).intermediate_values == {}, "seed 2 has started"
    assert not second.should_stop(100, 7.0)
    assert rdb.get_trial(trial_id).intermediate_values == {100: 7.0}
    third = TrialReporter(storage, "hpo", trial_id, None, 3, seeds)
    assert not first.should_stop(200, 4.0) and not second.should_stop(200, 3.0)
    assert 200 not in rdb.get_trial(trial_id).intermediate_values, "seed 3 has started: its cost is waited for"
    third.should_stop(200, 6.0)
    assert rdb.get_trial(trial_id).intermediate_values == {100: 7.0, 200: 6.0}


def test_a_seed_that_starts_after_its_siblings_finished_is_judged_at_its_own_evaluations(tmp_path):
    """Seeds 1 and 2 trained the whole budget, well; seed 3, queued behind them, is bad from its
    first evaluation: the pruner judges the trial as it stood at that evaluation, not at the last
    step seeds 1 and 2 reached. A job that starts after its trial is over trains on, unreported."""
    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(study_name="hpo", storage=storage)
    for _ in range(2):  # finished trials at 1.0 at every step: the median
        done = study.ask()
        for step in (100, 200, 300):
            done.report(1.0, step)
        study.tell(done, 1.0)
    rdb = optuna.storages.RDBStorage(storage)
    trial = study.ask()
    trial_id = rdb.get_trial_id_from_study_id_trial_number(rdb.get_study_id_from_name("hpo"), trial.number)
    pruner, seeds = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0), (1, 2, 3, 4)
    first, second = (TrialReporter(storage, "hpo", trial_id, pruner, seed, seeds) for seed in (1, 2))
    for step in (100, 200, 300):
        assert not first.should_stop(step, 0.5) and not second.should_stop(step, 0.5)
    third = TrialReporter(storage, "hpo", trial_id, pruner, 3, seeds)
    assert third.should_stop(100, 5.0), "seed 3 is above the median at 100"
    assert rdb.get_trial(trial_id).intermediate_values == {100: 5.0, 200: 0.5, 300: 0.5}
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    fourth = TrialReporter(storage, "hpo", trial_id, pruner, 4, seeds)
    assert not fourth.should_stop(100, 5.0) and fourth.ended


def test_trials_on_several_seeds_refuse_a_seed_on_the_command_line(tmp_path):
    result = run_py_here("-m", "sweep=hpo", "hydra.sweeper.seeds=[1,2]", "seed=3", cwd=tmp_path)
    assert result.returncode == 2 and "hydra.sweeper.seeds=[1, 2]" in result.stderr
    assert "leave seed out" in result.stderr and "Traceback" not in result.stderr
    result = run_py_here("-m", "sweep=hpo", "hydra.sweeper.seeds=[1,1]", cwd=tmp_path)
    assert result.returncode == 2 and "hydra.sweeper.seeds" in result.stderr and "distinct" in result.stderr


@pytest.mark.parametrize(
    "override, message",
    [
        ("hydra.sweeper.n_trials=-1", "hydra.sweeper.n_trials=-1 is not allowed: must be >= 1"),
        ("hydra.sweeper.n_jobs=0", "hydra.sweeper.n_jobs=0 is not allowed: must be >= 1"),
        ("hydra.sweeper.n_trials=null", "hydra.sweeper.n_trials=null is not allowed: must be >= 1 (null: the grid's size, with"),
        # No server listens on port 1: one line naming the key, not SQLAlchemy's traceback.
        ("hydra.sweeper.storage='postgresql+psycopg2://u:p@127.0.0.1:1/x'",
         "hydra.sweeper.storage='postgresql+psycopg2://u:p@127.0.0.1:1/x': cannot open the study's database"),
    ],
    ids=["n_trials", "n_jobs", "n_trials_null_without_a_grid", "storage"],
)  # fmt: skip
def test_bad_sweeper_settings_are_refused_in_one_line_before_any_job(tmp_path, override, message):
    result = run_py_here("-m", "sweep=hpo", override, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr
    assert not (tmp_path / "multirun" / "hpo").exists() or not any((tmp_path / "multirun" / "hpo").iterdir())


@pytest.mark.parametrize("seeds", [(), (1, 2)])
def test_a_job_whose_trial_its_sweep_ended_trains_on_unreported(tmp_path, seeds, caplog):
    """A rerun of a killed sweep fails the trials of jobs still running on a cluster (their
    heartbeats stopped with the sweep) and asks them again; such a job trains on, reporting no more."""
    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(study_name="hpo", storage=storage)
    trial = study.ask()
    rdb = optuna.storages.RDBStorage(storage)
    trial_id = rdb.get_trial_id_from_study_id_trial_number(rdb.get_study_id_from_name("hpo"), trial.number)
    reporter = TrialReporter(storage, "hpo", trial_id, None, seeds[0] if seeds else None, seeds)
    assert not reporter.should_stop(10, 5.0)
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    with caplog.at_level("INFO", logger="ntm.pruning"):
        assert not reporter.should_stop(20, 4.0) and not reporter.should_stop(30, 3.0)
    assert caplog.text.count("was ended by its sweep") == 1
    assert study.trials[0].state.name == "FAIL"


@pytest.mark.slow
def test_a_failed_grid_point_is_retried_by_the_next_invocation(tmp_path):
    sweep_dir = tmp_path / "grid"
    args = [
        "-m",
        "sweep=seeds_memory",
        "seed=choice(1,2)",
        "model.memory.n=choice(16)",
        *FAST,
        f"hydra.sweep.dir={sweep_dir}",
    ]
    # A damaged job folder makes one grid point fail; the sweep goes on. Hydra names job folders
    # by their sorted overrides (override_dirname, without train.progress), through job_dirname.
    named = [o for o in FAST if not o.startswith("train.progress=")]
    damaged = sweep_dir / job_dirname(",".join(sorted([*named, "seed=2", "model.memory.n=16"])))
    (damaged / ".hydra").mkdir(parents=True)
    (damaged / fmt.CONFIG_FILE).write_text("{not yaml")
    first = run_py(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    storage = f"sqlite:///{sweep_dir}/optuna.db"
    assert sorted(t.state.name for t in study_trials(storage, "seeds_memory")) == ["COMPLETE", "FAIL"]
    shutil.rmtree(damaged)
    second = run_py(*args, cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert sorted(t.state.name for t in study_trials(storage, "seeds_memory")) == ["COMPLETE", "COMPLETE", "FAIL"]
    assert sorted(analysis.load_runs(sweep_dir)["seed"]) == [1, 2]
    # Once every point is done, a rerun trains nothing and says so, naming how to measure again.
    third = run_py(*args, cwd=tmp_path)
    assert third.returncode == 0, third.stderr[-3000:]
    assert len(study_trials(storage, "seeds_memory")) == 3
    said = third.stdout + third.stderr
    assert "has run all 2 of its grid points: nothing trained" in said and f"delete {sweep_dir}/optuna.db" in said


@pytest.fixture
def postgres():
    """A throwaway PostgreSQL server on a Unix socket (no TCP), stopped and removed afterwards."""
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"no PostgreSQL server at {PG_BIN} (Debian: apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="ntm-pg-"))
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # initdb refuses to run as root
    if as_postgres:
        os.chmod(root, 0o755)
        shutil.chown(root, "postgres", "postgres")
    with socket.socket() as probe:  # a free port number names the socket file
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = root / "data"

    def run(*command: str) -> None:
        subprocess.run([*as_postgres, *command], check=True, capture_output=True, timeout=120)

    run(str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust")
    run(str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o",
        f"-k {root} -p {port} -c listen_addresses=''", "start")  # fmt: skip
    try:
        run(str(PG_BIN / "createdb"), "-h", str(root), "-p", str(port), "-U", "postgres", "optuna")
        yield f"postgresql+psycopg2://postgres@/optuna?host={root}&port={port}"
    finally:
        run(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_two_sweep_processes_share_one_study_on_postgresql(tmp_path, postgres):
    args = ["-m", *SEARCH, *FAST, "hydra.sweeper.n_trials=6", f"hydra.sweeper.storage='{postgres}'",
            "hydra.sweeper.study_name=shared"]  # fmt: skip
    run_sweeps_together(args, [tmp_path / "a", tmp_path / "b"], cwd=tmp_path)
    states = [t.state.name for t in study_trials(postgres, "shared")]
    assert len(states) == 6 and set(states) <= {"COMPLETE", "PRUNED"}, states
    assert "PRUNED" in states
    runs = analysis.load_runs(tmp_path / "a", tmp_path / "b")
    assert len(runs) == 6 and (runs["status"] == "pruned").sum() == states.count("PRUNED")
