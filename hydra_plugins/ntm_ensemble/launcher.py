"""EnsembleLauncher (hydra/launcher=ensemble): a batch of sweep jobs, seeds trained as ensembles.

launch() composes and validates every job in the sweep's process, groups them (plan_groups),
and trains each group with ntm.train.train_together, in the sweep's process (n_jobs=1 or a
single group), in joblib's loky worker processes (n_jobs groups at a time), or, with
hydra.launcher.slurm set (hydra/launcher=ensemble_slurm), as one SLURM job per group (submitit). Each job is
what run.py's main makes of it: its run folder hydra.sweep.dir/hydra.sweep.subdir, .hydra/
overrides.yaml and hydra.yaml, wait=True, its pruning reporter, and the summary's objective as
its return value. Hydra's on_job_start/on_job_end callbacks run for every job.

Why not hydra.core.utils.run_job, as Hydra's own launchers call it: run_job runs one job's task
function to its end, while the members of a group train in one loop at once. So this launcher
does for each member what run_job does before and after the task function, through the same
public API (HydraConfig.set_config, configure_log, env_override, the callbacks, JobReturn),
and trains the group once. Two things differ: the task function itself is not called (the jobs
are made from the parts run.py's main uses), and hydra.job.chdir is not applied (this project
sets it false): a group has one working directory.

Logs: Hydra's job logging is configured once per group, for its first member; each file handler
it opens there is repeated in every member's folder and keeps the lines of that member (ntm.train
tags them with their run folder: record.run_dir) and the group's shared lines.

ntm imports torch, so it is imported only when jobs are launched, not when Hydra scans plugins.
"""

import copy
import heapq
import json
import logging
import math
import os
from collections.abc import Hashable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, env_override, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

log = logging.getLogger(__name__)


# Grouping: a pure function of the jobs' keys and folders.


def group_cost(size: int) -> int:
    """Estimated time of a group of `size` members, in single-run units: each member, plus one for
    what a group costs whatever its size (per-step overhead, evaluation sets, a compile)."""
    return size + 1


def makespan(sizes: Sequence[int], workers: int) -> int:
    """Estimated wall time of groups of these sizes, largest first, each to the next free worker."""
    loads = [0] * max(1, min(workers, len(sizes)))
    for size in sorted(sizes, reverse=True):
        heapq.heapreplace(loads, loads[0] + group_cost(size))
    return max(loads)


def split_evenly(items: list, parts: int) -> list[list]:
    """items in `parts` consecutive chunks whose sizes differ by at most one, larger first."""
    size, extra = divmod(len(items), parts)
    chunks, start = [], 0
    for part in range(parts):
        end = start + size + (part < extra)
        chunks.append(items[start:end])
        start = end
    return chunks


def plan_groups(keys: Sequence[Hashable], folders: Sequence[Hashable], max_members: int, n_jobs: int) -> list[list[int]]:
    """Which jobs train together: lists of job indices, largest group first (the order to start them).

    keys[i]: job i's config without its seed (jobs with equal keys may share a group);
    folders[i]: its run folder (one group never holds a folder twice: it would wait for itself).
    Jobs with one key form one group, split evenly into groups of at most max_members. Then, for
    n_jobs workers, the largest group is halved as long as that shortens the estimated wall time
    (makespan; group_cost) and the fewest groups with the shortest time are kept: 8 seeds on 2
    workers train as 2 groups of 4, not as one group of 8 beside an idle worker.
    """
    if max_members < 1 or n_jobs < 1:
        raise ValueError(f"max_members={max_members} and n_jobs={n_jobs} must be >= 1")
    buckets: dict[Hashable, list[tuple[list[int], set]]] = {}
    for i, (key, folder) in enumerate(zip(keys, folders, strict=True)):
        layers = buckets.setdefault(key, [])
        for members, seen in layers:
            if folder not in seen:
                members.append(i)
                seen.add(folder)
                break
        else:
            layers.append(([i], {folder}))
    groups = [
        chunk for layers in buckets.values() for members, _ in layers
        for chunk in split_evenly(members, math.ceil(len(members) / max_members))
    ]  # fmt: skip
    best, best_time = list(groups), makespan([len(g) for g in groups], n_jobs)
    total = len(keys)
    while groups and max(len(g) for g in groups) > 1:
        largest = max(range(len(groups)), key=lambda g: len(groups[g]))
        groups[largest : largest + 1] = split_evenly(groups[largest], 2)
        sizes = [len(g) for g in groups]
        time = makespan(sizes, n_jobs)
        if time < best_time:
            best, best_time = list(groups), time
        if (total + len(groups)) / n_jobs >= best_time:
            break  # more groups only add group costs: none can be faster
    return sorted(best, key=len, reverse=True)


