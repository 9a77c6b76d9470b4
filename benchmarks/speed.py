"""Training speed of the NTM: eager vs torch.compile'd time steps, and time to solve.

    python benchmarks/speed.py                         # ms per sequence table: copy, repeat copy, associative recall
    python benchmarks/speed.py --solve 4               # + time to solve copy, preset=fast vs the defaults, 4 seeds
    python benchmarks/speed.py --seed-repo PATH        # + pytorch-ntm's own train_batch, timed in this run

ms/seq is one full training step (forward, backward, clip, optimiser) divided by the batch size,
the median over --repeats timings of --sequences sequences each, after warm-up, for each task's
model as its preset trains it (model=ntm_per_task: pytorch-ntm's NTM for copy and repeat copy, a
feed-forward controller of 256 units for associative recall), changed by the model overrides
given, for every task timed (e.g. `--tasks associative_recall model.num_heads=4`: the paper's
associative-recall NTM). The optimiser and clipping are pytorch-ntm's for every path. Five paths train the same
model from the same weights on the same batches in this process, so their ratios hold on a noisy
machine: eager; compiled (ntm.model.COMPILE_OPTIONS: a C++ wrapper calls the kernels; one time
step a call); the same with inductor's defaults (a Python wrapper); with ntm.model.STEPS_PER_CALL
time steps a call (train.steps_per_call=4); and each whole sequence, forward and backward, in one
call of ntm.fused's C++ library (train.compile=fused). The "default" column names the path that
`python run.py` takes at that batch (train.compile=auto, ntm.train.step_path), and the ratios
against pytorch-ntm are of that path.

With --seed-repo (a checkout of loudinthecloud/pytorch-ntm), pytorch-ntm's own
`train_batch` (its model, RMSprop and clipping, and its data loader) is timed in a subprocess
right after each row of ours, on the same number of sequences and repeats: once with --threads
torch threads (as this project trains) and once with torch's default (as pytorch-ntm trains).
Without it pytorch-ntm is not measured and no ratio is printed.

Time to solve runs `python run.py preset=fast seed=S` and `python run.py seed=S` (the plain
defaults) as a user would, one process at a time (start-up and compile included), and reads
each summary.json.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402

from ntm.config import Config, TrainConfig, fused_unsupported, validate  # noqa: E402
from ntm.hydra_glue import register_configs  # noqa: E402
from ntm.model import NTM, STEPS_PER_CALL  # noqa: E402
from ntm.tasks import Task, make_task  # noqa: E402
from ntm.train import step_path, train_step  # noqa: E402

# Each task with the NTM its preset trains (model=ntm_per_task): pytorch-ntm's for copy and repeat
# copy, a feed-forward controller of 256 units for associative recall.
TASKS = ["copy", "repeat_copy", "associative_recall"]
SEED_TASKS = {"copy": "copy", "repeat_copy": "repeat-copy"}  # pytorch-ntm's names for the tasks it has
register_configs()


def task_config(name: str, batch_size: int, extra: list[str]) -> Config:
    """What `python run.py task=NAME model=ntm_per_task train.batch_size=B EXTRA` trains."""
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        overrides = [f"task={name}", "model=ntm_per_task", f"train.batch_size={batch_size}", *extra]
        return validate(compose(config_name="config", overrides=overrides))


# Run inside a checkout of pytorch-ntm (its `ntm` package would shadow ours in this process).
# Its tasks pass attrs' old `convert=` keyword, which current attrs names `converter=`, and its
# train.py imports argcomplete for shell completion only; both are bridged here, nothing else.
SEED_TIMER = """
import json, statistics, sys, time, types
import attr
_attrib = attr.attrib
def attrib(*args, convert=None, **kwargs):
    if convert is not None:
        kwargs["converter"] = convert
    return _attrib(*args, **kwargs)
attr.attrib = attr.ib = attrib
try:
    import argcomplete
except ImportError:
    sys.modules["argcomplete"] = types.ModuleType("argcomplete")
