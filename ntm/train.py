"""Train one model (NTM or LSTM) on one task and write its run folder (format: ntm.run_format).

Readable top to bottom: open the folder, set up, resume, loop, finish.
"""

import json
import logging
import multiprocessing
import os
import signal
import time
import zlib
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from ntm import fused, run_folder
from ntm import run_format as fmt
from ntm.config import Config, TrainConfig, fused_unsupported, to_container
from ntm.ensemble import Ensemble
from ntm.errors import Interrupted, RunFolderError
from ntm.files import write_csv, write_json
from ntm.loggers import open_loggers
from ntm.snapshots import Snapshots
from ntm.tasks import Task, make_task

log = logging.getLogger(__name__)


class RunLog(logging.LoggerAdapter):
    """This module's logger for one run: each line carries the run folder (record.run_dir), by
    which the ensemble launcher writes a member's lines into that member's own log file, and, in
    an ensemble, starts with the member's seed."""

    def __init__(self, run_dir: Path, prefix: str = ""):
        super().__init__(log, {"run_dir": str(run_dir)})
        self.prefix = prefix

    def process(self, msg, kwargs):
        return self.prefix + msg, {**kwargs, "extra": self.extra}


# Returned to the sweeper for a diverged run: finite (a NaN aborts an Optuna sweep) and worse
# than any run that kept training.
DIVERGED_OBJECTIVE = 1e6
# train.compile=auto compiles runs of at least this many steps: the compile (about 20-40 s, a few
# seconds from torch's on-disk cache) costs less than the time it saves, about 10 ms a step.
COMPILE_AUTO_MIN_STEPS = 2000
# train.compile=auto runs the fused sequence (ntm.fused) up to this batch size. It runs a batch's
# sequences one after another, while a compiled step batches them: at batch 1 it is several times
# faster, at batch 16 the compiled step is (README, Performance: benchmarks/speed.py).
FUSED_AUTO_MAX_BATCH = 4
# A step whose loss is finite but whose gradient is not (an overflow in backward) makes no update
# and training goes on; this many such steps in a row, or a non-finite loss, is divergence.
MAX_SKIPPED_STEPS = 10


def scheduler_signal() -> signal.Signals | None:
    """The signal submitit's SLURM jobs (hydra/launcher=slurm) get before a time limit or on
    preemption (SUBMITIT_PREEMPT_SIGNAL, USR2 by default); None outside such a job."""
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        return None
    return signal.Signals["SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2").removeprefix("SIG")]


class StopRequests:
    """Why the loop should stop after this step, checked between steps: a signal received, or,
    in a worker of a process pool (the joblib launcher's loky workers), the end of the process
    that started it. A sweep killed alone (`kill PID`, not Ctrl-C, which signals the whole
    process group) would otherwise leave its workers training on and writing run folders that a
    rerun of the sweep also writes."""

    def __init__(self):
        self.signals: list[int] = []
        pool = multiprocessing.parent_process()
        self.pool_parent = pool.pid if pool is not None and pool.pid == os.getppid() else None

    def parent_gone(self) -> bool:
        return self.pool_parent is not None and os.getppid() != self.pool_parent

    def reason(self) -> str | None:
        if self.signals:
            return signal.Signals(self.signals[0]).name
        if self.parent_gone():
            return f"the end of its parent process {self.pool_parent}"
        return None


@contextmanager
def stop_requests():
    """Turn SIGINT/SIGTERM into a StopRequests the loop checks between steps, so that the
    checkpoint it then writes is of a whole step (the loop then raises Interrupted). Signals can
    only be caught in the main thread.

    In a SLURM job started by submitit the scheduler stops the run: SIGTERM when it requeues,
    preempts or cancels the job, and submitit's signal before a time limit. After the checkpoint
    the job leaves without a result (SystemExit, which neither Hydra nor submitit records), so
    that SLURM's state of the job says what follows: a requeued job starts again and resumes
    from the checkpoint; submitit's own handler, given its signal back, requeues the job
    itself; a cancelled job is a failed trial with SLURM's reason."""
    requests = StopRequests()
    received = requests.signals
    previous = {}
    handed_back = scheduler_signal()
    try:
        for sig in (signal.SIGINT, signal.SIGTERM, *([handed_back] if handed_back else [])):
            previous[sig] = signal.signal(sig, lambda signum, frame: received.append(signum))
    except ValueError:
        pass  # not the main thread: signals keep their default behaviour
    try:
        yield requests
    except Interrupted:
        if requests.parent_gone():
            # No one is left to take the result, and the pool's worker loop would wait for its
            # next job forever (loky's workers do): the checkpoint is written, the process ends.
            logging.shutdown()
            os._exit(Interrupted.exit_code)
        if handed_back is None or not previous:
            raise
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if handed_back in received:
            signal.raise_signal(handed_back)  # submitit: requeues the job and exits
        raise SystemExit(
            f"Stopped by {signal.Signals(received[0]).name}; saved a checkpoint. SLURM's state of the job decides "
            "what follows: a requeued job resumes from the checkpoint."
        ) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def empty_window() -> dict:
    """Training totals over one report interval."""
    return {"loss": 0.0, "cost": 0.0, "sequences": 0, "time": 0.0}


