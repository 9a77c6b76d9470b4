"""Real short sweeps through `python run.py -m`, with the joblib launcher, then analysis."""

import subprocess
import sys

import optuna
import pandas as pd
import pytest
from conftest import ROOT, TINY, run_py, run_sweep, run_sweeps_together, study_trials

import analysis

# Sweep parameters must not also be fixed on the command line (a fixed value wins), so no memory.n here.
FAST = [
    *(o for o in TINY if not o.startswith("model.memory.n")),
    "train.steps=20",
    "train.batch_size=2",
    "train.report_interval=10",
    "train.eval_interval=10",
]


def sweep(*args, sweep_dir):
    return run_sweep(*args, *FAST, sweep_dir=sweep_dir)


@pytest.mark.slow
def test_a_grid_sweep_with_diverged_and_crashed_jobs_and_its_results_table(tmp_path):
    sweep_dir = tmp_path / "grid"
    sweep(
        "sweep=seeds_memory", "seed=choice(1,2,3,4)", "model.memory.n=choice(16,0)", "optimizer.lr=choice(1e-3,1e30)",
        "train.grad_clip=none", "model.controller_clip=0", sweep_dir=sweep_dir,
    )  # fmt: skip
    # memory.n=0 is refused per job (a failed trial); lr 1e30 diverges; neither stops the sweep.
    # The grid (16 points) is larger than the preset's own (12): every point runs.
    states = sorted(t.state.name for t in study_trials(sweep_dir, "seeds_memory"))
    assert states == ["COMPLETE"] * 8 + ["FAIL"] * 8
    runs = analysis.load_runs(sweep_dir)
    assert sorted(zip(runs["optimizer.lr"], runs["seed"])) == [(lr, s) for lr in (1e-3, 1e30) for s in (1, 2, 3, 4)]
    assert set(runs["model.memory.n"]) == {16} and set(runs["trial.state"]) == {"COMPLETE"}
    assert sorted(runs["status"]) == ["completed"] * 4 + ["diverged"] * 4
    assert list(runs["trial.value"]) == pytest.approx(list(runs["objective"]))
    table = analysis.results_table(runs)
    assert len(table) == 2 and list(table["runs"]) == [4, 4] and table["diverged"].sum() == 4
    cli = subprocess.run([sys.executable, "-m", "analysis", str(sweep_dir), "--csv", str(tmp_path / "t.csv")],
                         cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert len(pd.read_csv(tmp_path / "t.csv")) == 2


@pytest.mark.slow
def test_killed_sweep_is_continued_by_the_same_command(tmp_path):
    import os
    import signal
    import time

    sweep_dir = tmp_path / "killed"
    args = ["-m", "sweep=seeds_memory", "seed=choice(1,2)", "model.memory.n=choice(16,32)", *FAST, "train.steps=200",
            "hydra.sweeper.heartbeat_interval=1", "hydra.launcher.n_jobs=1", f"hydra.sweep.dir={sweep_dir}"]  # fmt: skip
    process = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args], cwd=tmp_path, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 240
    while len(list(sweep_dir.glob("*/summary.json"))) < 2:
        assert process.poll() is None and time.time() < deadline, "the sweep ended before it could be killed"
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)  # the sweeper and its joblib workers
    process.wait()
    assert len(list(sweep_dir.glob("*/summary.json"))) < 4, "killed too late to test continuing"
    continued = run_py(*args, cwd=tmp_path)  # the same command again
    assert continued.returncode == 0, continued.stderr[-3000:]
    runs = analysis.load_runs(sweep_dir)
    assert sorted(zip(runs["model.memory.n"], runs["seed"])) == [(16, 1), (16, 2), (32, 1), (32, 2)]
    assert set(runs["status"]) <= {"completed", "converged"}
    # The trials the kill left RUNNING stopped beating: they are failed and asked again.
    states = [t.state.name for t in study_trials(sweep_dir, "seeds_memory")]
    assert states.count("COMPLETE") == 4 and "RUNNING" not in states


