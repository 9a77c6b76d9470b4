"""hydra/launcher=ensemble (hydra_plugins/ntm_ensemble): sweep jobs that differ only in seed train as one ensemble."""

import random

import optuna
import pandas as pd
import pytest
import torch
import yaml
from conftest import ROOT, TINY, run_py, run_py_here, run_sweep, study_trials
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import analysis
from hydra_plugins.ntm_ensemble.launcher import makespan, plan_groups
from ntm.pruning import TRIAL_ENV, trial_reporter

STEPS = ["train.steps=40"]
# Sweep parameters must not also be fixed on the command line (a fixed value wins), so no memory.n here.
TINY_NO_MEMORY = [o for o in TINY if not o.startswith("model.memory.n")]
FAST = [
    *TINY_NO_MEMORY,
    "train.steps=20",
    "train.batch_size=2",
    "train.report_interval=10",
    "train.eval_interval=10",
]
TOGETHER = "runs together as one ensemble"


def sizes(groups: list[list[int]]) -> list[int]:
    return [len(group) for group in groups]


# Grouping: a pure function of the jobs' keys (config without seed) and run folders.


def test_the_seeds_of_one_config_form_one_group():
    assert plan_groups(["a"] * 3, [0, 1, 2], max_members=16, n_jobs=1) == [[0, 1, 2]]


def test_jobs_that_differ_in_more_than_seed_are_split():
    assert plan_groups(["a", "b", "a", "b", "c"], range(5), max_members=16, n_jobs=1) == [[0, 2], [1, 3], [4]]


def test_max_members_splits_a_group_evenly():
    groups = plan_groups(["a"] * 10, range(10), max_members=4, n_jobs=1)
    assert groups == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]


def test_groups_are_spread_over_the_workers():
    # 8 seeds on 2 workers: 2 groups of 4 at once, not one group of 8 beside an idle worker.
    assert plan_groups(["a"] * 8, range(8), max_members=16, n_jobs=2) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert sizes(plan_groups(["a"] * 3, range(3), max_members=16, n_jobs=2)) == [2, 1]
    assert sizes(plan_groups(["a"] * 2, range(2), max_members=16, n_jobs=2)) == [1, 1]
    # 3 memory sizes x 4 seeds: one group per size in one process; on 2 workers one size is
    # halved, so that each worker trains 6 members (4 + 2) instead of 8 and 4.
    keys = [n for n in (32, 64, 128) for _ in range(4)]
    assert plan_groups(keys, range(12), max_members=16, n_jobs=1) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert plan_groups(keys, range(12), max_members=16, n_jobs=2) == [[4, 5, 6, 7], [8, 9, 10, 11], [0, 1], [2, 3]]
    assert makespan([4, 4, 2, 2], 2) < makespan([4, 4, 4], 2)
    # A big group beside a lone job is split: 3 | 2 + 1 rather than 5 | 1.
    assert sizes(plan_groups(["a"] * 5 + ["b"], range(6), max_members=16, n_jobs=2)) == [3, 2, 1]
    # More workers than jobs: each job alone.
    assert sizes(plan_groups(["a"] * 3, range(3), max_members=16, n_jobs=4)) == [1, 1, 1]


def test_a_run_folder_is_never_twice_in_one_group():
    # Two jobs with one folder in one group would wait for each other's lock forever.
    assert plan_groups(["a"] * 3, ["x", "x", "y"], max_members=16, n_jobs=1) == [[0, 2], [1]]


def test_every_job_is_in_exactly_one_group_of_its_own_key():
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(0, 40)
        keys = [rng.choice("abc") for _ in range(n)]
        folders = [rng.randint(0, 30) for _ in range(n)]
        max_members, n_jobs = rng.randint(1, 8), rng.randint(1, 4)
        groups = plan_groups(keys, folders, max_members, n_jobs)
        assert sorted(i for group in groups for i in group) == list(range(n))
        for group in groups:
            assert 1 <= len(group) <= max_members
            assert len({keys[i] for i in group}) == 1
            assert len({folders[i] for i in group}) == len(group)
        assert sizes(groups) == sorted(sizes(groups), reverse=True), "largest first: the order to start them"
    with pytest.raises(ValueError):
        plan_groups(["a"], [0], max_members=0, n_jobs=1)


