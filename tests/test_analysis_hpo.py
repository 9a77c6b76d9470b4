"""analysis of hyperparameter searches: the trials view, Optuna studies read read-only, running and unfinished runs,
pruned trials, search figures and parameter importances.

No training: a sweep folder and its Optuna study are made by hand, trial by trial with study.ask/tell, as the
sweeper makes them (job folders named by their overrides, the trial's params as overrides).
"""

import fcntl
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import warnings
from importlib.metadata import version
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_analysis import ROOT, memory_by_seed_sweep, quiet, write_run

import analysis
from analysis.__main__ import main

optuna = pytest.importorskip("optuna")

THRESHOLD = 0.1
# (status of the run, objective, how the trial ends); objectives make the expected order unambiguous.
OUTCOMES = [
    ("completed", 0.1 + 2.345678, "COMPLETE"),  # trial 0
    ("converged", THRESHOLD * 3000 / 103000, "COMPLETE"),  # trial 1: the best
    ("pruned", 0.1 + 9.87654, "PRUNED"),  # trial 2
    ("diverged", 1e6, "COMPLETE"),  # trial 3
    ("converged", THRESHOLD * 12345 / 112345, "COMPLETE"),  # trial 4: second best
    ("unfinished", None, "FAIL"),  # trial 5: the job crashed; its folder has metrics, no summary
    (None, None, "FAIL"),  # trial 6: refused before any folder was made
    ("running", None, "RUNNING"),  # trial 7: training now (the test holds its .lock)
    ("completed", 0.1 + 0.51234, "COMPLETE"),  # trial 8
]
BEST_FIRST = [1, 4, 8, 0, 2, 3]  # the trials with an objective, best first; then 5, 6, 7 by number


def distributions():
    d = optuna.distributions
    return {
        "optimizer": d.CategoricalDistribution(["rmsprop", "adam"]),
        "optimizer.lr": d.LogUniformDistribution(1e-4, 1e-2),
        "model.memory.m": d.CategoricalDistribution([10, 20, 40]),
        "train.batch_size": d.CategoricalDistribution([1, 8, 32]),
    }


def metrics_text(rows: list[tuple]) -> str:
    """metrics.csv with an evaluation every other row: (step, sequences, cost, eval_cost or None)."""
    lines = ["step,sequences,loss,cost,seq_per_s,eval_cost,eval_cost_len40,eval_cost_len80"]
    for step, sequences, cost, eval_cost in rows:
        evals = f"{eval_cost},{eval_cost * 5},{eval_cost * 10}" if eval_cost is not None else ",,"
        lines.append(f"{step},{sequences},0.5,{cost},100.0,{evals}")
    return "\n".join(lines) + "\n"


