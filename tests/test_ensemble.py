"""Seeds trained as one ensemble (ntm.ensemble, ntm.train.train_together) give each seed's run
folder the numbers of an ordinary run, to float tolerance, and stop members independently."""

import contextlib
import csv

import pytest
import torch
from conftest import TINY, compose_config

import ntm.train
from ntm import run_format as fmt
from ntm.config import validate
from ntm.ensemble import Ensemble
from ntm.errors import Interrupted
from ntm.tasks import make_task
from ntm.train import Job, Solo, build_optimizer, train, train_step, train_together, use_compile

# What "equal to an ordinary run" means: a member's per-step arithmetic is the ordinary run's,
# batched over members (bmm instead of mm), so losses agree to float rounding.
LOSS_RTOL = 1e-5
STATE_ATOL = 1e-5


def config(*overrides: str):
    return validate(compose_config([*TINY, "train.report_interval=10", "train.eval_interval=30",
                                    "train.checkpoint_interval=30", *overrides]))  # fmt: skip


def losses(run_dir) -> list[float]:
    with (run_dir / fmt.METRICS_FILE).open() as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


def assert_same_run(member, ordinary) -> None:
    torch.testing.assert_close(losses(member), losses(ordinary), rtol=LOSS_RTOL, atol=0)
    a, b = fmt.read_summary(member), fmt.read_summary(ordinary)
    for key in ("status", "steps", "sequences", "eval_cost", "converged_at", "final"):
        assert a[key] == b[key], key
    state_a = torch.load(member / "checkpoints/last.pt", weights_only=False)["model"]
    state_b = torch.load(ordinary / "checkpoints/last.pt", weights_only=False)["model"]
    assert list(state_a) == list(state_b)
    for name in state_a:
        torch.testing.assert_close(state_a[name], state_b[name], atol=STATE_ATOL, rtol=0, msg=name)


@pytest.mark.parametrize("extra", [[], ["train.grad_clip=norm", "train.grad_clip_value=0.5", "optimizer=adam"]])
def test_members_equal_ordinary_runs(tmp_path, extra):
    seeds = (1, 2, 3)
    summaries = train_together([Job(config("train.steps=60", f"seed={s}", *extra), tmp_path / f"m{s}") for s in seeds])
    assert [s["steps"] for s in summaries] == [60] * 3
    assert len({tuple(losses(tmp_path / f"m{s}")) for s in seeds}) == 3, "each member has its own seed"
    for s in seeds:
        train(config("train.steps=60", f"seed={s}", *extra), tmp_path / f"o{s}")
        assert_same_run(tmp_path / f"m{s}", tmp_path / f"o{s}")


def test_a_member_checkpoint_continues_as_an_ordinary_run(tmp_path):
    train_together([Job(config("train.steps=30", f"seed={s}"), tmp_path / f"m{s}") for s in (1, 2)])
    continued = train(config("train.steps=60", "seed=2"), tmp_path / "m2")
    assert continued["continued_from"] == 30
    train(config("train.steps=60", "seed=2"), tmp_path / "o2")
    assert_same_run(tmp_path / "m2", tmp_path / "o2")


@pytest.mark.slow
def test_an_ensemble_resumes_every_member_and_groups_them_by_step(tmp_path):
    # Seed 1 has a checkpoint at step 30, seed 2 a finished run, seed 3 nothing: seed 2 is
    # returned as stored, and seeds 1 and 3 start from different steps, so they train apart.
    train(config("train.steps=30", "seed=1"), tmp_path / "m1")
    finished = train(config("train.steps=60", "seed=2"), tmp_path / "m2")
    jobs = [Job(config("train.steps=60", f"seed={s}"), tmp_path / f"m{s}") for s in (1, 2, 3)]
    summaries = train_together(jobs)
    assert summaries[1] == finished
    assert summaries[0]["continued_from"] == 30
    for s in (1, 3):
        train(config("train.steps=60", f"seed={s}"), tmp_path / f"o{s}")
        assert_same_run(tmp_path / f"m{s}", tmp_path / f"o{s}")


