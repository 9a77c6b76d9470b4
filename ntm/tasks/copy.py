"""Copy (Graves et al. 2014, 4.1): read a sequence of random bit vectors, then write it back."""

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ntm.tasks.base import BY_LENGTH_BATCH, Batch, MemoryProfile, SequenceConfig, Task, grown, randint, random_bits


@dataclass
class CopyConfig(SequenceConfig):
    name: str = "copy"
    eval_lengths: list[int] = field(default_factory=lambda: [40, 80, 120])
    paper_lstm_size: ClassVar[int] = 256

    def memory_profile(self, prefix: str = "task") -> MemoryProfile:
        def floats(length: int, sequences: int) -> int:  # inputs (length + 1, w + 1), targets (length, w)
            return sequences * ((length + 1) * (self.seq_width + 1) + length * self.seq_width)

        eval_floats = floats(self.max_len, self.eval_batches * self.eval_batch_size)
        eval_floats += sum(floats(length, self.eval_batch_size) for length in self.eval_lengths)
        return MemoryProfile(2 * self.max_len + 1, eval_floats, f"{prefix}.max_len={self.max_len}")


class CopyTask(Task):
    """Inputs: the bits plus a delimiter channel set on the step after them. Targets: the bits."""

    Config = CopyConfig

    def __init__(self, config: CopyConfig):
        super().__init__(config)
        self.input_size = config.seq_width + 1
        self.output_size = config.seq_width

    def batch(self, length: int, batch_size: int, generator: torch.Generator) -> Batch:
        width = self.config.seq_width
        bits = random_bits(length, batch_size, width, generator)
        inputs = torch.zeros(length + 1, batch_size, width + 1)
        inputs[:length, :, :width] = bits
        inputs[length, :, width] = 1.0
        return inputs, bits

    def draw_size(self, generator: torch.Generator, progress: float = 1.0) -> tuple[int]:
        c = self.config
        return (randint(c.min_len, grown(c.min_len, c.max_len, progress), generator),)

    def generalisation_sets(self, generator: torch.Generator) -> dict[str, list[Batch]]:
        c = self.config
        return {f"len{length}": [self.batch(length, c.eval_batch_size, generator)] for length in c.eval_lengths}

    probe_options = ("length",)

    def probe(self, generator: torch.Generator, length: int | None = None) -> Batch:
        """One sequence of the given length (default: the longest training length)."""
        return self.batch(length or self.config.max_len, 1, generator)

    def probe_name(self, length: int | None = None) -> str:
        return f"len{length or self.config.max_len}"

    def snapshot_probes(self) -> dict[str, dict[str, int]]:
        lengths = dict.fromkeys([self.config.max_len, *self.config.eval_lengths])
        return {self.probe_name(length): {"length": length} for length in lengths}

    def cost_by_length_sets(self, generator: torch.Generator) -> dict[str, dict[int, Batch]]:
        c = self.config
        return {"length": {n: self.batch(n, BY_LENGTH_BATCH, generator) for n in range(c.min_len, c.max_len + 1)}}
