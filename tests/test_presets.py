"""Every preset and sweep preset in conf/ (found by globbing, so a new file is covered) composes
with the full Hydra config, validates, and its hydra node resolves; sweep job folder names."""

import copy
import math
import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT, run_py_here
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from hydra.experimental.callback import Callback
from hydra.utils import get_class
from omegaconf import OmegaConf, open_dict

from ntm.config import Config, TrainConfig, validate
from ntm.hydra_glue import REMOVED_PRESETS, job_dirname, without_hydra
from ntm.run_format import NON_RESULT_KEYS
from ntm.train import train

CONF = ROOT / "conf"
PRESETS = sorted(p.stem for p in (CONF / "preset").glob("*.yaml"))
SWEEPS = sorted(p.stem for p in (CONF / "sweep").glob("*.yaml") if not p.stem.startswith("_"))  # _base: what they extend
OPTUNA_SWEEPER = "hydra_plugins.ntm_optuna.sweeper.NTMOptunaSweeper"
JOBLIB_LAUNCHER = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
ENSEMBLE_LAUNCHER = "hydra_plugins.ntm_ensemble.launcher.EnsembleLauncher"
# Grids asked in one batch and paced by the ensemble launcher (seeds x one setting train as ensembles).
SEED_GRIDS = ("seeds_memory", "memory_init", "results", "paper")
JOB_SUBDIR = "${job_dirname:${hydra.job.override_dirname}}"


def compose_full(overrides):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def validate_task_part(cfg) -> Config:
    return validate(without_hydra(cfg))


def resolve_hydra(cfg) -> dict:
    """The whole hydra node, every interpolation resolved. Hydra fills hydra.runtime.output_dir
    and hydra.job.num/id when a job starts (log file names and Hydra's default sweep subdir
    refer to them); stand in for that."""
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = "/tmp/job"
        cfg.hydra.job.num, cfg.hydra.job.id = 0, "0"
    return OmegaConf.to_container(cfg.hydra, resolve=True)


def preset_train_keys(preset: str) -> dict:
    """The train.* values a preset file sets (its defaults list aside; presets are @package _global_)."""
    return OmegaConf.to_container(OmegaConf.load(CONF / "preset" / f"{preset}.yaml")).get("train", {})


@pytest.fixture(scope="module")
def composed_sweeps():
    """Each sweep preset composed once, hydra node included, for the tests that read it."""
    return {sweep: compose_full([f"sweep={sweep}"]) for sweep in SWEEPS}


# ---------------------------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_trains_a_few_real_steps_and_the_command_line_beats_it(preset, tmp_path):
    # Eager (a first compile costs ~40 s) and a small evaluation; everything else as the preset says.
    overrides = [f"preset={preset}", "train.steps=3", "train.compile=false", "train.progress=false", "task.eval_batches=1"]
    cfg = compose_full(overrides)
    resolved = resolve_hydra(cfg)
    # The callbacks that check a run before Hydra writes anything exist and are Hydra callbacks.
    assert resolved["callbacks"]
    for callback in resolved["callbacks"].values():
        assert issubclass(get_class(callback["_target_"]), Callback), callback
    assert resolved["run"]["dir"] and "${" not in resolved["run"]["dir"]
    config = validate_task_part(cfg)
    summary = train(config, tmp_path)
    assert summary["steps"] == 3 and summary["sequences"] == 3 * config.train.batch_size
    assert summary["status"] in ("completed", "converged") and math.isfinite(summary["eval_cost"])
    # What trained is the preset's batch size (sequences above), while train.steps=3 beat its budget.
    assert config.train.batch_size == preset_train_keys(preset).get("batch_size", TrainConfig.batch_size)


def test_pytorch_ntm_preset_is_the_defaults():
    assert validate_task_part(compose_full(["preset=pytorch_ntm"])) == validate_task_part(compose_full([]))


