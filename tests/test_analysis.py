"""analysis: loading hand-made run folders, the grouped results table, the CLI, figures and Optuna studies.

No training here: every run folder is written by the helpers below, as run.py would write it.
"""

import json
import math
import sqlite3
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest
import yaml

import analysis

ROOT = Path(__file__).resolve().parents[1]

BASE_CONFIG = {
    "seed": 1,
    "task": {"name": "copy", "seq_width": 8, "min_len": 1, "max_len": 20, "eval_lengths": [40, 80]},
    "model": {"name": "ntm", "controller": "lstm", "controller_size": 100, "memory": {"n": 128, "m": 20, "init": "constant"}},
    "optimizer": {"name": "rmsprop", "lr": 1e-4},
    "train": {"steps": 100, "batch_size": 1, "checkpoint_interval": 1000, "threads": 1, "progress": True},
}


def merge(base: dict, changes: dict) -> dict:
    """base with changes applied; changes use dotted keys, e.g. {'model.memory.n': 64}."""
    merged = json.loads(json.dumps(base))
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = merged
        for parent in parents:
            node = node.setdefault(parent, {})
        node[last] = value
    return merged


def write_run(
    run_dir: Path,
    overrides: dict | None = None,
    summary: dict | None = None,
    job_num: int | None = None,
    metrics: str | None = "default",
) -> Path:
    """A finished run folder: .hydra/{config,overrides,hydra}.yaml, summary.json, metrics.csv.

    overrides are dotted config keys (also written to overrides.yaml); summary entries replace the defaults;
    metrics is the metrics.csv text (None: no file).
    """
    overrides = overrides or {}
    hydra_dir = run_dir / ".hydra"
    hydra_dir.mkdir(parents=True)
    (hydra_dir / "config.yaml").write_text(yaml.safe_dump(merge(BASE_CONFIG, overrides), sort_keys=False))
    (hydra_dir / "overrides.yaml").write_text(yaml.safe_dump([f"{k}={v}" for k, v in overrides.items()]))
    hydra = {"hydra": {"job": {"num": job_num if job_num is not None else "???"}, "runtime": {"choices": {"task": "copy"}}}}
    (hydra_dir / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    full_summary = {
        "status": "completed",
        "steps": 100,
        "sequences": 100,
        "loss": 0.5,
        "cost": 10.0,
        "eval_cost": 8.0,
        "eval_cost_len40": 40.0,
        "eval_cost_len80": 80.0,
        "converged_at": None,
        "converged_time_s": None,
        "wall_time_s": 30.0,
        "seq_per_s": 5.0,
        "objective": 8.1,
        **(summary or {}),
    }
    (run_dir / "summary.json").write_text(json.dumps(full_summary))
    if metrics == "default":  # a diverged run's rows hold the last finite costs
        cost, eval_cost = full_summary["cost"] or 30.0, full_summary["eval_cost"] or ""
        metrics = (
            "step,sequences,loss,cost,seq_per_s,eval_cost,eval_cost_len40,eval_cost_len80\n"
            "50,50,0.6,30.0,5.0,,,\n"
            f"100,100,0.5,{cost},5.0,{eval_cost},40.0,80.0\n"
        )
    if metrics is not None:
        (run_dir / "metrics.csv").write_text(metrics)
    return run_dir


def write_sweep(sweep_dir: Path, settings: list[dict]) -> Path:
    """A multirun folder: job folders 0..N-1 with the given overrides (plus 'summary'), and multirun.yaml."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / "multirun.yaml").write_text("hydra:\n  sweep:\n    dir: x\n")
    for num, setting in enumerate(settings):
        setting = dict(setting)
        summary = setting.pop("summary", None)
        write_run(sweep_dir / str(num), setting, summary, job_num=num)
    return sweep_dir


def memory_by_seed_sweep(sweep_dir: Path) -> Path:
    """2 memory sizes x 2 seeds; n=64 converges in both seeds, n=128 in one."""
    return write_sweep(
        sweep_dir,
        [
            {"seed": 1, "model.memory.n": 64, "summary": {"status": "converged", "converged_at": 1000, "converged_time_s": 60}},
            {"seed": 2, "model.memory.n": 64, "summary": {"status": "converged", "converged_at": 3000, "converged_time_s": 180}},
            {"seed": 1, "model.memory.n": 128, "summary": {"status": "converged", "converged_at": 2000, "converged_time_s": 120}},
            {"seed": 2, "model.memory.n": 128},
        ],
    )


def cli(*args: str) -> subprocess.CompletedProcess:
    """python -m analysis ARGS, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "analysis", *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def quiet(messages: list[str]):
    """A report callable that collects messages instead of printing them."""
    return messages.append


# Loading


def test_load_runs_flattens_config_and_summary(tmp_path):
    sweep = memory_by_seed_sweep(tmp_path / "sweep")
    runs = analysis.load_runs(sweep)
    assert len(runs) == 4
    for column in ("run_dir", "status", "converged_at", "eval_cost_len40", "seed", "model.memory.n", "train.batch_size"):
        assert column in runs.columns
    assert "model" not in runs.columns and "model.memory" not in runs.columns
    first = runs.set_index("run_dir").loc[str((sweep / "0").resolve())]
    assert first["model.memory.n"] == 64 and first["seed"] == 1 and first["status"] == "converged"
    assert first["task.eval_lengths"] == "[40, 80]"  # lists stay groupable
    assert first["overrides"] == "seed=1 model.memory.n=64"
    assert first["job_num"] == 0
    assert sorted(runs["job_num"]) == [0, 1, 2, 3]


def test_load_curves_is_long_table(tmp_path):
    sweep = memory_by_seed_sweep(tmp_path / "sweep")
    curves = analysis.load_curves(sweep)
    assert list(curves.columns[:5]) == ["run_dir", "step", "sequences", "loss", "cost"]
    assert len(curves) == 8 and curves["run_dir"].nunique() == 4
    assert curves["eval_cost"].isna().sum() == 4  # only the evaluation rows have eval columns
    assert curves["cost"].dtype.kind == "f"


def test_same_run_given_twice_is_counted_once(tmp_path):
    sweep = memory_by_seed_sweep(tmp_path / "sweep")
    runs = analysis.load_runs(sweep, sweep / "1", tmp_path)
    assert len(runs) == 4


def test_diverged_run_without_metrics_is_kept(tmp_path):
    write_run(tmp_path / "ok")
    diverged = {"status": "diverged", "eval_cost": None, "eval_cost_len40": None, "eval_cost_len80": None, "objective": 1e9}
    write_run(tmp_path / "bad", summary=diverged, metrics=None)
    messages = []
    runs = analysis.load_runs(tmp_path, report=quiet(messages))
    assert len(runs) == 2 and messages == []
    table = analysis.results_table(runs)
    assert table.loc[0, "diverged"] == 1 and table.loc[0, "runs"] == 2
    assert table.loc[0, "eval_cost_mean"] == 8.0  # the diverged run has no eval cost


# Results table


def test_groups_by_config_without_seed(tmp_path):
    runs = analysis.load_runs(memory_by_seed_sweep(tmp_path / "sweep"))
    table = analysis.results_table(runs)
    assert list(table["model.memory.n"]) == [64, 128]
    assert list(table["runs"]) == [2, 2] and list(table["seeds"]) == [2, 2]
    assert "seed" not in table.columns


def test_convergence_statistics_on_known_numbers(tmp_path):
    converged = [(1000, 60), (3000, 180), (None, None), (2000, 120)]
    settings = [
        {"seed": seed, "summary": {"status": "converged" if at else "completed", "converged_at": at, "converged_time_s": t}}
        for seed, (at, t) in enumerate(converged)
    ]
    settings.append({"seed": 9, "summary": {"status": "diverged", "eval_cost": None, "cost": None}})
    for setting, eval_cost in zip(settings, [2.0, 4.0, 6.0, 8.0]):
        setting["summary"]["eval_cost"] = eval_cost
    row = analysis.results_table(analysis.load_runs(write_sweep(tmp_path / "sweep", settings))).iloc[0]
    assert row["runs"] == 5 and row["converged"] == pytest.approx(3 / 5) and row["diverged"] == 1
    assert (row["sequences_to_converge_median"], row["sequences_to_converge_min"], row["sequences_to_converge_max"]) == (
        2000,
        1000,
        3000,
    )
    assert row["minutes_to_converge_median"] == pytest.approx(2.0)
    assert row["minutes_to_converge_max"] == pytest.approx(3.0)
    assert row["eval_cost_mean"] == pytest.approx(5.0)
    assert row["eval_cost_std"] == pytest.approx(pd.Series([2.0, 4.0, 6.0, 8.0]).std())
    assert row["objective_mean"] == pytest.approx(8.1)


def test_only_varying_config_columns_are_shown(tmp_path):
    # train.progress and train.threads vary too, but never change results.
    write_sweep(
        tmp_path / "sweep",
        [
            {"seed": 1, "model.memory.n": 64, "train.progress": False},
            {"seed": 2, "model.memory.n": 64, "train.threads": 4},
            {"seed": 1, "model.memory.n": 32, "optimizer.lr": 1e-3},
        ],
    )
    table = analysis.results_table(analysis.load_runs(tmp_path))
    assert table.attrs["group_by"] == ["model.memory.n", "optimizer.lr"]
    assert len(table) == 2
    shown = analysis.format_table(table)
    assert list(shown.columns[:3]) == ["model.memory.n", "optimizer.lr", "runs"]
    assert "task.name" not in shown.columns and "train.progress" not in shown.columns


def test_keys_fixed_by_a_group_name_are_not_grouped_by(tmp_path):
    adam = {"optimizer.name": "adam", "optimizer.lr": 1e-3}
    write_sweep(tmp_path / "sweep", [{"seed": 1}, {"seed": 2}, {"seed": 1, **adam}, {"seed": 2, **adam}])
    runs = analysis.load_runs(tmp_path)
    table = analysis.results_table(runs)
    assert table.attrs["group_by"] == ["optimizer.name"] and list(table["runs"]) == [2, 2]
    assert table.attrs["implied"] == {"optimizer.lr": "optimizer.name"}
    assert "optimizer.lr" in cli(tmp_path).stdout  # named in the caption
    # With an lr swept within one optimizer, the name does not fix it: it is grouped by.
    write_run(tmp_path / "extra", {"seed": 1, "optimizer.lr": 3e-4})
    table = analysis.results_table(analysis.load_runs(tmp_path))
    assert table.attrs["group_by"] == ["optimizer.name", "optimizer.lr"] and len(table) == 3


def test_a_key_newer_than_a_folder_counts_as_its_default(tmp_path):
    # Seed 1's folder predates train.lr_drop_below: it ran as the default, 0 (never drop).
    write_sweep(
        tmp_path / "sweep", [{"seed": 1}, {"seed": 2, "train.lr_drop_below": 0.0}, {"seed": 1, "train.lr_drop_below": 2.0}]
    )
    runs = analysis.load_runs(tmp_path)
    assert list(runs["train.lr_drop_below"]) == [0.0, 0.0, 2.0]
    table = analysis.results_table(runs)
    assert table.attrs["group_by"] == ["train.lr_drop_below"] and list(table["runs"]) == [2, 1]
    # A key of another task's schema stays absent: it is not a key of this run's task.
    write_run(tmp_path / "recall", {"task.name": "associative_recall", "task.eval_items": [12]})
    assert pd.isna(analysis.load_runs(tmp_path).set_index("task.name").loc["copy", "task.eval_items"]).all()


def test_without_torch_a_key_newer_than_a_folder_is_a_value_of_its_own(tmp_path):
    write_sweep(tmp_path / "sweep", [{"seed": 1}, {"seed": 2, "train.lr_drop_below": 0.0}])
    code = (
        "import sys; sys.modules.update(torch=None); import analysis; "
        f"table = analysis.results_table(analysis.load_runs({str(tmp_path)!r})); print(list(table['runs']))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[1, 1]", result.stderr
    assert "predate some config keys" in result.stderr and "needs torch" in result.stderr


def test_nothing_varies_gives_one_group(tmp_path):
    write_sweep(tmp_path / "sweep", [{"seed": 1}, {"seed": 2}, {"seed": 3}])
    table = analysis.results_table(analysis.load_runs(tmp_path))
    assert len(table) == 1 and table.loc[0, "runs"] == 3
    assert table.attrs["group_by"] == []
    assert "runs" in analysis.render(analysis.format_table(table))


def test_group_by_keys(tmp_path):
    write_sweep(
        tmp_path / "sweep",
        [{"seed": s, "model.memory.n": n, "model.memory.m": m} for s in (1, 2) for n in (32, 64) for m in (10, 20)],
    )
    runs = analysis.load_runs(tmp_path)
    assert len(analysis.results_table(runs)) == 4
    by_m = analysis.results_table(runs, group_by="model.memory.m")
    assert list(by_m["model.memory.m"]) == [10, 20] and list(by_m["runs"]) == [4, 4]
    assert "model.memory.n" not in by_m.columns
    assert len(analysis.results_table(runs, group_by=["model.memory.n", "model.memory.m"])) == 4
    with pytest.raises(ValueError, match="model.memory.m"):
        analysis.results_table(runs, group_by="model.memory.mm")


def test_formatted_table(tmp_path):
    table = analysis.results_table(analysis.load_runs(memory_by_seed_sweep(tmp_path / "sweep")))
    shown = analysis.format_table(table)
    assert list(shown["converged"]) == ["2/2", "1/2"]
    assert list(shown["sequences to converge"]) == ["2,000 [1,000-3,000]", "2,000"]
    assert shown.loc[0, "eval cost"] == "8 ± 0"
    assert "eval len40" in shown.columns and "eval len80" in shown.columns


# Broken folders


def write_broken_runs(root: Path) -> dict[str, str]:
    """Good runs good0, good1 and one broken run per kind of damage; returns {folder name: expected problem}."""
    write_run(root / "good0", {"seed": 1})
    write_run(root / "good1", {"seed": 2})
    (write_run(root / "empty_summary") / "summary.json").write_text("")
    (write_run(root / "bad_summary") / "summary.json").write_text('{"status": "completed", "cost": ')
    (write_run(root / "no_status") / "summary.json").write_text('{"cost": 1.0}')
    write_run(root / "truncated_metrics", metrics="step,sequences,loss,cost\n50,50,0.6,30.0\n100,10")
    write_run(root / "short_row", metrics="step,sequences,loss,cost,seq_per_s\n50,50,0.6\n")
    write_run(root / "garbled_metrics", metrics="step,sequences,loss,cost\n50,50,0.6,#!?\n")
    write_run(root / "binary_metrics", metrics=None)
    (root / "binary_metrics" / "metrics.csv").write_bytes(b"\xff\xfe\x00garbage\x00\n")
    (write_run(root / "no_config") / ".hydra" / "config.yaml").unlink()
    (write_run(root / "bad_config") / ".hydra" / "config.yaml").write_text("seed: [1, 2\n")
    return {
        "empty_summary": "malformed summary.json (empty file)",
        "bad_summary": "malformed summary.json",
        "no_status": "status",
        "truncated_metrics": "truncated metrics.csv",
        "short_row": "line 2 has 3 fields",
        "garbled_metrics": "garbled metrics.csv",
        "binary_metrics": "metrics.csv",
        "no_config": "missing .hydra/config.yaml",
        "bad_config": "malformed .hydra/config.yaml",
    }


def test_broken_folders_are_reported_and_skipped(tmp_path):
    expected = write_broken_runs(tmp_path)
    messages = []
    loaded = analysis.load(tmp_path, report=quiet(messages))
    assert sorted(Path(d).name for d in loaded.runs["run_dir"]) == ["good0", "good1"]
    assert set(loaded.curves["run_dir"]) == set(loaded.runs["run_dir"])
    assert len(messages) == len(expected) == len(loaded.problems)
    for name, problem in expected.items():
        (line,) = [m for m in messages if f"{name}:" in m]
        assert problem in line and "skipping" in line
    assert analysis.results_table(loaded.runs).loc[0, "runs"] == 2


def test_cli_reports_broken_folders_on_stderr(tmp_path):
    expected = write_broken_runs(tmp_path)
    result = cli(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "2 runs in 1 group;" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == len(expected)
    assert all(any(name in line for line in warnings) for name in expected)


def test_missing_overrides_is_noted_but_run_kept(tmp_path):
    (write_run(tmp_path / "run") / ".hydra" / "overrides.yaml").unlink()
    messages = []
    runs = analysis.load_runs(tmp_path, report=quiet(messages))
    assert len(runs) == 1 and len(messages) == 1 and "overrides.yaml" in messages[0]


# Command line


def test_cli_empty_directory_fails_with_message(tmp_path):
    result = cli(tmp_path)
    assert result.returncode == 1, result.stderr  # README: 1 when no usable run is found
    assert "no runs found" in result.stderr and result.stdout == ""


def test_cli_missing_path_fails_with_message(tmp_path):
    result = cli(tmp_path / "nope")
    assert result.returncode == 2, result.stderr  # README: 2 for a bad path
    assert "does not exist" in result.stderr


def test_cli_all_runs_broken_fails(tmp_path):
    (write_run(tmp_path / "run") / "summary.json").write_text("{")
    result = cli(tmp_path)
    assert result.returncode == 1 and "no usable run" in result.stderr


def test_cli_csv_and_group_by(tmp_path):
    sweep = memory_by_seed_sweep(tmp_path / "sweep")
    out = tmp_path / "table.csv"
    result = cli(sweep, "--csv", out, "--group-by", "seed")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out)
    assert list(table["seed"]) == [1, 2] and list(table["runs"]) == [2, 2]
    assert table.loc[0, "converged"] == 1.0 and table.loc[1, "converged"] == 0.5
    assert "grouped by seed" in result.stdout

    bad = cli(sweep, "--group-by", "model.memory.nn")
    assert bad.returncode == 2 and "model.memory.n" in bad.stderr


def test_cli_runs_csv_into_new_folder(tmp_path):
    result = cli(memory_by_seed_sweep(tmp_path / "sweep"), "--runs-csv", tmp_path / "out" / "runs.csv")
    assert result.returncode == 0, result.stderr
    runs = pd.read_csv(tmp_path / "out" / "runs.csv")
    assert len(runs) == 4 and {"run_dir", "model.memory.n", "converged_at"} <= set(runs.columns)


def test_analysis_needs_no_training_code():
    # Folders copied from another machine are analysed without torch: of ntm, analysis uses only
    # the torch-free run-folder format. torch and optuna are made unimportable to prove it.
    code = (
        "import sys; sys.modules.update(torch=None, optuna=None); import analysis; "
        "roots = ('torch', 'ntm', 'optuna', 'matplotlib', 'hydra'); "
        "print(sorted(m for m, v in sys.modules.items() if v and m.split('.')[0] in roots))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "['ntm', 'ntm.run_format']", result.stderr


def test_cli_markdown(tmp_path):
    result = cli(memory_by_seed_sweep(tmp_path / "sweep"), "--markdown")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("|")]
    assert len(lines) == 4  # header, separator, two groups
    assert "model.memory.n" in lines[0] and "runs" in lines[0]
    assert set(lines[1]) <= set("|-: ")
    assert lines[2].split("|")[1].strip() == "64"


@pytest.mark.slow
def test_cli_plots(tmp_path):
    sweep = memory_by_seed_sweep(tmp_path / "sweep")
    result = cli(sweep, "--plots", tmp_path / "figures")
    assert result.returncode == 0, result.stderr
    pngs = sorted((tmp_path / "figures").glob("*.png"))
    assert [p.name for p in pngs] == ["convergence_vs_memory.png", "generalisation.png", "learning_curves.png"]
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_plots_skip_figures_without_data(tmp_path):
    write_sweep(tmp_path / "sweep", [{"seed": 1}, {"seed": 2}])  # nothing converged
    (tmp_path / "sweep" / "1" / "metrics.csv").unlink()
    messages = []
    loaded = analysis.load(tmp_path, report=quiet(messages))
    written = analysis.plot_all(loaded.runs, loaded.curves, tmp_path / "figures", report=quiet(messages))
    assert [p.name for p in written] == ["learning_curves.png", "generalisation.png"]
    assert any("convergence_vs_memory.png" in m and "no run converged" in m for m in messages)


def test_tasks_figure_has_a_panel_per_task_a_line_per_model_and_the_optimum(tmp_path):
    rows = "step,sequences,loss,cost,seq_per_s,eval_cost,optimal_cost\n" + "".join(
        f"{k},{100 * k},0.5,{150 - k},5.0,{150 - k},126.0\n" for k in range(1, 6)
    )
    settings = [
        {"seed": seed, "task.name": task, "model.name": model}
        for task in ("copy", "ngram")
        for model in ("ntm", "lstm")
        for seed in (1, 2)
    ]
    sweep = write_sweep(tmp_path / "sweep", settings)
    for job in sweep.iterdir():
        if job.is_dir() and yaml.safe_load((job / ".hydra" / "config.yaml").read_text())["task"]["name"] == "ngram":
            (job / "metrics.csv").write_text(rows)
    loaded = analysis.load(sweep, report=quiet([]))
    figures = tmp_path / "figures"
    written = analysis.plot_all(loaded.runs, loaded.curves, figures, group_by="task.name,model.name", report=quiet([]))
    assert "tasks.png" in [p.name for p in written]

    from matplotlib.figure import Figure

    from analysis.plots import plot_tasks

    figure = Figure()
    plot_tasks(figure, loaded.runs, loaded.curves, group_by="task.name,model.name")
    panels = [ax for ax in figure.axes if ax.get_visible() and ax.axison]
    assert [ax.get_title() for ax in panels] == ["copy", "ngram"]
    assert all(ax.get_xlabel() == "sequences seen" and ax.get_ylabel() for ax in panels)
    lines = {ax.get_title(): [line.get_label() for line in ax.get_lines()] for ax in panels}
    assert lines["copy"] == ["model.name=lstm", "model.name=ntm"]  # the results table's order
    assert lines["ngram"] == ["model.name=lstm", "model.name=ntm", "optimal (Bayes)"]
    optimum = panels[1].get_lines()[-1]
    assert set(optimum.get_ydata()) == {126.0}
    # One task alone: learning_curves.png shows it, no panels.
    one = loaded.runs[loaded.runs["task.name"] == "copy"]
    with pytest.raises(analysis.plots.NoData):
        plot_tasks(Figure(), one, loaded.curves)


# Optuna studies


def create_study(db: Path, trials: list[tuple[dict, float]], name: str = "ntm"):
    """An Optuna SQLite study with the given (params, value) trials, as hydra-optuna-sweeper stores it."""
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=f"sqlite:///{db}", study_name=name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for params, value in trials:
            distributions = {key: optuna.distributions.CategoricalDistribution([1, 2, 64, 128]) for key in params}
            study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=value))


