"""The paper's baseline (Graves et al. 2014, section 4): a stack of LSTM layers, no external memory.

Shapes: T time steps, B batch, I input size, O output size, H units per layer, L layers.
"""

import torch
from torch import nn


class LSTM(nn.Module):
    """Stacked LSTM with a linear output layer, with the NTM's interface (ntm.model.NTM).

    `forward(inputs, output_steps, blank_steps=None)` feeds the input sequence, then
    `blank_steps` blank inputs (default `output_steps`), and returns the output logits of the
    last `output_steps` steps.
    """

    def __init__(self, input_size: int, output_size: int, size: int = 256, layers: int = 3):
        super().__init__()
        self.size, self.layers = size, layers
        # One nn.LSTM over the whole sequence: a single fused kernel (oneDNN on CPU) instead of
        # a Python loop over time steps.
        self.lstm = nn.LSTM(input_size, size, layers)
        self.output = nn.Linear(size, output_size)

    def compile_step(self, steps_per_call: int = 1, **options) -> None:
        """Nothing to compile: forward() already runs the whole sequence in one fused LSTM call,
        which torch.compile would leave as it is (measured: no faster). Kept so that
        train.compile=true (e.g. preset=fast) works with either model."""

    def initial_state(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero hidden and cell states, each (L, B, H)."""
        zeros = self.output.weight.new_zeros(self.layers, batch_size, self.size)
        return zeros, zeros.clone()

    def step(self, x: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        """One time step. x: (B, I) -> logits (B, O), new state."""
        hidden, state = self.lstm(x.unsqueeze(0), state)
        return self.output(hidden[0]), state

    def forward(self, inputs: torch.Tensor, output_steps: int, blank_steps: int | None = None) -> torch.Tensor:
        """inputs: (T, B, I) -> logits (output_steps, B, O) of the last output_steps of the
        T + blank_steps steps."""
        blank_steps = output_steps if blank_steps is None else blank_steps
        total = inputs.shape[0] + blank_steps
        if not 0 < output_steps <= total:
            raise ValueError(f"output_steps must be in 1..{total} (input and blank steps), got {output_steps}")
        sequence = torch.cat([inputs, inputs.new_zeros(blank_steps, *inputs.shape[1:])])
        hidden, _ = self.lstm(sequence)
        return self.output(hidden[total - output_steps :])