# One job of a batch, composed and validated in the sweep's process.


class Member(NamedTuple):
    number: int  # the job's index in the batch
    config: DictConfig  # the job's whole config, hydra.runtime.output_dir set
    typed: Any  # ntm.config.Config, validated
    run_dir: Path
    hydra_files: dict  # .hydra/overrides.yaml and hydra.yaml, as run.py writes them


def job_env(config: DictConfig) -> dict[str, str]:
    return {str(k): str(v) for k, v in OmegaConf.to_container(config.hydra.job.env_set, resolve=True).items()}


def new_return(config: DictConfig | None, overrides: Sequence[str]) -> JobReturn:
    """A job's JobReturn before it ran; HydraConfig must hold the job's config."""
    if config is None:
        return JobReturn(overrides=list(overrides), working_dir=os.getcwd())
    from ntm.hydra_glue import without_hydra

    return JobReturn(
        overrides=list(OmegaConf.to_container(config.hydra.overrides.task)),
        cfg=without_hydra(config),
        hydra_cfg=copy.deepcopy(HydraConfig.instance().cfg),
        working_dir=os.getcwd(),
        task_name=config.hydra.job.name,
    )


def finish(ret: JobReturn, value: Any, failed: bool = False) -> JobReturn:
    ret.status = JobStatus.FAILED if failed else JobStatus.COMPLETED
    ret.return_value = value
    return ret


def own_lines(run_dir: Path):
    """A log filter that passes the lines of the member training in run_dir and the group's
    shared lines (those without a run folder), and drops the other members' lines."""
    mine = str(run_dir)

    def passes(record: logging.LogRecord) -> bool:
        return getattr(record, "run_dir", mine) == mine

    return passes


@contextmanager
def member_logs(members: list[Member]):
    """Hydra's job logging for a group: the first member's config as run_job would set it up
    (console and <output_dir>/<job name>.log), and each file handler in the first member's folder
    repeated in every member's folder, each keeping its own member's lines and the shared ones."""
    first = members[0].config
    for member in members:
        member.run_dir.mkdir(parents=True, exist_ok=True)
    configure_log(first.hydra.job_logging, first.hydra.verbose)
    root = logging.getLogger()
    prefix = str(first.hydra.runtime.output_dir) + os.sep
    files = [h for h in root.handlers if isinstance(h, logging.FileHandler) and h.baseFilename.startswith(prefix)]
    added, filtered = [], []
    if len(members) > 1:
        for member in members:
            for template in files:
                if member is members[0]:
                    handler = template
                else:
                    path = os.path.join(str(member.run_dir), template.baseFilename[len(prefix) :])
                    handler = logging.FileHandler(path, mode=template.mode, encoding=template.encoding)
                    handler.setFormatter(template.formatter)
                    handler.setLevel(template.level)
                    root.addHandler(handler)
                    added.append(handler)
                own = own_lines(member.run_dir)
                handler.addFilter(own)
                filtered.append((handler, own))
    try:
        yield
    finally:
        for handler, own in filtered:
            handler.removeFilter(own)
        for handler in added:
            root.removeHandler(handler)
            handler.close()


def train_group(
    members: list[Member], hydra_context: HydraContext, task_function: TaskFunction, singleton_state: dict | None = None
) -> tuple[list[JobReturn], Exception | None]:
    """Train one group's members together; returns their JobReturns in order, and the
    ntm.errors.Interrupted that stopped them, if one did. In a worker process singleton_state is
    Hydra's global state of the sweep's process, as the joblib launcher passes it."""
    if singleton_state is not None:
        setup_globals()
        Singleton.set_state(singleton_state)
    from ntm.pruning import trial_reporter
    from ntm.train import Job

    callbacks = hydra_context.callbacks
    returns: list[JobReturn] = []
    jobs: dict[int, Any] = {}
    with member_logs(members):
        if len(members) > 1:
            log.info("Training %d runs together as one ensemble: seeds %s.", len(members), [m.typed.seed for m in members])
        for k, member in enumerate(members):
            HydraConfig.instance().set_config(member.config)
            returns.append(new_return(member.config, ()))
            with env_override(job_env(member.config)):
                callbacks.on_job_start(config=member.config, task_function=task_function)
            try:
                reporter = trial_reporter(member.config.hydra)
                jobs[k] = Job(member.typed, member.run_dir, member.hydra_files, reporter)
            except Exception as error:
                log.exception("%s: cannot start", member.run_dir)
                finish(returns[k], error, failed=True)
        # Environment variables that every member sets alike hold while they train; the trial
        # id and seed differ per member and its reporter reads them from the member's config instead.
        envs = [job_env(members[k].config) for k in jobs]
        shared = {key: value for key, value in envs[0].items() if all(env.get(key) == value for env in envs)} if envs else {}
        with env_override(shared):
            interrupted = train_jobs(jobs, returns)
        for member, ret in zip(members, returns):
            HydraConfig.instance().set_config(member.config)
            callbacks.on_job_end(config=member.config, job_return=ret)
    return returns, interrupted