class PruneAtFirstReport:
    def __init__(self):
        self.reports = []

    def should_stop(self, sequences, cost):
        self.reports.append(sequences)
        return True

    def mark_pruned(self):
        pass


class PruneAfterReports(PruneAtFirstReport):
    def __init__(self, reports: int):
        super().__init__()
        self.left = reports

    def should_stop(self, sequences, cost):
        self.left -= 1
        return self.left == 0


def record_sizes(step, sizes: list):
    """An Ensemble.step or Solo.step that records how many members each step trains."""

    def recording(self, task, batches, *args):
        sizes.append(len(batches))
        return step(self, task, batches, *args)

    return recording


def test_members_stop_independently(tmp_path):
    reporter = PruneAtFirstReport()
    jobs = [Job(config("train.steps=60", f"seed={s}"), tmp_path / f"m{s}", reporter=reporter if s == 2 else None)
            for s in (1, 2, 3)]  # fmt: skip
    summaries = train_together(jobs)
    assert [s["status"] for s in summaries] == ["completed", "pruned", "completed"]
    assert [s["steps"] for s in summaries] == [60, 30, 60] and reporter.reports == [30]
    for s in (1, 3):  # the others go on, unchanged by their pruned neighbour
        train(config("train.steps=60", f"seed={s}"), tmp_path / f"o{s}")
        assert_same_run(tmp_path / f"m{s}", tmp_path / f"o{s}")


def ordinary_step(cfg, task, batch):
    torch.manual_seed(cfg.seed)
    model = cfg.model.build(task)
    optimizer = build_optimizer(cfg, model.parameters())
    result = train_step(model, optimizer, task, batch, cfg.train.grad_clip, cfg.train.grad_clip_value)
    return result, model.state_dict()


def test_a_diverging_member_gets_no_update_and_the_others_are_unaffected():
    configs = [config(f"seed={s}", "train.grad_clip=norm", "train.grad_clip_value=0.1") for s in (1, 2, 3)]
    task = make_task(configs[0].task)
    models = []
    for cfg in configs:
        torch.manual_seed(cfg.seed)
        models.append(cfg.model.build(task))
    before = models[1].state_dict()
    before = {k: v.clone() for k, v in before.items()}
    ensemble = Ensemble(models, lambda params: build_optimizer(configs[0], params))
    generator = torch.Generator().manual_seed(0)
    batches = [task.sample(2, generator) for _ in configs]
    poisoned = (batches[1][0].clone().fill_(float("nan")), batches[1][1])
    results = ensemble.step(task, [batches[0], poisoned, batches[2]], "norm", 0.1)
    assert [finite for _, _, finite in results] == [True, False, True]
    for k in (0, 2):
        ordinary, state = ordinary_step(configs[k], task, batches[k])
        torch.testing.assert_close(results[k][0], ordinary.loss.detach(), rtol=LOSS_RTOL, atol=0)
        for name, value in ensemble.member_state(k).items():
            torch.testing.assert_close(value, state[name], atol=1e-6, rtol=0, msg=name)
    for name, value in ensemble.member_state(1).items():
        assert torch.equal(value, before[name]), f"{name}: the diverged member was updated"


