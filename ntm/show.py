"""Figures of one run: what the model does on a sequence, and how its outputs changed in training.

    python -m ntm.show RUN_DIR                      # RUN_DIR/figures/{sequence.png,training.gif,cost_by_length.png}
                                                    # (N-grams also predictions.png)
    python -m ntm.show RUN_DIR --length 80 --out D  # another sequence shape (repeat copy: --repeats R too)

sequence.png needs the model (its newest checkpoint that loads); training.gif and
cost_by_length.png need the snapshots recorded during training (train.snapshot_interval). The
options that shape the drawn sequence are the task's own (Task.probe_options).
"""

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from matplotlib.animation import FuncAnimation, PillowWriter  # noqa: E402

from ntm import run_format as fmt  # noqa: E402
from ntm import snapshots  # noqa: E402
from ntm.config import Config, from_container  # noqa: E402
from ntm.errors import RunFolderError, UserError, reported  # noqa: E402
from ntm.run_folder import load_newest_checkpoint  # noqa: E402
from ntm.tasks import Task, make_task  # noqa: E402

MAX_GIF_FRAMES = 100  # keeps a GIF of a long run at a few hundred kB
# Time steps of the drawn sequence: each is a column of every panel, and the model keeps the
# memory of each step for the figure (N x M floats), so longer sequences are unreadable and slow.
MAX_PROBE_STEPS = 5000
PROBE_OPTIONS = {"length": "sequence length", "repeats": "repeat count (repeat copy)"}


def load_run(run_dir: Path) -> tuple[Config, Task]:
    path = run_dir / fmt.CONFIG_FILE
    if not path.is_file():
        raise RunFolderError(f"{run_dir} is not a run folder: it has no {fmt.CONFIG_FILE}")
    config = from_container(yaml.safe_load(path.read_text()))
    return config, make_task(config.task)


def probe_batch(task: Task, recorded: dict | None, options: dict) -> tuple[str, tuple]:
    """The sequence to draw: the one recorded in the snapshots under its name, else a fresh one."""
    unknown = [key for key in options if key not in task.probe_options]
    if unknown:
        allowed = ", ".join(f"--{key}" for key in task.probe_options) or "no options"
        raise UserError(f"task {task.config.name} draws its sequences with {allowed}, not --{unknown[0]}")
    for key, value in options.items():
        if value < 1:
            raise UserError(f"--{key} {value} is not allowed: must be >= 1")
    name = task.probe_name(**options)
    if recorded and name in recorded["probes"]:
        inputs, targets = recorded["probes"][name]
        return name, (inputs.float().unsqueeze(1), targets.float().unsqueeze(1))
    generator = torch.Generator().manual_seed(task.config.eval_seed + 2)
    batch = task.probe(generator, **options)
    _, blank_steps = task.alignment(*batch)
    steps = batch[0].shape[0] + blank_steps
    if steps > MAX_PROBE_STEPS:
        asked = " ".join(f"--{key} {value}" for key, value in options.items())
        raise UserError(f"{asked} makes a sequence of {steps:,} time steps; figures draw at most {MAX_PROBE_STEPS:,}")
    return name, batch


def draw_sequence(config: Config, task: Task, checkpoint: dict, batch: tuple, name: str, out: Path) -> tuple[float, list[str]]:
    """sequence.png: input, target, output, wrong bits, the heads' weightings and the memory, and
    predictions.png where the task has a reference predictor; returns the cost and the files written."""
    model = config.model.build(task)
    model.load_state_dict(checkpoint["model"])
    model.eval()
    inputs, targets = batch
    traced = None
    with torch.no_grad():
        if hasattr(model, "recording"):
            with model.recording() as states:
                logits = task.predict(model, inputs, targets)
            weights = torch.stack([state.weights for state in states])  # (T, B, H, N)
            traced = {"weights": weights, "memory": states[inputs.shape[0] - 1].memory}
        else:
            logits = task.predict(model, inputs, targets)
    cost = task.cost(logits, targets).item()
    probs = torch.sigmoid(logits)[:, 0]
    wrong = ((logits[:, 0] >= 0).float() != targets[:, 0]).float()
    panels = [("input", inputs[:, 0]), ("target", targets[:, 0]), ("output probability", probs), ("wrong bits", wrong)]
    heads = []
    if traced:
        order = model.head_order
        for kind, label in (("r", "read"), ("w", "write")):
            for i, head in enumerate(h for h, k in enumerate(order) if k == kind):
                heads.append((f"{label} weighting{f' {i + 1}' if order.count(kind) > 1 else ''}", traced["weights"][:, 0, head]))
    # Sequences on the top row, what the heads did below: weightings over time, then the memory.
    columns = max(len(panels), len(heads) + 1)
    figure, axes = plt.subplots(2 if traced else 1, columns, figsize=(3.6 * columns, 8 if traced else 4), squeeze=False)
    used = [*axes[0][: len(panels)], *(axes[1][: len(heads) + 1] if traced else [])]
    for ax in axes.flat:
        if not any(ax is other for other in used):
            ax.axis("off")
    for ax, (title, data) in zip([*axes[0][: len(panels)], *(axes[1][: len(heads)] if traced else [])], panels + heads):
        weights = "weighting" in title
        image = ax.imshow(data.T.numpy(), aspect="auto", origin="lower", interpolation="nearest",
                          cmap="magma" if weights else "Greys", vmin=0, vmax=1 if not weights else None)  # fmt: skip
        ax.set_title(title)
        ax.set_xlabel("time step")
        ax.set_ylabel("memory row" if weights else "channel")
        figure.colorbar(image, ax=ax, fraction=0.046)
    if traced:
        ax = axes[1][len(heads)]
        image = ax.imshow(traced["memory"][0].numpy(), aspect="auto", origin="lower", interpolation="nearest", cmap="RdBu_r")
        ax.set_title("memory after the input")
        ax.set_xlabel("column (M)")
        ax.set_ylabel("memory row (N)")
        figure.colorbar(image, ax=ax, fraction=0.046)
    written = ["sequence.png"]
    if traced and task.config.name == "priority_sort":
        draw_sorting(task, inputs, traced["weights"], model.head_order, out)
        written.append("sorting.png")
    reference = task.reference_probabilities(inputs, targets)
    if reference is not None:
        draw_predictions(task, probs, reference[:, 0], targets[:, 0], out)
        written.append("predictions.png")
    figure.suptitle(
        f"{task.config.name} {name}, {config.model.name} after step {checkpoint['step']:,} "
        f"({checkpoint['sequences']:,} sequences): cost {cost:.2f} {task.cost_unit}"
    )
    figure.tight_layout()
    figure.savefig(out / "sequence.png", dpi=80)
    plt.close(figure)
    return cost, written