def train_jobs(jobs: dict, returns: list[JobReturn]) -> Exception | None:
    """train_together(jobs) into returns; returns the Interrupted that stopped them, if one did.
    A member whose run folder is refused (another config wrote it, ...) fails alone; the others
    train together without it."""
    from ntm.errors import Interrupted, RunFolderError, UserError
    from ntm.train import RunLog, train_together

    if not jobs:
        return None
    try:
        results = train_together(list(jobs.values()), wait=True)
    except (Exception, Interrupted) as error:
        if isinstance(error, (UserError, Interrupted)):
            log.error("%s: %s", error.label, error)
        else:
            log.exception("Training %s failed", ", ".join(str(job.run_dir) for job in jobs.values()))
        for k in jobs:
            finish(returns[k], error, failed=True)
        return error if isinstance(error, Interrupted) else None
    for k, result in zip(jobs, results):
        if isinstance(result, RunFolderError):
            RunLog(jobs[k].run_dir, f"[seed {jobs[k].config.seed}] ").error("%s", result)  # in that member's log only
            finish(returns[k], result, failed=True)
        else:
            finish(returns[k], result["objective"])
    return None


class EnsembleLauncher(Launcher):
    def __init__(self, max_members: int = 16, n_jobs: int = 2, max_batch_size: int = 4, slurm: Any = None) -> None:
        from ntm.errors import ConfigError

        for key, value in (("max_members", max_members), ("n_jobs", n_jobs), ("max_batch_size", max_batch_size)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"hydra.launcher.{key}={value!r} is not allowed: must be an integer >= 1")
        self.max_members, self.n_jobs, self.max_batch_size = max_members, n_jobs, max_batch_size
        self.slurm = slurm_parameters(slurm)
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.task_function, self.hydra_context = config, task_function, hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)

        returns: list[JobReturn | None] = [None] * len(job_overrides)
        members: list[Member] = []
        for number, overrides in enumerate(job_overrides):
            member = self.prepare(number, initial_job_idx + number, overrides, returns)
            if member is not None:
                members.append(member)
        keys = [group_key(m) if m.typed.train.batch_size <= self.max_batch_size else f"alone {m.number}" for m in members]
        # On SLURM each group is a job and the cluster runs them side by side: groups as large as
        # allowed (planned for one worker), not split to fill n_jobs local workers.
        plan = plan_groups(keys, [m.run_dir for m in members], self.max_members, 1 if self.slurm else self.n_jobs)
        groups = [[members[i] for i in group] for group in plan]
        workers = 1 if self.n_jobs == 1 or len(groups) <= 1 else min(self.n_jobs, len(groups))
        log.info(
            "Ensemble launcher: %d jobs, in groups of %s, %s; sweep output dir: %s", len(job_overrides),
            ", ".join(str(len(group)) for group in groups) or "none",
            "one SLURM job each" if self.slurm else "in this process" if workers == 1 else f"{workers} worker processes",
            self.config.hydra.sweep.dir,
        )  # fmt: skip
        for group in groups:
            jobs = (f"#{initial_job_idx + m.number}: {' '.join(filter_overrides(job_overrides[m.number]))}" for m in group)
            log.info("\t%s", "; ".join(jobs))

        if self.slurm and groups:
            results = self.on_slurm(groups)
        elif workers == 1:
            results = []
            for group in groups:
                results.append(train_group(group, self.hydra_context, self.task_function))
                configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
                if results[-1][1] is not None:
                    raise results[-1][1]  # a stopped sweep does not start its next group
        else:
            from joblib import Parallel, delayed

            state = Singleton.get_state()
            # One group per task, dispatched largest first to the next free worker.
            results = Parallel(n_jobs=workers, backend="loky", batch_size=1)(
                delayed(train_group)(group, self.hydra_context, self.task_function, state) for group in groups
            )
        for group, (group_returns, _) in zip(groups, results):
            for member, ret in zip(group, group_returns):
                returns[member.number] = ret
        for _, interrupted in results:
            if interrupted is not None:
                raise interrupted  # every group has saved its checkpoints
        return returns

    def on_slurm(self, groups: list[list[Member]]) -> list[tuple[list[JobReturn], Exception | None]]:
        """Train each group as one SLURM job, all submitted at once; a job that SLURM stops for good
        (cancelled, killed for its memory) fails its members, with submitit's error naming SLURM's state."""
        import submitit
        from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

        params = dict(self.slurm)
        # As Hydra's SLURM launcher maps its keys onto submitit's: generic ones as they are, the rest prefixed.
        executor = submitit.AutoExecutor(
            folder=params.pop("submitit_folder"), cluster="slurm", slurm_max_num_timeout=params.pop("max_num_timeout", 0)
        )
        generic = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{key if key in generic else f"slurm_{key}": value for key, value in params.items()})
        state = Singleton.get_state()
        jobs = [executor.submit(GroupJob(), group, self.hydra_context, self.task_function, state) for group in groups]
        for job, group in zip(jobs, groups):
            log.info("SLURM job %s: %s", job.job_id, ", ".join(str(m.run_dir) for m in group))
        results = []
        for job, group in zip(jobs, groups):
            try:
                results.append(job.result())
            except Exception as error:  # the job left no result: SLURM stopped it, or it died
                log.warning("SLURM job %s left no result: %s", job.job_id, error)
                failed = [finish(JobReturn(overrides=list(m.config.hydra.overrides.task)), error, failed=True) for m in group]
                results.append((failed, None))
        return results

    def prepare(self, number: int, idx: int, overrides: Sequence[str], returns: list) -> Member | None:
        """Compose and validate one job; a job that fails here gets its failed JobReturn and trains in no group."""
        from ntm.config import validate
        from ntm.hydra_glue import hydra_record, without_hydra

        try:
            config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        except Exception as error:
            log.error("Job #%d (%s) cannot be composed: %s", idx, " ".join(overrides), error)
            returns[number] = finish(new_return(None, overrides), error, failed=True)
            return None
        with open_dict(config):
            config.hydra.job.id = f"{config.hydra.job.name}_{idx}"
            config.hydra.job.num = idx
        # As Hydra's run_job: hydra.sweep.subdir is resolved here, where job.num is known.
        HydraConfig.instance().set_config(config)
        sweep = config.hydra.sweep
        output_dir = os.path.join(str(sweep.dir), str(sweep.subdir))
        with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
            config.hydra.runtime.output_dir = os.path.abspath(output_dir)
        HydraConfig.instance().set_config(config)
        try:
            typed = validate(without_hydra(config))
        except Exception as error:
            ret = new_return(config, overrides)
            callbacks = self.hydra_context.callbacks
            with env_override(job_env(config)):
                callbacks.on_job_start(config=config, task_function=self.task_function)
            log.error("Job #%d (%s) fails: %s", idx, " ".join(filter_overrides(overrides)), error)
            returns[number] = finish(ret, error, failed=True)
            callbacks.on_job_end(config=config, job_return=ret)
            return None
        hydra_files = hydra_record(HydraConfig.get())  # as run.py's main writes it into .hydra/
        return Member(number, config, typed, Path(config.hydra.runtime.output_dir), hydra_files)


