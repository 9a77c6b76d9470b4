"""K models of one architecture, each with its own seed, trained as one model.

On a CPU a small NTM is bound by the overhead of dispatching many tiny operations per time
step, not by arithmetic. An ensemble stacks its members' parameters on a leading member
dimension and runs each time step as one vmapped (and, optionally, compiled) call, so K
members pay that overhead once. Members stay independent: each has its own initialisation,
batches, loss, gradient norm, clipping, divergence check and optimiser statistics (the
optimisers used are elementwise, so one optimiser over stacked tensors is K optimisers).

Shapes: K members, S time steps, B batch, I input size, O output size.
"""

import copy
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from ntm.model import COMPILE_OPTIONS
from ntm.tasks import Task
from ntm.tasks.base import Batch


class _Method(nn.Module):
    """Calls one method of a model, so that functional_call can run it with other parameters."""

    def __init__(self, model: nn.Module, method: str):
        super().__init__()
        self.model, self.method = model, method

    def forward(self, *args):
        return getattr(self.model, self.method)(*args)


def member_norms(grads: list[torch.Tensor]) -> torch.Tensor:
    """The gradient norm of each member over all its parameters: (K, ...) tensors -> (K,)."""
    return torch.linalg.vector_norm(torch.cat([g.flatten(1) for g in grads], dim=1), dim=1)


