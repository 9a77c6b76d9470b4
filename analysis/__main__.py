"""python -m analysis PATH...: results table of every run below PATHs; optional CSV, markdown and figures."""

import argparse
import sys
from pathlib import Path

from .common import display_path
from .load import load
from .table import render, results_table

NO_RUNS, USAGE = 1, 2  # exit codes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m analysis",
        description="Find every run below PATHs (single runs, multirun and Optuna sweep folders), and print one "
        "table grouped by config with seeds aggregated. Broken or unfinished runs are reported on stderr and skipped.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="a run folder, a sweep folder, or any folder holding them")
    parser.add_argument(
        "--group-by",
        metavar="KEYS",
        help="comma-separated config keys to group by, e.g. model.memory.n,optimizer.name "
        "(default: every config key that varies between the runs, except seed)",
    )
    parser.add_argument("--csv", metavar="FILE", help="also write the results table, as numbers, to FILE")
    parser.add_argument("--runs-csv", metavar="FILE", help="also write one row per run (config, summary, trial) to FILE")
    parser.add_argument("--markdown", action="store_true", help="print the table as a markdown (pipe) table")
    parser.add_argument(
        "--plots", metavar="DIR", help="write learning_curves.png, generalisation.png, convergence_vs_memory.png to DIR"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0, 1 when no run is found, 2 on a usage error)."""
    args = parse_args(argv)
    try:
        loaded = load(*args.paths)
    except (FileNotFoundError, NotADirectoryError) as error:
        print(f"error: {error}", file=sys.stderr)
        return USAGE
    if loaded.runs.empty:
        where = ", ".join(args.paths)
        if loaded.problems:
            print(f"error: no usable run under {where} ({len(loaded.problems)} problems reported above)", file=sys.stderr)
        else:
            print(f"error: no runs found under {where} (a run folder holds .hydra/config.yaml and summary.json)", file=sys.stderr)
        return NO_RUNS
    try:
        table = results_table(loaded.runs, group_by=args.group_by)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return USAGE
    keys = ", ".join(table.attrs["group_by"]) or "nothing (no config key varies)"
    print(f"{plural(len(loaded.runs), 'run')} in {plural(len(table), 'group')}; grouped by {keys}")
    followers: dict[str, list[str]] = {}
    for column, name_column in table.attrs.get("implied", {}).items():
        followers.setdefault(name_column, []).append(column)
    for name_column, columns in followers.items():
        print(f"(not shown: {', '.join(columns)}, fixed by {name_column})")
    print()
    print(render(table, markdown=args.markdown))
    write_outputs(args, loaded, table)
    return 0


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def write_outputs(args: argparse.Namespace, loaded, table) -> None:
    """The files asked for with --csv, --runs-csv and --plots; each one written is named on stderr."""
    for path, frame in ((args.csv, table), (args.runs_csv, loaded.runs)):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            frame.to_csv(path, index=False)
            print(f"wrote {display_path(path)}", file=sys.stderr)
    if args.plots:
        from .plots import plot_all  # matplotlib only when figures are asked for

        for path in plot_all(loaded.runs, loaded.curves, args.plots, group_by=args.group_by):
            print(f"wrote {display_path(path)}", file=sys.stderr)


if __name__ == "__main__":
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")  # '±' on a terminal that cannot show it
    sys.exit(main())