import torch
task, batch_size, steps, repeats, threads = sys.argv[1], *map(int, sys.argv[2:6])
if threads:
    torch.set_num_threads(threads)
import train
train.init_seed(0)
training_class, params_class = train.TASKS[task]
model = training_class(params=params_class(batch_size=batch_size, num_batches=(repeats + 1) * steps + 2))
batches = [(x, y) for _, x, y in model.dataloader]
def run(chunk):
    for x, y in chunk:
        train.train_batch(model.net, model.criterion, model.optimizer, x, y)
run(batches[:2])
timings = []
for r in range(repeats):
    chunk = batches[2 + r * steps: 2 + (r + 1) * steps]
    start = time.perf_counter()
    run(chunk)
    timings.append((time.perf_counter() - start) * 1000 / (steps * batch_size))
print(json.dumps({"ms_per_seq": statistics.median(timings), "threads": torch.get_num_threads()}))
"""


def train_steps(model: NTM, optimizer: torch.optim.Optimizer, task: Task, batches: list) -> None:
    """The training loop's own step (ntm.train.train_step) with the default (pytorch-ntm's) clipping."""
    t = TrainConfig()
    for batch in batches:
        if not train_step(model, optimizer, task, batch, t.grad_clip, t.grad_clip_value).finite:
            raise RuntimeError("the benchmark model diverged")


# How a path runs its time steps: eager; compiled as the project does (ntm.model.COMPILE_OPTIONS),
# or with inductor's defaults (the compiled graph calls its kernels from Python); several steps a
# call; or the whole sequence in one C++ call (train.compile=fused).
PATHS = {
    "eager": lambda model: None,
    "compiled": lambda model: model.compile_step(dynamic=False),
    "steps_a_call": lambda model: model.compile_step(dynamic=False, steps_per_call=STEPS_PER_CALL),
    "python_wrapper": lambda model: model.compile_step(dynamic=False, options={}),
    "fused": lambda model: model.fuse_sequence(),
}


def time_paths(config: Config, steps: int, repeats: int) -> dict[str, tuple[float, float]]:
    """Per path: median ms per sequence over `repeats` timings, and its warm-up (compile) seconds;
    a path the model cannot take (fused, for a controller it does not implement) is left out.

    The paths take turns, one timing each per round, so a machine that slows down for a while
    slows every path alike and their ratios hold."""
    task = make_task(config.task)
    generator = torch.Generator().manual_seed(0)
    batches = [task.sample(config.train.batch_size, generator) for _ in range(steps)]
    paths = dict(PATHS)
    if fused_unsupported(config):
        del paths["fused"]
    trained, warm_up = {}, {}
    for path, prepare in paths.items():  # all built before any compiles: compile_step resets torch's caches
        torch.manual_seed(0)
        model = config.model.build(task)
        prepare(model)
        trained[path] = (model, torch.optim.RMSprop(model.parameters(), lr=1e-4, momentum=0.9, alpha=0.95))
    for path, (model, optimizer) in trained.items():
        start = time.perf_counter()
        train_steps(model, optimizer, task, batches[:2])
        warm_up[path] = time.perf_counter() - start
    timings = {path: [] for path in paths}
    for _ in range(repeats):
        for path, (model, optimizer) in trained.items():
            start = time.perf_counter()
            train_steps(model, optimizer, task, batches)
            timings[path].append((time.perf_counter() - start) * 1000 / (steps * config.train.batch_size))
    return {path: (statistics.median(timings[path]), warm_up[path]) for path in paths}


def time_seed(repo: Path, task: str, batch_size: int, steps: int, repeats: int, threads: int) -> tuple[float, int]:
    """pytorch-ntm's train_batch: median ms per sequence and the torch threads it ran with (0: torch's default)."""
    env = {**os.environ, "PYTHONPATH": str(repo)}
    args = [SEED_TASKS[task], batch_size, steps, repeats, threads]
    done = subprocess.run([sys.executable, "-c", SEED_TIMER, *map(str, args)], cwd=repo, env=env,
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode:
        raise SystemExit(f"timing pytorch-ntm in {repo} failed:\n{done.stderr.strip()}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["ms_per_seq"], result["threads"]


def or_dash(value: float | None, form: str) -> str:
    """A table cell: the value formatted, or "-" for a path the model cannot take."""
    return "-" if value is None else form.format(value)


def speed_table(args) -> list[str]:
    header = ("| task | batch | eager ms/seq | compiled, Python wrapper ms/seq | compiled ms/seq "
              f"| compiled, {STEPS_PER_CALL} steps a call ms/seq | fused ms/seq | eager/compiled "
              f"| Python wrapper/compiled | compiled/{STEPS_PER_CALL} steps a call | compiled/fused | compile s "
              "| default (train.compile=auto) | default seq/s |")  # fmt: skip
    if args.seed_repo:
        one = f"{args.threads} thread{'s' * (args.threads > 1)}"
        header += (f" pytorch-ntm ms/seq, {one} | pytorch-ntm ms/seq, default threads "
                   f"| pytorch-ntm ({one}) / default | pytorch-ntm (default threads) / default "
                   f"| pytorch-ntm ({one}) / compiled | pytorch-ntm ({one}) / fused |")  # fmt: skip
    lines = [header, "|---" * (header.count("|") - 1) + "|"]
    for name in args.tasks:
        for batch_size in args.batch_sizes:
            config = task_config(name, batch_size, args.overrides)
            steps = max(32, args.sequences // batch_size)
            paths = time_paths(config, steps, args.repeats)
            (eager, _), (python_wrapper, _), (fast, compile_s), (chunked, _) = (
                paths[p] for p in ("eager", "python_wrapper", "compiled", "steps_a_call")
            )
            fused = paths["fused"][0] if "fused" in paths else None
            default = step_path(config, together=False)  # a long run trained alone
            ours = paths[default][0]
            fused_ms, compiled_over_fused = or_dash(fused, "{:.2f}"), or_dash(fused and fast / fused, "{:.2f}x")
            row = (f"| {name} | {batch_size} | {eager:.2f} | {python_wrapper:.2f} | {fast:.2f} | {chunked:.2f} "
                   f"| {fused_ms} | {eager / fast:.2f}x | {python_wrapper / fast:.2f}x | {fast / chunked:.2f}x "
                   f"| {compiled_over_fused} | {compile_s:.0f} | {default} | {1000 / ours:.0f} |")  # fmt: skip
            if args.seed_repo and name not in SEED_TASKS:
                row += " - |" * 6
            elif args.seed_repo:
                seed_one, _ = time_seed(args.seed_repo, name, batch_size, steps, args.repeats, args.threads)
                seed_default, default_threads = time_seed(args.seed_repo, name, batch_size, steps, args.repeats, 0)
                seed_over_fused = or_dash(fused and seed_one / fused, "{:.1f}x")
                row += (f" {seed_one:.2f} | {seed_default:.2f} ({default_threads}) | {seed_one / ours:.1f}x "
                        f"| {seed_default / ours:.1f}x | {seed_one / fast:.1f}x | {seed_over_fused} |")  # fmt: skip
            lines.append(row)
            print(lines[-1], file=sys.stderr, flush=True)  # progress; the table goes to stdout at the end
    return lines


# What --solve times on copy: each as a user runs it, `python run.py OVERRIDES seed=S`.
SOLVERS = {"preset=fast": ["preset=fast"], "plain defaults": []}


def solve_once(name: str, overrides: list[str], seed: int, run_dir: Path) -> tuple[int | None, float | None]:
    """One run.py process to the end: (sequences to converge, seconds from process start to the criterion)."""
    start = time.perf_counter()
    cmd = [sys.executable, str(ROOT / "run.py"), *overrides, f"seed={seed}", f"hydra.run.dir={run_dir}",
           "train.progress=false"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr}")
    summary = json.loads((run_dir / "summary.json").read_text())
    process_s = time.perf_counter() - start
    solved = summary["converged_time_s"]
    # converged_time_s counts from the training loop's start; add the process's time outside the
    # loop (start-up, and the few seconds of writing its files at the end: an upper bound).
    seconds = None if solved is None else solved + process_s - summary["wall_time_s"]
    print(f"{name} seed {seed}: converged_at={summary['converged_at']} "
          f"solve_s={seconds} process_s={process_s:.0f}", file=sys.stderr, flush=True)  # fmt: skip
    return summary["converged_at"], seconds


def solve_table(seeds: int, extra: list[str]) -> list[str]:
    """Time to solve copy with each of SOLVERS, one run.py process at a time, alternating per
    seed so that a slow spell of the machine falls on both."""
    results: dict[str, list] = {name: [] for name in SOLVERS}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(1, seeds + 1):
            for number, (name, overrides) in enumerate(SOLVERS.items()):
                run_dir = Path(tmp) / f"solver{number}_seed{seed}"
                results[name].append(solve_once(name, [*overrides, *extra], seed, run_dir))
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    names = list(SOLVERS)
    header = " | ".join(f"{name}: sequences | {name}: seconds" for name in names)
    lines = [f"| seed | {header} |", "|---" * (1 + 2 * len(names)) + "|"]
    for i in range(seeds):
        cells = []
        for name in names:
            converged, seconds = results[name][i]
            cells += [f"{converged:,}", f"{seconds:.0f}"] if seconds is not None else ["not converged", "-"]
        lines.append(f"| {i + 1} | {' | '.join(cells)} |")
    lines.append("")
    medians = {}
    for name in names:
        solved = [seconds for _, seconds in results[name] if seconds is not None]
        sequences = [converged for converged, seconds in results[name] if seconds is not None]
        if solved:
            medians[name] = statistics.median(solved)
            lines.append(
                f"{name}: converged {len(solved)}/{seeds}; sequences median {statistics.median(sequences):,.0f}; "
                f"seconds to solve median {medians[name]:.0f}, min {min(solved):.0f}, max {max(solved):.0f}"
            )
        else:
            lines.append(f"{name}: converged 0/{seeds}")
    first = names[0]
    for other in names[1:]:
        if first in medians and other in medians:
            lines.append(f"median seconds to solve, {other} / {first}: {medians[other] / medians[first]:.2f}")
    lines.append(f"peak RSS of one run {peak_mib:.0f} MiB")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=TASKS, choices=TASKS)
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8, 32, 128])
    parser.add_argument("--sequences", type=int, default=256, help="sequences per timing (steps = this / batch, >= 32)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--solve", type=int, default=0, metavar="N", help="also time to solve copy for N seeds: preset=fast and the defaults"
    )
    parser.add_argument("--seed-repo", type=Path, metavar="PATH",
                        help="a checkout of loudinthecloud/pytorch-ntm: time its train.py's train_batch beside ours")  # fmt: skip
    parser.add_argument("--no-speed", action="store_true", help="skip the ms/seq table")
    parser.add_argument("overrides", nargs="*", help="extra run.py overrides: the speed table's models, and --solve's runs")
    args = parser.parse_args()
    if args.seed_repo and not (args.seed_repo / "train.py").is_file():
        parser.error(f"--seed-repo {args.seed_repo}: no train.py there (expected a checkout of loudinthecloud/pytorch-ntm)")
    torch.set_num_threads(args.threads)
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread(s), "
          f"torch {torch.__version__}, python {platform.python_version()}")  # fmt: skip
    if not args.seed_repo:
        print("pytorch-ntm was not measured: pass --seed-repo PATH for ratios against it")
    lines = [] if args.no_speed else speed_table(args)
    if lines:
        lines.append(f"\npeak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if args.solve:
        lines += [""] + solve_table(args.solve, args.overrides)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
