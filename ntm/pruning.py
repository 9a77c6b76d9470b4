"""The job's side of a pruning sweep: report evaluation costs to its Optuna trial, stop when told.

The sweeper (hydra/sweeper=ntm_optuna) gives each job its trial through Hydra's job settings,
`hydra.job.env_set.<TRIAL_ENV>`, never a config key: a key would change job folder names and
the config's schema. The reporter reads it from the job's Hydra config, so jobs that share one
process (hydra/launcher=ensemble) each find their own trial. Outside such a sweep there is no reporter.

A trial scored on several seeds (hydra.sweeper.seeds) runs one job per seed. Each job records its
cost at each evaluation on the trial; the job that completes an evaluation's set reports the worst
of them as the trial's value there, so the pruner compares trials by their worst seed, as the
sweeper scores them. The set is that of the seeds whose jobs have started: with more seeds than
jobs at a time, the first seeds' jobs report (and can be pruned) without waiting for seeds that
will run after them, and those stop at their first evaluation if the trial was pruned meanwhile.
"""

import copy
import hashlib
import logging
from contextlib import contextmanager

from omegaconf import OmegaConf

from ntm.files import sqlite_file_lock

log = logging.getLogger(__name__)

TRIAL_ENV = "NTM_OPTUNA_TRIAL_ID"
SEEDS_ENV = "NTM_OPTUNA_SEEDS"  # the trial's seeds, comma-separated: set when a trial has several
SEED_ENV = "NTM_OPTUNA_SEED"  # this job's seed among them
PRUNED_ATTR = "ntm_pruned"  # set on a trial the job stopped, so the sweeper tells it PRUNED
SEED_COST_ATTR = "ntm_cost"  # ntm_cost:<sequences>:<seed> = one seed's cost at one evaluation
SEED_STARTED_ATTR = "ntm_started"  # ntm_started:<seed>: that seed's job has started


def encode_seeds(seeds: list[int]) -> str:
    """A trial's seeds as SEEDS_ENV holds them: "1,2"."""
    return ",".join(map(str, seeds))


def decode_seeds(text: str) -> tuple[int, ...]:
    return tuple(int(seed) for seed in text.split(",") if seed)


