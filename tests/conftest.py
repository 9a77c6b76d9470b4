import contextlib
import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from ntm.hydra_glue import register_configs

ROOT = Path(__file__).resolve().parents[1]
register_configs()
# One thread: these tiny models run fastest that way, and tests share 2 cores with each other.
torch.set_num_threads(1)

# Small, fast settings for real training runs in tests.
TINY = [
    "model.memory.n=16",
    "model.memory.m=8",
    "model.controller_size=32",
    "task.max_len=5",
    "task.eval_lengths=[8]",
    "task.eval_batches=2",
    "train.progress=false",
]


def compose_config(overrides: list[str] | None = None):
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        return compose(config_name="config", overrides=overrides or [])


def run_py(*args: str, cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python run.py ARGS` in a subprocess, as a user would."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def run_py_here(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """`python run.py ARGS` in this process, exit code and output as run_py gives them: for the
    many refusals that never train (a process costs ~3 s of imports each)."""
    from hydra.core.global_hydra import GlobalHydra

    import run

    stdout, stderr = io.StringIO(), io.StringIO()
    argv, here, full_error = sys.argv, os.getcwd(), os.environ.get("HYDRA_FULL_ERROR")
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level  # Hydra configures logging while composing
    code = 0
    try:
        os.chdir(cwd)
        os.environ["HYDRA_FULL_ERROR"] = "0"  # as run_py: one line, whatever the developer's shell says
        # Imported, run.main's config path would be read as a module's; name the folder instead.
        sys.argv = [str(ROOT / "run.py"), f"--config-path={ROOT / 'conf'}", *args]
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            with run.hydra_errors_reported():
                run.main()
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else 1
    finally:
        sys.argv = argv
        os.chdir(here)
        GlobalHydra.instance().clear()
        root.handlers[:] = handlers
        root.setLevel(level)
        if full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = full_error
    return subprocess.CompletedProcess(args, code, stdout.getvalue(), stderr.getvalue())


def run_sweep(*args: str, sweep_dir: Path, check: bool = True) -> subprocess.CompletedProcess:
    """`python run.py -m ARGS` with its sweep folder at sweep_dir, run from beside it; by default
    the sweep must succeed."""
    result = run_py("-m", *args, f"hydra.sweep.dir={sweep_dir}", cwd=sweep_dir.parent)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def study_trials(storage: str | Path, name: str) -> list:
    """The trials of study `name`: storage is a database URL, or a sweep folder for the SQLite
    file the sweep presets keep there."""
    import optuna  # here, not at the top: most test modules never open a study

    url = f"sqlite:///{storage}/optuna.db" if isinstance(storage, Path) else storage
    return optuna.load_study(study_name=name, storage=url).trials


def run_sweeps_together(args: list[str], sweep_dirs: list[Path], cwd: Path, timeout: float = 600) -> None:
    """Start `python run.py ARGS hydra.sweep.dir=D` for each D at once; wait for all, each must succeed."""
    processes = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "run.py"), *args, f"hydra.sweep.dir={sweep_dir}"],
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for sweep_dir in sweep_dirs
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=timeout)
        assert process.returncode == 0, stderr[-3000:]


@pytest.fixture
def tiny():
    return list(TINY)
