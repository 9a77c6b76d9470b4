"""Config composition for every group, value checks, and bad overrides on the command line."""

import pytest
from conftest import ROOT, compose_config, run_py_here
from hydra import compose, initialize_config_dir

from ntm.checks import ConfigError
from ntm.config import AdamConfig, Config, NTMConfig, RMSpropConfig, validate
from ntm.tasks.copy import CopyConfig
from ntm.tasks.repeat_copy import RepeatCopyConfig


def test_defaults_are_the_seed_settings():
    config = validate(compose_config())
    assert isinstance(config, Config)
    assert isinstance(config.task, CopyConfig) and (config.task.min_len, config.task.max_len) == (1, 20)
    assert isinstance(config.model, NTMConfig)
    assert (config.model.controller_size, config.model.memory.n, config.model.memory.m) == (100, 128, 20)
    assert isinstance(config.optimizer, RMSpropConfig)
    assert (config.optimizer.lr, config.optimizer.momentum, config.optimizer.alpha) == (1e-4, 0.9, 0.95)
    assert (config.train.steps, config.train.batch_size, config.train.grad_clip_value) == (50_000, 1, 10.0)


@pytest.mark.parametrize(
    "overrides, check",
    [
        (["task=repeat_copy"], lambda c: isinstance(c.task, RepeatCopyConfig) and c.task.max_repeats == 10),
        (["task=copy", "task.max_len=7"], lambda c: c.task.max_len == 7),
        (["optimizer=adam"], lambda c: isinstance(c.optimizer, AdamConfig) and c.optimizer.lr == 1e-3),
        (["optimizer=rmsprop", "optimizer.lr=3e-4"], lambda c: c.optimizer.lr == 3e-4),
        (["model=ntm", "model.num_heads=2", "model.memory.init=learned"], lambda c: c.model.num_heads == 2),
        (["model.controller=feedforward", "model.controller_layers=2"], lambda c: c.model.controller == "feedforward"),
        (["seed=7", "train.batch_size=32"], lambda c: c.seed == 7 and c.train.batch_size == 32),
    ],
)
def test_every_group_composes(overrides, check):
    assert check(validate(compose_config(overrides)))


@pytest.mark.parametrize("sweep", ["seeds_memory", "hpo"])
def test_sweep_presets_compose(sweep):
    cfg = compose_config([f"sweep={sweep}"])
    assert validate(cfg).train.threads == 1


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["task.min_len=5", "task.max_len=3"], "task.min_len"),
        (["model.memory.n=0"], "model.memory.n"),
        (["model.memory.init=zeros"], "model.memory.init"),
        (["optimizer.lr=-1"], "optimizer.lr"),
        (["train.batch_size=0"], "train.batch_size"),
        (["train.steps_per_call=0"], "train.steps_per_call"),
        (["model.head_order=rx"], "model.head_order"),
        (["task.name=repeat_copy"], "task.name"),
    ],
)
def test_value_checks_name_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(compose_config(overrides))


# (overrides, text the one-line message must contain). Hydra's own messages name the key too.
# Each case runs run.py's main in this process (run_py_here): the exit code and the message are
# what a user sees; tests/test_validation.py runs the real process for a refusal of each kind.
BAD_OVERRIDES = [
    (["model.foo=1"], "foo"),
    (["train.steps=abc"], "train.steps"),
    (["train.steps=0"], "train.steps"),
    (["train.steps=-5"], "train.steps"),
    (["train.batch_size=0"], "train.batch_size"),
    (["model.memory.n=0"], "model.memory.n"),
    (["model.memory.m=-1"], "model.memory.m"),
    (["model.controller_size=0"], "model.controller_size"),
    (["model.num_heads=0"], "model.num_heads"),
    (["task.min_len=5", "task.max_len=3"], "task.min_len"),
    (["task=repeat_copy", "task.min_repeats=4", "task.max_repeats=2"], "task.min_repeats"),
    (["task=nonexistent"], "task"),
    (["model=transformer"], "model"),
    (["optimizer=sgd"], "optimizer"),
    (["sweep=nope"], "sweep"),
    (["model.memory.init=zeros"], "model.memory.init"),
    (["optimizer.lr=0"], "optimizer.lr"),
    (["optimizer=adam", "optimizer.lr=-0.1"], "optimizer.lr"),
    (["model.head_order=rz"], "model.head_order"),
    (["model.head_order=rrr"], "model.head_order"),
    (["model.controller=gru"], "model.controller"),
    (["train.grad_clip=sometimes"], "train.grad_clip"),
    (["model.shift_range=100", "model.memory.n=16"], "model.shift_range"),
    (["train.eval_interval=-1"], "train.eval_interval"),
    (["optimizer.momentum=1.5"], "optimizer.momentum"),
    (["task.seq_width=0"], "task.seq_width"),
    (["train.lr_drop_factor=0"], "train.lr_drop_factor"),
    (["train.lr_drop_below=-1"], "train.lr_drop_below"),
]


@pytest.mark.parametrize("overrides, key", [pytest.param(o, k, id=" ".join(o)) for o, k in BAD_OVERRIDES])
def test_bad_override_exits_2_with_a_clear_message_and_no_files(tmp_path, overrides, key):
    run_dir = tmp_path / "run"
    result = run_py_here(*overrides, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr  # README: bad input exits with 2
    assert key in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert not run_dir.exists()


def test_slurm_launcher_preset_composes():
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose("config", overrides=["sweep=seeds_memory", "hydra/launcher=slurm"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert (cfg.hydra.launcher.cpus_per_task, cfg.hydra.launcher.tasks_per_node) == (1, 1)
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