def test_optuna_trials_are_joined_by_params(tmp_path):
    sweep = memory_by_seed_sweep(tmp_path / "sweep")
    # Trial numbers deliberately differ from job numbers (a resumed study): params decide.
    trials = [({"seed": 2, "model.memory.n": 128}, 0.5), ({"seed": 1, "model.memory.n": 64}, 0.1)]
    trials += [({"seed": 2, "model.memory.n": 64}, 0.3), ({"seed": 1, "model.memory.n": 128}, 0.2)]
    create_study(sweep / "optuna.db", trials)
    messages = []
    runs = analysis.load_runs(sweep, report=quiet(messages)).sort_values("job_num")
    assert messages == []
    assert list(runs["trial.number"]) == [1, 2, 3, 0]
    assert list(runs["trial.value"]) == [0.1, 0.3, 0.2, 0.5]
    assert set(runs["trial.state"]) == {"COMPLETE"} and set(runs["trial.study"]) == {"ntm"}
    assert json.loads(runs["trial.params"].iloc[0]) == {"seed": 1, "model.memory.n": 64}
    # A job folder given alone still finds the study in its sweep folder.
    job = analysis.load_runs(sweep / "3")
    assert job.loc[0, "trial.number"] == 0
    table = analysis.results_table(runs)
    assert list(table["trial_numbers"]) == ["1,2", "0,3"]