def test_a_skipped_member_keeps_its_weights_and_optimiser_state_despite_momentum():
    configs = [config(f"seed={s}") for s in (1, 2)]  # RMSprop with momentum 0.9
    task = make_task(configs[0].task)
    models = []
    for cfg in configs:
        torch.manual_seed(cfg.seed)
        models.append(cfg.model.build(task))
    ensemble = Ensemble(models, lambda params: build_optimizer(configs[0], params))
    generator = torch.Generator().manual_seed(0)
    for _ in range(2):  # momentum builds up
        ensemble.step(task, [task.sample(2, generator) for _ in configs], "value", 10.0)
    weights, state = ensemble.member_state(1), ensemble.member_optimizer_state(1)
    batch = task.sample(2, generator)
    poisoned = (batch[0].clone().fill_(float("nan")), batch[1])
    results = ensemble.step(task, [task.sample(2, generator), poisoned], "value", 10.0)
    assert [finite for _, _, finite in results] == [True, False]
    for name, value in ensemble.member_state(1).items():
        assert torch.equal(value, weights[name]), f"{name}: the skipped member moved"
    for index, entries in ensemble.member_optimizer_state(1)["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value) and value.dim() > 0:
                assert torch.equal(value, state["state"][index][key]), f"optimiser state {index}.{key} changed"


def test_a_finished_member_leaves_the_ensemble(tmp_path, monkeypatch):
    sizes = []
    for cls in (Ensemble, Solo):
        monkeypatch.setattr(cls, "step", record_sizes(cls.step, sizes))
    pruned_at = {2: PruneAtFirstReport(), 3: PruneAfterReports(2)}
    jobs = [Job(config("train.steps=90", f"seed={s}"), tmp_path / f"m{s}", reporter=pruned_at.get(s)) for s in (1, 2, 3)]
    summaries = train_together(jobs)
    assert [s["steps"] for s in summaries] == [90, 30, 60]
    assert sizes == [3] * 30 + [2] * 30 + [1] * 30, "the ensemble shrinks, down to one model"
    monkeypatch.undo()
    train(config("train.steps=90", "seed=1"), tmp_path / "o1")
    assert_same_run(tmp_path / "m1", tmp_path / "o1")


def test_only_seeds_may_differ():
    with pytest.raises(ValueError, match="differ at most in seed"):
        train_together([Job(config("seed=1"), "a"), Job(config("seed=2", "optimizer.lr=0.01"), "b")])


@pytest.mark.parametrize(("value", "steps", "expected"), [
    ("auto", 100, False), ("auto", 50_000, True), ("true", 100, True), ("false", 50_000, False), ("True", 100, True),
])  # fmt: skip
def test_compile_auto_compiles_long_runs(value, steps, expected):
    assert use_compile(config(f"train.compile={value}", f"train.steps={steps}").train) is expected


def test_compile_refuses_other_values():
    from ntm.errors import ConfigError

    with pytest.raises(ConfigError, match="train.compile"):
        config("train.compile=sometimes")


class StopAtStep:
    """Stop requests (ntm.train.stop_requests) that report a SIGINT from the given step's check on."""

    def __init__(self, step: int):
        self.checks_left = step

    def reason(self) -> str | None:
        self.checks_left -= 1
        return "SIGINT" if self.checks_left <= 0 else None


def straight_and_resumed(jobs, root, monkeypatch, stop_at: int):
    """The summaries of jobs(root / "straight") trained through and of jobs(root / "stopped")
    stopped by a SIGINT at step stop_at, then resumed by the same call."""
    straight = train_together(jobs(root / "straight"))
    monkeypatch.setattr(ntm.train, "stop_requests", lambda: contextlib.nullcontext(StopAtStep(stop_at)))
    with pytest.raises(Interrupted, match=f"at step {stop_at}"):
        train_together(jobs(root / "stopped"))
    monkeypatch.undo()
    return straight, train_together(jobs(root / "stopped"))


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["train.shared_sizes=true"]])
def test_an_interrupted_ensemble_resumes_every_member(tmp_path, monkeypatch, extra):
    def jobs(root):
        return [Job(config("train.steps=60", f"seed={s}", *extra), root / f"m{s}") for s in (1, 2, 3)]

    straight, resumed = straight_and_resumed(jobs, tmp_path, monkeypatch, stop_at=45)
    for s, (a, b) in enumerate(zip(resumed, straight), start=1):
        assert a["steps"] == b["steps"] == 60 and a["eval_cost"] == b["eval_cost"]
        assert losses(tmp_path / "stopped" / f"m{s}") == losses(tmp_path / "straight" / f"m{s}"), "resumed exactly"