def build_optimizer(config: Config, params) -> torch.optim.Optimizer:
    return config.optimizer.build(params)


def learning_rate(config: Config, sequences: int, dropped: bool = False) -> float:
    """The learning rate after this many sequences: optimizer.lr, or with train.lr_half_life its
    smooth decay towards train.lr_min; times train.lr_drop_factor once the run has dropped it
    (train.lr_drop_below). A function of sequences and the checkpointed drop, so a resumed run continues it."""
    t = config.train
    rate = config.optimizer.lr
    if t.lr_half_life:
        rate = t.lr_min + (rate - t.lr_min) * 0.5 ** (sequences / t.lr_half_life)
    return rate * t.lr_drop_factor if dropped else rate


def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, targets)


def gap(results: dict) -> float:
    """Evaluation cost at training lengths above the optimal cost, where the task has one."""
    return results["eval_cost"] - (results.get("optimal_cost") or 0.0)


def objective(summary: dict, config: Config) -> float:
    """What sweeps minimise; lower is better and it is always finite.

    A run that converged after s sequences scores threshold * s / (s + 100000), below the
    threshold and lower the faster it converged, whatever its batch size or step budget.
    A run that did not converge scores threshold + its final gap (evaluation cost, less the
    optimal cost where the task has one). A diverged run scores DIVERGED_OBJECTIVE."""
    threshold = config.task.converge_threshold
    if summary["status"] == "diverged" or summary["eval_cost"] is None:
        return DIVERGED_OBJECTIVE
    if summary["converged_at"] is not None:
        return threshold * summary["converged_at"] / (summary["converged_at"] + 100_000)
    return threshold + gap(summary)