def test_a_trial_killed_before_its_first_heartbeat_is_failed(tmp_path):
    """A sweep killed between study.ask() and the trial's first heartbeat leaves it RUNNING with no
    heartbeat, which optuna 2.10's fail_stale_trials never fails: the killed-sweep rerun hung on one."""
    import time

    from hydra_plugins.ntm_optuna._impl import fail_stale_trials, open_storage

    storage = open_storage(f"sqlite:///{tmp_path}/optuna.db", heartbeat_interval=1)
    study = optuna.create_study(storage=storage)
    study_id = storage.get_study_id_from_name(study.study_name)
    study.ask()  # and killed
    fail_stale_trials(study, storage, study_id)
    assert study.trials[0].state.name == "RUNNING", "its sweep may be alive: it gets a grace period"
    deadline = time.time() + 10
    while study.trials[0].state.name == "RUNNING":
        assert time.time() < deadline, "a trial without heartbeat stayed RUNNING"
        time.sleep(0.5)
        fail_stale_trials(study, storage, study_id)


@pytest.mark.slow
def test_two_sweeps_share_one_study(tmp_path):
    storage = f"sqlite:///{tmp_path}/shared.db"
    args = ["-m", "sweep=hpo", "hydra.sweeper.n_trials=4", f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=shared",
            "hydra.sweeper.pruner=null", "train.batch_size=choice(1,2)", "model.controller_size=choice(16,32)",
            *FAST]  # fmt: skip
    run_sweeps_together(args, [tmp_path / "a", tmp_path / "b"], cwd=tmp_path)
    study = optuna.load_study(study_name="shared", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4, "n_trials is the study's total, shared by both"


def test_a_continued_study_does_not_propose_its_first_points_again(tmp_path):
    from hydra_plugins.ntm_optuna._impl import ask, continue_sampling
    from ntm.optuna_compat import split_overrides

    distributions, _ = split_overrides(["optimizer.lr=tag(log,interval(1e-5,1e-2))", "x=choice(1,2,3,4,5,6,7,8)"])
    storage = f"sqlite:///{tmp_path}/study.db"

    def session(n: int) -> list[dict]:  # a sweep process: a new seeded sampler on the stored study
        study = optuna.create_study(study_name="s", storage=storage, sampler=optuna.samplers.TPESampler(seed=123),
                                    load_if_exists=True)  # fmt: skip
        continue_sampling(study.sampler, study.get_trials(deepcopy=False))
        asked = [ask(study, distributions, None) for _ in range(n)]
        for trial in asked:
            study.tell(trial, 1.0)
        return [trial.params for trial in asked]

    first = session(3)
    assert session(3) != first, "the continued study proposed its first points again"
    assert not continue_sampling(optuna.samplers.TPESampler(seed=123), []), "a new study keeps its seed"


def test_a_grid_asks_untried_points_first_then_failed_ones_and_never_a_running_or_finished_one():
    from hydra_plugins.ntm_optuna._impl import ask, grid_order, grid_points
    from ntm.optuna_compat import split_overrides

    distributions, fixed = split_overrides(["x=choice(1,2)", "y=choice(10,20)", "train.steps=5"])
    assert fixed == {"train.steps": "train.steps=5"}
    grid = grid_points(distributions)
    assert grid == [{"x": x, "y": y} for x in (1, 2) for y in (10, 20)], "every combination, in command-line order"
    study = optuna.create_study()
    state = optuna.trial.TrialState
    for point, ended in zip(grid, [state.COMPLETE, state.FAIL, state.PRUNED]):
        trial = ask(study, distributions, point)
        assert trial.params == point, "a grid trial has its point's values"
        study.tell(trial, 1.0 if ended == state.COMPLETE else None, state=ended)
    trials = study.get_trials(deepcopy=False)
    assert grid_order(grid, trials) == [grid[3], grid[1]], "the never tried, then the failed"
    ask(study, distributions, grid[3])  # running
    assert grid_order(grid, study.get_trials(deepcopy=False)) == [grid[1]]
