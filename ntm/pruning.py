"""The job's side of a pruning sweep: report evaluation costs to its Optuna trial, stop when told.

The sweeper (hydra/sweeper=ntm_optuna) gives each job its trial through Hydra's job settings,
`hydra.job.env_set.<TRIAL_ENV>`, never a config key: a key would change job folder names and
the config's schema. The reporter reads it from the job's Hydra config, so jobs that share one
process (hydra/launcher=ensemble) each find their own trial. Outside such a sweep there is no reporter.
"""

from omegaconf import OmegaConf

TRIAL_ENV = "NTM_OPTUNA_TRIAL_ID"
PRUNED_ATTR = "ntm_pruned"  # set on a trial the job stopped, so the sweeper tells it PRUNED


class TrialReporter:
    """Reports (progress in sequences seen, cost) to one trial; says whether to stop."""

    def __init__(self, storage_url: str, study_name: str, trial_id: int, pruner_config) -> None:
        import optuna
        from hydra.utils import instantiate

        pruner = instantiate(pruner_config) if pruner_config else optuna.pruners.NopPruner()
        study = optuna.load_study(study_name=study_name, storage=storage_url, pruner=pruner)
        self.trial = optuna.trial.Trial(study, trial_id)

    def should_stop(self, sequences: int, cost: float) -> bool:
        self.trial.report(cost, step=sequences)
        if not self.trial.should_prune():
            return False
        self.mark_pruned()
        return True

    def mark_pruned(self) -> None:
        """Tell the sweeper this trial's run was pruned (also when its folder held a pruned run already)."""
        self.trial.study._storage.set_trial_system_attr(self.trial._trial_id, PRUNED_ATTR, True)


def trial_reporter(hydra_config) -> TrialReporter | None:
    """The reporter of a job launched by the pruning sweeper, else None.

    hydra_config: the job's `hydra` node (HydraConfig.get() inside a job); its trial is in
    hydra.job.env_set.
    """
    env_set = OmegaConf.select(hydra_config, "job.env_set", default=None) or {}
    trial_id = env_set.get(TRIAL_ENV)
    sweeper = hydra_config.get("sweeper", {})
    if not trial_id or not str(sweeper.get("_target_", "")).endswith("NTMOptunaSweeper"):
        return None
    return TrialReporter(str(sweeper.storage), sweeper.study_name, int(trial_id), sweeper.get("pruner"))
