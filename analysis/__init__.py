"""Analysis of NTM runs: load run folders (single runs, multirun and Optuna sweeps) into pandas, tabulate, plot.

    import analysis
    runs = analysis.load_runs("multirun/")          # one row per run
    curves = analysis.load_curves("multirun/")      # long learning curves
    table = analysis.results_table(runs)            # grouped by config without seed
    print(analysis.render(analysis.format_table(table)))
    analysis.plot_all(runs, curves, "figures/")

    loaded = analysis.load("multirun/hpo")          # a hyperparameter search: runs, curves, Optuna studies
    trials = analysis.search_table(loaded)          # one row per trial, best objective first
    print(analysis.render(analysis.format_search(trials)))
    analysis.plot_search(trials, "figures/")        # optimization_history.png, param_effects.png

Command line: python -m analysis PATH... [--trials | --groups] [--group-by KEYS] [--top N] [--wide] [--csv FILE]
[--runs-csv FILE] [--markdown] [--plots DIR]
"""

from .load import Loaded, find_run_dirs, load, load_curves, load_runs
from .plots import plot_all
from .search import format_search, is_search, search_table, study_importances
from .search_plots import plot_search
from .table import format_table, group_labels, render, results_table, varying_columns

__all__ = [
    "Loaded",
    "find_run_dirs",
    "format_search",
    "format_table",
    "group_labels",
    "is_search",
    "load",
    "load_curves",
    "load_runs",
    "plot_all",
    "plot_search",
    "render",
    "results_table",
    "search_table",
    "study_importances",
    "varying_columns",
]
