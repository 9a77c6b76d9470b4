"""What every task provides: sizes, a seeded batch generator, fixed evaluation sets, a cost."""

from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

import torch

from ntm.checks import positive, require


class MemoryProfile(NamedTuple):
    """What a task's data makes a run hold, for the memory estimate made before anything is built."""

    longest_steps: int  # time steps (input + output) of the longest training sequence
    eval_floats: int  # numbers held by the fixed evaluation sets
    length_keys: str  # the keys that set the longest sequence, e.g. "task.max_len=20"


@dataclass
class TaskConfig:
    """Fields every task has; a task's schema subclasses it."""

    name: str = "???"
    eval_batches: int = 20  # evaluation batches drawn from the training distribution
    eval_batch_size: int = 16
    eval_seed: int = 1000  # the evaluation sets are the same for every run seed
    # Converged: evaluation cost at training lengths, less the optimal cost where the task has
    # one (Task.reference_costs), below this.
    converge_threshold: float = 0.1
    # Sequences over which the largest training size (length, repeats, items) grows from the
    # smallest to the configured largest; 0: the full range from the start. Evaluation sets
    # always cover the full range.
    curriculum: int = 0
    # Units per layer of the paper's 3-layer LSTM baseline on this task (Graves et al. 2014,
    # table 3): the size model=lstm takes when model.size is null. Not a config key.
    paper_lstm_size: ClassVar[int]

    def check(self, prefix: str = "task") -> None:
        positive(prefix, self, "eval_batches", "eval_batch_size", "converge_threshold")
        require(self.curriculum >= 0, f"{prefix}.curriculum", self.curriculum, ">= 0 (sequences; 0: no curriculum)")

    def fixed_sizes(self, prefix: str) -> None:
        """Refuse a curriculum for a task whose sequences all have one size."""
        require(self.curriculum == 0, f"{prefix}.curriculum", self.curriculum, f"0: every {self.name} sequence has one size")

    def memory_profile(self, prefix: str = "task") -> MemoryProfile:
        raise NotImplementedError(f"{type(self).__name__} must say how much memory its sequences take")


@dataclass
class SequenceConfig(TaskConfig):
    """Tasks on sequences of random bit vectors of a given width and length range (copy, repeat copy)."""

    seq_width: int = 8
    min_len: int = 1
    max_len: int = 20
    eval_lengths: list[int] = field(default_factory=list)  # generalisation lengths

    def check(self, prefix: str = "task") -> None:
        super().check(prefix)
        positive(prefix, self, "seq_width", "min_len", "max_len")
        require(self.min_len <= self.max_len, f"{prefix}.min_len", self.min_len, f"<= {prefix}.max_len ({self.max_len})")
        for length in self.eval_lengths:
            require(length > 0, f"{prefix}.eval_lengths", list(self.eval_lengths), "a list of lengths > 0")


Batch = tuple[torch.Tensor, torch.Tensor]  # inputs (T_in, B, I), targets (T_out, B, O)
# Sequences per value in the cost-by-length sets recorded at each snapshot.
BY_LENGTH_BATCH = 8


