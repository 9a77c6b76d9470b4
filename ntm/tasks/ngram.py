"""Dynamic N-grams (Graves et al. 2014, 4.4): predict the next bit of a sequence drawn from a
random N-gram table, a fresh table per sequence, so the model must estimate it as it reads.

The next bit depends on the previous order - 1 bits (its context); each of the 2^(order - 1)
contexts has a probability of a 1 drawn from Beta(1/2, 1/2). The sequence starts from a context
of zeros: it is as if order - 1 zero bits came before it (never shown, never predicted), so
every bit, the first ones included, is drawn from the table, and the model and the optimal
estimator both predict all seq_len bits.
"""

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from ntm.checks import positive, require
from ntm.tasks.base import Batch, MemoryProfile, Task, TaskConfig

# Beta(1/2, 1/2) pseudo-counts: the optimal estimator's prior.
PRIOR = 0.5


@dataclass
class NGramConfig(TaskConfig):
    name: str = "ngram"
    order: int = 6  # N: the next bit depends on the previous N - 1 bits
    seq_len: int = 200  # bits per sequence
    converge_threshold: float = 2.0  # bits per sequence above the optimal estimator (conf/task/ngram.yaml)
    paper_lstm_size: ClassVar[int] = 128

    def check(self, prefix: str = "task") -> None:
        super().check(prefix)
        positive(prefix, self, "seq_len")
        self.fixed_sizes(prefix)
        # The optimal estimator counts with one-hot contexts, (seq_len, B, 2^(order - 1)).
        require(2 <= self.order <= 10, f"{prefix}.order", self.order, "in 2..10")

    def memory_profile(self, prefix: str = "task") -> MemoryProfile:
        # One input and one target number per step; outputs are read while the input is.
        eval_floats = self.eval_batches * self.eval_batch_size * 2 * self.seq_len
        return MemoryProfile(self.seq_len, eval_floats, f"{prefix}.seq_len={self.seq_len}")


class NGramTask(Task):
    """Inputs (seq_len, B, 1): at step t the bit before bit t (0 at step 0, the last bit of the
    zero context). Targets (seq_len, B, 1): bit t. Cost: cross-entropy in bits per sequence."""

    Config = NGramConfig
    cost_unit = "bits per sequence (cross-entropy)"

    def __init__(self, config: NGramConfig):
        super().__init__(config)
        self.input_size = 1
        self.output_size = 1
        self.context_bits = config.order - 1

    def tables(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """P(next bit = 1) for each context of each sequence: (B, 2^(order - 1)), Beta(1/2, 1/2).

        Beta(1/2, 1/2) is the arcsine distribution, sin^2(pi U / 2) for U uniform: drawn this way
        so that all randomness comes from the generator (torch's Beta sampler takes none)."""
        uniform = torch.rand(batch_size, 2**self.context_bits, generator=generator, dtype=torch.float64)
        return torch.sin(math.pi / 2 * uniform) ** 2

    def bits_from(self, tables: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A sequence per table: (seq_len, B) bits, each drawn given the previous order - 1."""
        batch_size, steps = tables.shape[0], self.config.seq_len
        uniform = torch.rand(steps, batch_size, generator=generator, dtype=torch.float64)
        bits = torch.zeros(steps, batch_size, dtype=torch.long)
        context = torch.zeros(batch_size, dtype=torch.long)
        mask = 2**self.context_bits - 1
        # Each bit depends on the ones before it: a loop over time, vectorised over the batch.
        for t in range(steps):
            p_one = tables.gather(1, context.unsqueeze(1)).squeeze(1)
            bits[t] = (uniform[t] < p_one).long()
            context = ((context << 1) | bits[t]) & mask
        return bits

    def encode(self, bits: torch.Tensor) -> Batch:
        """(seq_len, B) bits -> inputs (seq_len, B, 1), the previous bit; targets (seq_len, B, 1)."""
        targets = bits.float().unsqueeze(-1)
        inputs = torch.cat([torch.zeros_like(targets[:1]), targets[:-1]])
        return inputs, targets

    def draw_size(self, generator: torch.Generator, progress: float = 1.0) -> tuple[()]:
        return ()

    def batch(self, batch_size: int, generator: torch.Generator) -> Batch:
        return self.encode(self.bits_from(self.tables(batch_size, generator), generator))

    def generalisation_sets(self, generator: torch.Generator) -> dict[str, list[Batch]]:
        """None: the paper measures N-grams at its training length only."""
        return {}

    def alignment(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[int, int]:
        # The prediction of bit t is the output at step t, while the bit before it is read.
        return targets.shape[0], 0

    def cost(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Bits to code each sequence with the model's predictions: (T, B, 1) -> (B,), the sum
        over steps of -log2 P(actual bit)."""
        nats = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        return nats.sum(dim=(0, 2)) / math.log(2)

    def contexts(self, bits: torch.Tensor) -> torch.Tensor:
        """The context of each bit, (seq_len, B) -> (seq_len, B): the previous order - 1 bits
        as a number, the most recent one lowest, zeros before the sequence."""
        k = self.context_bits
        padded = torch.cat([bits.new_zeros(k, bits.shape[1]), bits])
        # Bit t - j (j = 1..k) is padded[t + k - j]; it has weight 2^(j - 1).
        return sum(padded[k - j : k - j + bits.shape[0]] << (j - 1) for j in range(1, k + 1))

    def optimal_probabilities(self, bits: torch.Tensor) -> torch.Tensor:
        """The Bayes-optimal predictor's P(bit t = 1) for each bit, (seq_len, B) -> (seq_len, B).

        Before bit t, with n0 and n1 the zeros and ones that followed its context so far,
        P(bit t = 1) = (n1 + 1/2) / (n0 + n1 + 1): the Beta(1/2, 1/2) posterior predictive.
        Counts come from a cumulative sum over time, so no loop is needed."""
        contexts = F.one_hot(self.contexts(bits), 2**self.context_bits).double()  # (T, B, C)
        ones = contexts * bits.unsqueeze(-1)
        # Counts before step t: cumulative sums up to t, less step t itself.
        seen = (contexts.cumsum(0) - contexts).mul(contexts).sum(-1)  # (T, B)
        seen_ones = (ones.cumsum(0) - ones).mul(contexts).sum(-1)
        return (seen_ones + PRIOR) / (seen + 2 * PRIOR)

    def optimal_cost(self, bits: torch.Tensor) -> torch.Tensor:
        """Cost of the Bayes-optimal predictor on each sequence, (seq_len, B) -> (B,) bits."""
        p_one = self.optimal_probabilities(bits)
        p_actual = torch.where(bits == 1, p_one, 1 - p_one)
        return -torch.log2(p_actual).sum(0)

    def reference_probabilities(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The optimal estimator's prediction of every target bit, (T, B, 1)."""
        return self.optimal_probabilities(targets.squeeze(-1).long()).unsqueeze(-1).float()

    def reference_costs(self, eval_sets: dict[str, list[Batch]]) -> dict[str, float]:
        """{"optimal_cost": the optimal estimator's mean cost on the training-distribution set}."""
        costs = [self.optimal_cost(targets.squeeze(-1).long()) for _, targets in eval_sets["train"]]
        return {"optimal_cost": torch.cat(costs).mean().item()}
