"""Seeds trained as one ensemble (ntm.ensemble) against one model per seed.

    python benchmarks/ensemble.py                       # throughput table, K = 1, 4, 8, 16 members
    python benchmarks/ensemble.py --sweeps 8 --steps 2000    # + 8 seeds through run.py, each launcher

Throughput: ms per member-sequence of one full training step (forward, backward, clipping,
RMSprop), pytorch-ntm-sized models (LSTM 100, memory 128 x 20, one read and one write head) on copy,
each member drawing its own batches (so an ensemble step lasts as long as its longest
sequence), the median of --repeats timings after warm-up, one torch thread per process. On the
CPU, both cores work: "separate models" runs two ordinary models at once in two processes (as
the joblib launcher runs seeds), and K members run as two ensembles of K/2 at once (as the
ensemble launcher spreads them); the speed-up is separate / ensemble. On a GPU (--device cuda)
one process trains K members, against one model.

Sweeps: `python run.py -m seed=1,..,N` with joblib (2 jobs at a time; each run on the default
path, train.compile=auto: the fused sequence at batch 4 or less), joblib with compiled time
steps (train.compile=true), hydra/launcher=ensemble (members vmapped, compiled), the ensemble
with train.shared_sizes=true (members share each step's sequence length), and the ensemble
launcher with train.compile=fused (each run's sequences in one C++ call, which vmap cannot
batch: its members train one by one), back to back, wall time from process start to exit
(compiles included); --launchers picks some, the first is the baseline of the speed-up column.
"""

import argparse
import json
import multiprocessing
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ntm.config import RMSpropConfig, TrainConfig  # noqa: E402
from ntm.ensemble import Ensemble  # noqa: E402
from ntm.model import NTM  # noqa: E402
from ntm.tasks import make_task  # noqa: E402
from ntm.tasks.copy import CopyConfig  # noqa: E402
from ntm.train import Solo, to_device  # noqa: E402

CLIP = TrainConfig()  # pytorch-ntm's clipping: elementwise at 10


def optimizer_for(params) -> torch.optim.Optimizer:
    o = RMSpropConfig()
    return torch.optim.RMSprop(params, lr=o.lr, momentum=o.momentum, alpha=o.alpha, eps=o.eps)


def models(task, members: int, compiled: bool, device: str):
    nets = []
    for seed in range(members):
        torch.manual_seed(seed)
        nets.append(NTM(task.input_size, task.output_size).to(device))
    if members == 1:
        if compiled:
            nets[0].compile_step(dynamic=False)
        return Solo(nets[0], optimizer_for(nets[0].parameters()))
    return Ensemble(nets, optimizer_for, compile=compiled)


def time_members(members: int, batch_size: int, steps: int, repeats: int, compiled: bool, device: str = "cpu") -> float:
    """Median ms per member-sequence of `members` models trained as one (one model: ordinary).

    Each member draws its own batches, as in training: in an ensemble every step runs as long as
    its members' longest sequence."""
    torch.set_num_threads(1)
    task = make_task(CopyConfig())
    trainer = models(task, members, compiled, device)
    generators = [torch.Generator().manual_seed(k) for k in range(members)]
    batches = [[to_device(task.sample(batch_size, g), device) for g in generators] for _ in range(steps)]
    for batch in batches[:3]:  # warm-up: compiles
        trainer.step(task, batch, CLIP.grad_clip, CLIP.grad_clip_value)
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        for batch in batches:
            trainer.step(task, batch, CLIP.grad_clip, CLIP.grad_clip_value)
        if device == "cuda":
            torch.cuda.synchronize()
        timings.append((time.perf_counter() - start) * 1000 / (steps * members * batch_size))
    return statistics.median(timings)


def _worker(args, queue) -> None:
    queue.put(time_members(*args))


