"""The next line of Hydra's Optuna sweeper (1.4 release candidates, optuna 5): a study made by a
sweep on the stable line, upgraded, continued, and served by optuna-dashboard. `make test-next`
runs these in .venv-next; under `make test` (the stable line) they are skipped."""

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from conftest import ROOT, run_py
from test_sweeps import FAST

import analysis

pytest.importorskip("optuna_dashboard", reason="optuna-dashboard is on the next line only (make test-next)")
STABLE_PYTHON = ROOT / ".venv" / "bin" / "python"
SWEEP = ["sweep=hpo", "model.controller_size=choice(16,32)", "train.batch_size=choice(1,2)", "hydra.sweeper.pruner=null", *FAST]


@pytest.fixture(scope="module")
def upgraded_sweep(tmp_path_factory):
    """A 2-trial sweep made on the stable line, its study upgraded with `optuna storage upgrade`."""
    if not STABLE_PYTHON.exists():
        pytest.skip(f"the stable line's {STABLE_PYTHON.relative_to(ROOT)} is missing (make venv)")
    sweep_dir = tmp_path_factory.mktemp("stable") / "hpo"
    made = subprocess.run([str(STABLE_PYTHON), str(ROOT / "run.py"), "-m", *SWEEP, "hydra.sweeper.n_trials=2",
                           f"hydra.sweep.dir={sweep_dir}"], cwd=sweep_dir.parent, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert made.returncode == 0, made.stderr[-3000:]
    url = f"sqlite:///{sweep_dir}/optuna.db"
    with pytest.raises(RuntimeError, match="optuna storage upgrade"):
        optuna.load_study(study_name="hpo", storage=url)  # the stable line's schema, before the upgrade
    upgrade = subprocess.run([str(Path(sys.executable).parent / "optuna"), "storage", "upgrade", "--storage", url],
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert upgrade.returncode == 0, upgrade.stderr
    return sweep_dir


def test_a_stable_line_study_opens_after_the_upgrade_and_the_same_command_continues_it(upgraded_sweep):
    study = optuna.load_study(study_name="hpo", storage=f"sqlite:///{upgraded_sweep}/optuna.db")
    before = [(t.params, t.value) for t in study.trials]
    assert len(before) == 2 and all(t.state.name == "COMPLETE" for t in study.trials)
    result = run_py("-m", *SWEEP, "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={upgraded_sweep}", cwd=upgraded_sweep.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    after = optuna.load_study(study_name="hpo", storage=f"sqlite:///{upgraded_sweep}/optuna.db").trials
    assert [(t.params, t.value) for t in after[:2]] == before and after[2].state.name == "COMPLETE"
    runs = analysis.load_runs(upgraded_sweep)  # a trial that repeats another's parameters shares its folder
    assert len(runs) == len({json.dumps(t.params, sort_keys=True) for t in after}) and set(runs["trial.state"]) == {"COMPLETE"}


def test_optuna_dashboard_serves_a_sweeps_study(upgraded_sweep):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "optuna-dashboard"), f"sqlite:///{upgraded_sweep}/optuna.db",
         "--host", "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip

    def get(path: str) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return json.load(response)

    try:
        deadline = time.time() + 60
        while True:
            try:
                studies = get("/api/studies")["study_summaries"]
                break
            except OSError:
                assert server.poll() is None, server.stderr.read()
                assert time.time() < deadline, "optuna-dashboard did not answer within 60 s"
                time.sleep(0.5)
        assert [s["study_name"] for s in studies] == ["hpo"]
        detail = get(f"/api/studies/{studies[0]['study_id']}")
        stored = optuna.load_study(study_name="hpo", storage=f"sqlite:///{upgraded_sweep}/optuna.db").trials
        assert [t["number"] for t in detail["trials"]] == [t.number for t in stored]
        assert [t["values"][0] for t in detail["trials"]] == pytest.approx([t.value for t in stored])
        served = [{p["name"]: p["param_external_value"] for p in t["params"]} for t in detail["trials"]]
        assert served == [{k: str(v) for k, v in t.params.items()} for t in stored]
    finally:
        server.terminate()
        server.wait(timeout=30)
