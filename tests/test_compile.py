"""The compiled time step gives the eager reference's loss and gradients to float tolerance."""

import pytest
import torch
from conftest import TINY, compose_config
from torch._dynamo.testing import CompileCounterWithBackend

from ntm.config import validate
from ntm.model import NTM, STEPS_PER_CALL
from ntm.tasks import make_task
from ntm.tasks.copy import CopyConfig, CopyTask
from ntm.train import Job, build_models, loss_fn

# float32 through a different kernel schedule: relative differences stay around 1e-6.
RTOL, ATOL = 1e-4, 1e-6


def loss_and_grads(model: NTM, inputs, targets):
    model.zero_grad()
    loss = loss_fn(model(inputs, targets.shape[0]), targets)
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.slow
@pytest.mark.parametrize("steps_per_call", [1, STEPS_PER_CALL])
def test_compiled_step_matches_eager(steps_per_call):
    # Length 6: 13 time steps, so calls of 4 steps leave one step to go alone.
    task = CopyTask(CopyConfig(max_len=6, min_len=6))
    torch.manual_seed(0)
    model = NTM(task.input_size, task.output_size, controller_size=32, memory_n=16, memory_m=8, head_order="rrw")
    inputs, targets = task.sample(4, torch.Generator().manual_seed(0))
    assert (inputs.shape[0] + targets.shape[0]) % STEPS_PER_CALL != 0
    eager_loss, eager_grads = loss_and_grads(model, inputs, targets)
    model.compile_step(dynamic=False, steps_per_call=steps_per_call)
    compiled_loss, compiled_grads = loss_and_grads(model, inputs, targets)
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=RTOL, atol=ATOL)
    for name, grad in eager_grads.items():
        torch.testing.assert_close(compiled_grads[name], grad, rtol=RTOL, atol=ATOL, msg=name)


@pytest.mark.slow
def test_many_compiled_models_in_one_process_do_not_hit_the_recompile_limit():
    """Sweep workers build one model per job; torch allows 8 recompilations of one function.

    Past the limit torch stops compiling and runs NTM.step eagerly, so every model must still have
    its step compiled (counted by the backend) and give the eager loss.
    """
    task = CopyTask(CopyConfig(max_len=3))
    inputs, targets = task.sample(2, torch.Generator().manual_seed(0))
    assert torch._dynamo.config.recompile_limit < 10  # otherwise this test would not reach the limit
    for seed in range(10):
        torch.manual_seed(seed)
        model = NTM(task.input_size, task.output_size, controller_size=8, memory_n=8, memory_m=4)
        eager_loss, _ = loss_and_grads(model, inputs, targets)
        backend = CompileCounterWithBackend("eager")  # dynamo's limit, without inductor's codegen time
        model.compile_step(dynamic=False, backend=backend)
        compiled_loss, _ = loss_and_grads(model, inputs, targets)
        assert backend.frame_count >= 1, f"model {seed}: NTM.step was not compiled"
        torch.testing.assert_close(compiled_loss, eager_loss, rtol=RTOL, atol=ATOL, msg=f"model {seed}")


@pytest.mark.parametrize("steps_per_call", [1, STEPS_PER_CALL])
def test_train_steps_per_call_reaches_the_compiled_model(steps_per_call, tmp_path):
    config = validate(compose_config([*TINY, "train.compile=true", f"train.steps_per_call={steps_per_call}"]))
    solo = build_models([Job(config, tmp_path)], make_task(config.task), torch.device("cpu"))
    assert solo.model.steps_per_call == steps_per_call
    assert (solo.model._steps is not None) == (steps_per_call > 1)