def time_on_two_cores(members: int, batch_size: int, steps: int, repeats: int, compiled: bool) -> float:
    """Two processes at once, one per core, each training `members` models as one (1: ordinary
    models, as the joblib launcher runs seeds): ms per member-sequence of the pair."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    args = (members, batch_size, steps, repeats, compiled)
    workers = [context.Process(target=_worker, args=(args, queue)) for _ in range(2)]
    for w in workers:
        w.start()
    each = [queue.get() for _ in workers]
    for w in workers:
        w.join()
    return statistics.mean(each) / 2  # both processes train at once


def throughput_table(args) -> list[str]:
    cpu = args.device == "cpu"
    where = "2 processes of K/2" if cpu else "one process"
    lines = [
        f"| path | batch | 1 model ms/seq | {'separate models, 2 processes' if cpu else '-'} | "
        + " | ".join(f"K={k} ({where}) ms/member-seq" for k in args.members)
        + " | "
        + " | ".join(f"K={k} speed-up" for k in args.members)
        + " |",
        "|---|---|---|---|" + "---|" * (2 * len(args.members)),
    ]
    for compiled in (True, False) if args.eager else (True,):
        for batch_size in args.batch_sizes:
            steps = max(16, args.sequences // batch_size)
            one = time_members(1, batch_size, steps, args.repeats, compiled, args.device)
            if cpu:
                separate = time_on_two_cores(1, batch_size, steps, args.repeats, compiled)
                timed = [time_on_two_cores(k // 2, batch_size, max(8, 2 * steps // k), args.repeats, compiled)
                         for k in args.members]  # fmt: skip
            else:  # one GPU is shared, not doubled, by two processes: the baseline is one model
                separate = one
                timed = [time_members(k, batch_size, max(8, steps // k), args.repeats, compiled, args.device)
                         for k in args.members]  # fmt: skip
            lines.append(
                f"| {'compiled' if compiled else 'eager'} | {batch_size} | {one:.2f} | "
                + (f"{separate:.2f} | " if cpu else "- | ")
                + " | ".join(f"{e:.2f}" for e in timed)
                + " | "
                + " | ".join(f"{separate / e:.1f}x" for e in timed)
                + " |"
            )
            print(lines[-1], file=sys.stderr, flush=True)
    return lines


def run_sweep(seeds: int, launcher: list[str], overrides: list[str], sweep_dir: Path) -> tuple[float, list[dict]]:
    start = time.perf_counter()
    cmd = [sys.executable, str(ROOT / "run.py"), "-m", f"seed={','.join(map(str, range(1, seeds + 1)))}",
           *launcher, "train.progress=false", f"hydra.sweep.dir={sweep_dir}", *overrides]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
    wall = time.perf_counter() - start
    summaries = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/summary.json"))]
    return wall, summaries


LAUNCHERS = {
    "joblib": ("joblib (2 at a time)", ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]),
    "joblib_compiled": (
        "joblib (2 at a time), compiled",
        ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "train.compile=true"],
    ),
    "ensemble": ("ensemble", ["hydra/launcher=ensemble", "hydra.launcher.n_jobs=2"]),
    "shared": ("ensemble, shared sizes", ["hydra/launcher=ensemble", "hydra.launcher.n_jobs=2", "train.shared_sizes=true"]),
    "ensemble_fused": (
        "ensemble, fused (members one by one)",
        ["hydra/launcher=ensemble", "hydra.launcher.n_jobs=2", "train.compile=fused"],
    ),
}


def sweep_table(args) -> list[str]:
    launchers = dict(LAUNCHERS[name] for name in args.launchers)
    overrides = [f"train.steps={args.steps}", *args.overrides]
    lines = [
        f"{args.sweeps} seeds, `python run.py -m seed=1..{args.sweeps} {' '.join(overrides)}`",
        "",
        f"| launcher | wall s | speed-up vs {args.launchers[0]} | converged "
        "| sequences to converge (median) | final eval cost (mean) |",
        "|---|---|---|---|---|---|",
    ]
    walls, per_seed = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, launcher in launchers.items():
            wall, summaries = run_sweep(args.sweeps, launcher, overrides, Path(tmp) / f"sweep{len(walls)}")
            walls[name] = wall
            baseline = next(iter(walls.values()))
            converged = [s["converged_at"] for s in summaries if s["converged_at"] is not None]
            median = f"{statistics.median(converged):,.0f}" if converged else "-"
            cost = statistics.mean(s["eval_cost"] for s in summaries if s["eval_cost"] is not None)
            lines.append(f"| {name} | {wall:.0f} | {baseline / wall:.2f}x | {len(converged)}/{len(summaries)} | {median} "
                         f"| {cost:.3f} |")  # fmt: skip
            per_seed[name] = [s["converged_at"] for s in summaries]
            print(lines[-1], file=sys.stderr, flush=True)
    lines.append("")
    lines += [f"sequences to converge by seed, {name}: {values}" for name, values in per_seed.items()]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", nargs="+", type=int, default=[4, 8, 16])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--sequences", type=int, default=128, help="sequences per model per timing")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--eager", action="store_true", help="also time the eager path")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the throughput table trains")
    parser.add_argument("--no-throughput", action="store_true")
    parser.add_argument("--sweeps", type=int, default=0, metavar="N", help="also N seeds through run.py, each launcher")
    parser.add_argument("--steps", type=int, default=2000, help="train.steps of each sweep run")
    parser.add_argument("--launchers", nargs="+", choices=LAUNCHERS, default=list(LAUNCHERS),
                        help="the sweeps' launchers, in order; the first is the baseline")  # fmt: skip
    parser.add_argument("overrides", nargs="*", help="extra run.py overrides for --sweeps")
    args = parser.parse_args()
    gpu = f", {torch.cuda.get_device_name()}" if args.device == "cuda" else ""
    print(f"machine: {platform.processor() or platform.machine()}{gpu}, torch {torch.__version__}, "
          f"python {platform.python_version()}, one torch thread per process")  # fmt: skip
    lines = [] if args.no_throughput else throughput_table(args)
    if args.sweeps:
        lines += [""] + sweep_table(args)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
