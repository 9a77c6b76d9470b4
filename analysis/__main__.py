"""python -m analysis PATH...: results table of every run below PATHs (grouped, or a search's trials best first);
optional CSV, markdown and figures."""

import argparse
import os
import sys
import textwrap
from pathlib import Path

from .common import display_path
from .load import Loaded, load
from .search import format_importances, format_search, is_search, search_table, status_counts, study_importances, used_studies
from .table import format_table, render, results_table

NO_RUNS, USAGE = 1, 2  # exit codes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m analysis",
        description="Find every run below PATHs (single runs, multirun and Optuna sweep folders) and print one table: "
        "grouped by config with seeds aggregated, or, for a hyperparameter search (runs of an Optuna study, each "
        "configuration once), one row per trial, best first. Runs still training are shown as running, killed ones "
        "as unfinished; broken runs are reported on stderr and skipped.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="a run folder, a sweep folder, or any folder holding them")
    view = parser.add_mutually_exclusive_group()
    view.add_argument(
        "--trials",
        action="store_true",
        help="one row per trial (or run), best objective first, with the swept parameters and parameter importances "
        "(default when the runs come from an Optuna study and each configuration ran once)",
    )
    view.add_argument("--groups", action="store_true", help="the grouped table, also for a search")
    parser.add_argument(
        "--group-by",
        metavar="KEYS",
        help="comma-separated config keys to group by, e.g. model.memory.n,optimizer.name "
        "(default: every config key that varies between the runs, except seed); implies --groups",
    )
    parser.add_argument("--top", type=int, metavar="N", help="with the trials view: print only the N best trials")
    parser.add_argument("--wide", action="store_true", help="print every column, however wide the table")
    parser.add_argument("--csv", metavar="FILE", help="also write the table, every column, as numbers, to FILE")
    parser.add_argument("--runs-csv", metavar="FILE", help="also write one row per run (config, summary, trial) to FILE")
    parser.add_argument("--markdown", action="store_true", help="print the table as a markdown (pipe) table, every column")
    parser.add_argument(
        "--plots",
        metavar="DIR",
        help="write figures to DIR: learning_curves.png, generalisation.png, convergence_vs_memory.png and, for runs of "
        "several tasks, tasks.png; for the trials "
        "view optimization_history.png, param_effects.png, param_importances.png and learning_curves.png",
    )
    args = parser.parse_args(argv)
    if args.trials and args.group_by:
        parser.error("--group-by applies to the grouped table, not to --trials")
    if args.top is not None and args.top < 1:
        parser.error("--top must be at least 1")
    return args


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
    width = None if args.wide or args.markdown else terminal_width()
    if args.trials or (not args.groups and not args.group_by and is_search(loaded.runs)):
        return show_trials(args, loaded, width, chosen=args.trials)
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
    print(render(format_table(table), markdown=args.markdown, width=width))
    write_tables(args, loaded, table)
    if args.plots:
        from .plots import plot_all  # matplotlib only when figures are asked for

        report_written(plot_all(loaded.runs, loaded.curves, args.plots, group_by=args.group_by))
    return 0


def show_trials(args: argparse.Namespace, loaded: Loaded, width: int | None, chosen: bool) -> int:
    """The trials view: the search table best first, the parameter importances, the search figures."""
    studies = used_studies(loaded)
    importances: dict[str, float] = {}
    lines, methods = [], []
    for study, values, how in study_importances(studies, report=note):
        if values is None:
            note(f"parameter importances {how}")
            continue
        importances.update(values)
        methods.append(how)
        of = f" of {study.name}" if len(studies) > 1 else ""
        lines.append(f"parameter importances{of} ({how}): {format_importances(values)}")
    table = search_table(loaded, importances=importances)
    source = "; ".join(f"Optuna study {study.label}" for study in studies) or "runs without an Optuna study"
    print(f"{plural(len(table), 'trial')} of {source}; best first ({table.attrs['direction']} objective)")
    print(f"status: {status_counts(table)}")
    if not chosen:
        print("(trials view: each configuration ran once; --groups for the grouped table)")
    print()
    shown = table.head(args.top) if args.top else table
    print(render(format_search(shown), markdown=args.markdown, width=width))
    if args.top and args.top < len(table):
        print(f"({len(table) - args.top} more trials not shown: --top {len(table)} or --csv FILE for all)")
    for line in lines:
        print(textwrap.fill(line, width, subsequent_indent="  ") if width else line)
    write_tables(args, loaded, table)
    if args.plots:
        from .search_plots import plot_search  # matplotlib only when figures are asked for

        method = "; ".join(methods) or "optuna.importance"
        report_written(plot_search(table, args.plots, importances, loaded.runs, loaded.curves, importance_method=method))
    return 0


def note(message: str) -> None:
    """An explanation on stderr (not a problem with the runs, which are warnings)."""
    print(f"note: {message}", file=sys.stderr)


def terminal_width() -> int | None:
    """The width to fit printed tables in: $COLUMNS, else the terminal's; None (no limit) when not printing to one."""
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns if sys.stdout.isatty() else None
    except (OSError, ValueError):  # stdout replaced by something without a file descriptor
        return None


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def write_tables(args: argparse.Namespace, loaded: Loaded, table) -> None:
    """The files asked for with --csv and --runs-csv; each one written is named on stderr."""
    for path, frame in ((args.csv, table), (args.runs_csv, loaded.runs)):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            frame.to_csv(path, index=False)
            print(f"wrote {display_path(path)}", file=sys.stderr)


def report_written(paths: list[Path]) -> None:
    for path in paths:
        print(f"wrote {display_path(path)}", file=sys.stderr)


if __name__ == "__main__":
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")  # '±' on a terminal that cannot show it
    sys.exit(main())