class Step(NamedTuple):
    loss: torch.Tensor
    logits: torch.Tensor  # detached
    finite: bool  # False: the loss or a gradient was NaN/Inf and no update was made


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, task: Task, batch: tuple, grad_clip: str,
               grad_clip_value: float) -> Step:  # fmt: skip
    """One optimiser step on one batch: forward (task.predict), backward, the non-finite check, clipping, update."""
    inputs, targets = batch
    logits = task.predict(model, inputs, targets)
    loss = loss_fn(logits, targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    grad_norm = torch.nn.utils.get_total_norm(grads)
    if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
        return Step(loss, logits.detach(), False)
    if grad_clip == "value":
        torch.nn.utils.clip_grad_value_(model.parameters(), grad_clip_value)
    elif grad_clip == "norm":
        torch.nn.utils.clip_grads_with_norm_(model.parameters(), grad_clip_value, grad_norm)
    optimizer.step()
    return Step(loss, logits.detach(), True)


def to_device(tree, device):
    """Every tensor in nested tuples, lists and dicts moved to device."""
    if torch.is_tensor(tree):
        return tree.to(device)
    if isinstance(tree, dict):
        return type(tree)((key, to_device(value, device)) for key, value in tree.items())
    if isinstance(tree, list | tuple):
        return type(tree)(to_device(value, device) for value in tree)
    return tree


class Job(NamedTuple):
    """One run to train: its config, its folder, Hydra's record of it, its pruning reporter."""

    config: Config
    run_dir: Path
    hydra_files: dict | None = None  # {"overrides.yaml": text, "hydra.yaml": text}, written into .hydra/
    reporter: object = None  # a pruning sweep's ntm.pruning.TrialReporter


def train(config: Config, run_dir: Path | str, hydra_files: dict | None = None, wait: bool = False, reporter=None) -> dict:
    """Train in run_dir (or resume, continue, or return a finished run's summary); returns the summary.

    hydra_files: Hydra's record of the run ({"overrides.yaml": text, "hydra.yaml": text}),
    written into .hydra/ beside the config once the folder's checks pass. wait: when another
    process trains in run_dir, wait for it instead of refusing (sweep jobs). reporter: a pruning
    sweep's (ntm.pruning.TrialReporter), told the cost at each evaluation; it may stop the run.
    """
    result = train_together([Job(config, Path(run_dir), hydra_files, reporter)], wait=wait)[0]
    if isinstance(result, RunFolderError):
        raise result
    return result


def train_together(jobs: list[Job], wait: bool = False) -> list[dict | RunFolderError]:
    """Train jobs whose configs differ at most in seed as one ensemble (ntm.ensemble); returns
    their summaries in order. Each run folder ends as it would after an ordinary run. A job whose
    folder is refused (ntm.run_folder.plan) gets its RunFolderError instead, and the others train."""
    if len({seedless(job.config) for job in jobs}) > 1:
        raise ValueError("jobs trained together must differ at most in seed")
    summaries: list[dict | RunFolderError | None] = [None] * len(jobs)
    with ExitStack() as locks:
        # Always in the same order, so that two processes locking overlapping groups cannot deadlock.
        for job in sorted(jobs, key=lambda job: str(job.run_dir)):
            locks.enter_context(run_folder.locked(job.run_dir, wait=wait))
        starts: dict[int, list[tuple[int, run_folder.Plan]]] = {}
        for i, job in enumerate(jobs):
            try:
                start = run_folder.plan(job.config, job.run_dir)
            except RunFolderError as refused:
                summaries[i] = refused
                continue
            if start.finished is not None:
                if job.reporter is not None and start.finished["status"] == "pruned":
                    job.reporter.mark_pruned()  # a trial that repeats a pruned one's parameters is pruned too
                summaries[i] = start.finished
                continue
            run_folder.write_record(job.run_dir, job.config, job.hydra_files)
            step = start.checkpoint["step"] if start.checkpoint is not None else 0
            starts.setdefault(step, []).append((i, start))
        # Members share one optimiser and so its step count: each group starts at one step.
        for members in starts.values():
            groups = [members] if can_train_together(jobs[members[0][0]].config) else [[m] for m in members]
            for group in groups:
                done = train_in([jobs[i] for i, _ in group], [start for _, start in group])
                for (i, _), summary in zip(group, done):
                    summaries[i] = summary
    return summaries


def seedless(config: Config) -> str:
    """The config but its seed, as text: configs with equal texts can train together."""
    return json.dumps({**to_container(config), "seed": None}, sort_keys=True, default=str)


def can_train_together(config: Config) -> bool:
    """Whether this model can be an ensemble's member (its time step can be vmapped; a fused
    sequence is one C++ call, which vmap cannot batch)."""
    return type(config.model).trains_as_ensemble and config.train.compile != "fused"


def use_compile(t: TrainConfig) -> bool:
    """train.compile: true, false, or auto: compile when the run is long enough to repay the
    one-off compile (about 20-40 s, a few seconds from torch's on-disk cache)."""
    return t.compile == "true" or (t.compile == "auto" and t.steps >= COMPILE_AUTO_MIN_STEPS)


def step_path(config: Config, together: bool) -> str:
    """How a model's time steps run: "fused", "compiled" or "eager" (train.compile). auto: fused
    for an NTM trained alone at a small batch, where ntm.fused implements the model and its
    library builds; otherwise compiled when the run repays the compile (use_compile), else eager.
    together: the model trains (or trained) as an ensemble's member, which vmaps its step."""
    t = config.train
    if t.compile == "fused" or (t.compile == "auto" and not together and fused_suits(config)):
        return "fused"
    return "compiled" if use_compile(t) else "eager"


def fused_suits(config: Config) -> bool:
    """Whether train.compile=auto runs this config's NTM as a fused sequence."""
    t = config.train
    if t.batch_size > FUSED_AUTO_MAX_BATCH or t.steps_per_call != 1 or fused_unsupported(config) is not None:
        return False
    try:
        fused.build()
    except RuntimeError as failed:  # no C++ compiler: the compiled path needs none
        log.warning("train.compile=auto: compiled time steps, not the fused sequence: %s", failed)
        return False
    return True


class Solo:
    """One model and its optimiser, with an ensemble's interface (ntm.ensemble.Ensemble): the
    reference path that ensembles are compared with."""

    size = 1

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer):
        self.model, self.optimizer = model, optimizer

    def step(self, task: Task, batches: list, grad_clip: str, grad_clip_value: float) -> list:
        result = train_step(self.model, self.optimizer, task, batches[0], grad_clip, grad_clip_value)
        return [(result.loss.detach(), result.logits, result.finite)]

    def set_learning_rates(self, rates: list[float]) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = rates[0]

    def predict_shared(self, task: Task, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return task.predict(self.model, inputs, targets).unsqueeze(1)

    def member(self, k: int) -> torch.nn.Module:
        return self.model

    def member_state(self, k: int) -> dict:
        return self.model.state_dict()

    def load_member(self, k: int, state: dict) -> None:
        self.model.load_state_dict(state)

    def member_optimizer_state(self, k: int) -> dict:
        return self.optimizer.state_dict()

    def load_optimizer_states(self, states: list[dict]) -> None:
        self.optimizer.load_state_dict(states[0])


@torch.no_grad()
def evaluate(models, task: Task, eval_sets: dict) -> list[dict[str, float] | None]:
    """Each member's mean cost per sequence on each fixed evaluation set: eval_cost, eval_cost_<set>.

    None for a member whose outputs are not finite: NaN logits would count as confident zeros
    and hide a diverged model behind a finite cost.
    """
    results: list[dict | None] = [{} for _ in range(models.size)]
    for name, batches in eval_sets.items():
        bits = [[] for _ in range(models.size)]
        for inputs, targets in batches:
            logits = models.predict_shared(task, inputs, targets)
            for k, member_logits in enumerate(logits.unbind(1)):
                if results[k] is not None and torch.isfinite(member_logits).all():
                    bits[k].append(task.cost(member_logits, targets))
                else:
                    results[k] = None
        for k, result in enumerate(results):
            if result is not None:
                result["eval_cost" if name == "train" else f"eval_cost_{name}"] = torch.cat(bits[k]).mean().item()
    return results


class Run:
    """One run folder's training record: what its checkpoint holds and its summary reports."""

    def __init__(self, job: Job, start: run_folder.Plan, task: Task, together: bool):
        self.job, self.config, self.run_dir, self.start = job, job.config, job.run_dir, start
        self.log = RunLog(job.run_dir, f"[seed {job.config.seed}] " if together else "")
        self.data_rng = torch.Generator().manual_seed(job.config.seed)
        self.size_rng: torch.Generator | None = None  # the group's, with train.shared_sizes
        self.rows, self.window = [], empty_window()
        self.converged_at, self.converged_time_s = None, None
        self.lr_dropped_at: int | None = None  # sequences seen when train.lr_drop_below was met
        self.train_time, self.wall_time = 0.0, 0.0  # accumulated over resumed segments
        self.status, self.last_eval, self.saved_at = "completed", {}, None
        self.active = True
        self.member: int | None = None  # its index in the ensemble that trains it (None: finished)
        self.skipped = 0  # steps in a row without an update: their gradient was not finite
        t = job.config.train
        interval = t.eval_interval if t.snapshot_interval is None else t.snapshot_interval
        self.snapshot_interval = interval
        records = []
        ckpt = start.checkpoint
        if ckpt is not None:
            self.data_rng.set_state(ckpt["data_rng"])
            self.rows, self.window = ckpt["rows"], ckpt["window"]
            self.converged_at, self.converged_time_s = ckpt["converged_at"], ckpt["converged_time_s"]
            self.lr_dropped_at = ckpt.get("lr_dropped_at")  # None in checkpoints older than the key
            self.train_time, self.wall_time = ckpt["train_time"], ckpt["wall_time"]
            records = ckpt.get("snapshots", [])
            write_csv(self.run_dir / fmt.METRICS_FILE, self.rows)
            self.log.info("Resumed from %s at step %d (%d sequences).",
                          self.run_dir / fmt.CHECKPOINT_DIR / start.checkpoint_name, ckpt["step"], ckpt["sequences"])  # fmt: skip
        self.snapshots = Snapshots(task, records) if interval else None
        self.loggers = open_loggers(job.config, job.run_dir, None if ckpt is None else ckpt["sequences"])

    def add(self, loss: torch.Tensor, costs: torch.Tensor, batch_size: int, seconds: float) -> None:
        """Add one training step to the report window."""
        w = self.window
        w["loss"] += loss.item() * batch_size
        w["cost"] += costs.sum().item()
        w["sequences"] += batch_size
        w["time"] += seconds

    def report(self, step: int, sequences: int, started: float, evaluated: bool, evaluation: dict | None,
               references: dict) -> dict:  # fmt: skip
        """Close the report window into a metrics.csv row. A step that evaluated brings this run's
        evaluation (None: non-finite outputs, and the run diverged), checked for convergence and
        told to the pruning reporter. Returns the row."""
        w = self.window
        row = {
            "step": step,
            "sequences": sequences,
            "loss": w["loss"] / w["sequences"],
            "cost": w["cost"] / w["sequences"],
            "seq_per_s": w["sequences"] / w["time"],
        }
        self.train_time += w["time"]
        self.window = empty_window()
        if evaluated:
            if evaluation is None:
                self.status, self.last_eval = "diverged", {}
                self.log.warning("Diverged at step %d: non-finite outputs on the evaluation set; stopping.", step)
                return row
            self.last_eval = {**evaluation, **references}
            row.update(self.last_eval)
            above = gap(self.last_eval)
            t = self.config.train
            if t.lr_drop_below and self.lr_dropped_at is None and above < t.lr_drop_below:
                self.lr_dropped_at = sequences
                self.log.info("Evaluation cost %.3f bits, below train.lr_drop_below=%g: the learning rate is x%g from here.",
                              above, t.lr_drop_below, t.lr_drop_factor)  # fmt: skip
            if self.converged_at is None and above < self.config.task.converge_threshold:
                self.converged_at = sequences
                self.converged_time_s = self.wall_time + time.perf_counter() - started
            reporter = self.job.reporter
            if reporter and self.converged_at is None and reporter.should_stop(sequences, above):
                self.status = "pruned"
                self.log.info("Pruned by the sweep at step %d (%d sequences).", step, sequences)
        self.rows.append(row)
        write_csv(self.run_dir / fmt.METRICS_FILE, self.rows)
        for logger in self.loggers:
            logger.log_row(row)
        self.log.info(
            "step %d  sequences %d  loss %.4f  cost %.3f  %.0f seq/s%s",
            step, sequences, row["loss"], row["cost"], row["seq_per_s"],
            f"  eval_cost {self.last_eval['eval_cost']:.3f}" if evaluated else "",
        )  # fmt: skip
        return row

    def save_checkpoint(self, models, step: int, sequences: int, started: float) -> None:
        if self.saved_at == step:
            return  # keep previous.pt one checkpoint older, not a copy of last.pt
        self.saved_at = step
        run_folder.save_checkpoint(self.run_dir, {
            "config": to_container(self.config), "model": to_device(models.member_state(self.member), "cpu"),
            "optimizer": to_device(models.member_optimizer_state(self.member), "cpu"),
            "data_rng": self.data_rng.get_state(), "torch_rng": torch.get_rng_state(),
            "size_rng": self.size_rng.get_state() if self.size_rng is not None else None,
            "step": step, "sequences": sequences, "rows": self.rows, "window": self.window,
            "converged_at": self.converged_at, "converged_time_s": self.converged_time_s,
            "lr_dropped_at": self.lr_dropped_at, "train_time": self.train_time,
            "wall_time": self.wall_time + time.perf_counter() - started,
            "snapshots": self.snapshots.records if self.snapshots else [],
        })  # fmt: skip
        for logger in self.loggers:
            logger.flush()  # what a resume keeps, the loggers keep too

    def summary(self, step: int, sequences: int, started: float) -> dict:
        # Final: more train.steps cannot continue it. A run that converged but went on to its step
        # budget (stop_at_convergence=false) stopped at the budget, and can be continued.
        status = self.status
        final = status != "completed"
        if self.converged_at is not None and status == "completed":
            status = "converged"
        last = self.rows[-1] if self.rows else {}
        summary = {
            "status": status,
            "final": final,
            "format_version": fmt.FORMAT_VERSION,
            "steps": step,
            "sequences": sequences,
            "loss": last.get("loss"),
            "cost": last.get("cost"),
            "eval_cost": None,  # replaced by the last evaluation, if there was one
            **self.last_eval,
            "converged_at": self.converged_at,
            "converged_time_s": self.converged_time_s,
            "lr_dropped_at": self.lr_dropped_at,
            "wall_time_s": self.wall_time + time.perf_counter() - started,
            "seq_per_s": sequences / (self.train_time + self.window["time"]) if sequences else None,
            "continued_from": self.start.continued_from,
        }
        summary["objective"] = objective(summary, self.config)
        return summary


def device_of(t: TrainConfig) -> torch.device:
    if t.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(t.device)


def build_models(jobs: list[Job], task: Task, device: torch.device):
    """Each job's model, built with its own seed, and their optimiser: a Solo or an Ensemble."""
    models = []
    for job in jobs:
        torch.manual_seed(job.config.seed)
        models.append(job.config.model.build(task).to(device))  # built on the CPU: the same weights everywhere
    return assemble(models, jobs[0].config, together=len(jobs) > 1)


def assemble(models: list[torch.nn.Module], config: Config, together: bool):
    """Models that differ at most in seed, with one optimiser: a Solo or an Ensemble. together:
    an ensemble's members, or what is left of one (step_path)."""
    path = step_path(config, together)
    log.info("Time steps: %s (train.compile=%s).", path, config.train.compile)
    if len(models) == 1:
        if path == "fused":
            models[0].fuse_sequence()
        elif path == "compiled":
            models[0].compile_step(dynamic=False, steps_per_call=config.train.steps_per_call)
        return Solo(models[0], build_optimizer(config, models[0].parameters()))
    return Ensemble(models, lambda params: build_optimizer(config, params), compile=path == "compiled")


def without_finished(models, runs: list["Run"], config: Config):
    """The runs still training as their own smaller ensemble (or one model), with their weights
    and optimiser state: a finished member no longer costs a share of every step, and a group
    trains the same members whether or not it was stopped and resumed in between."""
    training = [run for run in runs if run.active]
    if len(training) in (0, models.size):
        return models
    smaller = assemble([models.member(run.member) for run in training], config, together=True)
    smaller.load_optimizer_states([models.member_optimizer_state(run.member) for run in training])
    for run in runs:
        run.member = training.index(run) if run.active else None
    return smaller


def shared_size_rng(jobs: list[Job], checkpoints: list) -> torch.Generator:
    """The generator of a group's shared sizes (train.shared_sizes): seeded by the group's
    seeds, resumed from the first member's checkpoint."""
    seeds = ",".join(str(job.config.seed) for job in jobs)
    rng = torch.Generator().manual_seed(zlib.crc32(f"shared sizes {seeds}".encode()))
    if checkpoints[0] is not None and checkpoints[0].get("size_rng") is not None:
        rng.set_state(checkpoints[0]["size_rng"])
    return rng


def train_in(jobs: list[Job], starts: list[run_folder.Plan]) -> list[dict]:
    """The training loop of runs that differ at most in seed, all from scratch or all from
    checkpoints of the same step; the caller holds their folders' locks."""
    config = jobs[0].config
    t = config.train
    if t.threads:
        torch.set_num_threads(t.threads)
    torch.set_flush_denormal(t.flush_denormal)  # set both ways: a sweep's process trains job after job
    task = make_task(config.task)
    device = device_of(t)
    models = build_models(jobs, task, device)
    eval_sets = task.eval_sets()
    references = task.reference_costs(eval_sets)
    eval_sets = {name: [(i.to(device), o.to(device)) for i, o in batches] for name, batches in eval_sets.items()}
    together = len(jobs) > 1
    runs = [Run(job, start, task, together) for job, start in zip(jobs, starts)]
    for k, run in enumerate(runs):
        run.member = k

    step, sequences = 0, 0
    checkpoints = [start.checkpoint for start in starts]
    size_rng = shared_size_rng(jobs, checkpoints) if together and t.shared_sizes else None
    for run in runs:
        run.size_rng = size_rng
    if checkpoints[0] is not None:
        for k, ckpt in enumerate(checkpoints):
            models.load_member(k, ckpt["model"])
        models.load_optimizer_states([ckpt["optimizer"] for ckpt in checkpoints])
        torch.set_rng_state(checkpoints[0]["torch_rng"])
        step, sequences = checkpoints[0]["step"], checkpoints[0]["sequences"]

    summaries: list[dict | None] = [None] * len(runs)
    started = time.perf_counter()

    def finish(k: int, run: Run, step: int, sequences: int) -> None:
        """Write a run's summary (after a last evaluation and checkpoint where needed)."""
        run.active = False
        if run.status != "diverged" and (not run.last_eval or run.rows[-1]["step"] != step):
            run.last_eval = evaluate(models, task, eval_sets)[run.member]
            if run.last_eval is None:
                run.status, run.last_eval = "diverged", {}
                run.log.warning("Diverged: non-finite outputs on the evaluation set at the last step %d.", step)
            else:
                run.last_eval.update(references)
        if run.status != "diverged" and t.checkpoint_interval:
            run.save_checkpoint(models, step, sequences, started)
        summaries[k] = run.summary(step, sequences, started)
        write_json(run.run_dir / fmt.SUMMARY_FILE, summaries[k])
        for logger in run.loggers:
            logger.finish(to_container(run.config), summaries[k])
        run.log.info("Finished: %s", json.dumps(summaries[k]))

    progress = tqdm(total=t.steps, initial=step, disable=not t.progress, desc="train")
    with logging_redirect_tqdm(), progress as bar, stop_requests() as stops:
        while step < t.steps and any(run.active for run in runs):
            tick = time.perf_counter()
            if t.lr_half_life or t.lr_drop_below:
                models.set_learning_rates([learning_rate(config, sequences, run.lr_dropped_at is not None)
                                           for run in runs if run.active])  # fmt: skip
            # How far the task's curriculum has come: the same for every member.
            curriculum = task.progress(sequences)
            size = task.draw_size(size_rng, curriculum) if size_rng is not None else None
            # Every member of the ensemble is training: those that finished left it (without_finished).
            batches = [
                to_device(task.sample(t.batch_size, run.data_rng, curriculum) if size is None
                          else task.batch(*size, t.batch_size, run.data_rng), device)
                for run in runs if run.active
            ]  # fmt: skip
            results = models.step(task, batches, t.grad_clip, t.grad_clip_value)
            step += 1
            sequences += t.batch_size
            seconds = time.perf_counter() - tick
            bar.update(1)
            evaluate_now = step == t.steps or (t.eval_interval and step % t.eval_interval == 0)
            evals = evaluate(models, task, eval_sets) if evaluate_now else None
            for k, run in enumerate(runs):
                if not run.active:
                    continue
                batch, (loss, logits, finite) = batches[run.member], results[run.member]
                run.skipped = 0 if finite else run.skipped + 1
                if not finite:
                    run.log.warning("Step %d: loss %s, gradient not finite: no update made.", step, loss.item())
                if not finite and (not torch.isfinite(loss) or run.skipped >= MAX_SKIPPED_STEPS):
                    run.status = "diverged"
                    run.log.warning("Diverged at step %d: stopping; the last checkpoint is kept.", step)
                    finish(k, run, step - 1, sequences - t.batch_size)  # the step made no update
                    continue
                run.add(loss, task.cost(logits, batch[1]), t.batch_size, seconds)
                if step % t.report_interval == 0 or evaluate_now:
                    row = run.report(step, sequences, started, evaluate_now, evals and evals[run.member], references)
                    if run.status == "diverged":
                        finish(k, run, step, sequences)
                        continue
                    if not together:
                        bar.set_postfix(loss=f"{row['loss']:.4f}", cost=f"{row['cost']:.2f}")
                interval = run.snapshot_interval
                if run.snapshots and (step % interval == 0 or step == t.steps or run.converged_at == sequences):
                    run.snapshots.record(models.member(run.member), step, sequences)
                    run.snapshots.save(run.run_dir)
                    for logger in run.loggers:
                        logger.log_snapshot(run.snapshots)
                if run.status == "pruned":
                    finish(k, run, step, sequences)
                elif run.converged_at is not None and t.stop_at_convergence:
                    run.status = "converged"
                    finish(k, run, step, sequences)
                elif t.checkpoint_interval and step % t.checkpoint_interval == 0:
                    run.save_checkpoint(models, step, sequences, started)
            models = without_finished(models, runs, config)
            name = stops.reason()
            if name and any(run.active for run in runs):
                for run in runs:
                    if run.active:
                        run.save_checkpoint(models, step, sequences, started)
                        run.log.warning("Stopped by %s at step %d; saved a checkpoint.", name, step)
                folders = ", ".join(str(run.run_dir / fmt.CHECKPOINT_DIR) for run in runs if run.active)
                raise Interrupted(
                    f"Stopped by {name} at step {step}; saved a checkpoint in {folders}. Run the same command again to resume."
                )
    for k, run in enumerate(runs):
        if run.active:
            finish(k, run, step, sequences)
    return summaries
