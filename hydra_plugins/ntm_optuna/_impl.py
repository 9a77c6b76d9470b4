"""OptunaSweep: Optuna's ask/tell loop over Hydra's launcher, with pruning and exact totals;
the plugin Hydra finds, NTMOptunaSweeper (sweeper.py), runs it."""

import functools
import itertools
import logging
import random
import threading
import time
import warnings
from typing import Any

import optuna
import sqlalchemy
from hydra.core.plugins import Plugins
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from ntm.checks import require
from ntm.errors import ConfigError, Interrupted
from ntm.files import sqlite_file_lock
from ntm.optuna_compat import grid_values, instantiate_optuna, running_trials_never_beaten, split_overrides
from ntm.pruning import PRUNED_ATTR, SEED_ENV, SEEDS_ENV, TRIAL_ENV, encode_seeds, study_lock

log = logging.getLogger(__name__)

DONE = (TrialState.COMPLETE, TrialState.PRUNED)
POLL_SECONDS = 2.0  # while waiting for trials another sweep process runs


class OptunaSweep:
    def __init__(
        self,
        sampler: Any,
        pruner: Any,
        direction: str,
        storage: Any,
        study_name: str | None,
        n_trials: int | None,
        n_jobs: int | None,
        max_failure_rate: float,
        heartbeat_interval: int,
        params: DictConfig | None,
        seeds: list[int] | None = None,
    ) -> None:
        self.sampler, self.pruner = instantiate_optuna(sampler, "samplers"), instantiate_optuna(pruner, "pruners")
        self.direction = direction
        self.storage_url, self.study_name = storage, study_name
        self.n_trials, self.n_jobs, self.max_failure_rate = n_trials, n_jobs, max_failure_rate
        self.heartbeat_interval = heartbeat_interval
        self.params = params or {}
        self.seeds = list(seeds or [])
        require(
            all(isinstance(s, int) and not isinstance(s, bool) for s in self.seeds) and len(set(self.seeds)) == len(self.seeds),
            "hydra.sweeper.seeds", seeds, "null or a list of distinct integer seeds, e.g. [1,2]",
        )  # fmt: skip
        self.is_grid = isinstance(self.sampler, functools.partial) and self.sampler.func is optuna.samplers.GridSampler
        if n_trials is None and not self.is_grid:
            raise ConfigError("hydra.sweeper.n_trials=null is not allowed: must be >= 1 (null: the grid's size, with a grid)")
        for key, value, ok, allowed in (
            ("n_trials", n_trials, n_trials is None or n_trials >= 1, ">= 1, or null"),
            ("n_jobs", n_jobs, n_jobs is None or n_jobs >= 1, ">= 1, or null"),
            ("heartbeat_interval", heartbeat_interval, heartbeat_interval >= 1, ">= 1"),
        ):
            require(ok, f"hydra.sweeper.{key}", value, allowed)
        require(0 <= max_failure_rate <= 1, "hydra.sweeper.max_failure_rate", max_failure_rate, "in [0, 1]")

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def sweep(self, arguments: list[str]) -> None:
        distributions, fixed = split_overrides([f"{key}={value}" for key, value in self.params.items()] + list(arguments))
        seed_lines = [line for key, line in fixed.items() if key.lstrip("+~") == "seed"]
        if self.seeds and seed_lines:
            raise ConfigError(
                f"hydra.sweeper.seeds={self.seeds} trains every trial on these seeds: leave seed out of the "
                f"command line and hydra.sweeper.params (got {seed_lines[-1]!r})"
            )
        sampler, n_trials, grid = self.sampler, self.n_trials, None
        if self.is_grid:
            # The sweep walks the grid itself (grid_order), so that a failed point is asked again;
            # each grid trial's parameters are enqueued, so the sampler below never samples.
            grid = grid_points(distributions)
            if n_trials is not None and n_trials < len(grid):
                log.warning("hydra.sweeper.n_trials=%d runs %d of the grid's %d points (null: all of them)",
                            n_trials, n_trials, len(grid))  # fmt: skip
            sampler, n_trials = optuna.samplers.RandomSampler(), min(n_trials or len(grid), len(grid))
        n_jobs = self.n_jobs or n_trials
        storage = self.storage_url or optuna.storages.InMemoryStorage()
        if isinstance(storage, str):
            storage = open_storage(storage, self.heartbeat_interval)
        # The study's own storage caches running trials, blind to what their jobs write: every
        # read below goes to this one.
        self.storage = storage
        study = optuna.create_study(
            study_name=self.study_name, storage=storage, sampler=sampler, direction=self.direction, load_if_exists=True,
            pruner=self.pruner or optuna.pruners.NopPruner(),
        )  # fmt: skip
        study_id = storage.get_study_id_from_name(study.study_name)
        log.info("Study %s in %s: %d trials in all, %s", study.study_name, self.storage_url, n_trials,
                 "grid" if grid else type(sampler).__name__)  # fmt: skip
        if not grid and continue_sampling(sampler, storage.get_all_trials(study_id, deepcopy=False)):
            log.info("Study %s continued: its sampler reseeded, so it does not propose its first points again", study.study_name)

        failed_here = 0  # a trial that fails is asked again by the next invocation, not by this one
        launched = False
        while True:
            if isinstance(storage, optuna.storages.RDBStorage):
                fail_stale_trials(study, storage, study_id)
            # Counted and asked under the study's lock: two sweep processes counting at once
            # would both ask for the last trials, and run more than n_trials.
            with study_lock(storage, study.study_name):
                trials = storage.get_all_trials(study_id, deepcopy=False)
                done = sum(t.state in DONE for t in trials) + failed_here
                running = sum(t.state == TrialState.RUNNING for t in trials)
                to_ask = max(min(n_jobs, n_trials - done - running), 0)
                points = grid_order(grid, trials)[:to_ask] if grid else [None] * to_ask
                asked = [ask(study, distributions, point) for point in points]
            if asked:
                failed_here += self.run_batch(study, study_id, asked, list(fixed.values()))
                launched = True
            elif running and done < n_trials:
                time.sleep(POLL_SECONDS)  # another sweep process runs them; wait for their results
            else:
                break
        if grid and not launched:
            # A grid counts its finished points as done, so a rerun after a preset or code change
            # would otherwise end in silence with the old numbers.
            url = str(self.storage_url)
            forget = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else f"study {study.study_name} from {url}"
            log.warning(
                "Study %s has run all %d of its grid points: nothing trained. To measure again, pass a new "
                "hydra.sweeper.study_name, or delete %s: then every job looks at its run folder again "
                "(a finished run returns its stored results, a larger budget continues, a changed config is refused)",
                study.study_name, n_trials, forget,
            )  # fmt: skip
        self.save_results(study)

    def run_batch(self, study: optuna.Study, study_id: int, trials: list, fixed: list[str]) -> int:
        """Launch one batch of trials (one job per trial, or one per seed of hydra.sweeper.seeds)
        and tell Optuna how each ended; returns how many failed."""
        # Each trial's jobs: one per seed, which its reporter also needs to know, or one as configured.
        all_seeds = f"++hydra.job.env_set.{SEEDS_ENV}='{encode_seeds(self.seeds)}'"
        per_seed = [[f"seed={s}", all_seeds, f"++hydra.job.env_set.{SEED_ENV}={s}"] for s in self.seeds] or [[]]
        trial_ids = [self.storage.get_trial_id_from_study_id_trial_number(study_id, trial.number) for trial in trials]
        job_overrides = []
        for trial, trial_id in zip(trials, trial_ids):
            swept = [f"{name}={value}" for name, value in trial.params.items()]
            # The trial travels in Hydra's job settings: no config key, so job folders keep their names.
            trial_env = f"++hydra.job.env_set.{TRIAL_ENV}={trial_id}"
            job_overrides += [(*swept, *fixed, *seed, trial_env) for seed in per_seed]
        k = len(per_seed)
        with Heartbeats(self.storage, trial_ids, self.heartbeat_interval):
            try:
                returns = self.launcher.launch(job_overrides, initial_job_idx=trials[0].number * k)
            except (Interrupted, KeyboardInterrupt):
                # Ctrl-C ends the sweep: a job's Interrupted, or this process's own KeyboardInterrupt
                # while a pool's workers train. The batch's trials fail and, outside a grid (which
                # asks a failed point again), go back in the queue with their parameters: the next
                # invocation asks them first, and their jobs continue from their checkpoints.
                for trial in trials:
                    study.tell(trial, state=TrialState.FAIL)
                    if not self.is_grid:
                        enqueue(study, trial.params)
                raise
        failures = 0
        for i, (trial, trial_id) in enumerate(zip(trials, trial_ids)):
            jobs = returns[i * k : (i + 1) * k]
            try:
                values = [float(job.return_value) for job in jobs]
            except Exception as error:  # a job raised, or returned no number
                log.warning("Trial %d failed: %s", trial.number, error)
                study.tell(trial, state=TrialState.FAIL)
                failures += 1
                continue
            # A trial on several seeds scores as its worst one (objectives are costs: lower is
            # better), so that a setting wins by being robust, not by one lucky seed.
            value = max(values) if self.direction == "minimize" else min(values)
            if self.seeds:
                trial.set_user_attr("seed_values", dict(zip(map(str, self.seeds), values)))
            if self.storage.get_trial(trial_id).system_attrs.get(PRUNED_ATTR):
                study.tell(trial, state=TrialState.PRUNED)
            else:
                study.tell(trial, value)
        if failures / len(trials) > self.max_failure_rate:
            raise RuntimeError(
                f"{failures} of {len(trials)} trials failed, above hydra.sweeper.max_failure_rate={self.max_failure_rate}"
            )
        return failures

    def save_results(self, study: optuna.Study) -> None:
        done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        if not done:
            log.warning("No trial of study %s completed", study.study_name)
            return
        best = study.best_trial
        log.info("Best trial %d: value %s, params %s", best.number, best.value, best.params)
        results = {"name": "ntm_optuna", "best_params": best.params, "best_value": best.value, "best_trial": best.number}
        OmegaConf.save(OmegaConf.create(results), f"{self.config.hydra.sweep.dir}/optimization_results.yaml")