class Task:
    """A sequence task. Subclasses set Config, input_size, output_size and implement
    draw_size(), batch() and generalisation_sets(); cost() defaults to error bits."""

    cost_unit = "error bits per sequence"

    Config = TaskConfig

    def __init__(self, config: TaskConfig):
        self.config = config

    def sample(self, batch_size: int, generator: torch.Generator, progress: float = 1.0) -> Batch:
        """A training batch; progress (0..1) is how far the curriculum has come (1: the full range).
        Its sizes come first from the generator, then its contents."""
        return self.batch(*self.draw_size(generator, progress), batch_size, generator)

    def draw_size(self, generator: torch.Generator, progress: float = 1.0) -> tuple[int, ...]:
        """The sizes of one training batch, the leading arguments of batch(): copy (length,),
        repeat copy (length, repeats); () where every sequence has one size."""
        raise NotImplementedError

    def batch(self, *size_batch_size_generator) -> Batch:
        """batch(*sizes, batch_size, generator): a batch of these sizes (draw_size's)."""
        raise NotImplementedError

    def progress(self, sequences: int) -> float:
        """How far the curriculum has come after this many training sequences, 0..1."""
        return min(1.0, sequences / self.config.curriculum) if self.config.curriculum else 1.0

    def predict(self, model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The model's logits aligned with targets, (T_out, B, O): the one way training,
        evaluation and snapshots run a model on a batch. By default the outputs come on blank
        steps after the input (copy); a task answered while it reads (N-grams) says so in alignment()."""
        return model(inputs, *self.alignment(inputs, targets))

    def alignment(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[int, int]:
        """(output_steps, blank_steps) of a batch: the model reads the inputs, then blank_steps
        blank (zero) inputs, and its last output_steps outputs answer the targets. By default the
        answer comes on blank steps after the input (copy)."""
        return targets.shape[0], targets.shape[0]

    def generalisation_sets(self, generator: torch.Generator) -> dict[str, list[Batch]]:
        """Named evaluation sets beyond the training distribution, e.g. {"len40": [...]}."""
        raise NotImplementedError

    def eval_sets(self) -> dict[str, list[Batch]]:
        """Fixed evaluation sets: "train" from the training distribution, then generalisation."""
        c = self.config
        generator = torch.Generator().manual_seed(c.eval_seed)
        sets = {"train": [self.sample(c.eval_batch_size, generator) for _ in range(c.eval_batches)]}
        sets.update(self.generalisation_sets(generator))
        return sets

    # What figures can draw (python -m ntm.show): probe(**options) takes these keyword options.
    probe_options: tuple[str, ...] = ()

    def probe(self, generator: torch.Generator, **options: int) -> Batch:
        """One sequence (batch of 1) for figures; options (probe_options) choose its shape."""
        if options:
            raise ValueError(f"task {self.config.name} takes no options for the sequence it draws")
        return self.sample(1, generator)

    def probe_name(self, **options: int) -> str:
        """The name of a probe, e.g. 'len80' (snapshots are stored under it)."""
        return "_".join(f"{key}{value}" for key, value in options.items()) or "sample"

    def snapshot_probes(self) -> dict[str, dict[str, int]]:
        """{name: options} of the fixed probes whose outputs training records at each snapshot."""
        return {"sample": {}}

    def cost_by_length_sets(self, generator: torch.Generator) -> dict[str, dict[int, Batch]]:
        """{axis: {value: batch}} whose costs training records at each snapshot, e.g.
        {"length": {1: batch of length 1, ...}}; none by default."""
        return {}

    def cost(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cost of each sequence, (T, B, O) -> (B,): what metrics, evaluation and convergence use."""
        return self.error_bits(logits, targets)

    def reference_probabilities(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor | None:
        """A reference predictor's probability of each target being 1, (T, B, O), for figures to
        draw beside the model's (N-grams: the optimal estimator); None by default."""
        return None

    def reference_costs(self, eval_sets: dict[str, list[Batch]]) -> dict[str, float]:
        """Costs to compare the model with on the training-distribution evaluation set, e.g.
        {"optimal_cost": ...}; recorded in metrics.csv and summary.json. None by default."""
        return {}

    @staticmethod
    def error_bits(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Wrong bits per sequence with outputs thresholded at probability 0.5 (0.5 reads as 1,
        as in pytorch-ntm): (T, B, O) -> (B,)."""
        return ((logits >= 0).float() != targets).float().sum(dim=(0, 2))


def random_bits(length: int, batch_size: int, width: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2, (length, batch_size, width), generator=generator).float()


def grown(low: int, high: int, progress: float) -> int:
    """The largest size a curriculum allows when it has come `progress` (0..1) of its way from low to high."""
    return low + round((high - low) * progress)


def randint(low: int, high: int, generator: torch.Generator) -> int:
    """Uniform integer in [low, high], both included."""
    return int(torch.randint(low, high + 1, (1,), generator=generator))
