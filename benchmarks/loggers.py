"""What the loggers cost: the same run with no logger, logger=tensorboard and logger=mlflow.

    python benchmarks/loggers.py                  # 3 rounds of 1,000 steps at the defaults
    python benchmarks/loggers.py --steps 2000 --rounds 5

Each round runs `python run.py train.steps=N` once per setting, in turn, as a user would (a
process each, the default report interval), and reads the training loop's speed (summary.json
seq_per_s) and the process's wall time. Medians over rounds, and each setting's ratio to no
logger measured in the same rounds.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"none": [], "tensorboard": ["logger=tensorboard"], "mlflow": ["logger=mlflow"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    speed = {name: [] for name in SETTINGS}
    wall = {name: [] for name in SETTINGS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, overrides in SETTINGS.items():
                run_dir = Path(tmp) / f"{name}{r}"
                start = time.perf_counter()
                cmd = [sys.executable, str(ROOT / "run.py"), f"train.steps={args.steps}", "train.progress=false",
                       f"hydra.run.dir={run_dir}", *overrides]  # fmt: skip
                subprocess.run(cmd, check=True, capture_output=True, cwd=tmp)
                wall[name].append(time.perf_counter() - start)
                speed[name].append(json.loads((run_dir / "summary.json").read_text())["seq_per_s"])
                print(f"round {r} {name}: {speed[name][-1]:.1f} seq/s, {wall[name][-1]:.1f} s", file=sys.stderr, flush=True)
    base_speed, base_wall = statistics.median(speed["none"]), statistics.median(wall["none"])
    print(f"`python run.py train.steps={args.steps}` (copy, batch 1), median of {args.rounds} rounds:\n")
    print("| logger | training seq/s | vs none | process wall s | vs none |")
    print("|---|---|---|---|---|")
    for name in SETTINGS:
        s, w = statistics.median(speed[name]), statistics.median(wall[name])
        print(f"| {name} | {s:.1f} | {s / base_speed:.3f}x | {w:.1f} | {w / base_wall:.2f}x |")


if __name__ == "__main__":
    main()
