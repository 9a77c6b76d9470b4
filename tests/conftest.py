import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from ntm.config import register_configs

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


@pytest.fixture
def tiny():
    return list(TINY)