class GroupJob:
    """One group trained as one SLURM job (submitit pickles it with its arguments).

    A job that SLURM stops leaves without a result once its runs have saved their checkpoints
    (ntm.train.stop_requests); SLURM's requeue starts it again, and on submitit's time-limit signal
    checkpoint() has it submitted again with the same arguments: either way the runs resume."""

    def __call__(self, group: list[Member], hydra_context: HydraContext, task_function: TaskFunction, state: dict):
        return train_group(group, hydra_context, task_function, state)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def slurm_parameters(slurm: Any) -> dict | None:
    """hydra.launcher.slurm as plain values (None: no SLURM). Hydra 1.3 instantiates it before the
    launcher gets it (a SlurmLauncher, holding them as params); 1.4 passes the config."""
    if slurm is None:
        return None
    if isinstance(slurm, Launcher):
        return dict(slurm.params)
    params = OmegaConf.to_container(slurm, resolve=True) if OmegaConf.is_config(slurm) else dict(slurm)
    params.pop("_target_", None)
    return params


def group_key(member: Member) -> str:
    """What jobs of one group share: the task config but its seed, and the job environment but
    the trial id and the job's seed (a pruning sweep's, ntm.pruning)."""
    from ntm.pruning import SEED_ENV, TRIAL_ENV
    from ntm.train import seedless

    env = {k: v for k, v in job_env(member.config).items() if k not in (TRIAL_ENV, SEED_ENV)}
    return json.dumps({"config": seedless(member.typed), "env": env}, sort_keys=True)
