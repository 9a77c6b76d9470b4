"""Controllers: the network that reads the input and previous reads and drives the heads.

A controller maps (x, state) -> (output, state) and has a learned initial state.
"""

import torch
import torch.nn.functional as F
from torch import nn


class LSTMController(nn.Module):
    """A stack of LSTM cells with a learned initial hidden and cell state.

    cell_clip > 0 clips each cell state to [-cell_clip, cell_clip] after its update (as
    TensorFlow's LSTMCell does): a cell that counts up along a long sequence stops at the bound
    instead of running away; 0 leaves it unbounded (nn.LSTMCell's numbers).
    """

    def __init__(self, input_size: int, size: int, layers: int, cell_clip: float = 0.0):
        super().__init__()
        self.cell_clip = cell_clip
        self.cells = nn.ModuleList(nn.LSTMCell(input_size if i == 0 else size, size) for i in range(layers))
        self.h0 = nn.Parameter(torch.randn(layers, size) * 0.05)
        self.c0 = nn.Parameter(torch.randn(layers, size) * 0.05)
        self.output_size = size

    def initial_state(self, batch_size: int) -> tuple:
        return tuple((h.expand(batch_size, -1), c.expand(batch_size, -1)) for h, c in zip(self.h0, self.c0))

    def forward(self, x: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        # The gates computed here from each LSTMCell's parameters, not by calling the cell: the
        # same numbers, and, unlike the fused lstm_cell op, vmap can batch it over the members
        # of an ensemble (ntm.ensemble). Eager, it is no slower.
        new_state = []
        for cell, (h, c) in zip(self.cells, state):
            gates = F.linear(x, cell.weight_ih, cell.bias_ih) + F.linear(h, cell.weight_hh, cell.bias_hh)
            i, f, g, o = gates.chunk(4, dim=-1)  # LSTMCell's order
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            if self.cell_clip > 0:
                c = c.clamp(-self.cell_clip, self.cell_clip)
            h = torch.sigmoid(o) * torch.tanh(c)
            new_state.append((h, c))
            x = h
        return x, tuple(new_state)


class FeedForwardController(nn.Module):
    """Fully connected layers with tanh; stateless, so all memory lives in the NTM's memory."""

    def __init__(self, input_size: int, size: int, layers: int):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(input_size if i == 0 else size, size) for i in range(layers))
        self.output_size = size

    def initial_state(self, batch_size: int) -> tuple:
        return ()

    def forward(self, x: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        for layer in self.layers:
            x = torch.tanh(layer(x))
        return x, state


CONTROLLERS = {"lstm": LSTMController, "feedforward": FeedForwardController}