def test_the_trial_reporter_reads_its_trial_from_the_job_config(tmp_path, monkeypatch):
    monkeypatch.delenv(TRIAL_ENV, raising=False)
    storage = f"sqlite:///{tmp_path}/o.db"
    study = optuna.create_study(study_name="s", storage=storage)
    trials = [study.ask(), study.ask()]
    sweeper = {"_target_": "hydra_plugins.ntm_optuna.sweeper.NTMOptunaSweeper", "storage": storage, "study_name": "s"}
    reader = optuna.storages.RDBStorage(storage)
    ids = [reader.get_trial_id_from_study_id_trial_number(reader.get_study_id_from_name("s"), t.number) for t in trials]
    for trial_id in ids:  # members of one process, each with its own trial
        hydra = OmegaConf.create({"job": {"env_set": {TRIAL_ENV: str(trial_id)}}, "sweeper": sweeper})
        assert trial_reporter(hydra).trial_id == trial_id
    assert trial_reporter(OmegaConf.create({"job": {"env_set": {}}, "sweeper": sweeper})) is None


def test_seeds_memory_uses_the_ensemble_launcher_and_asks_for_its_whole_grid_at_once():
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose("config", overrides=["sweep=seeds_memory"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_ == "hydra_plugins.ntm_ensemble.launcher.EnsembleLauncher"
    assert (cfg.hydra.launcher.max_members, cfg.hydra.launcher.n_jobs) == (16, 2)
    assert cfg.hydra.sweeper.n_jobs is None and cfg.hydra.sweeper.n_trials is None, "the whole grid in one batch"


# Real sweeps through `python run.py -m`.


def member_lines(run_dir) -> list[str]:
    """The lines of run.log that ntm.train wrote for one member of an ensemble."""
    return [line for line in (run_dir / "run.log").read_text().splitlines() if "[seed " in line]


def assert_own_log(run_dir, seed: int) -> None:
    lines = member_lines(run_dir)
    assert lines and all(f"[seed {seed}] " in line for line in lines), f"{run_dir}/run.log holds other members' lines"


@pytest.mark.slow
def test_a_seed_sweep_trains_one_ensemble_whose_folders_match_ordinary_runs(tmp_path):
    seeds = (1, 2, 3)
    sweep_dir = tmp_path / "sweep"
    result = run_sweep(f"seed={','.join(map(str, seeds))}", "hydra/launcher=ensemble", "hydra.launcher.n_jobs=1", *TINY, *STEPS,
                       sweep_dir=sweep_dir)  # fmt: skip
    assert "3 jobs, in groups of 3, in this process" in result.stdout
    # The same seeds as ordinary runs, one after another: Hydra's basic launcher.
    run_sweep(f"seed={','.join(map(str, seeds))}", "hydra/launcher=basic", *TINY, *STEPS, sweep_dir=tmp_path / "ordinary")
    for num, seed in enumerate(seeds):
        ordinary = tmp_path / "ordinary" / str(num)
        member = sweep_dir / str(num)
        assert TOGETHER in (member / "run.log").read_text()
        assert_own_log(member, seed)

        summary, expected = (yaml.safe_load((d / "summary.json").read_text()) for d in (member, ordinary))
        for key in ("status", "steps", "sequences"):
            assert summary[key] == expected[key], key
        assert summary["eval_cost"] == pytest.approx(expected["eval_cost"], rel=1e-5)
        assert summary["objective"] == pytest.approx(expected["objective"], rel=1e-5)
        metrics, expected_metrics = (pd.read_csv(d / "metrics.csv") for d in (member, ordinary))
        assert list(metrics["step"]) == list(expected_metrics["step"])
        assert list(metrics["loss"]) == pytest.approx(list(expected_metrics["loss"]), rel=1e-5)
        assert (yaml.safe_load((member / ".hydra/config.yaml").read_text())
                == yaml.safe_load((ordinary / ".hydra/config.yaml").read_text()))  # fmt: skip
        assert f"seed={seed}" in yaml.safe_load((member / ".hydra/overrides.yaml").read_text())
        hydra = yaml.safe_load((member / ".hydra/hydra.yaml").read_text())["hydra"]
        assert hydra["runtime"]["output_dir"] == str(member) and hydra["job"]["num"] == num
        checkpoint, expected_checkpoint = (torch.load(d / "checkpoints/last.pt", weights_only=False)
                                           for d in (member, ordinary))  # fmt: skip
        assert checkpoint["step"] == expected_checkpoint["step"] == 40
        for name, tensor in expected_checkpoint["model"].items():
            torch.testing.assert_close(checkpoint["model"][name], tensor, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_seeds_memory_trains_the_seeds_of_each_memory_size_together(tmp_path):
    sweep_dir = tmp_path / "grid"
    run_sweep("sweep=seeds_memory", "seed=choice(1,2)", "model.memory.n=choice(16,32)", *FAST, sweep_dir=sweep_dir)
    runs = analysis.load_runs(sweep_dir)
    assert sorted(zip(runs["model.memory.n"], runs["seed"])) == [(16, 1), (16, 2), (32, 1), (32, 2)]
    assert set(runs["trial.state"]) == {"COMPLETE"}
    assert list(runs["trial.value"]) == pytest.approx(list(runs["objective"]))
    for run_dir, seed in zip(runs["run_dir"], runs["seed"]):
        # The trial id in each job's hydra overrides does not keep its seeds apart.
        assert "Training 2 " + TOGETHER in (sweep_dir / run_dir / "run.log").read_text()
        assert_own_log(sweep_dir / run_dir, seed)


@pytest.mark.slow
def test_a_job_that_fails_its_checks_fails_alone_and_the_sweep_goes_on(tmp_path):
    sweep_dir = tmp_path / "bad"
    run_sweep("sweep=seeds_memory", "seed=choice(1,2)", "model.memory.n=choice(16,0)", "hydra.launcher.n_jobs=1", *FAST,
              sweep_dir=sweep_dir)  # fmt: skip
    assert sorted(t.state.name for t in study_trials(sweep_dir, "seeds_memory")) == ["COMPLETE", "COMPLETE", "FAIL", "FAIL"]
    runs = analysis.load_runs(sweep_dir)
    assert sorted(runs["seed"]) == [1, 2] and set(runs["model.memory.n"]) == {16}
    for run_dir in runs["run_dir"]:
        assert "Training 2 " + TOGETHER in (sweep_dir / run_dir / "run.log").read_text()


@pytest.mark.slow
def test_a_refused_run_folder_fails_only_its_member(tmp_path):
    sweep_dir = tmp_path / "sweep"
    # Job 1's folder already holds a run of another config: that job is refused, its group mates train.
    other = run_py("seed=2", *TINY, *STEPS, "train.batch_size=2", f"hydra.run.dir={sweep_dir / '1'}", cwd=tmp_path)
    assert other.returncode == 0, other.stderr[-3000:]
    before = (sweep_dir / "1" / "summary.json").read_text()
    result = run_sweep("seed=1,2,3", "hydra/launcher=ensemble", "hydra.launcher.n_jobs=1", *TINY, *STEPS, sweep_dir=sweep_dir,
                       check=False)  # fmt: skip
    assert result.returncode != 0, "Hydra's basic sweeper stops at a failed job, after its batch"
    assert "was written by a different config" in result.stderr
    assert (sweep_dir / "1" / "summary.json").read_text() == before
    for num, seed in ((0, 1), (2, 3)):
        summary = yaml.safe_load((sweep_dir / str(num) / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["steps"] == 40
        assert_own_log(sweep_dir / str(num), seed)


@pytest.mark.slow
def test_each_member_reports_to_its_own_trial_and_is_pruned_alone(tmp_path):
    sweep_dir = tmp_path / "pruned"
    # Optuna's threshold pruner decides per trial, whatever order the members report in: at 40
    # sequences these seeds' evaluation costs are 10.2, 9.7, 9.6, 10.3 bits (an ordinary run's).
    pruner = "{_target_:optuna.pruners.ThresholdPruner,upper:10.0,n_warmup_steps:36}"
    run_sweep(
        "sweep=seeds_memory", "seed=choice(1,2,3,4)", "model.memory.n=choice(16)", "hydra.launcher.n_jobs=1",
        f"hydra.sweeper.pruner={pruner}", *TINY_NO_MEMORY, *STEPS, "train.report_interval=5", "train.eval_interval=5",
        sweep_dir=sweep_dir,
    )  # fmt: skip
    runs = analysis.load_runs(sweep_dir).set_index("seed")
    states = {t.params["seed"]: t.state.name for t in study_trials(sweep_dir, "seeds_memory")}
    assert sorted(states) == [1, 2, 3, 4] and "PRUNED" in states.values()
    for seed, state in states.items():
        assert (state == "PRUNED") == (runs.loc[seed, "status"] == "pruned"), f"seed {seed}: trial {state}"
        assert "Training 4 " + TOGETHER in (sweep_dir / runs.loc[seed, "run_dir"] / "run.log").read_text()


@pytest.mark.slow
def test_jobs_with_batches_above_max_batch_size_train_alone(tmp_path):
    args = ["seed=1,2", "hydra/launcher=ensemble", "hydra.launcher.n_jobs=1", *TINY, *STEPS]
    alone = run_sweep(*args, "train.batch_size=8", sweep_dir=tmp_path / "alone")
    assert "2 jobs, in groups of 1, 1, in this process" in alone.stdout
    together = run_sweep(*args, "train.batch_size=8", "hydra.launcher.max_batch_size=8", sweep_dir=tmp_path / "together")
    assert "2 jobs, in groups of 2, in this process" in together.stdout


def test_a_bad_launcher_setting_is_refused_with_one_line(tmp_path):
    sweep_dir = tmp_path / "bad"
    result = run_py_here("-m", "seed=1,2", "hydra/launcher=ensemble", "hydra.launcher.max_batch_size=0", *TINY, *STEPS,
                         f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == "Error: hydra.launcher.max_batch_size=0 is not allowed: must be an integer >= 1"
