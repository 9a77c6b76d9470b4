"""Priority sort (Graves et al. 2014, 4.5): read bit vectors, each with a priority, then write
the highest-priority ones, highest first."""

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ntm.checks import positive, require
from ntm.tasks.base import BY_LENGTH_BATCH, Batch, MemoryProfile, Task, TaskConfig, random_bits


@dataclass
class PrioritySortConfig(TaskConfig):
    name: str = "priority_sort"
    seq_width: int = 8  # bits per vector
    num_inputs: int = 20  # vectors read
    num_outputs: int = 16  # highest-priority vectors written
    eval_inputs: list[int] = field(default_factory=lambda: [30])  # generalisation: more vectors read, as many written
    converge_threshold: float = 1.0  # error bits per sequence (conf/task/priority_sort.yaml says why)
    paper_lstm_size: ClassVar[int] = 128

    def check(self, prefix: str = "task") -> None:
        super().check(prefix)
        positive(prefix, self, "seq_width", "num_inputs", "num_outputs")
        self.fixed_sizes(prefix)
        require(
            self.num_outputs <= self.num_inputs,
            f"{prefix}.num_outputs",
            self.num_outputs,
            f"<= {prefix}.num_inputs ({self.num_inputs})",
        )
        for inputs in self.eval_inputs:
            require(
                inputs >= self.num_outputs,
                f"{prefix}.eval_inputs",
                list(self.eval_inputs),
                f"a list of counts >= {prefix}.num_outputs ({self.num_outputs})",
            )

    def memory_profile(self, prefix: str = "task") -> MemoryProfile:
        def floats(inputs: int, sequences: int) -> int:  # inputs (n + 1, w + 2), targets (num_outputs, w)
            return sequences * ((inputs + 1) * (self.seq_width + 2) + self.num_outputs * self.seq_width)

        eval_floats = floats(self.num_inputs, self.eval_batches * self.eval_batch_size)
        eval_floats += sum(floats(n, self.eval_batch_size) for n in self.eval_inputs)
        keys = f"{prefix}.num_inputs={self.num_inputs}, {prefix}.num_outputs={self.num_outputs}"
        return MemoryProfile(self.num_inputs + 1 + self.num_outputs, eval_floats, keys)


class PrioritySortTask(Task):
    """Inputs, w = seq_width: num_inputs steps of w bits plus the vector's priority, uniform in
    [-1, 1], on channel w; then a step with the delimiter on channel w + 1. Targets: the
    num_outputs vectors of highest priority, highest first."""

    Config = PrioritySortConfig

    def __init__(self, config: PrioritySortConfig):
        super().__init__(config)
        self.input_size = config.seq_width + 2
        self.output_size = config.seq_width

    def batch(self, num_inputs: int, batch_size: int, generator: torch.Generator) -> Batch:
        width = self.config.seq_width
        bits = random_bits(num_inputs, batch_size, width, generator)
        priorities = torch.rand(num_inputs, batch_size, generator=generator) * 2 - 1
        inputs = torch.zeros(num_inputs + 1, batch_size, width + 2)
        inputs[:num_inputs, :, :width] = bits
        inputs[:num_inputs, :, width] = priorities
        inputs[num_inputs, :, width + 1] = 1.0
        return inputs, self.sort(bits, priorities)

    def sort(self, bits: torch.Tensor, priorities: torch.Tensor) -> torch.Tensor:
        """The num_outputs vectors of highest priority, highest first: bits (n, B, w) and
        priorities (n, B) -> (num_outputs, B, w)."""
        order = priorities.argsort(dim=0, descending=True)[: self.config.num_outputs]  # (num_outputs, B)
        return bits.gather(0, order.unsqueeze(-1).expand(-1, -1, bits.shape[-1]))

    def draw_size(self, generator: torch.Generator, progress: float = 1.0) -> tuple[int]:
        return (self.config.num_inputs,)

    def generalisation_sets(self, generator: torch.Generator) -> dict[str, list[Batch]]:
        c = self.config
        return {f"inputs{n}": [self.batch(n, c.eval_batch_size, generator)] for n in c.eval_inputs}

    def cost_by_length_sets(self, generator: torch.Generator) -> dict[str, dict[int, Batch]]:
        """Cost per number of vectors read (as many written), from num_outputs up to the largest
        generalisation count, in steps of about a tenth of that range."""
        c = self.config
        top = max([c.num_inputs, *c.eval_inputs])
        counts = sorted({*range(c.num_outputs, top + 1, max(1, (top - c.num_outputs) // 10)), c.num_inputs, *c.eval_inputs})
        return {"inputs": {n: self.batch(n, BY_LENGTH_BATCH, generator) for n in counts}}