@pytest.mark.parametrize("preset", sorted(REMOVED_PRESETS))
def test_a_removed_preset_is_refused_in_one_line_naming_its_replacement(preset, tmp_path):
    result = run_py_here(f"preset={preset}", "train.steps=1", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    replacement = REMOVED_PRESETS[preset].split(",")[0]
    assert result.stderr.strip() == f"Error: preset={preset} was removed in 0.6.0: use {REMOVED_PRESETS[preset]}"
    assert (CONF / "preset" / f"{replacement.removeprefix('preset=')}.yaml").exists()
    assert preset not in PRESETS and not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------
# Sweep presets
# ---------------------------------------------------------------------------------------------


def sweep_choices(params: dict, pick) -> list[str]:
    """One override per sweep parameter, taking pick(options) from each choice/range/interval."""
    parser = OverridesParser.create()
    overrides = []
    for key, spec in params.items():
        value = parser.parse_overrides([f"{key}={spec}"])[0].value()
        if isinstance(value, ChoiceSweep):
            options = value.list
        elif isinstance(value, RangeSweep):
            options = list(range(int(value.start), int(value.stop) + 1, int(value.step)))  # this sweeper includes stop
        elif isinstance(value, IntervalSweep):
            options = [value.start, value.end]
        else:
            raise AssertionError(f"{key}: {spec!r} is not a sweep")
        overrides.append(f"{key}={pick(options)}")
    return overrides


@pytest.mark.parametrize("sweep", SWEEPS)
def test_a_sweep_preset_keeps_its_study_in_its_folder_and_names_job_folders_by_their_parameters(sweep, composed_sweeps):
    cfg = composed_sweeps[sweep]
    config = validate_task_part(cfg)
    assert config.train.threads == 1 and config.train.progress is False  # jobs share the cores
    hydra = resolve_hydra(cfg)
    sweeper = hydra["sweeper"]
    assert sweeper["_target_"] == OPTUNA_SWEEPER
    assert hydra["launcher"]["_target_"] == (ENSEMBLE_LAUNCHER if sweep in SEED_GRIDS else JOBLIB_LAUNCHER)
    if sweep in SEED_GRIDS:  # the whole grid in one batch, so that the launcher sees every seed
        assert sweeper["n_jobs"] is None and sweeper["n_trials"] is None  # however large the grid is made
    # The study lives in SQLite in the sweep folder, named after the study.
    assert hydra["sweep"]["dir"] == f"multirun/{sweeper['study_name']}"
    assert sweeper["storage"] == f"sqlite:///{hydra['sweep']['dir']}/optuna.db"
    # Job folders are named by their parameters (without the sweep= choice itself).
    assert OmegaConf.to_container(cfg.hydra.sweep, resolve=False)["subdir"] == JOB_SUBDIR
    assert list(cfg.hydra.job.config.override_dirname.exclude_keys) == ["sweep", *NON_RESULT_KEYS]
    assert "sweep=" not in hydra["sweep"]["subdir"]


@pytest.mark.parametrize("sweep", SWEEPS)
def test_sweep_search_space_is_valid(sweep, composed_sweeps):
    cfg = composed_sweeps[sweep]
    params = OmegaConf.to_container(cfg.hydra.sweeper.params, resolve=True)
    assert params
    task_part = without_hydra(cfg)
    groups = {p.name for p in CONF.iterdir() if p.is_dir()}
    absent = object()
    for key in params:
        assert OmegaConf.select(task_part, key, default=absent) is not absent or key in groups, (
            f"sweep parameter {key} is neither a config key nor a group"
        )
    # The extreme points of the search space compose and validate.
    for pick in (lambda options: options[0], lambda options: options[-1]):
        validate_task_part(compose_full([f"sweep={sweep}", *sweep_choices(params, pick)]))
    if cfg.hydra.sweeper.sampler._target_.endswith("GridSampler"):
        grid = math.prod(len(OverridesParser.create().parse_overrides([f"{k}={v}"])[0].value().list)
                         for k, v in params.items())  # fmt: skip
        assert cfg.hydra.sweeper.n_trials is None or cfg.hydra.sweeper.n_trials >= grid, "n_trials cuts the grid short"


@pytest.mark.parametrize("sweep", ["hpo", "hpo_lstm"])
def test_a_search_gives_every_batch_size_the_same_sequences_and_evaluates_at_the_same_sequences(sweep, composed_sweeps):
    params = OmegaConf.to_container(composed_sweeps[sweep].hydra.sweeper.params, resolve=True)
    batch_sizes = OverridesParser.create().parse_overrides([f"train.batch_size={params['train.batch_size']}"])[0].value().list
    assert len(batch_sizes) > 1
    for batch_size in batch_sizes:
        train = compose_full([f"sweep={sweep}", f"train.batch_size={batch_size}"]).train
        assert train.steps * batch_size == 32768 and train.eval_interval * batch_size == 1024, batch_size


def test_sweep_presets_do_not_share_a_study(composed_sweeps):
    studies = [cfg.hydra.sweeper for cfg in composed_sweeps.values()]
    names = [s.study_name for s in studies]
    storages = [OmegaConf.to_container(s, resolve=True)["storage"] for s in studies]
    assert len(set(names)) == len(names) and len(set(storages)) == len(storages)


@pytest.mark.parametrize("sweep", SWEEPS)
def test_a_sweep_preset_with_each_preset_validates_and_names_its_jobs_by_the_preset(sweep):
    for preset in PRESETS:
        cfg = compose_full([f"sweep={sweep}", f"preset={preset}"])
        config = validate_task_part(cfg)
        assert config.train.threads == 1, f"preset={preset} undoes sweep={sweep}'s one thread per job"
        hydra = resolve_hydra(cfg)
        assert hydra["sweeper"]["storage"] == f"sqlite:///{hydra['sweep']['dir']}/optuna.db"
        assert hydra["sweep"]["subdir"] == f"preset={preset}"


# ---------------------------------------------------------------------------------------------
# Job folder names
# ---------------------------------------------------------------------------------------------

HASHED = re.compile(r"^(?P<prefix>.{100})-(?P<hash>[0-9a-f]{12})$", re.DOTALL)
LONG = "seed=1,task.eval_lengths=[" + ",".join(str(n) for n in range(100, 200)) + "]"


@pytest.mark.parametrize("name", ["", "seed=1", "model.memory.n=32,seed=4", "x" * 119, "y" * 120])
def test_short_job_names_are_unchanged(name):
    assert job_dirname(name) == name


@pytest.mark.parametrize("length", [121, 122, 200, 1000, 10_000])
def test_long_job_names_are_a_prefix_and_a_hash(length):
    name = (LONG * 100)[:length]
    result = job_dirname(name)
    match = HASHED.match(result)
    assert match, result
    assert match["prefix"] == name[:100]
    assert len(result) == 113
    assert job_dirname(name) == result  # the same input, the same name


def test_job_name_length_is_bounded():
    for length in range(0, 400):
        result = job_dirname("a" * length)
        assert len(result) == (length if length <= 120 else 113)


def test_long_names_sharing_a_prefix_differ():
    base = LONG[:100]
    names = {job_dirname(base + tail) for tail in ("x" * 30, "y" * 30, "x" * 31, "x" * 29 + "y", LONG[100:])}
    assert len(names) == 5
    assert all(name.startswith(base) for name in names)


@pytest.mark.slow
def test_job_name_is_the_same_in_another_process():
    # A continued sweep runs in a new process: the name must not depend on e.g. hash() seeding.
    code = (
        "import sys; from omegaconf import OmegaConf; import ntm.hydra_glue as c; "
        "print(OmegaConf.has_resolver('job_dirname')); print(c.job_dirname(sys.argv[1]))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "12345"}
    result = subprocess.run([sys.executable, "-c", code, LONG], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["True", job_dirname(LONG)]


def test_sweep_subdir_goes_through_the_job_dirname_resolver():
    short = compose_full(["sweep=seeds_memory", "seed=2", "model.memory.n=64"])
    assert OmegaConf.to_container(short.hydra.sweep, resolve=False)["subdir"] == JOB_SUBDIR
    assert short.hydra.job.override_dirname == "model.memory.n=64,seed=2"
    assert short.hydra.sweep.subdir == "model.memory.n=64,seed=2"
    not_results = ["logger=tensorboard", "train.progress=true", "train.threads=2", "train.flush_denormal=false"]
    logged = compose_full(["sweep=seeds_memory", "seed=2", "model.memory.n=64", *not_results])
    assert logged.hydra.sweep.subdir == short.hydra.sweep.subdir, "logging, display and threads change no folder"

    def long_subdir(last_length):
        lengths = ",".join(str(n) for n in [*range(10, 60), last_length])
        cfg = compose_full(["sweep=seeds_memory", "seed=2", f"task.eval_lengths=[{lengths}]"])
        dirname = cfg.hydra.job.override_dirname
        assert len(dirname) > 120 and dirname.startswith("seed=2,task.eval_lengths=[10,11")
        assert cfg.hydra.sweep.subdir == job_dirname(dirname)
        return cfg.hydra.sweep.subdir

    a, b = long_subdir(70), long_subdir(71)  # differ only after the first 100 characters
    assert HASHED.match(a) and HASHED.match(b)
    assert a[:100] == b[:100] and a != b
