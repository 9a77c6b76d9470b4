"""train.compile=fused: the whole sequence in ntm.fused's C++ library gives the eager reference's
logits, loss and gradients to float tolerance, for every option it takes."""

import csv

import pytest
import torch
from conftest import TINY, compose_config

from ntm import fused
from ntm.config import ConfigError, validate
from ntm.model import NTM
from ntm.tasks import make_task
from ntm.tasks.copy import CopyConfig, CopyTask
from ntm.train import FUSED_AUTO_MAX_BATCH, Job, build_models, can_train_together, loss_fn, step_path, train

RTOL, ATOL = 1e-4, 1e-6

# Every option the fused sequence implements, on a small model; the last has a shift wider than 1
# and several write heads (their erasures multiply).
OPTIONS = [
    {},
    {"num_heads": 2, "memory_init": "learned", "add_activation": "tanh"},
    {"head_order": "rrw", "memory_init": "random", "cell_clip": 0.5, "controller_clip": 0.5},
    {"head_order": "rwww", "shift_range": 2, "controller_clip": 0.0},
    {"controller": "feedforward", "num_heads": 2, "controller_clip": 0.5, "memory_init": "learned"},
]


def loss_and_grads(model: NTM, inputs, targets):
    model.zero_grad()
    logits = model(inputs, targets.shape[0])
    loss = loss_fn(logits, targets)
    loss.backward()
    return logits.detach(), loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "defaults")
def test_fused_sequence_matches_eager(options):
    task = CopyTask(CopyConfig(max_len=5, min_len=5))
    torch.manual_seed(0)
    model = NTM(task.input_size, task.output_size, controller_size=24, memory_n=12, memory_m=6, **options)
    inputs, targets = task.sample(3, torch.Generator().manual_seed(0))
    eager = loss_and_grads(model, inputs, targets)
    model.fuse_sequence()
    fast = loss_and_grads(model, inputs, targets)
    torch.testing.assert_close(fast[0], eager[0], rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(fast[1], eager[1], rtol=RTOL, atol=ATOL)
    for name, grad in eager[2].items():
        torch.testing.assert_close(fast[2][name], grad, rtol=RTOL, atol=ATOL, msg=name)
    # clipping that bites: some cells and head parameters are at their bounds in these runs
    with torch.no_grad():  # the forward without a tape, as evaluation runs it
        torch.testing.assert_close(model(inputs, targets.shape[0]), eager[0], rtol=RTOL, atol=ATOL)


def test_recording_runs_eager_steps_and_restores_the_fused_sequence():
    task = CopyTask(CopyConfig(max_len=3))
    model = NTM(task.input_size, task.output_size, controller_size=8, memory_n=8, memory_m=4)
    model.fuse_sequence()
    inputs, targets = task.sample(2, torch.Generator().manual_seed(0))
    with model.recording() as states:
        model(inputs, targets.shape[0])
    assert len(states) == inputs.shape[0] + targets.shape[0]
    assert model._fused


@pytest.mark.parametrize(
    "options", [{"controller_layers": 2}, {"controller": "feedforward", "controller_layers": 2}, {"head_order": "rwrw"}], ids=str
)
def test_fuse_sequence_refuses_models_it_does_not_implement(options):
    model = NTM(9, 8, controller_size=8, memory_n=8, memory_m=4, **options)
    with pytest.raises(ValueError, match="fused sequence needs"):
        model.fuse_sequence()


@pytest.mark.parametrize(
    "overrides, allowed",
    [
        ([*TINY, "model.controller_layers=2"], "model.controller_layers=1"),
        ([*TINY, "model.head_order=rwrw"], "one stage"),
        (["model=lstm"], "model=ntm"),
    ],
)
def test_config_refuses_fused_with_a_model_it_does_not_implement(overrides, allowed):
    with pytest.raises(ConfigError, match=f"train.compile.*{allowed}"):
        validate(compose_config(["train.compile=fused", *overrides]))


def test_train_compile_fused_reaches_the_model_and_trains_alone(tmp_path):
    config = validate(compose_config([*TINY, "train.compile=fused"]))
    assert not can_train_together(config)  # vmap cannot batch one C++ call: ensembles train it member by member
    solo = build_models([Job(config, tmp_path)], make_task(config.task), torch.device("cpu"))
    assert solo.model._fused


def test_a_plain_run_trains_the_fused_sequence(tmp_path):
    config = validate(compose_config(TINY))  # train.compile=auto
    assert build_models([Job(config, tmp_path)], make_task(config.task), torch.device("cpu")).model._fused


@pytest.mark.parametrize(
    "overrides, alone, together",
    [
        ([], "fused", "compiled"),  # the plain defaults: batch 1, 50,000 steps
        ([f"train.batch_size={FUSED_AUTO_MAX_BATCH}"], "fused", "compiled"),
        ([f"train.batch_size={FUSED_AUTO_MAX_BATCH + 1}"], "compiled", "compiled"),
        (["train.steps_per_call=4"], "compiled", "compiled"),
        (["model.controller=feedforward"], "fused", "compiled"),
        (["model.controller=feedforward", "train.steps=100"], "fused", "eager"),
        (["model.controller_layers=2"], "compiled", "compiled"),
        (["model.controller_layers=2", "train.steps=100"], "eager", "eager"),
        (["train.compile=true"], "compiled", "compiled"),
        (["train.compile=false"], "eager", "eager"),
        (["train.compile=fused"], "fused", "fused"),
    ],
)
def test_train_compile_auto_fuses_small_batches_of_a_model_trained_alone(overrides, alone, together):
    config = validate(compose_config(overrides))
    assert (step_path(config, together=False), step_path(config, together=True)) == (alone, together)


def test_a_fused_run_continued_from_its_checkpoint_equals_one_trained_straight(tmp_path):
    """The checkpoint holds all a fused run's state: resumed, it goes on as if never stopped."""

    def config(steps: int):
        return validate(compose_config([*TINY, f"train.steps={steps}", "train.report_interval=10", "train.eval_interval=10",
                                        "train.checkpoint_interval=10", "train.stop_at_convergence=false"]))  # fmt: skip

    def rows(run_dir):
        with (run_dir / "metrics.csv").open() as f:
            return [{k: v for k, v in row.items() if k != "seq_per_s"} for row in csv.DictReader(f)]

    assert step_path(config(60), together=False) == "fused"
    train(config(30), tmp_path / "continued")
    continued = train(config(60), tmp_path / "continued")
    straight = train(config(60), tmp_path / "straight")
    assert continued["continued_from"] == 30 and rows(tmp_path / "continued") == rows(tmp_path / "straight")
    assert continued["eval_cost"] == straight["eval_cost"] and continued["loss"] == straight["loss"]


def test_train_compile_auto_compiles_where_the_library_cannot_be_built(monkeypatch, caplog):
    def no_compiler():
        raise RuntimeError("train.compile=fused needs a C++ compiler: 'c++' (set CXX) was not found")

    monkeypatch.setattr(fused, "build", no_compiler)
    assert step_path(validate(compose_config([])), together=False) == "compiled"
    assert "not the fused sequence: train.compile=fused needs a C++ compiler" in caplog.text


def test_the_library_is_cached_by_source_and_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("NTM_FUSED_CACHE", str(tmp_path))
    path = fused.build()
    assert path.parent == tmp_path and path.exists()
    assert fused.build() == path  # no second compile
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind
