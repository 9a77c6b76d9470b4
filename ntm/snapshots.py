"""What figures of training need, recorded while it runs (python -m ntm.show draws them).

At each snapshot: the output probabilities on a few fixed probe sequences (half precision, far
smaller than model weights) and the cost per sequence length. The probes and the by-length
sets are fixed by the task's eval_seed, so every run of a task records the same inputs.
"""

from pathlib import Path

import torch

from ntm import run_format as fmt
from ntm.files import save_torch
from ntm.tasks import Task


class Snapshots:
    def __init__(self, task: Task, records: list[dict] | None = None):
        self.task = task
        generator = torch.Generator().manual_seed(task.config.eval_seed + 1)
        self.probes = {name: task.probe(generator, **options) for name, options in task.snapshot_probes().items()}
        self.by_length = task.cost_by_length_sets(generator)
        self.records = list(records or [])

    @torch.no_grad()
    def record(self, model: torch.nn.Module, step: int, sequences: int) -> None:
        model.eval()
        device = next(model.parameters()).device

        def predict(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            return self.task.predict(model, inputs.to(device), targets.to(device)).cpu()

        outputs = {name: torch.sigmoid(predict(inputs, targets))[:, 0].half() for name, (inputs, targets) in self.probes.items()}
        costs = {
            axis: {
                value: self.task.cost(predict(inputs, targets), targets).mean().item()
                for value, (inputs, targets) in sets.items()
            }
            for axis, sets in self.by_length.items()
        }
        model.train()
        self.records.append({"step": step, "sequences": sequences, "outputs": outputs, "costs": costs})

    def save(self, run_dir: Path) -> None:
        """Rewrite the run's snapshot file (atomically) with every record so far."""
        probes = {name: (inputs[:, 0].half(), targets[:, 0].half()) for name, (inputs, targets) in self.probes.items()}
        save_torch(run_dir / fmt.SNAPSHOTS_FILE, {"task": self.task.config.name, "probes": probes, "records": self.records})


def load(run_dir: Path) -> dict | None:
    """The snapshot file of a run: {"task", "probes": {name: (inputs, targets)}, "records": [...]}, or None."""
    path = Path(run_dir) / fmt.SNAPSHOTS_FILE
    if not path.exists():
        return None
    return torch.load(path, weights_only=True)