def hpo_sweep(root: Path, outcomes=OUTCOMES, direction: str = "minimize") -> tuple[Path, dict[int, Path]]:
    """A sweep folder multirun/hpo with optuna.db and one job folder per trial that has one; returns the sweep
    folder and {trial number: job folder}. Nobody holds the running trial's .lock yet (see HeldLock)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sweep = root / "multirun" / "hpo"
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("hydra:\n  sweep:\n    dir: multirun/hpo\n")
    sampler = optuna.samplers.RandomSampler(seed=3)
    storage = f"sqlite:///{sweep / 'optuna.db'}"
    study = optuna.create_study(storage=storage, study_name="hpo", sampler=sampler, direction=direction)
    folders = {}
    for number, (status, objective, state) in enumerate(outcomes):
        trial = study.ask(distributions())
        params = trial.params
        if status is not None:
            folders[number] = write_job(sweep, number, params, status, objective)
        if state == "COMPLETE":
            study.tell(trial, objective)
        elif state in ("PRUNED", "FAIL"):
            study.tell(trial, state=getattr(optuna.trial.TrialState, state))
    return sweep, folders


def write_job(sweep: Path, number: int, params: dict, status: str, objective: float | None) -> Path:
    """One job folder as the sweeper and run.py write it; params become overrides (optimizer is a config group)."""
    overrides = [f"{key}={value}" for key, value in params.items()]
    config = {("optimizer.name" if key == "optimizer" else key): value for key, value in params.items()}
    eval_cost = 2.0 if objective is None or objective >= 1e6 else max(objective - THRESHOLD, 0.01)
    summary = {"status": status, "objective": objective, "eval_cost": eval_cost, "wall_time_s": 60.0 * (number + 1)}
    summary["sequences"] = 1000 * (number + 1)
    if status == "converged":
        sequences = objective * 100000 / (THRESHOLD - objective)
        summary.update(converged_at=round(sequences), converged_time_s=30.0, eval_cost=0.05)
    if status == "diverged":
        summary.update(cost=None, eval_cost=None, eval_cost_len40=None, eval_cost_len80=None)
    rows = [(50, 400, 30.0, None), (100, 800, 20.0, 9.5), (150, 1200, 12.0, None)]
    job = write_run(sweep / ",".join(overrides), config, summary, job_num=number, metrics=metrics_text(rows))
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if status in ("running", "unfinished"):
        (job / "summary.json").unlink()
    (job / ".lock").write_text("process 1 on host (python run.py -m)\n")  # left by the job that trained here
    return job


class HeldLock:
    """Holds a folder's .lock the way training does (an exclusive flock) until closed."""

    def __init__(self, folder: Path):
        self.fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def close(self):
        os.close(self.fd)


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """The hpo sweep of OUTCOMES, made once per module (each trial is a committed SQLite transaction: slow)."""
    root = tmp_path_factory.mktemp("template")
    hpo_sweep(root)
    return root


