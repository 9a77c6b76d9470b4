"""Analysis of NTM runs: load run folders (single runs, multirun and Optuna sweeps) into pandas, tabulate, plot.

    import analysis
    runs = analysis.load_runs("multirun/")          # one row per run
    curves = analysis.load_curves("multirun/")      # long learning curves
    table = analysis.results_table(runs)            # grouped by config without seed
    print(analysis.render(table))
    analysis.plot_all(runs, curves, "figures/")

Command line: python -m analysis PATH... [--group-by KEYS] [--csv FILE] [--markdown] [--plots DIR]
"""

from .load import Loaded, find_run_dirs, load, load_curves, load_runs
from .plots import plot_all
from .table import format_table, group_labels, render, results_table, varying_columns

__all__ = [
    "Loaded",
    "find_run_dirs",
    "format_table",
    "group_labels",
    "load",
    "load_curves",
    "load_runs",
    "plot_all",
    "render",
    "results_table",
    "varying_columns",
]