def test_optuna_trials_do_not_match_other_sweeps(tmp_path):
    sweep = memory_by_seed_sweep(tmp_path / "a")
    memory_by_seed_sweep(tmp_path / "b")
    create_study(sweep / "optuna.db", [({"seed": 1, "model.memory.n": 64}, 0.1)])
    runs = analysis.load_runs(tmp_path)
    matched = runs.dropna(subset=["trial.number"])
    assert list(matched["run_dir"]) == [str((sweep / "0").resolve())]


@pytest.mark.slow
def test_corrupt_study_is_reported_and_skipped(tmp_path):
    sweep = memory_by_seed_sweep(tmp_path / "sweep")
    (sweep / "optuna.db").write_bytes(b"this is not a database" * 100)
    messages = []
    runs = analysis.load_runs(sweep, report=quiet(messages))
    assert len(runs) == 4 and "trial.number" not in runs.columns
    assert len(messages) == 1 and "optuna.db" in messages[0] and "cannot read Optuna study" in messages[0]
    result = cli(sweep)
    assert result.returncode == 0 and "optuna.db" in result.stderr


def test_foreign_and_locked_databases_are_reported(tmp_path):
    sweep = memory_by_seed_sweep(tmp_path / "sweep")
    with sqlite3.connect(sweep / "other.sqlite") as connection:
        connection.execute("CREATE TABLE things (x)")
    create_study(sweep / "optuna.db", [({"seed": 1, "model.memory.n": 64}, 0.1)])
    before = (sweep / "optuna.db").read_bytes()
    locker = sqlite3.connect(sweep / "optuna.db")
    locker.execute("BEGIN EXCLUSIVE")
    try:
        messages = []
        runs = analysis.load_runs(sweep, report=quiet(messages))
    finally:
        locker.rollback()
        locker.close()
    assert len(runs) == 4
    assert any("other.sqlite" in m and "not an Optuna study" in m for m in messages)
    assert any("optuna.db" in m and "locked" in m for m in messages)
    assert (sweep / "optuna.db").read_bytes() == before  # read-only
    runs = analysis.load_runs(sweep, report=quiet([]))
    assert runs["trial.value"].dropna().tolist() == [0.1]


def test_summary_numbers_are_numeric(tmp_path):
    runs = analysis.load_runs(memory_by_seed_sweep(tmp_path / "sweep"))
    for column in ("converged_at", "converged_time_s", "eval_cost", "objective"):
        assert runs[column].dtype.kind == "f"
    assert math.isnan(runs.sort_values("job_num")["converged_at"].iloc[3])


def test_the_optimal_cost_stands_beside_the_models(tmp_path):
    # N-gram runs carry the Bayes-optimal estimator's cost on the same evaluation sequences.
    for seed, cost in ((1, 131.0), (2, 133.0)):
        write_run(
            tmp_path / f"ngram{seed}", {"seed": seed, "task.name": "ngram"}, summary={"eval_cost": cost, "optimal_cost": 126.0}
        )
    table = analysis.results_table(analysis.load_runs(tmp_path))
    assert table["optimal_cost_mean"].tolist() == [126.0] and table["eval_cost_mean"].tolist() == [132.0]
    shown = analysis.format_table(table)
    assert list(shown.columns).index("optimal cost") == list(shown.columns).index("eval cost") + 1