def continue_sampling(sampler: optuna.samplers.BaseSampler, trials: list) -> bool:
    """A seeded sampler in a new process draws the random numbers it drew in the first: a
    continued study's sampler would propose its first points again (TPE's start-up trials are
    random), and each repeat would count as one of n_trials. Reseed it where the study has trials
    (from the operating system's entropy: a continued search is not replayed); True if it did."""
    if not trials:
        return False
    sampler.reseed_rng()
    return True


def ask(study: optuna.Study, distributions: dict, point: dict | None) -> optuna.trial.Trial:
    """A new trial with the swept keys' values: the sampler's, or a grid point's."""
    if point is not None:
        enqueue(study, point)
    return study.ask(distributions)


def enqueue(study: optuna.Study, params: dict) -> None:
    """Make the study's next asked trial one with these parameters."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # enqueue_trial on optuna 2.10
        study.enqueue_trial(params)


def grid_points(distributions: dict) -> list[dict]:
    """Every combination of the swept keys' values, in the order of the command line."""
    values = [grid_values(name, distribution) for name, distribution in distributions.items()]
    return [dict(zip(distributions, point)) for point in itertools.product(*values)]


def grid_order(grid: list[dict], trials: list) -> list[dict]:
    """The grid points to ask, in order: the never tried, then those whose every trial failed."""
    tried = [t.params for t in trials]
    taken = [t.params for t in trials if t.state in DONE or t.state == TrialState.RUNNING]
    return [p for p in grid if p not in tried] + [p for p in grid if p in tried and p not in taken]


