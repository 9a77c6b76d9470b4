"""Configs are never silently wrong: unknown keys however added, non-finite numbers, runs that cannot fit in memory."""

import re
import shutil

import pytest
import torch
from conftest import ROOT, compose_config, run_py, run_py_here
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException

from ntm.config import LSTMConfig, NTMConfig, available_memory, estimate_memory, validate
from ntm.errors import ConfigError
from ntm.lstm import LSTM
from ntm.model import NTM
from ntm.tasks.copy import CopyConfig


@pytest.mark.parametrize(
    "override, key",
    [
        ("+model.nosuchkey=3", "model.nosuchkey"),
        ("++model.nosuchkey=3", "model.nosuchkey"),
        ("+foo=1", "foo"),
        ("+train.bar=2", "train.bar"),
        ("+model.memory.extra=1", "model.memory.extra"),
        ("+task.options.x=1", "task.options"),
        ("++optimizer.nesterov=true", "optimizer.nesterov"),
    ],
)
def test_keys_added_with_plus_are_refused(override, key):
    with pytest.raises(ConfigError, match="^" + re.escape(key) + " is not a config key"):
        validate(compose_config([override]))


def test_keys_added_by_a_yaml_file_are_refused(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    (conf / "preset" / "typo.yaml").write_text("# @package _global_\nmodel:\n  memroy:\n    n: 64\n")
    with initialize_config_dir(version_base="1.3", config_dir=str(conf)):
        with pytest.raises(ConfigCompositionException, match="Key 'memroy' not in 'NTMConfig'"):
            compose("config", overrides=["preset=typo"])


@pytest.mark.parametrize(
    "override, key",
    [
        ("optimizer.lr=inf", "optimizer.lr"),
        ("optimizer.lr=-inf", "optimizer.lr"),
        ("optimizer.lr=nan", "optimizer.lr"),
        ("model.controller_clip=inf", "model.controller_clip"),
        ("train.grad_clip_value=nan", "train.grad_clip_value"),
        ("task.converge_threshold=inf", "task.converge_threshold"),
        ("model.memory.init_value=nan", "model.memory.init_value"),
    ],
)
def test_non_finite_numbers_are_refused(override, key):
    with pytest.raises(ConfigError, match="^" + re.escape(key) + "=.* must be a finite number"):
        validate(compose_config([override]))


REFUSALS = [
    (["+model.nosuchkey=3"], "Error: model.nosuchkey is not a config key"),
    (["optimizer.lr=inf"], "Error: optimizer.lr=inf is not allowed: must be a finite number"),
    (["model.foo=1"], "Error: Could not override 'model.foo'; Key 'foo' not in 'NTMConfig'"),
    (
        ["task=nonexistent"],
        "Error: In 'config': Could not find 'task/nonexistent'; Available options in 'task': associative_recall, "
        "copy, ngram, priority_sort, repeat_copy",
    ),
    (["task.max_len=100000"], "Error: task.max_len=100000, train.batch_size=1 need an estimated"),
]
# A real process for one of our refusals and one of Hydra's; the rest run.py's main in this process.
IN_A_PROCESS = {"+model.nosuchkey=3", "model.foo=1"}


@pytest.mark.parametrize(
    "overrides, message",
    [pytest.param(o, m, id=" ".join(o), marks=[pytest.mark.slow] if " ".join(o) in IN_A_PROCESS else []) for o, m in REFUSALS],
)
def test_refusals_on_the_command_line_are_one_line_with_exit_code_2(tmp_path, overrides, message):
    run = run_py if " ".join(overrides) in IN_A_PROCESS else run_py_here
    result = run(*overrides, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()], "one line"
    assert result.stderr.startswith(message), result.stderr
    assert "_schema" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_a_run_too_large_for_memory_is_refused_naming_the_keys_and_the_estimate():
    with pytest.raises(ConfigError, match=r"^task\.max_len=100000, train\.batch_size=1 need an estimated \d+\.\d GiB"):
        validate(compose_config(["task.max_len=100000", "train.max_memory_gb=24"]))
    with pytest.raises(ConfigError, match=r"task\.max_len=10, task\.max_repeats=1000, train\.batch_size=64"):
        validate(compose_config(["task=repeat_copy", "task.max_repeats=1000", "train.batch_size=64", "train.max_memory_gb=24"]))
    # People who know better raise the limit.
    assert validate(compose_config(["task.max_len=100000", "train.max_memory_gb=64"])).task.max_len == 100000


def test_the_default_limit_is_the_memory_available():
    available = available_memory()
    assert available is not None and available > 0
    needed = estimate_memory(validate(compose_config()))
    assert needed < available, "the defaults fit"
    assert 300 * 2**20 < needed < 2 * 2**30, "pytorch-ntm's defaults run in a few hundred MB"


@pytest.mark.parametrize("batch_size", [1, 16])
@pytest.mark.parametrize(
    "sizes", [{}, {"memory_n": 256}, {"memory_m": 40}, {"num_heads": 2}, {"controller_size": 400, "controller_layers": 2}]
)
def test_activation_estimate_covers_what_backward_keeps(sizes, batch_size):
    """The estimate is at least the bytes autograd saves per time step, and not wildly more."""
    names = {"memory_n": "memory.n", "memory_m": "memory.m"}
    schema = NTMConfig()
    for name, value in sizes.items():
        target, attr = (schema.memory, names[name].split(".")[1]) if name in names else (schema, name)
        setattr(target, attr, value)
    per_step = saved_bytes_per_step(NTM(9, 8, **sizes), batch_size, 9)
    estimate = schema.activation_bytes(batch_size, CopyConfig())
    assert per_step <= estimate <= 4 * per_step + 150_000 * 2 * schema.num_heads


def saved_bytes_per_step(model, batch_size: int, input_size: int) -> float:
    """Bytes of the storages autograd saves for backward, per time step (30 vs 10 steps)."""
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    def saved_bytes(steps: int) -> int:
        storages.clear()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            model(torch.rand(steps, batch_size, input_size), steps)
        return sum(storages.values())

    return (saved_bytes(30) - saved_bytes(10)) / 40


@pytest.mark.parametrize("batch_size", [1, 16])
@pytest.mark.parametrize("size, layers", [(None, 3), (64, 1), (256, 2), (512, 3)])
def test_lstm_activation_estimate_covers_what_backward_keeps(size, layers, batch_size):
    """As for the NTM: at least what autograd saves per step, and not wildly more."""
    task = CopyConfig()  # size None: the paper's 256 for copy
    schema = LSTMConfig(size=size, layers=layers)
    model = LSTM(9, 8, size=schema.size_for(task), layers=layers)
    per_step = saved_bytes_per_step(model, batch_size, 9)
    assert per_step <= schema.activation_bytes(batch_size, task) <= 4 * per_step + 50_000


def test_an_unknown_add_activation_names_the_key_and_the_choices():
    with pytest.raises(ConfigError, match=r"^model.add_activation='relu' is not allowed: must be one of none, tanh"):
        validate(compose_config(["model.add_activation=relu"]))


def test_a_negative_cell_clip_names_the_key():
    with pytest.raises(ConfigError, match=r"^model.cell_clip=-1.0 is not allowed: must be >= 0 \(0 disables\)"):
        validate(compose_config(["model.cell_clip=-1"]))


def test_cell_clip_with_a_feedforward_controller_says_why_not():
    with pytest.raises(ConfigError, match=r"^model.cell_clip=5.0 is not allowed: must be 0 with model.controller=feedforward"):
        validate(compose_config(["model.cell_clip=5", "model.controller=feedforward"]))
