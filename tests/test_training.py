"""The training loop's contract: the objective, convergence and its exact sequence count,
gradient clipping, and divergence on a non-finite gradient. Tiny real runs through train()."""

import csv
import math

import pytest
import torch
from conftest import TINY, compose_config
from torch.optim.optimizer import register_optimizer_step_pre_hook

from ntm.config import NTMConfig, validate
from ntm.train import DIVERGED_OBJECTIVE, MAX_SKIPPED_STEPS, objective, train


def tiny_config(*overrides: str):
    return validate(compose_config([*TINY, "train.checkpoint_interval=0", *overrides]))


def metrics(run_dir):
    with (run_dir / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def summary_of(status, converged_at=None, eval_cost=1.0):
    return {"status": status, "converged_at": converged_at, "eval_cost": eval_cost}


# ---------------------------------------------------------------------------------------------
# objective()
# ---------------------------------------------------------------------------------------------

OBJECTIVE_TABLE = [
    # threshold, summary, expected
    # converged after s sequences: threshold * s / (s + 100000)
    (0.1, summary_of("converged", converged_at=100_000, eval_cost=0.05), 0.05),
    (0.1, summary_of("converged", converged_at=300_000, eval_cost=0.0), 0.075),
    (0.1, summary_of("converged", converged_at=1, eval_cost=0.09), 0.1 / 100_001),
    (0.2, summary_of("converged", converged_at=20_000, eval_cost=0.0), 0.2 / 6),
    # not converged: threshold + eval_cost
    (0.1, summary_of("completed", eval_cost=2.5), 2.6),
    (0.1, summary_of("completed", eval_cost=0.3), 0.4),
    (0.5, summary_of("completed", eval_cost=123.0), 123.5),
    # diverged, or no evaluation at all: the finite DIVERGED_OBJECTIVE
    (0.1, summary_of("diverged", eval_cost=None), 1e6),
    (0.1, summary_of("diverged", eval_cost=0.01), 1e6),
    (0.1, summary_of("diverged", converged_at=5_000, eval_cost=0.01), 1e6),  # converged, then diverged
    (0.1, summary_of("completed", eval_cost=None), 1e6),
]


@pytest.mark.parametrize("threshold, summary, expected", OBJECTIVE_TABLE)
def test_objective_table(threshold, summary, expected):
    config = validate(compose_config([f"task.converge_threshold={threshold}"]))
    value = objective(summary, config)
    assert value == pytest.approx(expected, rel=1e-12, abs=0)
    assert math.isfinite(value)


def test_objective_orders_runs():
    config = validate(compose_config(["task.converge_threshold=0.1"]))
    converged = [objective(summary_of("converged", converged_at=s), config) for s in (1, 1000, 10**5, 10**7, 10**12)]
    # below the threshold, and lower when faster
    assert all(0 < v < 0.1 for v in converged)
    assert converged == sorted(converged) and len(set(converged)) == len(converged)
    # any converged run beats any unconverged one, which beats a diverged one
    unconverged = objective(summary_of("completed", eval_cost=0.0), config)
    assert max(converged) < unconverged < objective(summary_of("completed", eval_cost=1e5), config) < DIVERGED_OBJECTIVE
    assert DIVERGED_OBJECTIVE == 1e6


# ---------------------------------------------------------------------------------------------
# Convergence: stopping and the exact converged_at
# ---------------------------------------------------------------------------------------------

E, B = 3, 2  # eval_interval, batch_size


def test_stops_at_the_first_evaluation_that_converges(tmp_path):
    # Any evaluation cost is below 1e9: the first evaluation (step E) converges.
    config = tiny_config(
        "task.converge_threshold=1e9", f"train.eval_interval={E}", f"train.batch_size={B}",
        "train.steps=20", "train.report_interval=2", "train.checkpoint_interval=1",
    )  # fmt: skip
    summary = train(config, tmp_path)
    assert summary["status"] == "converged"
    assert summary["converged_at"] == E * B
    assert (summary["steps"], summary["sequences"]) == (E, E * B)
    assert summary["objective"] == pytest.approx(1e9 * E * B / (E * B + 100_000), rel=1e-12)
    rows = metrics(tmp_path)
    assert [int(r["step"]) for r in rows] == [2, E]
    assert int(rows[-1]["sequences"]) == E * B and rows[-1]["eval_cost"] != ""
    assert float(rows[-1]["eval_cost"]) == pytest.approx(summary["eval_cost"])
    ckpt = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)
    assert (ckpt["step"], ckpt["converged_at"]) == (E, E * B)


