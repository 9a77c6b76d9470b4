"""What pruning saves: the same search on copy with and without the pruner.

    python benchmarks/pruning.py                  # 16 trials each, a table on stdout
    python benchmarks/pruning.py --trials 24 --out /tmp/pruning

Both searches use Optuna's RandomSampler with the same seed, so they try the same list of
configurations in the same order; only `hydra.sweeper.pruner` differs. Compute is the training
time of every trial's run (summary.json wall_time_s, one core each), the sweep's wall time
beside it. Run it alone on the machine: the two searches share nothing but the cores.
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parents[1]
SEARCH = [
    "sweep=hpo",
    "hydra/sweeper/sampler=random",
    "optimizer=rmsprop",
    "optimizer.lr=choice(1e-4,3e-4,1e-3,3e-3)",
    "train.batch_size=choice(8,16,32)",
    "model.memory.init=choice(constant,learned,random)",
    "model.controller_size=choice(64,100)",
    "model.memory.m=20",
    "model.num_heads=1",
    "model.controller=lstm",  # sweep=hpo's other keys fixed: the space the README's table measured
    "train.grad_clip=value",
    "train.steps=1500",
    "train.eval_interval=100",
    "train.report_interval=100",
    "train.snapshot_interval=0",
    "train.compile=true",
]
PRUNERS = {
    "no pruning": ["hydra.sweeper.pruner=null"],
    "median (sweep=hpo's pruner)": [],
    "successive halving": ["hydra/sweeper/pruner=successive_halving"],
}


def run_search(name: str, extra: list[str], trials: int, seed: int, out: Path) -> dict:
    sweep_dir = out / re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    command = [sys.executable, str(ROOT / "run.py"), "-m", *SEARCH, *extra, f"hydra.sweeper.n_trials={trials}",
               f"hydra.sweeper.sampler.seed={seed}", f"hydra.sweep.dir={sweep_dir}"]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
    wall = time.perf_counter() - start
    study = optuna.load_study(study_name="hpo", storage=f"sqlite:///{sweep_dir}/optuna.db")
    summaries = [json.loads(path.read_text()) for path in sweep_dir.glob("*/summary.json")]
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    best = min(done, key=lambda t: t.value)
    return {
        "search": name,
        "trials": len(study.trials),
        "pruned": sum(t.state.name == "PRUNED" for t in study.trials),
        "best objective": best.value,
        "best trial": best.number,
        "best params": best.params,
        "compute s": sum(s["wall_time_s"] for s in summaries),
        "sequences": sum(s["sequences"] for s in summaries),
        "sweep wall s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, help="keep the sweep folders here (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        rows = []
        for name, extra in PRUNERS.items():
            rows.append(run_search(name, extra, args.trials, args.seed, out))
            print(f"{name}: {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
    base = rows[0]
    columns = ["search", "trials", "pruned", "best objective (trial)", "same best config", "compute s", "vs no pruning",
               "sequences", "sweep wall s"]  # fmt: skip
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print(
            f"| {row['search']} | {row['trials']} | {row['pruned']} | {row['best objective']:.4g} ({row['best trial']}) "
            f"| {'yes' if row['best params'] == base['best params'] else 'no'} | {row['compute s']:.0f} "
            f"| {row['compute s'] / base['compute s']:.0%} | {row['sequences']:,} | {row['sweep wall s']:.0f} |"
        )
    print(f"\nbest configuration: {base['best params']}")


if __name__ == "__main__":
    main()
