"""A workaround for optuna 2.10's GridSampler under hydra-optuna-sweeper 1.3.0.

The sweeper reports trials to Optuna with study.tell() outside Study.optimize. When a reported
trial completes the grid, GridSampler.after_trial calls Study.stop(), which raises
RuntimeError("`Study.stop` is supposed to be invoked inside an objective function or a
callback.") there. The sweeper catches that error for successful trials but not for failed
ones, so one crashed job in the last batch of a grid aborts the whole sweep.

tolerate_grid_stop() makes GridSampler.after_trial ignore that one error. Nothing else in Optuna
changes; tests/test_sweeps.py checks the upstream behaviour still needs it. Remove this module
when the project's own sweeper owns the ask/tell loop, or when the sweeper handles the error.
"""


def tolerate_grid_stop() -> None:
    """Patch GridSampler.after_trial once per process (idempotent)."""
    import optuna

    original = optuna.samplers.GridSampler.after_trial
    if getattr(original, "tolerates_stop", False):
        return

    def after_trial(self, study, trial, state, values):
        try:
            original(self, study, trial, state, values)
        except RuntimeError as error:
            if "Study.stop" not in str(error):
                raise

    after_trial.tolerates_stop = True
    optuna.samplers.GridSampler.after_trial = after_trial