def test_without_stop_at_convergence_trains_on_and_keeps_converged_at(tmp_path):
    config = tiny_config(
        "task.converge_threshold=1e9", f"train.eval_interval={E}", f"train.batch_size={B}",
        "train.steps=8", "train.report_interval=100", "train.stop_at_convergence=false",
    )  # fmt: skip
    summary = train(config, tmp_path)
    assert summary["status"] == "converged"
    assert summary["converged_at"] == E * B  # when it first held, not the last evaluation
    assert (summary["steps"], summary["sequences"]) == (8, 8 * B)
    assert [int(r["step"]) for r in metrics(tmp_path)] == [3, 6, 8]  # evaluations, and the end
    assert summary["objective"] == pytest.approx(1e9 * E * B / (E * B + 100_000), rel=1e-12)


def test_never_converges_completes_with_converged_at_none(tmp_path):
    config = tiny_config(
        "task.converge_threshold=1e-9", f"train.eval_interval={E}", f"train.batch_size={B}",
        "train.steps=6", "train.report_interval=100",
    )  # fmt: skip
    summary = train(config, tmp_path)
    assert summary["status"] == "completed"
    assert summary["converged_at"] is None and summary["converged_time_s"] is None
    assert summary["steps"] == 6 and summary["eval_cost"] > 1e-9
    assert summary["objective"] == pytest.approx(1e-9 + summary["eval_cost"], rel=1e-12)


# ---------------------------------------------------------------------------------------------
# Gradient clipping
# ---------------------------------------------------------------------------------------------


def global_norm(grads) -> float:
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item()


@pytest.mark.parametrize("mode", ["norm", "value", "none"])
def test_grad_clip_modes_clip_the_gradients_the_optimizer_sees(tmp_path, monkeypatch, mode):
    steps, limit = 4, 2**-10  # exact in float32, so clamped gradients compare exactly
    norm_calls, value_calls, at_step = [], [], []
    clip_norm, clip_value = torch.nn.utils.clip_grads_with_norm_, torch.nn.utils.clip_grad_value_

    def recording_clip_norm(parameters, max_norm, total_norm, *args, **kwargs):
        parameters = list(parameters)
        before = global_norm([p.grad for p in parameters if p.grad is not None])
        result = clip_norm(parameters, max_norm, total_norm, *args, **kwargs)
        after = global_norm([p.grad for p in parameters if p.grad is not None])
        norm_calls.append((max_norm, float(total_norm), before, after))
        return result

    def recording_clip_value(parameters, clip_value_arg, *args, **kwargs):
        parameters = list(parameters)
        before = max(p.grad.abs().max().item() for p in parameters if p.grad is not None)
        result = clip_value(parameters, clip_value_arg, *args, **kwargs)
        value_calls.append((clip_value_arg, before))
        return result

    def pre_step(optimizer, args, kwargs):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        at_step.append((global_norm(grads), max(g.abs().max().item() for g in grads)))

    monkeypatch.setattr(torch.nn.utils, "clip_grads_with_norm_", recording_clip_norm)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_value_", recording_clip_value)
    handle = register_optimizer_step_pre_hook(pre_step)
    try:
        summary = train(
            tiny_config(f"train.grad_clip={mode}", f"train.grad_clip_value={limit}", f"train.steps={steps}",
                        "train.batch_size=2", "train.report_interval=2", "train.eval_interval=0"),
            tmp_path,
        )  # fmt: skip
    finally:
        handle.remove()

    assert summary["status"] == "completed" and summary["steps"] == steps
    assert math.isfinite(summary["loss"]) and math.isfinite(summary["objective"])
    assert len(at_step) == steps
    if mode == "norm":
        assert value_calls == [] and len(norm_calls) == steps
        for max_norm, total_norm, before, after in norm_calls:
            assert max_norm == limit
            assert total_norm == pytest.approx(before, rel=1e-4)  # the norm passed in is the real one
            assert before > 10 * limit  # so clipping had work to do
            assert after == pytest.approx(limit, rel=1e-3)
        assert all(norm <= limit * (1 + 1e-4) for norm, _ in at_step)
    elif mode == "value":
        assert norm_calls == [] and len(value_calls) == steps
        for clip_value_arg, before in value_calls:
            assert clip_value_arg == limit and before > limit
        assert all(biggest <= limit for _, biggest in at_step)
    else:
        assert norm_calls == [] and value_calls == []
        assert all(norm > 10 * limit for norm, _ in at_step)  # unclipped: far above the limit