def draw_sorting(task: Task, inputs: torch.Tensor, weights: torch.Tensor, order: str, out: Path) -> None:
    """sorting.png, as the paper's priority-sort figure: where the first write head wrote each
    input against its priority, and where the first read head read at each output step beside
    where the vector it should write (the next-highest priority) was written.
    inputs: (T_in, B, w + 2), weights: (T, B, H, N), heads in order ("r"/"w" per head)."""
    width, count = task.config.seq_width, inputs.shape[0] - 1
    priorities = inputs[:count, 0, width]
    locations = weights[:, 0].argmax(dim=-1)  # (T, H): the row each head weighs most
    written_at = locations[:count, order.index("w")]
    read_at = locations[inputs.shape[0] :, order.index("r")][: task.config.num_outputs]
    expected = written_at[priorities.argsort(descending=True)[: len(read_at)]]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.scatter(priorities.numpy(), written_at.numpy(), s=20)
    left.set_xlabel("priority of the input")
    left.set_ylabel("memory row written (write weighting's largest)")
    left.set_title("Writes: location against priority")
    steps = range(1, len(read_at) + 1)
    right.plot(steps, read_at.numpy(), marker="o", label="row read")
    right.plot(steps, expected.numpy(), marker="x", linestyle="--", label="row where the target was written")
    right.set_xticks(list(steps))
    right.set_xlabel("output step (highest priority first)")
    right.set_ylabel("memory row")
    right.set_title("Reads: the order")
    right.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(out / "sorting.png", dpi=80)
    plt.close(figure)


def draw_predictions(task: Task, model: torch.Tensor, reference: torch.Tensor, targets: torch.Tensor, out: Path) -> None:
    """predictions.png: the model's probability of each target bit beside the task's reference
    predictor's (N-grams: the Bayes-optimal estimator), with the actual bits; (T, O) each."""
    channels = targets.shape[1]
    figure, axes = plt.subplots(channels, 1, figsize=(min(16, 4 + targets.shape[0] / 16), 3.2 * channels), squeeze=False)
    steps = range(targets.shape[0])
    for channel, ax in enumerate(axes[:, 0]):
        ax.plot(steps, reference[:, channel], color="tab:green", label="optimal estimator", linewidth=1.5)
        ax.plot(steps, model[:, channel], color="tab:blue", label="model", linewidth=1)
        ax.scatter(steps, targets[:, channel], marker="|", color="black", s=20, label="actual bit")
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("time step")
        ax.set_ylabel("P(bit = 1)")
        ax.legend(fontsize=7, loc="upper right", ncol=3)
    axes[0, 0].set_title(f"{task.config.name}: the model's prediction of each bit and the optimal estimator's")
    figure.tight_layout()
    figure.savefig(out / "predictions.png", dpi=80)
    plt.close(figure)