def eval_costs_at(run_dir, step: int) -> float:
    with (run_dir / fmt.METRICS_FILE).open() as f:
        return next(float(row["eval_cost"]) for row in csv.DictReader(f) if int(row["step"]) == step)


@pytest.mark.slow
def test_members_drop_their_learning_rates_each_at_its_own_time_and_resume_exactly(tmp_path, monkeypatch):
    # train.lr_drop_below between the members' evaluation costs after 30 steps: some members drop
    # their learning rate there, the others not (an ensemble's optimiser has one rate).
    seeds = (1, 2, 3)
    for s in seeds:
        train(config("train.steps=30", f"seed={s}"), tmp_path / "probe" / f"o{s}")
    costs = sorted(eval_costs_at(tmp_path / "probe" / f"o{s}", 30) for s in seeds)
    assert costs[0] < costs[-1]
    drop = [f"train.lr_drop_below={(costs[0] + costs[1]) / 2}", "train.lr_drop_factor=0.2"]

    def jobs(root):
        return [Job(config("train.steps=60", f"seed={s}", *drop), root / f"m{s}") for s in seeds]

    straight, resumed = straight_and_resumed(jobs, tmp_path, monkeypatch, stop_at=45)
    after_30 = fmt.read_summary(tmp_path / "probe" / "o1")["sequences"]
    assert [s["lr_dropped_at"] for s in straight].count(after_30) == 1
    for s, (a, b) in enumerate(zip(resumed, straight), start=1):
        assert a["lr_dropped_at"] == b["lr_dropped_at"] and a["eval_cost"] == b["eval_cost"]
        assert losses(tmp_path / "stopped" / f"m{s}") == losses(tmp_path / "straight" / f"m{s}"), "resumed exactly"
        train(config("train.steps=60", f"seed={s}", *drop), tmp_path / f"o{s}")
        assert_same_run(tmp_path / "straight" / f"m{s}", tmp_path / f"o{s}")


@pytest.mark.slow
def test_a_group_whose_member_finished_resumes_exactly(tmp_path, monkeypatch):
    # Seed 2 is pruned at step 30 and the group stopped at 45: resumed, seeds 1 and 3 train on
    # as the same two-member ensemble as the uninterrupted group did after step 30.
    def jobs(root):
        return [Job(config("train.steps=60", f"seed={s}"), root / f"m{s}", reporter=PruneAtFirstReport() if s == 2 else None)
                for s in (1, 2, 3)]  # fmt: skip

    straight, resumed = straight_and_resumed(jobs, tmp_path, monkeypatch, stop_at=45)
    assert [s["status"] for s in resumed] == ["completed", "pruned", "completed"]
    for s, (a, b) in enumerate(zip(resumed, straight), start=1):
        assert a["steps"] == b["steps"] and a["eval_cost"] == b["eval_cost"]
        assert losses(tmp_path / "stopped" / f"m{s}") == losses(tmp_path / "straight" / f"m{s}"), "resumed exactly"


@pytest.mark.parametrize("shared", [False, True])
def test_shared_sizes_give_members_one_size_per_step_and_their_own_bits(tmp_path, monkeypatch, shared):
    steps = []
    step = Ensemble.step

    def recording(self, task, batches, *args):
        steps.append([inputs for inputs, _ in batches])
        return step(self, task, batches, *args)

    monkeypatch.setattr(Ensemble, "step", recording)
    train_together([Job(config("train.steps=30", f"seed={s}", f"train.shared_sizes={shared}"), tmp_path / f"m{s}")
                    for s in (1, 2, 3)])  # fmt: skip
    same_size = [len({inputs.shape for inputs in members}) == 1 for members in steps]
    assert all(same_size) == shared
    assert len({members[0].shape for members in steps}) > 1, "sizes still vary from step to step"
    assert not any(torch.equal(members[0], members[1]) for members in steps), "each member its own bits"
