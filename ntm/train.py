"""Train one model (NTM or LSTM) on one task and write its run folder (format: ntm.run_format).

Readable top to bottom: open the folder, set up, resume, loop, finish.
"""

import json
import logging
import signal
import time
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from ntm import run_folder
from ntm import run_format as fmt
from ntm.config import Config, TrainConfig, to_container
from ntm.errors import Interrupted
from ntm.files import write_csv, write_json
from ntm.snapshots import Snapshots
from ntm.tasks import Task, make_task

log = logging.getLogger(__name__)

# Returned to the sweeper for a diverged run: finite (a NaN aborts an Optuna sweep) and worse
# than any run that kept training.
DIVERGED_OBJECTIVE = 1e6


@contextmanager
def stop_requests():
    """Turn SIGINT/SIGTERM into a flag the loop checks between steps, so that the checkpoint
    it then writes is of a whole step. Signals can only be caught in the main thread."""
    received: list[int] = []
    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda signum, frame: received.append(signum))
    except ValueError:
        pass  # not the main thread: signals keep their default behaviour
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def empty_window() -> dict:
    """Training totals over one report interval."""
    return {"loss": 0.0, "cost": 0.0, "sequences": 0, "time": 0.0}


def build_optimizer(config: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    o = config.optimizer
    if o.name == "rmsprop":
        return torch.optim.RMSprop(model.parameters(), lr=o.lr, momentum=o.momentum, alpha=o.alpha, eps=o.eps)
    return torch.optim.Adam(model.parameters(), lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, weight_decay=o.weight_decay)


def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, targets)