def draw_training_gif(task: Task, recorded: dict, name: str, out: Path) -> int:
    """training.gif: the output on one fixed probe at every snapshot, the target above it; returns frames."""
    records = [record for record in recorded["records"] if name in record["outputs"]]
    if len(records) > MAX_GIF_FRAMES:
        records = records[:: -(-len(records) // MAX_GIF_FRAMES)] + [records[-1]]
    _, targets = recorded["probes"][name]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(min(12, 2 + targets.shape[0] / 8), 4), sharex=True)
    top.imshow(targets.float().T.numpy(), aspect="auto", origin="lower", cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
    top.set_title("target")
    top.set_ylabel("channel")
    image = bottom.imshow(records[0]["outputs"][name].float().T.numpy(), aspect="auto", origin="lower", cmap="Greys",
                          vmin=0, vmax=1, interpolation="nearest")  # fmt: skip
    bottom.set_xlabel("output time step")
    bottom.set_ylabel("channel")

    def frame(i: int):
        record = records[i]
        image.set_data(record["outputs"][name].float().T.numpy())
        bottom.set_title(f"output at step {record['step']:,} ({record['sequences']:,} sequences)")
        return (image,)

    figure.suptitle(f"{task.config.name}: output on {name} during training")
    figure.tight_layout()
    FuncAnimation(figure, frame, frames=len(records), blit=False).save(out / "training.gif", writer=PillowWriter(fps=4), dpi=60)
    plt.close(figure)
    return len(records)


def draw_cost_by_length(task: Task, recorded: dict | None, metrics: pd.DataFrame | None, out: Path) -> bool:
    """cost_by_length.png: cost per sequence length (and other axes the task records) over training, plus
    the generalisation sets from metrics.csv; False when there is nothing to draw."""
    records = recorded["records"] if recorded else []
    axes_names = list(dict.fromkeys(axis for record in records for axis in record["costs"]))
    generalisation = [c for c in (metrics.columns if metrics is not None else []) if c.startswith("eval_cost_")]
    if not axes_names and not generalisation:
        return False
    panels = axes_names or ["generalisation"]
    figure, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.5), squeeze=False)
    for ax, axis in zip(axes[0], panels):
        values = sorted({value for record in records for value in record["costs"].get(axis, {})})
        colours = plt.cm.viridis([i / max(1, len(values) - 1) for i in range(len(values))])
        x = [record["sequences"] for record in records]
        for value, colour in zip(values, colours):
            ax.plot(x, [record["costs"][axis].get(value) for record in records], color=colour, label=f"{axis} {value}")
        if ax is axes[0][0] and generalisation:
            rows = metrics.dropna(subset=generalisation, how="all")
            for column in generalisation:
                ax.plot(rows["sequences"], rows[column], "--", label=column.removeprefix("eval_cost_"))
        ax.set_yscale("symlog", linthresh=1)
        ax.set_xlabel("sequences seen")
        ax.set_ylabel(f"{task.cost_unit} (symlog)")
        ax.set_title(f"{task.config.name}: cost per {axis} during training")
        ax.legend(fontsize=6, ncol=2 if len(values) > 10 else 1, loc="upper right")
    figure.tight_layout()
    figure.savefig(out / "cost_by_length.png", dpi=80)
    plt.close(figure)
    return True


def show(run_dir: Path, out: Path | None = None, **options: int) -> dict[str, Path]:
    """Write the figures of run_dir into out (default RUN_DIR/figures); returns {figure name: path}."""
    run_dir = Path(run_dir)
    out = Path(out) if out else run_dir / "figures"
    config, task = load_run(run_dir)
    recorded = snapshots.load(run_dir)
    name, batch = probe_batch(task, recorded, options)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    checkpoint, checkpoint_name = load_newest_checkpoint(run_dir)
    if checkpoint is not None:
        cost, files = draw_sequence(config, task, checkpoint, batch, name, out)
        print(f"{task.config.name} {name}: {cost:.3f} {task.cost_unit} after step {checkpoint['step']:,} ({checkpoint_name})")
        written.update({file: out / file for file in files})
    else:
        print(f"no checkpoint in {run_dir / fmt.CHECKPOINT_DIR}: no sequence.png", file=sys.stderr)
    if recorded and any(name in record["outputs"] for record in recorded["records"]):
        draw_training_gif(task, recorded, name, out)
        written["training.gif"] = out / "training.gif"
    else:
        shown = ", ".join(recorded["probes"]) if recorded else "none (train.snapshot_interval=0?)"
        print(f"no snapshots of {name}: no training.gif (recorded: {shown})", file=sys.stderr)
    metrics_path = run_dir / fmt.METRICS_FILE
    metrics = pd.read_csv(metrics_path) if metrics_path.is_file() and metrics_path.stat().st_size else None
    if draw_cost_by_length(task, recorded, metrics, out):
        written["cost_by_length.png"] = out / "cost_by_length.png"
    if recorded and recorded["records"]:
        last = recorded["records"][-1]
        for axis, costs in last["costs"].items():
            print(f"cost per {axis} at step {last['step']:,}: " + ", ".join(f"{v}: {c:.2f}" for v, c in costs.items()))
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ntm.show", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run folder (single run or sweep job)")
    parser.add_argument("--out", type=Path, help="folder for the figures (default RUN_DIR/figures)")
    for option, meaning in PROBE_OPTIONS.items():
        parser.add_argument(f"--{option}", type=int, help=f"{meaning} of the drawn sequence, where the task has it")
    args = parser.parse_args(argv)
    options = {key: getattr(args, key) for key in PROBE_OPTIONS if getattr(args, key) is not None}
    with reported():
        for path in show(args.run_dir, args.out, **options).values():
            print(f"wrote {path}", flush=True)


if __name__ == "__main__":
    main()
