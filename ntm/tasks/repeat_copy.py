"""Repeat copy (Graves et al. 2014, 4.2): copy a sequence a given number of times, then mark the end."""

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ntm.checks import positive, require
from ntm.tasks.base import BY_LENGTH_BATCH, Batch, MemoryProfile, SequenceConfig, Task, grown, randint, random_bits


@dataclass
class RepeatCopyConfig(SequenceConfig):
    name: str = "repeat_copy"
    max_len: int = 10
    eval_lengths: list[int] = field(default_factory=lambda: [20])  # generalisation lengths at max_repeats
    min_repeats: int = 1
    max_repeats: int = 10
    eval_repeats: list[int] = field(default_factory=lambda: [20])  # generalisation repeat counts at max_len
    paper_lstm_size: ClassVar[int] = 512

    def check(self, prefix: str = "task") -> None:
        super().check(prefix)
        positive(prefix, self, "min_repeats", "max_repeats")
        require(
            self.min_repeats <= self.max_repeats,
            f"{prefix}.min_repeats",
            self.min_repeats,
            f"<= {prefix}.max_repeats ({self.max_repeats})",
        )
        for repeats in self.eval_repeats:
            require(repeats > 0, f"{prefix}.eval_repeats", list(self.eval_repeats), "a list of counts > 0")

    def memory_profile(self, prefix: str = "task") -> MemoryProfile:
        def steps(length: int, repeats: int) -> tuple[int, int]:
            return length + 2, length * repeats + 1

        def floats(length: int, repeats: int, sequences: int) -> int:
            inputs, outputs = steps(length, repeats)
            return sequences * (inputs * (self.seq_width + 2) + outputs * (self.seq_width + 1))

        eval_floats = floats(self.max_len, self.max_repeats, self.eval_batches * self.eval_batch_size)
        eval_floats += sum(floats(n, self.max_repeats, self.eval_batch_size) for n in self.eval_lengths)
        eval_floats += sum(floats(self.max_len, r, self.eval_batch_size) for r in self.eval_repeats)
        keys = f"{prefix}.max_len={self.max_len}, {prefix}.max_repeats={self.max_repeats}"
        return MemoryProfile(sum(steps(self.max_len, self.max_repeats)), eval_floats, keys)


class RepeatCopyTask(Task):
    """Inputs: bits, a delimiter step, then a step holding the repeat count normalised to
    mean 0 and variance 1 over the training range. Targets: the bits repeated, then an
    end marker on an extra channel."""

    Config = RepeatCopyConfig

    def __init__(self, config: RepeatCopyConfig):
        super().__init__(config)
        self.input_size = config.seq_width + 2
        self.output_size = config.seq_width + 1
        lo, hi = config.min_repeats, config.max_repeats
        # Mean and standard deviation of the discrete uniform distribution on [lo, hi];
        # a single repeat count has no spread, so it is only centred.
        self.repeats_mean = (lo + hi) / 2
        self.repeats_std = (((hi - lo + 1) ** 2 - 1) / 12) ** 0.5 or 1.0

    def normalise(self, repeats: int) -> float:
        return (repeats - self.repeats_mean) / self.repeats_std

    def batch(self, length: int, repeats: int, batch_size: int, generator: torch.Generator) -> Batch:
        width = self.config.seq_width
        bits = random_bits(length, batch_size, width, generator)
        inputs = torch.zeros(length + 2, batch_size, width + 2)
        inputs[:length, :, :width] = bits
        inputs[length, :, width] = 1.0
        inputs[length + 1, :, width + 1] = self.normalise(repeats)
        targets = torch.zeros(length * repeats + 1, batch_size, width + 1)
        targets[:-1, :, :width] = bits.repeat(repeats, 1, 1)
        targets[-1, :, width] = 1.0
        return inputs, targets

    def draw_size(self, generator: torch.Generator, progress: float = 1.0) -> tuple[int, int]:
        c = self.config
        length = randint(c.min_len, grown(c.min_len, c.max_len, progress), generator)
        return length, randint(c.min_repeats, grown(c.min_repeats, c.max_repeats, progress), generator)

    def generalisation_sets(self, generator: torch.Generator) -> dict[str, list[Batch]]:
        c = self.config
        sets = {f"len{n}": [self.batch(n, c.max_repeats, c.eval_batch_size, generator)] for n in c.eval_lengths}
        sets.update({f"reps{r}": [self.batch(c.max_len, r, c.eval_batch_size, generator)] for r in c.eval_repeats})
        return sets

    probe_options = ("length", "repeats")

    def probe(self, generator: torch.Generator, length: int | None = None, repeats: int | None = None) -> Batch:
        """One sequence (default: the longest training length, the most training repeats)."""
        return self.batch(length or self.config.max_len, repeats or self.config.max_repeats, 1, generator)

    def probe_name(self, length: int | None = None, repeats: int | None = None) -> str:
        return f"len{length or self.config.max_len}_reps{repeats or self.config.max_repeats}"

    def snapshot_probes(self) -> dict[str, dict[str, int]]:
        c = self.config
        shapes = [(c.max_len, c.max_repeats)]
        shapes += [(n, c.max_repeats) for n in c.eval_lengths] + [(c.max_len, r) for r in c.eval_repeats]
        return {self.probe_name(n, r): {"length": n, "repeats": r} for n, r in dict.fromkeys(shapes)}

    def cost_by_length_sets(self, generator: torch.Generator) -> dict[str, dict[int, Batch]]:
        """Cost per length at the most training repeats, and per repeat count at the longest length."""
        c = self.config
        return {
            "length": {n: self.batch(n, c.max_repeats, BY_LENGTH_BATCH, generator) for n in range(c.min_len, c.max_len + 1)},
            "repeats": {r: self.batch(c.max_len, r, BY_LENGTH_BATCH, generator) for r in range(c.min_repeats, c.max_repeats + 1)},
        }