def per_member(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(K,) values shaped to broadcast over a (K, ...) tensor."""
    return values.view(-1, *([1] * (like.dim() - 1)))


class Ensemble:
    """Members built with their own seeds (e.g. by Config.model.build), trained together.

    `step` trains every member on its own batch; `predict_shared` runs all members on
    one batch (the evaluation sets); `member`, `member_state` and `member_optimizer_state` give
    one member back as an ordinary model and state dicts, which an ordinary run can load (and
    the reverse: `load_member`, `load_optimizer_states`). ntm.train.Solo has the same interface.
    """

    def __init__(self, models: list[nn.Module], optimizer_factory, compile: bool = False):
        self.size = len(models)
        self.template = models[0]
        params, buffers = stack_module_state([_Method(m, "step") for m in models])
        self.params = {name.removeprefix("model."): p for name, p in params.items()}
        self.buffers = {name.removeprefix("model."): b for name, b in buffers.items()}
        self.optimizer = optimizer_factory(list(self.params.values()))
        self.update_scales: torch.Tensor | None = None  # (K,): set_learning_rates, when members' rates differ
        # A structure without storage: functional_call supplies every parameter and buffer.
        skeleton = copy.deepcopy(models[0]).to("meta")
        self._step_module, self._init_module = _Method(skeleton, "step"), _Method(skeleton, "initial_state")
        step = vmap(self._member_step)
        if compile:
            # As NTM.compile_step: fresh caches, so that many ensembles in one process never reach
            # torch's recompile limit.
            torch.compiler.reset()
            step = torch.compile(step, fullgraph=True, dynamic=False, options=COMPILE_OPTIONS)
        self._step = step

    def set_learning_rates(self, rates: list[float]) -> None:
        """Each member's learning rate. The optimiser has one; a member with a lower rate takes
        that fraction of its update: RMSprop's and Adam's state does not depend on the rate, and
        their update is proportional to it."""
        top = max(rates)
        for group in self.optimizer.param_groups:
            group["lr"] = top
        like = next(iter(self.params.values()))
        self.update_scales = None if min(rates) == top else torch.tensor(rates, dtype=like.dtype, device=like.device) / top

    def _weights(self) -> dict[str, torch.Tensor]:
        return {**{"model." + k: v for k, v in self.params.items()}, **{"model." + k: v for k, v in self.buffers.items()}}

    def _member_step(self, weights: dict, x: torch.Tensor, state):
        return functional_call(self._step_module, weights, (x, state))

    def run(self, inputs: torch.Tensor) -> torch.Tensor:
        """inputs: (S, K, B, I) -> logits of every step, (S, K, B, O)."""
        weights = self._weights()
        batch = inputs.shape[2]
        state = vmap(lambda w: functional_call(self._init_module, w, (batch,)))(weights)
        outputs = []
        for x in inputs:
            logits, state = self._step(weights, x, state)
            outputs.append(logits)
        return torch.stack(outputs)

    def _spans(self, task: Task, batches: list[Batch]) -> list[tuple[int, int]]:
        """Each member's output steps (first, end) in the padded sequence."""
        spans = []
        for inputs, targets in batches:
            output_steps, blank_steps = task.alignment(inputs, targets)
            total = inputs.shape[0] + blank_steps
            spans.append((total - output_steps, total))
        return spans

    def step(self, task: Task, batches: list[Batch], grad_clip: str, grad_clip_value: float):
        """One optimiser step for every member, each on its own batch.

        Members' sequences differ in length: each is padded with blank (zero) steps to the
        longest. The models are causal, so trailing steps change none of a member's outputs.
        Returns per member (loss, detached logits, finite); a member whose loss or
        gradient is not finite gets no update, as an ordinary run (ntm.train.train_step): its
        parameters and optimiser state are as before the step (but a shared step count).
        """
        spans = self._spans(task, batches)
        first = batches[0]
        steps = max(end for _, end in spans)
        inputs = first[0].new_zeros(steps, self.size, *first[0].shape[1:])
        targets = first[1].new_zeros(steps, self.size, *first[1].shape[1:])
        weights = first[1].new_zeros(steps, self.size, 1, 1)  # each member's mean over its own outputs
        for k, (batch, span) in enumerate(zip(batches, spans)):
            inputs[: batch[0].shape[0], k] = batch[0]
            targets[span[0] : span[1], k] = batch[1]
            weights[span[0] : span[1], k] = 1 / batch[1].numel()
        logits = self.run(inputs)
        bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        losses = (bce * weights).sum(dim=(0, 2, 3))
        self.optimizer.zero_grad(set_to_none=True)
        # Each member's parameters get the gradient of its own loss only, however bad another's.
        losses.sum().backward()
        grads = [p.grad for p in self.params.values()]
        norms = member_norms(grads)
        finite = torch.isfinite(losses.detach()) & torch.isfinite(norms)
        for g in grads:
            g.copy_(torch.where(per_member(finite, g), g, 0.0))
        if grad_clip == "value":
            for g in grads:
                g.clamp_(-grad_clip_value, grad_clip_value)
        elif grad_clip == "norm":
            scale = (grad_clip_value / (norms + 1e-6)).clamp(max=1.0)  # as torch.nn.utils.clip_grads_with_norm_
            for g in grads:
                g.mul_(per_member(torch.where(finite, scale, 1.0), g))
        skipped = ~finite
        kept = self._member_tensors() if skipped.any() else None
        scales = self.update_scales
        before = [p.detach().clone() for p in self.params.values()] if scales is not None else None
        self.optimizer.step()
        if before is not None:
            with torch.no_grad():
                for param, old in zip(self.params.values(), before):
                    param.copy_(torch.lerp(old, param, per_member(scales, param)))
        if kept is not None:
            # The optimiser's momentum would still move a skipped member: put it back.
            with torch.no_grad():
                for tensor, before in kept:
                    tensor.copy_(torch.where(per_member(skipped, tensor), before, tensor))
        return [(losses[k].detach(), logits[begin:end, k].detach(), bool(finite[k])) for k, (begin, end) in enumerate(spans)]

    def _member_tensors(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(tensor, a copy) for every parameter and per-member optimiser state tensor (K, ...).
        Scalar state, such as Adam's step count, is shared by the members and not kept."""
        tensors = []
        for param in self.params.values():
            state = self.optimizer.state.get(param, {})
            tensors += [param, *(v for v in state.values() if torch.is_tensor(v) and v.shape == param.shape)]
        return [(tensor, tensor.detach().clone()) for tensor in tensors]

    @torch.no_grad()
    def predict_shared(self, task: Task, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Every member's logits on the same batch: (T_out, K, B, O)."""
        output_steps, blank_steps = task.alignment(inputs, targets)
        total = inputs.shape[0] + blank_steps
        padded = inputs.new_zeros(total, self.size, *inputs.shape[1:])
        padded[: inputs.shape[0]] = inputs.unsqueeze(1)
        return self.run(padded)[total - output_steps :]

    def member(self, k: int) -> nn.Module:
        """Member k as an ordinary model (a copy), e.g. for figures."""
        model = copy.deepcopy(self.template)
        model.load_state_dict(self.member_state(k))
        return model

    def member_state(self, k: int) -> "OrderedDict[str, torch.Tensor]":
        """Member k's state dict, with the keys and shapes of an ordinary model's."""
        stacked = {**self.params, **self.buffers}
        return OrderedDict((name, stacked[name][k].detach().clone()) for name in self.template.state_dict())

    def load_member(self, k: int, state: dict) -> None:
        with torch.no_grad():
            for name, value in state.items():
                {**self.params, **self.buffers}[name][k].copy_(value)

    def member_optimizer_state(self, k: int) -> dict:
        """Member k's share of the optimiser state, as an ordinary run's optimizer.state_dict()."""
        full = self.optimizer.state_dict()
        shapes = [p.shape for p in self.params.values()]
        state = {
            i: {key: (v[k].clone() if _stacked(v, shapes[i]) else v.clone() if torch.is_tensor(v) else v)
                for key, v in entry.items()}
            for i, entry in full["state"].items()
        }  # fmt: skip
        return {"state": state, "param_groups": copy.deepcopy(full["param_groups"])}

    def load_optimizer_states(self, states: list[dict]) -> None:
        """Load every member's ordinary optimiser state (all at the same step)."""
        template = states[0]
        stacked = {
            i: {key: (torch.stack([s["state"][i][key] for s in states]) if torch.is_tensor(v) and v.dim() else v)
                for key, v in entry.items()}
            for i, entry in template["state"].items()
        }  # fmt: skip
        self.optimizer.load_state_dict({"state": stacked, "param_groups": template["param_groups"]})


def _stacked(value, param_shape: torch.Size) -> bool:
    return torch.is_tensor(value) and value.dim() == len(param_shape) and value.shape == param_shape