# ---------------------------------------------------------------------------------------------
# Divergence on a non-finite gradient with a finite loss
# ---------------------------------------------------------------------------------------------


def test_nan_gradients_with_finite_loss_are_skipped_then_diverge_and_keep_a_finite_checkpoint(tmp_path, monkeypatch):
    k = 4  # the first step whose gradient is poisoned (1-based); every later one is too
    built, backward_calls, outputs_finite = [], [], []
    original_build = NTMConfig.build

    def build_with_nan_gradient(self, task):
        model = original_build(self, task)
        name, param = next(iter(model.named_parameters()))

        def poison(grad):
            backward_calls.append(name)
            if len(backward_calls) >= k:
                grad = grad.clone()
                grad.view(-1)[0] = float("nan")
                return grad
            return None

        param.register_hook(poison)
        model.register_forward_hook(lambda module, args, out: outputs_finite.append(bool(torch.isfinite(out).all())))
        built.append(model)
        return model

    monkeypatch.setattr(NTMConfig, "build", build_with_nan_gradient)
    config = tiny_config(
        "train.steps=30", "train.batch_size=2", "train.report_interval=1", "train.eval_interval=0",
        "train.checkpoint_interval=2",
    )  # fmt: skip
    summary = train(config, tmp_path)

    last = k + MAX_SKIPPED_STEPS - 1  # the step that makes MAX_SKIPPED_STEPS without an update in a row
    assert len(built) == 1 and len(backward_calls) == last  # stopped there
    assert outputs_finite == [True] * last  # every forward pass, the poisoned steps' included, was finite
    assert summary["status"] == "diverged"
    assert summary["objective"] == DIVERGED_OBJECTIVE
    assert (summary["steps"], summary["sequences"]) == (last - 1, 2 * (last - 1))  # the last step does not count
    assert math.isfinite(summary["loss"])
    assert [int(r["step"]) for r in metrics(tmp_path)] == list(range(1, last))
    # No NaN gradient was ever applied.
    model = built[0]
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert torch.isnan(next(model.parameters()).grad).any()
    # The checkpoints hold finite weights: nothing is saved at the divergence.
    ckpt = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)
    assert ckpt["step"] == 2 * ((last - 1) // 2)
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert [r["step"] for r in ckpt["rows"]] == list(range(1, ckpt["step"] + 1))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_train_device_cuda_is_refused_without_a_cuda_device():
    from ntm.errors import ConfigError

    with pytest.raises(
        ConfigError, match=r"train.device='cuda' is not allowed: must be cpu or auto: this machine has no CUDA device"
    ):
        tiny_config("train.device=cuda")


def test_train_device_auto_picks_cuda_when_there_is_one_else_the_cpu(tmp_path):
    from ntm.train import device_of

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert device_of(tiny_config("train.device=auto").train).type == expected
    # And it trains there: on the CPU, the same run as train.device=cpu.
    auto = train(tiny_config("train.steps=20", "train.device=auto"), tmp_path / "auto")
    same = train(tiny_config("train.steps=20", f"train.device={expected}"), tmp_path / expected)
    assert auto["loss"] == pytest.approx(same["loss"], rel=1e-5)


@pytest.mark.skipif(not torch.set_flush_denormal(True), reason="this CPU cannot flush subnormal floats")
@pytest.mark.parametrize("flush", [True, False])
def test_flush_denormal_computes_subnormal_floats_as_zero_while_the_run_trains(tmp_path, flush):
    small, seen = torch.tensor([1e-30]), []  # times 1e-9: a subnormal product
    handle = register_optimizer_step_pre_hook(lambda optimizer, args, kwargs: seen.append((small * 1e-9).item()))
    try:
        train(tiny_config("train.steps=2", f"train.flush_denormal={str(flush).lower()}"), tmp_path / "run")
    finally:
        handle.remove()
        torch.set_flush_denormal(True)  # the default, for the tests after this one in this process
    assert len(seen) == 2 and all((value == 0.0) == flush for value in seen)


def test_lr_half_life_halves_the_learning_rate_every_that_many_sequences(tmp_path):
    common = ["train.steps=10", "train.batch_size=2", "optimizer.lr=1e-3", "train.checkpoint_interval=5"]
    train(tiny_config(*common, "train.lr_half_life=10"), tmp_path / "decay")
    checkpoint = torch.load(tmp_path / "decay" / "checkpoints" / "last.pt", weights_only=False)
    # The last step started after 18 sequences.
    assert checkpoint["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-3 * 0.5 ** (18 / 10))
    train(tiny_config(*common), tmp_path / "constant")
    checkpoint = torch.load(tmp_path / "constant" / "checkpoints" / "last.pt", weights_only=False)
    assert checkpoint["optimizer"]["param_groups"][0]["lr"] == 1e-3


def test_lr_half_life_decays_towards_lr_min(tmp_path):
    common = ["train.steps=10", "train.batch_size=2", "optimizer.lr=1e-3", "train.checkpoint_interval=5"]
    train(tiny_config(*common, "train.lr_half_life=10", "train.lr_min=4e-4"), tmp_path / "floor")
    checkpoint = torch.load(tmp_path / "floor" / "checkpoints" / "last.pt", weights_only=False)
    assert checkpoint["optimizer"]["param_groups"][0]["lr"] == pytest.approx(4e-4 + 6e-4 * 0.5 ** (18 / 10))


def test_lr_drop_below_multiplies_the_learning_rate_once_the_evaluation_cost_is_below_it(tmp_path):
    common = ["train.steps=10", "train.batch_size=2", "optimizer.lr=1e-3", "train.checkpoint_interval=5",
              "train.eval_interval=5", "train.lr_drop_factor=0.1"]  # fmt: skip

    def learning_rates(run_dir) -> list[float]:
        return [torch.load(run_dir / "checkpoints" / name, weights_only=False)["optimizer"]["param_groups"][0]["lr"]
                for name in ("previous.pt", "last.pt")]  # fmt: skip

    met = train(tiny_config(*common, "train.lr_drop_below=1e9"), tmp_path / "met")
    assert met["lr_dropped_at"] == 10, "met at the first evaluation, after 5 steps of 2 sequences"
    assert learning_rates(tmp_path / "met") == pytest.approx([1e-3, 1e-4]), "steps 1-5 at lr, 6-10 at lr x 0.1"
    never = train(tiny_config(*common, "train.lr_drop_below=1e-9"), tmp_path / "never")
    assert never["lr_dropped_at"] is None and never["eval_cost"] > 1e-9
    assert learning_rates(tmp_path / "never") == [1e-3, 1e-3]
    decay = train(tiny_config(*common, "train.lr_drop_below=1e9", "train.lr_half_life=10"), tmp_path / "decay")
    assert decay["lr_dropped_at"] == 10
    assert learning_rates(tmp_path / "decay")[1] == pytest.approx(1e-4 * 0.5 ** (18 / 10)), "on top of the decay"


def test_lr_min_above_the_learning_rate_is_refused():
    from ntm.errors import ConfigError

    with pytest.raises(ConfigError, match=r"train.lr_min=0.01 is not allowed: must be <= optimizer.lr \(0.001\)"):
        tiny_config("optimizer.lr=1e-3", "train.lr_min=1e-2")


def test_in_a_submitit_slurm_job_a_stop_leaves_without_a_result_and_hands_submitit_its_signal(monkeypatch):
    """SIGTERM (requeue, preemption, scancel) or submitit's USR2 (time limit) in a submitit SLURM
    job: after the checkpoint the job exits (SystemExit: no result for Hydra or submitit to
    record), and USR2 goes back to submitit's own handler, which requeues the job. Outside such a
    job, the same stop is Interrupted (one line: run the command again)."""
    import signal

    from ntm.errors import Interrupted
    from ntm.train import stop_requests

    handed = []

    def submitit_handler(signum, frame):
        handed.append(signum)

    previous = signal.signal(signal.SIGUSR2, submitit_handler)
    try:
        monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
        for sig, expected in ((signal.SIGTERM, []), (signal.SIGUSR2, [signal.SIGUSR2])):
            handed.clear()
            with pytest.raises(SystemExit, match="SLURM's state of the job decides"):
                with stop_requests() as stops:
                    signal.raise_signal(sig)
                    assert stops.reason() == sig.name  # caught, not acted on, until the step's end
                    raise Interrupted("Stopped")
            assert handed == expected
            assert signal.getsignal(signal.SIGUSR2) is submitit_handler
        monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
        with pytest.raises(Interrupted):
            with stop_requests():
                raise Interrupted("Stopped")
    finally:
        signal.signal(signal.SIGUSR2, previous)