@pytest.fixture
def sweep(template, tmp_path):
    """A copy of the hpo sweep of OUTCOMES with trial 7 running; yields (sweep folder, {trial number: job folder})."""
    shutil.copytree(template, tmp_path, dirs_exist_ok=True)
    sweep = tmp_path / "multirun" / "hpo"
    folders = {}
    for job in sweep.iterdir():
        if (job / ".hydra" / "hydra.yaml").is_file():
            folders[yaml.safe_load((job / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["num"]] = job
    lock = HeldLock(folders[7])
    yield sweep, folders
    lock.close()


def run_main(capsys, *args) -> tuple[int, str, str]:
    """python -m analysis ARGS in this process (fast: optuna is imported once): (exit code, stdout, stderr)."""
    code = main([str(arg) for arg in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def table_rows(stdout: str) -> list[list[str]]:
    """The body of the printed (simple) table: the lines after the dashed rule, split into cells."""
    lines = stdout.splitlines()
    rule = next(i for i, line in enumerate(lines) if set(line) <= set("- ") and "-" in line)
    rows = []
    for line in lines[rule + 1 :]:
        if not line.strip() or line.startswith(("(", "parameter importances")):
            break
        rows.append(line.split())
    return rows


def significant_digits(token: str) -> int:
    """Significant digits of a printed number: '0.00291' -> 3, '2.45' -> 3, '1.23e-05' -> 3, '1,000,000' -> 1."""
    mantissa = token.split("e")[0].replace(",", "").lstrip("-")
    digits = mantissa.replace(".", "").lstrip("0")
    return len(digits.rstrip("0")) if "." not in mantissa else len(digits)


# The trials view


def test_search_is_shown_best_first_with_3_significant_digits(sweep, capsys, monkeypatch, tmp_path):
    sweep, folders = sweep
    monkeypatch.setenv("COLUMNS", "200")
    code, out, err = run_main(capsys, sweep, "--csv", tmp_path / "trials.csv")
    assert code == 0, err
    assert out.startswith("9 trials of Optuna study hpo (") and "best first (minimize objective)" in out
    assert "status: " in out and "2 failed" in out and "1 running" in out and "1 pruned" in out
    assert "--groups for the grouped table" in out  # chosen automatically: each configuration ran once
    rows = table_rows(out)
    header = out.splitlines()[out.splitlines().index("") + 1].split()
    assert header[:3] == ["trial", "objective", "status"]
    assert {"optimizer", "lr", "memory.m", "batch_size"} <= set(header)
    assert [int(row[0]) for row in rows] == [*BEST_FIRST, 5, 6, 7]
    by_trial = {int(row[0]): row for row in rows}
    assert by_trial[1][1] == "0.00291" and by_trial[0][1] == "2.45" and by_trial[3][1] == "1,000,000"
    assert [by_trial[n][2] for n in (1, 0, 2, 3, 5, 6, 7)] == [
        "converged",
        "completed",
        "pruned",
        "diverged",
        "failed",
        "failed",
        "running",
    ]
    numbers = [cell for row in rows for cell in row[1:] if re.fullmatch(r"-?[0-9][0-9.,e+-]*", cell) and "," not in cell]
    assert numbers and all(significant_digits(cell) <= 3 for cell in numbers), numbers
    # The full table keeps every digit: the learning rates are the trials' own.
    full = pd.read_csv(tmp_path / "trials.csv")
    assert list(full["trial"]) == [*BEST_FIRST, 5, 6, 7]
    study = optuna.load_study(study_name="hpo", storage=f"sqlite:///{sweep / 'optuna.db'}")
    lrs = {trial.number: trial.params["optimizer.lr"] for trial in study.trials}
    assert dict(zip(full["trial"], full["optimizer.lr"])) == lrs
    assert full.loc[full["trial"] == 7, "sequences"].item() == 1200  # the running trial's latest metrics
    assert full.loc[full["trial"] == 6, "run_dir"].isna().all()  # failed before a folder existed


def test_search_table_fits_the_terminal_and_top(sweep, capsys, monkeypatch):
    sweep, _ = sweep
    monkeypatch.setenv("COLUMNS", "60")
    code, out, err = run_main(capsys, sweep, "--top", "3")
    assert code == 0, err
    table = out[out.index("\n\n") + 2 :]
    assert max(len(line) for line in table.splitlines()) <= 60  # notes are wrapped too
    assert re.search(r"\(\d+ columns not shown at width 60: .*sequences.*; --wide or --csv FILE for all\)", " ".join(out.split()))
    assert [int(row[0]) for row in table_rows(out)] == BEST_FIRST[:3]
    assert "(6 more trials not shown: --top 9 or --csv FILE for all)" in out
    code, wide, _ = run_main(capsys, sweep, "--wide")
    assert code == 0 and "not shown at width" not in wide and max(map(len, wide.splitlines())) > 60


def test_search_table_api_and_maximize(tmp_path):
    outcomes = [("completed", 0.5, "COMPLETE"), ("completed", 2.0, "COMPLETE"), ("completed", 1.0, "COMPLETE")]
    sweep, _ = hpo_sweep(tmp_path, outcomes, direction="maximize")
    loaded = analysis.load(sweep, report=quiet([]))
    assert analysis.is_search(loaded.runs)
    table = analysis.search_table(loaded)
    assert list(table["trial"]) == [1, 2, 0] and table.attrs["direction"] == "maximize"
    assert table.attrs["params"] == ["model.memory.m", "optimizer", "optimizer.lr", "train.batch_size"]  # Optuna's order
    assert table.attrs["distributions"]["optimizer.lr"] == "log"
    assert table.attrs["distributions"]["model.memory.m"] == "categorical"
    assert "trial" in analysis.render(analysis.format_search(table))


def test_seed_grid_keeps_grouped_table_and_views_can_be_chosen(tmp_path, capsys, sweep):
    grid = memory_by_seed_sweep(tmp_path / "grid")
    storage = f"sqlite:///{grid / 'optuna.db'}"
    study = optuna.create_study(storage=storage, study_name="seeds_memory")
    choices = optuna.distributions.CategoricalDistribution([1, 2, 64, 128])
    for seed, n in ((1, 64), (2, 64), (1, 128), (2, 128)):
        params, space = {"seed": seed, "model.memory.n": n}, {"seed": choices, "model.memory.n": choices}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.add_trial(optuna.trial.create_trial(params=params, distributions=space, value=0.5))
    code, out, err = run_main(capsys, grid)
    assert code == 0 and "grouped by model.memory.n" in out and "pruned" in out
    code, out, err = run_main(capsys, grid, "--trials")
    assert code == 0 and out.startswith("4 trials of Optuna study seeds_memory") and "--groups for" not in out
    hpo, _ = sweep
    code, out, err = run_main(capsys, hpo, "--groups")
    assert code == 0 and "runs in 8 groups; grouped by" in out
    with pytest.raises(SystemExit) as exit_info:
        main([str(hpo), "--trials", "--group-by", "seed"])
    assert exit_info.value.code == 2 and "--group-by applies to the grouped table" in capsys.readouterr().err


def test_grouped_table_fits_the_terminal_too(tmp_path, capsys, monkeypatch):
    grid = memory_by_seed_sweep(tmp_path / "grid")
    monkeypatch.setenv("COLUMNS", "70")
    code, out, err = run_main(capsys, grid)
    assert code == 0, err
    lines = out.splitlines()
    assert max(map(len, lines)) <= 70
    assert lines[2].split()[:4] == ["model.memory.n", "runs", "converged", "diverged"]  # the keys stay
    assert "eval len80" in " ".join(out.split()[-30:]) and "not shown at width 70" in " ".join(out.split())


# Pruned, running and unfinished runs


def test_pruned_running_and_unfinished_in_the_grouped_table(sweep):
    sweep, folders = sweep
    messages = []
    runs = analysis.load_runs(sweep, report=quiet(messages)).set_index("trial.number")
    assert runs.loc[7, "status"] == "running" and runs.loc[5, "status"] == "unfinished"
    assert runs.loc[2, "status"] == "pruned" and runs.loc[2, "trial.state"] == "PRUNED"
    # Only the unfinished run is noted (one line); the running one is not a problem.
    assert len(messages) == 1 and "unfinished" in messages[0] and folders[5].name in messages[0]
    # The latest metrics: the last row, and the last evaluation (rows without one are skipped).
    assert runs.loc[7, "sequences"] == 1200 and runs.loc[7, "cost"] == 12.0 and runs.loc[7, "eval_cost"] == 9.5
    assert runs.loc[7, "eval_cost_len80"] == 95.0 and runs.loc[7, "steps"] == 150
    table = analysis.results_table(runs.reset_index(), group_by="optimizer.name")
    assert table["runs"].sum() == 8
    assert table["pruned"].sum() == 1 and table["running"].sum() == 1 and table["unfinished"].sum() == 1
    # Statistics are over finished runs only: the running run's eval cost 9.5 is not in any mean.
    finished = runs[~runs["status"].isin(["running", "unfinished"])]
    expected = finished.groupby("optimizer.name")["eval_cost"].mean()
    assert list(table["eval_cost_mean"]) == pytest.approx(list(expected[table["optimizer.name"]]))
    shown = analysis.format_table(table)
    assert list(shown.columns[:7]) == ["optimizer.name", "runs", "converged", "diverged", "pruned", "running", "unfinished"]


def test_running_is_told_by_a_held_lock(tmp_path):
    write_run(tmp_path / "done")
    continued = write_run(tmp_path / "continued", metrics="step,sequences,loss,cost\n100,100,0.5,10.0\n200,200,0.4,3.0\n")
    (tmp_path / "done" / ".lock").write_text("process 1\n")  # a lock file nobody holds: an ordinary finished run
    held = HeldLock(continued)  # being continued: its summary.json is the previous segment's
    try:
        runs = analysis.load_runs(tmp_path, report=quiet([])).set_index("run_dir")
        assert runs.loc[str((tmp_path / "done").resolve()), "status"] == "completed"
        row = runs.loc[str(continued.resolve())]
        assert row["status"] == "running" and row["steps"] == 200 and row["cost"] == 3.0 and pd.isna(row["objective"])
    finally:
        held.close()
    runs = analysis.load_runs(tmp_path, report=quiet([]))
    assert set(runs["status"]) == {"completed"}  # the lock died with its holder


def test_cli_shows_a_lock_held_by_another_process(tmp_path):
    # A real training process elsewhere: the lock is held by a child process, not by this one.
    run = write_run(tmp_path / "run", metrics="step,sequences,loss,cost\n100,100,0.5,7.25\n")
    (run / "summary.json").unlink()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl,os,sys,time; fd=os.open(sys.argv[1],os.O_RDWR|os.O_CREAT); "
         "fcntl.flock(fd,fcntl.LOCK_EX); print('held',flush=True); time.sleep(60)", str(run / ".lock")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        result = subprocess.run(
            [sys.executable, "-m", "analysis", str(tmp_path), "--runs-csv", str(tmp_path / "runs.csv")],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr and "running" in result.stdout
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert runs.loc[0, "status"] == "running" and runs.loc[0, "cost"] == 7.25


# Reading studies


@pytest.mark.slow
def test_study_file_is_never_written(sweep, capsys, tmp_path, monkeypatch):
    sweep, _ = sweep
    with sqlite3.connect(sweep / "other.sqlite") as connection:  # Optuna would add its tables to a writable one
        connection.execute("CREATE TABLE things (x)")
    files = [sweep / "optuna.db", sweep / "other.sqlite"]
    for file in files:
        os.utime(file, (1_000_000_000, 1_000_000_000))

    def state():
        return [(file.read_bytes(), file.stat().st_mtime_ns) for file in files], sorted(os.listdir(sweep))

    before = state()
    monkeypatch.setenv("COLUMNS", "120")
    code, out, err = run_main(capsys, sweep, "--plots", tmp_path / "figures", "--runs-csv", tmp_path / "runs.csv")
    assert code == 0, err
    assert "other.sqlite: cannot read Optuna study (not an Optuna study: Optuna would have to write to it" in err
    assert state() == before


def test_study_in_a_folder_with_odd_characters(tmp_path):
    hpo_sweep(tmp_path / "plain", OUTCOMES[:2])
    sweep = (tmp_path / "plain").rename(tmp_path / "a b#c%d{e}?f") / "multirun" / "hpo"
    runs = analysis.load_runs(sweep, report=quiet([]))
    assert sorted(runs["trial.number"]) == [0, 1] and set(runs["trial.study"]) == {"hpo"}


def test_corrupt_and_locked_studies_keep_the_trials_view_working(sweep, capsys):
    sweep, _ = sweep
    (sweep / "other.db").write_bytes(b"\x00garbage" * 500)
    code, out, err = run_main(capsys, sweep)
    assert code == 0 and out.startswith("9 trials of Optuna study hpo")
    assert "other.db: cannot read Optuna study (file is not a database); continuing without its trials" in err


def test_without_optuna_runs_are_shown_without_trials(sweep):
    sweep, _ = sweep
    code = (
        "import sys; sys.modules['optuna'] = None; from analysis.__main__ import main; "
        f"sys.exit(main([{str(sweep)!r}, '--trials']))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "not installed" in line]
    assert line.startswith("warning: optuna is not installed: Optuna studies not read (") and "without trial columns" in line
    assert result.stdout.startswith("8 trials of runs without an Optuna study")  # the 8 run folders
    rows = table_rows(result.stdout)
    assert all(row[0] == "-" for row in rows)  # no trial numbers
    assert [row[1] for row in rows[:3]] == ["0.00291", "0.011", "0.612"]  # best first, by summary.json's objective


# Figures and importances


def test_search_figures(sweep, tmp_path, capsys):
    sweep, _ = sweep
    code, out, err = run_main(capsys, sweep, "--plots", tmp_path / "figures")
    assert code == 0, err
    for name in ("optimization_history.png", "param_effects.png", "learning_curves.png"):
        png = tmp_path / "figures" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10000, name
        assert f"{name}\n" in err  # "wrote .../figures/NAME", one line each


def test_history_marks_pruned_and_diverged_trials(sweep):
    from matplotlib.figure import Figure

    from analysis.search_plots import plot_optimization_history, plot_param_effects

    sweep, _ = sweep
    table = analysis.search_table(analysis.load(sweep, report=quiet([])))
    figure = Figure()
    plot_optimization_history(figure, table)
    labels = [text.get_text() for text in figure.legends[0].get_texts()]
    assert labels == ["converged (2)", "completed (2)", "pruned (1)", "diverged (1) drawn at the top", "best so far"]
    history = figure.axes[0]
    markers = {c.get_label(): c.get_paths()[0].vertices.round(2).tolist() for c in history.collections}
    assert markers["pruned (1)"] != markers["completed (2)"] != markers["diverged (1) drawn at the top"]
    assert history.get_yscale() == "log"
    best = history.lines[0].get_ydata()
    assert min(best) == pytest.approx(THRESHOLD * 3000 / 103000)
    effects = Figure()
    plot_param_effects(effects, table)
    titles = [ax.get_title() for ax in effects.axes if ax.get_visible()]
    assert titles == ["memory.m", "optimizer", "lr (log)", "batch_size"]
    assert effects.axes[2].get_xscale() == "log"
    assert [tick.get_text() for tick in effects.axes[0].get_xticklabels()] == ["10", "40"]  # 20: failed trial only
    assert [tick.get_text() for tick in effects.axes[1].get_xticklabels()] == ["adam", "rmsprop"]


@pytest.mark.slow
def test_importances_without_scikit_learn(sweep, tmp_path):
    sweep, _ = sweep
    code = (
        "import sys; sys.modules['sklearn'] = None; from analysis.__main__ import main; "
        f"sys.exit(main([{str(sweep)!r}, '--plots', {str(tmp_path / 'figures')!r}]))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "scikit-learn" in line]
    assert line == "note: parameter importances not computed: they need scikit-learn, which is not installed; " + (
        "pip install -e '.[hpo]' (or pip install scikit-learn)"
    )
    assert "parameter importances (" not in result.stdout and table_rows(result.stdout)
    assert not (tmp_path / "figures" / "param_importances.png").exists()
    assert (tmp_path / "figures" / "optimization_history.png").exists()


@pytest.mark.slow
def test_importances_with_scikit_learn(sweep, capsys, tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    monkeypatch.setenv("COLUMNS", "1000")  # the importances on one line, whatever runs the tests
    sweep, _ = sweep
    loaded = analysis.load(sweep, report=quiet([]))
    ((study, importances, how),) = analysis.study_importances(analysis.search.used_studies(loaded))
    assert set(importances) == {"optimizer", "optimizer.lr", "model.memory.m", "train.batch_size"}
    assert sum(importances.values()) == pytest.approx(1.0) and how.endswith(", 5 complete trials")
    if not version("optuna").startswith("2."):  # optuna 2.10's fANOVA fails on numpy 2: analysis falls back there
        assert how.startswith("fANOVA"), how
    code, out, err = run_main(capsys, sweep, "--plots", tmp_path / "figures")
    assert code == 0, err
    (line,) = [line for line in out.splitlines() if line.startswith("parameter importances (")]
    assert re.fullmatch(r"parameter importances \(.*\): (\S+ [0-9.e-]+, ){3}\S+ [0-9.e-]+", line), line
    assert (tmp_path / "figures" / "param_importances.png").read_bytes()[:4] == b"\x89PNG"
    # Parameters are printed most important first.
    header = out.splitlines()[out.splitlines().index("") + 1].split()
    first = max(importances, key=importances.get)
    assert header[3] == analysis.search.short_names(list(importances))[first]


def test_runs_csv_has_the_trial_columns(sweep, tmp_path, capsys):
    sweep, _ = sweep
    code, _, err = run_main(capsys, sweep, "--runs-csv", tmp_path / "runs.csv")
    assert code == 0, err
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert {"trial.number", "trial.state", "trial.value", "trial.study_file"} <= set(runs.columns)
    assert json.loads(runs.loc[runs["trial.number"] == 1, "trial.params"].item())["optimizer"] in ("adam", "rmsprop")
