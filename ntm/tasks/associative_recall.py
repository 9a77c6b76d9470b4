"""Associative recall (Graves et al. 2014, 4.3): read a list of items, then, shown one of them,
write the item that followed it."""

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ntm.checks import positive, require
from ntm.tasks.base import BY_LENGTH_BATCH, Batch, MemoryProfile, Task, TaskConfig, grown, randint, random_bits


@dataclass
class AssociativeRecallConfig(TaskConfig):
    name: str = "associative_recall"
    seq_width: int = 6  # bits per vector
    item_len: int = 3  # vectors per item
    min_items: int = 2
    max_items: int = 6
    eval_items: list[int] = field(default_factory=lambda: [7, 8, 9, 10, 11, 12])  # generalisation item counts
    paper_lstm_size: ClassVar[int] = 256

    def check(self, prefix: str = "task") -> None:
        super().check(prefix)
        positive(prefix, self, "seq_width", "item_len")
        # The query is any item but the last, so an episode needs two items.
        require(self.min_items >= 2, f"{prefix}.min_items", self.min_items, ">= 2 (a query and the item after it)")
        require(
            self.min_items <= self.max_items, f"{prefix}.min_items", self.min_items, f"<= {prefix}.max_items ({self.max_items})"
        )
        for items in self.eval_items:
            require(items >= 2, f"{prefix}.eval_items", list(self.eval_items), "a list of item counts >= 2")

    def steps(self, items: int) -> tuple[int, int]:
        """Input and output time steps of an episode with this many items."""
        return items * (self.item_len + 1) + self.item_len + 2, self.item_len

    def memory_profile(self, prefix: str = "task") -> MemoryProfile:
        def floats(items: int, sequences: int) -> int:  # inputs (T_in, w + 2), targets (item_len, w)
            inputs, outputs = self.steps(items)
            return sequences * (inputs * (self.seq_width + 2) + outputs * self.seq_width)

        eval_floats = floats(self.max_items, self.eval_batches * self.eval_batch_size)
        eval_floats += sum(floats(items, self.eval_batch_size) for items in self.eval_items)
        keys = f"{prefix}.max_items={self.max_items}, {prefix}.item_len={self.item_len}"
        return MemoryProfile(sum(self.steps(self.max_items)), eval_floats, keys)


class AssociativeRecallTask(Task):
    """Inputs, w = seq_width channels of bits plus two delimiter channels: each item is a step
    with the item delimiter (channel w) then item_len steps of bits; then the query item between
    two steps with the query delimiter (channel w + 1). Targets: the item after the query, which
    is any item but the last, uniformly, independently for each sequence."""

    Config = AssociativeRecallConfig

    def __init__(self, config: AssociativeRecallConfig):
        super().__init__(config)
        self.input_size = config.seq_width + 2
        self.output_size = config.seq_width

    def batch(self, items: int, batch_size: int, generator: torch.Generator) -> Batch:
        c, width, length = self.config, self.config.seq_width, self.config.item_len
        bits = random_bits(items * length, batch_size, width, generator).view(items, length, batch_size, width)
        query = torch.randint(0, items - 1, (batch_size,), generator=generator)
        by_sequence = bits.permute(2, 0, 1, 3)  # (B, items, item_len, w)
        sequences = torch.arange(batch_size)
        shown, answer = by_sequence[sequences, query], by_sequence[sequences, query + 1]  # (B, item_len, w)

        inputs = torch.zeros(c.steps(items)[0], batch_size, width + 2)
        listed = inputs[: items * (length + 1)].view(items, length + 1, batch_size, width + 2)
        listed[:, 0, :, width] = 1.0
        listed[:, 1:, :, :width] = bits
        asked = inputs[items * (length + 1) :]  # query delimiter, the query item, query delimiter
        asked[[0, -1], :, width + 1] = 1.0
        asked[1:-1, :, :width] = shown.transpose(0, 1)
        return inputs, answer.transpose(0, 1).contiguous()

    def draw_size(self, generator: torch.Generator, progress: float = 1.0) -> tuple[int]:
        c = self.config
        return (randint(c.min_items, grown(c.min_items, c.max_items, progress), generator),)

    def generalisation_sets(self, generator: torch.Generator) -> dict[str, list[Batch]]:
        c = self.config
        return {f"items{items}": [self.batch(items, c.eval_batch_size, generator)] for items in c.eval_items}

    def cost_by_length_sets(self, generator: torch.Generator) -> dict[str, dict[int, Batch]]:
        """Cost per item count, over the training counts and the generalisation ones."""
        c = self.config
        counts = sorted({*range(c.min_items, c.max_items + 1), *c.eval_items})
        return {"items": {n: self.batch(n, BY_LENGTH_BATCH, generator) for n in counts}}