@torch.no_grad()
def evaluate(model: torch.nn.Module, task: Task, eval_sets: dict) -> dict[str, float] | None:
    """Mean cost per sequence on each fixed evaluation set: eval_cost, eval_cost_<set>.

    None when the model's outputs are not finite: NaN logits would count as confident zeros
    and hide a diverged model behind a finite cost.
    """
    model.eval()
    results = {}
    for name, batches in eval_sets.items():
        bits = []
        for inputs, targets in batches:
            logits = task.predict(model, inputs, targets)
            if not torch.isfinite(logits).all():
                model.train()
                return None
            bits.append(task.cost(logits, targets))
        results["eval_cost" if name == "train" else f"eval_cost_{name}"] = torch.cat(bits).mean().item()
    model.train()
    return results


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


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, task: Task, batch: tuple, t: TrainConfig) -> Step:
    """One optimiser step on one batch: forward (task.predict), backward, the non-finite check, clipping, update."""
    inputs, targets = batch
    logits = task.predict(model, inputs, targets)
    loss = loss_fn(logits, targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    grad_norm = torch.nn.utils.get_total_norm(grads)
    if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
        log.warning("Loss %s, gradient norm %s: no update made.", loss.item(), grad_norm.item())
        return Step(loss, logits.detach(), False)
    if t.grad_clip == "value":
        torch.nn.utils.clip_grad_value_(model.parameters(), t.grad_clip_value)
    elif t.grad_clip == "norm":
        torch.nn.utils.clip_grads_with_norm_(model.parameters(), t.grad_clip_value, grad_norm)
    optimizer.step()
    return Step(loss, logits.detach(), True)


def train(config: Config, run_dir: Path | str, hydra_files: dict | None = None, wait: bool = False, reporter=None) -> dict:
    """Train in run_dir (or resume, continue, or return a finished run's summary); returns the summary.

    hydra_files: Hydra's record of the run ({"overrides.yaml": text, "hydra.yaml": text}),
    written into .hydra/ beside the config once the folder's checks pass. wait: when another
    process trains in run_dir, wait for it instead of refusing (sweep jobs). reporter: a pruning
    sweep's (ntm.pruning.TrialReporter), told the cost at each evaluation; it may stop the run.
    """
    run_dir = Path(run_dir)
    with run_folder.locked(run_dir, wait=wait):
        start = run_folder.plan(config, run_dir)
        if start.finished is not None:
            if reporter is not None and start.finished["status"] == "pruned":
                reporter.mark_pruned()  # a trial that repeats a pruned one's parameters is pruned too
            return start.finished
        run_folder.write_record(run_dir, config, hydra_files)
        return train_in(config, run_dir, start, reporter)


def train_in(config: Config, run_dir: Path, start: run_folder.Plan, reporter=None) -> dict:
    """The training loop, from scratch or from start.checkpoint; the caller holds the folder's lock."""
    t = config.train
    if t.threads:
        torch.set_num_threads(t.threads)
    torch.manual_seed(config.seed)
    task = make_task(config.task)
    model = config.model.build(task)
    if t.compile:
        model.compile_step(dynamic=False)
    optimizer = build_optimizer(config, model)
    data_rng = torch.Generator().manual_seed(config.seed)
    eval_sets = task.eval_sets()
    references = task.reference_costs(eval_sets)
    snapshot_interval = t.eval_interval if t.snapshot_interval is None else t.snapshot_interval

    step, sequences, rows, snapshot_records = 0, 0, [], []
    converged_at, converged_time_s = None, None
    train_time, wall_time = 0.0, 0.0  # accumulated over resumed segments
    window = empty_window()
    ckpt = start.checkpoint
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        data_rng.set_state(ckpt["data_rng"])
        torch.set_rng_state(ckpt["torch_rng"])
        step, sequences, rows, window = ckpt["step"], ckpt["sequences"], ckpt["rows"], ckpt["window"]
        converged_at, converged_time_s = ckpt["converged_at"], ckpt["converged_time_s"]
        train_time, wall_time = ckpt["train_time"], ckpt["wall_time"]
        snapshot_records = ckpt.get("snapshots", [])
        write_csv(run_dir / fmt.METRICS_FILE, rows)
        log.info("Resumed from %s at step %d (%d sequences).", run_dir / fmt.CHECKPOINT_DIR / start.checkpoint_name,
                 step, sequences)  # fmt: skip

    config_dict = to_container(config)
    snapshots = Snapshots(task, snapshot_records) if snapshot_interval else None

    saved_at = None

    def save_checkpoint() -> None:
        nonlocal saved_at
        if saved_at == step:
            return  # keep previous.pt one checkpoint older, not a copy of last.pt
        saved_at = step
        run_folder.save_checkpoint(run_dir, {
            "config": config_dict, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "data_rng": data_rng.get_state(), "torch_rng": torch.get_rng_state(),
            "step": step, "sequences": sequences, "rows": rows, "window": window,
            "converged_at": converged_at, "converged_time_s": converged_time_s,
            "train_time": train_time, "wall_time": wall_time + time.perf_counter() - started,
            "snapshots": snapshots.records if snapshots else [],
        })  # fmt: skip

    status, last_eval = "completed", {}
    started = time.perf_counter()
    progress = tqdm(total=t.steps, initial=step, disable=not t.progress, desc="train")
    with logging_redirect_tqdm(), progress as bar, stop_requests() as signals:
        while step < t.steps:
            tick = time.perf_counter()
            batch = task.sample(t.batch_size, data_rng)
            result = train_step(model, optimizer, task, batch, t)
            if not result.finite:
                status = "diverged"
                log.warning("Diverged at step %d: stopping; the last checkpoint is kept.", step + 1)
                break
            step += 1
            sequences += t.batch_size
            window["loss"] += result.loss.item() * t.batch_size
            window["cost"] += task.cost(result.logits, batch[1]).sum().item()
            window["sequences"] += t.batch_size
            window["time"] += time.perf_counter() - tick
            bar.update(1)

            evaluate_now = step == t.steps or (t.eval_interval and step % t.eval_interval == 0)
            if step % t.report_interval == 0 or evaluate_now:
                row = {
                    "step": step,
                    "sequences": sequences,
                    "loss": window["loss"] / window["sequences"],
                    "cost": window["cost"] / window["sequences"],
                    "seq_per_s": window["sequences"] / window["time"],
                }
                train_time += window["time"]
                window = empty_window()
                if evaluate_now:
                    last_eval = evaluate(model, task, eval_sets)
                    if last_eval is None:
                        status, last_eval = "diverged", {}
                        log.warning("Diverged at step %d: non-finite outputs on the evaluation set; stopping.", step)
                        break
                    last_eval.update(references)
                    row.update(last_eval)
                    if converged_at is None and gap(last_eval) < config.task.converge_threshold:
                        converged_at = sequences
                        converged_time_s = wall_time + time.perf_counter() - started
                    if reporter is not None and converged_at is None and reporter.should_stop(sequences, gap(last_eval)):
                        status = "pruned"
                        log.info("Pruned by the sweep at step %d (%d sequences).", step, sequences)
                rows.append(row)
                write_csv(run_dir / fmt.METRICS_FILE, rows)
                bar.set_postfix(loss=f"{row['loss']:.4f}", cost=f"{row['cost']:.2f}")
                log.info(
                    "step %d  sequences %d  loss %.4f  cost %.3f  %.0f seq/s%s",
                    step, sequences, row["loss"], row["cost"], row["seq_per_s"],
                    f"  eval_cost {last_eval['eval_cost']:.3f}" if evaluate_now else "",
                )  # fmt: skip
            if snapshots and (step % snapshot_interval == 0 or step == t.steps or converged_at == sequences):
                snapshots.record(model, step, sequences)
                snapshots.save(run_dir)
            if status == "pruned":
                break
            if converged_at is not None and t.stop_at_convergence:
                status = "converged"
                break
            if t.checkpoint_interval and step % t.checkpoint_interval == 0:
                save_checkpoint()
            if signals:
                save_checkpoint()
                raise Interrupted(
                    f"Stopped by {signal.Signals(signals[0]).name} at step {step}; saved a checkpoint in "
                    f"{run_dir / fmt.CHECKPOINT_DIR}. Run the same command again to resume."
                )

    if status != "diverged" and (not last_eval or rows[-1]["step"] != step):
        last_eval = evaluate(model, task, eval_sets)
        if last_eval is None:
            status, last_eval = "diverged", {}
            log.warning("Diverged: non-finite outputs on the evaluation set at the last step %d.", step)
        else:
            last_eval.update(references)
    if status != "diverged" and t.checkpoint_interval:
        save_checkpoint()
    # Final: more train.steps cannot continue it. A run that converged but went on to its step
    # budget (stop_at_convergence=false) stopped at the budget, and can be continued.
    final = status != "completed"
    if converged_at is not None and status == "completed":
        status = "converged"
    last = rows[-1] if rows else {}
    summary = {
        "status": status,
        "final": final,
        "format_version": fmt.FORMAT_VERSION,
        "steps": step,
        "sequences": sequences,
        "loss": last.get("loss"),
        "cost": last.get("cost"),
        "eval_cost": None,  # replaced by the last evaluation, if there was one
        **last_eval,
        "converged_at": converged_at,
        "converged_time_s": converged_time_s,
        "wall_time_s": wall_time + time.perf_counter() - started,
        "seq_per_s": sequences / (train_time + window["time"]) if sequences else None,
        "continued_from": start.continued_from,
    }
    summary["objective"] = objective(summary, config)
    write_json(run_dir / fmt.SUMMARY_FILE, summary)
    log.info("Finished: %s", json.dumps(summary))
    return summary