def fail_stale_trials(study: optuna.Study, storage: optuna.storages.RDBStorage, study_id: int) -> None:
    """Fail the trials a killed sweep left RUNNING: those without a heartbeat for the grace period.

    Optuna's fail_stale_trials skips a RUNNING trial that has no heartbeat at all, and a sweep
    killed between study.ask() (which commits the trial) and the trial's first heartbeat leaves
    one, which a rerun would otherwise wait for forever. So such a trial gets a heartbeat here
    first. If its sweep is alive, that sweep keeps it beating; if not, it goes stale like any other
    and is failed one grace period later. (Not its datetime_start compared instead: that is the
    clock of the machine that asked the trial, while heartbeats, this one too, are all the database's.)
    """
    for trial_id in running_trials_never_beaten(storage, study_id):
        storage.record_heartbeat(trial_id)  # if its sweep records the first one meanwhile, one is kept
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def open_storage(url: str, heartbeat_interval: int) -> optuna.storages.RDBStorage:
    """The study's database, its tables created if need be. Heartbeats tell a trial left RUNNING by
    a killed sweep from one still running.

    Sweeps started together on a new database race to create its tables. An SQLite file's folder
    is made and its tables created under a file lock beside it; a server (PostgreSQL: one fails on
    its types) is asked again, as creating them is idempotent."""
    with sqlite_file_lock(url):  # a busy SQLite file ("database is locked") frees up between attempts
        return connect(url, heartbeat_interval, attempts=5)


def connect(url: str, heartbeat_interval: int, attempts: int) -> optuna.storages.RDBStorage:
    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url, heartbeat_interval=heartbeat_interval)
        except sqlalchemy.exc.SQLAlchemyError as error:
            if attempt == attempts - 1:
                reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
                raise ConfigError(f"hydra.sweeper.storage={url!r}: cannot open the study's database: {reason}") from None
            time.sleep(0.5 + random.random())
    raise AssertionError("attempts must be >= 1")


class Heartbeats:
    """Record a heartbeat for each running trial every interval while their jobs run."""

    def __init__(self, storage: optuna.storages.BaseStorage, trial_ids: list[int], interval: int):
        self.storage, self.ids, self.interval = storage, trial_ids, interval
        self.stop = threading.Event()

    def beat(self) -> None:
        for trial_id in self.ids:
            self.storage.record_heartbeat(trial_id)

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            self.beat()

    def __enter__(self):
        if isinstance(self.storage, optuna.storages.RDBStorage):  # opened with heartbeats (open_storage)
            self.beat()
            self.thread = threading.Thread(target=self.run, daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
