"""A batched Neural Turing Machine (Graves et al. 2014).

Shapes: T time steps, B batch, I input size, O output size, N memory rows, M row width,
H all heads, R read heads, W write heads, S = 2 * shift_range + 1 shift positions.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ntm import addressing, fused
from ntm.controller import CONTROLLERS

MEMORY_INITS = ("constant", "learned", "random")
# What squashes the write heads' add vectors: none (the paper's) or tanh, to (-1, 1).
ADD_ACTIVATIONS = ("none", "tanh")
# Inductor's options for a compiled time step. cpp_wrapper: the compiled graph calls its kernels
# from generated C++ rather than Python; at batch 1 a step is tens of small kernels, and calling
# them from Python cost 5-10% of the step (benchmarks/speed.py), with no slower first compile.
COMPILE_OPTIONS = {"cpp_wrapper": True}
# Time steps per call of the compiled step function for train.steps_per_call's faster setting
# (compile_step). At batch 1 a call costs more in fixed overhead (guards, one autograd node
# forward and back, launching each kernel) than in arithmetic, so a call of 4 unrolled steps
# trains faster than 4 calls; 8 compiles twice as long for no more (benchmarks/speed.py shows 1
# against 4). The value benchmarks and tests use; training takes train.steps_per_call.
STEPS_PER_CALL = 4


class NTMState(NamedTuple):
    controller: tuple
    reads: torch.Tensor  # (B, R, M)
    weights: torch.Tensor  # (B, H, N), heads in head_order
    memory: torch.Tensor  # (B, N, M)


def head_stages(head_order: str) -> list[tuple[int, int, int, int]]:
    """Split a head order such as "rwrw" into stages that can act at the same time.

    Reads never change memory, so every run of reads followed by writes ("r*w*") addresses
    the same memory and is computed in one batched call. A read after a write starts a
    new stage. Returns (first head, reads, writes, first write head among writes) per stage.
    """
    if not head_order or set(head_order) - {"r", "w"} or "r" not in head_order or "w" not in head_order:
        raise ValueError(f"head_order must be a string of 'r' and 'w' with at least one of each, got {head_order!r}")
    stages, start, writes_before = [], 0, 0
    for i in range(1, len(head_order) + 1):
        if i == len(head_order) or (head_order[i] == "r" and head_order[i - 1] == "w"):
            stage = head_order[start:i]
            reads = stage.count("r")
            stages.append((start, reads, len(stage) - reads, writes_before))
            writes_before += len(stage) - reads
            start = i
    return stages


class NTM(nn.Module):
    """Neural Turing Machine: a controller with read and write heads on an N x M memory.

    `forward(inputs, output_steps, blank_steps=None)` feeds the input sequence, then
    `blank_steps` blank inputs (default `output_steps`), and returns the output logits of the
    last `output_steps` steps (apply a sigmoid for bits): by default the blank steps, for tasks
    answered after the input (copy); with blank_steps=0, steps of the input itself (N-grams).
    """

    def __init__(
        self,
        input_size: int,
        output_size: int,
        controller: str = "lstm",
        controller_size: int = 100,
        controller_layers: int = 1,
        num_heads: int = 1,
        head_order: str = "",
        memory_n: int = 128,
        memory_m: int = 20,
        memory_init: str = "constant",
        memory_init_value: float = 1e-6,
        shift_range: int = 1,
        controller_clip: float = 20.0,
        add_activation: str = "none",
        cell_clip: float = 0.0,
    ):
        super().__init__()
        if memory_init not in MEMORY_INITS:
            raise ValueError(f"memory_init must be one of {MEMORY_INITS}, got {memory_init!r}")
        if add_activation not in ADD_ACTIVATIONS:
            raise ValueError(f"add_activation must be one of {ADD_ACTIVATIONS}, got {add_activation!r}")
        if controller not in CONTROLLERS:
            raise ValueError(f"controller must be one of {tuple(CONTROLLERS)}, got {controller!r}")
        if cell_clip < 0 or (cell_clip > 0 and controller != "lstm"):
            raise ValueError(f"cell_clip must be >= 0, and 0 unless the controller is lstm, got {cell_clip=} {controller=}")
        if shift_range < 0 or 2 * shift_range + 1 > memory_n:
            raise ValueError(f"shift_range must be >= 0 with 2 * shift_range + 1 <= memory_n, got {shift_range=} {memory_n=}")
        self.head_order = head_order or "r" * num_heads + "w" * num_heads
        self.stages = head_stages(self.head_order)
        self.num_reads = self.head_order.count("r")
        self.num_writes = self.head_order.count("w")
        num_all = len(self.head_order)
        self.n, self.m, self.shifts = memory_n, memory_m, 2 * shift_range + 1
        self.controller_clip = controller_clip
        self.add_activation = add_activation
        self.memory_init = memory_init
        self.controller_name, self.controller_layers = controller, controller_layers

        cell = {"cell_clip": cell_clip} if controller == "lstm" else {}  # only an LSTM has cells
        controller_input = input_size + self.num_reads * memory_m
        self.controller = CONTROLLERS[controller](controller_input, controller_size, controller_layers, **cell)
        # One layer emits every head's parameters: addressing (key, strength, gate, shift, sharpening)
        # for all heads, then erase and add vectors for the write heads.
        self.address_size = memory_m + self.shifts + 3
        self.head_params = nn.Linear(self.controller.output_size, num_all * self.address_size + self.num_writes * 2 * memory_m)
        self.output = nn.Linear(self.controller.output_size + self.num_reads * memory_m, output_size)

        stdev = 1 / (memory_n + memory_m) ** 0.5
        if memory_init == "constant":
            self.register_buffer("memory0", torch.full((memory_n, memory_m), memory_init_value))
        elif memory_init == "learned":
            self.memory0 = nn.Parameter(torch.empty(memory_n, memory_m).uniform_(-stdev, stdev))
        else:  # random: drawn once at construction and fixed, as in pytorch-ntm
            self.register_buffer("memory0", torch.empty(memory_n, memory_m).uniform_(-stdev, stdev))
        self.reads0 = nn.Parameter(torch.randn(self.num_reads, memory_m) * 0.01)
        # Initial weightings start focused on row 0 (and stay learnable): with constant memory,
        # uniform weightings could never become different from each other.
        weights0 = torch.zeros(num_all, memory_n)
        weights0[:, 0] = 10.0
        self.weight_logits0 = nn.Parameter(weights0)
        self._step = self.step
        self._steps = None  # compiled: steps_per_call steps in one call (compile_step)
        self.steps_per_call = 1
        self._fused = False  # whole sequences in one call of ntm.fused (fuse_sequence)

    def compile_step(self, steps_per_call: int = 1, **options) -> None:
        """Make forward() run its time steps through torch.compile, steps_per_call steps a call
        and the rest one by one: the same numbers to float tolerance, several times faster on
        CPU, after a one-off compile (cached on disk).

        This resets torch's in-memory compile caches: sweep launchers and benchmarks build many
        models in one process, and each would otherwise add recompilations of NTM.step until
        torch's recompile limit fails the run. Another compiled NTM recompiles on its next call.
        """
        torch.compiler.reset()
        if "backend" not in options:  # inductor's options; another backend takes none
            options = {"options": COMPILE_OPTIONS, **options}
        self._step = torch.compile(self.step, fullgraph=True, **options)
        self._steps = torch.compile(self.steps, fullgraph=True, **options) if steps_per_call > 1 else None
        self.steps_per_call = steps_per_call

    def fuse_sequence(self) -> None:
        """Make forward() run the whole sequence, and its backward, in one call of ntm.fused's
        C++ library (built on first use): the same numbers as eager steps to float tolerance,
        several times faster than compiled steps at small batches. CPU and float32 only."""
        reason = fused.unsupported(self.controller_name, self.controller_layers, len(self.stages))
        if reason:
            raise ValueError(f"the fused sequence needs {reason}")
        fused.build()
        self._fused = True

    def initial_state(self, batch_size: int) -> NTMState:
        return NTMState(
            controller=self.controller.initial_state(batch_size),
            reads=self.reads0.expand(batch_size, -1, -1),
            weights=F.softmax(self.weight_logits0, dim=-1).expand(batch_size, -1, -1),
            memory=self.memory0.expand(batch_size, -1, -1),
        )

    def step(self, x: torch.Tensor, state: NTMState) -> tuple[torch.Tensor, NTMState]:
        """One time step. x: (B, I) -> logits (B, O), new state."""
        batch = x.shape[0]
        hidden, controller_state = self.controller(torch.cat([x, state.reads.reshape(batch, -1)], dim=1), state.controller)
        params = self.head_params(hidden)
        if self.controller_clip > 0:
            params = params.clamp(-self.controller_clip, self.controller_clip)
        num_all, m = len(self.head_order), self.m
        # split() rather than slicing: one autograd node instead of one per piece.
        addr, erase_add = params.split([num_all * self.address_size, self.num_writes * 2 * m], dim=1)
        keys, sharpness, gates, shifts = addr.view(batch, num_all, -1).split([m, 2, 1, self.shifts], dim=-1)
        strengths, gammas = F.softplus(sharpness).unbind(-1)
        gammas = 1 + gammas
        gates = torch.sigmoid(gates.squeeze(-1))
        shifts = F.softmax(shifts, dim=-1)
        erase, add = erase_add.view(batch, self.num_writes, 2 * m).split(m, dim=-1)
        erase = torch.sigmoid(erase)
        if self.add_activation == "tanh":
            add = torch.tanh(add)

        memory, reads, weights = state.memory, [], []
        for first, n_read, n_write, first_write in self.stages:
            if len(self.stages) == 1:
                heads = (state.weights, keys, strengths, gates, shifts, gammas)
                erase_add_heads = (erase, add)
            else:
                h, hw = slice(first, first + n_read + n_write), slice(first_write, first_write + n_write)
                heads = (t[:, h] for t in (state.weights, keys, strengths, gates, shifts, gammas))
                erase_add_heads = (erase[:, hw], add[:, hw])
            w = addressing.address(memory, *heads)
            weights.append(w)
            read_w, write_w = w.split([n_read, n_write], dim=1)
            if n_read:
                reads.append(addressing.read(memory, read_w))
            if n_write:
                memory = addressing.write(memory, write_w, *erase_add_heads)
        reads = reads[0] if len(reads) == 1 else torch.cat(reads, dim=1)
        weights = weights[0] if len(weights) == 1 else torch.cat(weights, dim=1)
        logits = self.output(torch.cat([hidden, reads.reshape(batch, -1)], dim=1))
        return logits, NTMState(controller_state, reads, weights, memory)

    def steps(self, xs: torch.Tensor, state: NTMState) -> tuple[torch.Tensor, NTMState]:
        """Time steps one after another, unrolled when compiled. xs: (K, B, I) -> logits (K, B, O), state."""
        logits = []
        for x in xs.unbind(0):
            step_logits, state = self.step(x, state)
            logits.append(step_logits)
        return torch.stack(logits), state

    @contextmanager
    def recording(self) -> Iterator[list[NTMState]]:
        """Within it, forward() runs each time step eagerly and appends the state after it to the
        yielded list (weightings (B, H, N) with heads in head_order, memory (B, N, M)): what
        figures show, whatever the task's alignment of outputs."""
        states: list[NTMState] = []
        fast = self._step

        def step(x: torch.Tensor, state: NTMState) -> tuple[torch.Tensor, NTMState]:
            logits, state = self.step(x, state)
            states.append(state)
            return logits, state

        self._step, steps, fuse = step, self._steps, self._fused
        self._steps, self._fused = None, False
        try:
            yield states
        finally:
            self._step, self._steps, self._fused = fast, steps, fuse

    def forward(self, inputs: torch.Tensor, output_steps: int, blank_steps: int | None = None) -> torch.Tensor:
        """inputs: (T, B, I) -> logits (output_steps, B, O) of the last output_steps of the
        T + blank_steps steps (blank_steps defaults to output_steps: outputs after the input)."""
        blank_steps = output_steps if blank_steps is None else blank_steps
        total = inputs.shape[0] + blank_steps
        if not 0 < output_steps <= total:
            raise ValueError(f"output_steps must be in 1..{total} (input and blank steps), got {output_steps}")
        xs = torch.cat([inputs, inputs.new_zeros((blank_steps, *inputs.shape[1:]))])
        if self._fused:
            return fused.run_sequence(self, xs)[total - output_steps :]
        state = self.initial_state(inputs.shape[1])
        k = self.steps_per_call if self._steps is not None else 1
        in_calls = total // k * k if k > 1 else 0  # the steps that go k to a call
        outputs = []
        for t in range(0, in_calls, k):
            logits, state = self._steps(xs[t : t + k], state)
            outputs.append(logits)
        for t in range(in_calls, total):
            logits, state = self._step(xs[t], state)
            outputs.append(logits.unsqueeze(0))
        return torch.cat(outputs)[total - output_steps :]