class TrialReporter:
    """Reports (progress in sequences seen, cost) to one trial; says whether to stop."""

    def __init__(self, storage_url: str, study_name: str, trial_id: int, pruner_config, seed: int | None = None,
                 seeds: tuple[int, ...] = ()) -> None:  # fmt: skip
        import optuna

        from ntm.optuna_compat import instantiate_optuna

        pruner = instantiate_optuna(pruner_config, "pruners") if pruner_config else optuna.pruners.NopPruner()
        # Reads go to this storage, not the study's, which caches a running trial as first read
        # (blind to its sibling jobs' costs and to the sweeper's marks).
        self.storage = optuna.storages.RDBStorage(storage_url)
        self.study = optuna.load_study(study_name=study_name, storage=self.storage, pruner=pruner)
        self.trial_id, self.seed, self.seeds = trial_id, seed, seeds
        self.ended = False  # the sweep ended the trial while this job ran
        if seeds:
            self.unless_ended(lambda: self.storage.set_trial_system_attr(trial_id, f"{SEED_STARTED_ATTR}:{seed}", True))

    def should_stop(self, sequences: int, cost: float) -> bool:
        if self.ended:
            return False
        ask = self.worst_of_seeds_should_stop if self.seeds else self.report
        return bool(self.unless_ended(lambda: ask(sequences, cost)))

    def unless_ended(self, update):
        """update()'s result, or None where Optuna refuses it because the trial is over
        ("finished trials cannot be updated", a RuntimeError on both of its lines)."""
        try:
            return update()
        except RuntimeError:
            if not self.trial_has_ended():
                raise
            return None

    def trial_has_ended(self) -> bool:
        """Whether the trial is finished while its job still trains: a sweep killed while its
        jobs ran on a cluster leaves them running, and the same command, run again, fails their
        trials as stale and asks them again; the new jobs wait for this one's run folder and
        return its result. So this job trains on, and reports no more to a trial that is over."""
        import optuna

        if self.storage.get_trial(self.trial_id).state == optuna.trial.TrialState.RUNNING:
            return False
        log.info("Trial %d was ended by its sweep; training goes on, unreported.", self.trial_id)
        self.ended = True
        return True

    def worst_of_seeds_should_stop(self, sequences: int, cost: float) -> bool:
        """Record this seed's cost; the job that completes the started seeds' costs at
        `sequences` reports their worst and asks the pruner; every job stops once one has been
        pruned.

        Under the study's lock: the pruner keeps its own records on the trial, which two jobs
        asking at once would both write. A seed that stops at its criterion reports no more and
        the trial's later evaluations wait for it: a converged seed is no reason to prune."""
        prefix = f"{SEED_COST_ATTR}:{sequences}:"
        with study_lock(self.storage, self.study.study_name):
            self.storage.set_trial_system_attr(self.trial_id, f"{prefix}{self.seed}", cost)
            attrs = self.storage.get_trial(self.trial_id).system_attrs
            if attrs.get(PRUNED_ATTR):
                return True
            started = [seed for seed in self.seeds if attrs.get(f"{SEED_STARTED_ATTR}:{seed}")]
            costs = [attrs.get(f"{prefix}{seed}") for seed in started]
            if None in costs:
                return False
            return self.report(sequences, max(costs))

    def report(self, sequences: int, cost: float) -> bool:
        """Report the trial's cost at `sequences` and ask the pruner; marks the trial pruned if so.

        A seed that started after its siblings completes evaluations the trial has passed: the
        pruner (which judges a trial at its last step) is asked about the trial as it stood then."""
        self.storage.set_trial_intermediate_value(self.trial_id, sequences, cost)
        trial = self.storage.get_trial(self.trial_id)
        if trial.last_step > sequences:
            trial = copy.copy(trial)
            trial.intermediate_values = {step: v for step, v in trial.intermediate_values.items() if step <= sequences}
        if not self.study.pruner.prune(self.study, trial):
            return False
        self.mark_pruned()
        return True

    def mark_pruned(self) -> None:
        """Tell the sweeper this trial's run was pruned (also when its folder held a pruned run already)."""
        self.storage.set_trial_system_attr(self.trial_id, PRUNED_ATTR, True)


def trial_reporter(hydra_config) -> TrialReporter | None:
    """The reporter of a job launched by the pruning sweeper, else None.

    hydra_config: the job's `hydra` node (HydraConfig.get() inside a job); its trial (and, for a
    trial on several seeds, the seeds) is in hydra.job.env_set.
    """
    env_set = OmegaConf.select(hydra_config, "job.env_set", default=None) or {}
    trial_id = env_set.get(TRIAL_ENV)
    sweeper = hydra_config.get("sweeper", {})
    if not trial_id or not str(sweeper.get("_target_", "")).endswith("NTMOptunaSweeper"):
        return None
    seeds = decode_seeds(str(env_set.get(SEEDS_ENV) or ""))
    seed = int(env_set[SEED_ENV]) if seeds else None
    return TrialReporter(str(sweeper.storage), sweeper.study_name, int(trial_id), sweeper.get("pruner"), seed, seeds)


@contextmanager
def study_lock(storage, study_name: str):
    """Hold the lock that every process of this study takes around what two must not do at
    once (count and ask trials; report a trial's worst seed): a file lock beside an SQLite
    file, an advisory lock on a PostgreSQL server; none for other storages (in memory: one
    process). storage: an optuna storage, or None."""
    url = str(storage.engine.url) if hasattr(storage, "engine") else ""
    if url.startswith("sqlite:///"):
        with sqlite_file_lock(url):
            yield
    elif url.startswith("postgresql"):
        import sqlalchemy

        key = int(hashlib.sha1(study_name.encode()).hexdigest()[:15], 16)  # a bigint, the same in every process
        with storage.engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": key})
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
    else:
        yield
