"""The paper's other tasks (associative recall, N-grams, priority sort) and its LSTM baseline:
encodings, the N-gram cost and optimal estimator, outputs read during the input, sizes, config
checks and defaults, and short real trainings of every task with every model."""

import csv
import dataclasses
import json
import math
import re
from pathlib import Path

import pytest
import torch
from conftest import ROOT, compose_config, run_py, run_py_here
from omegaconf import OmegaConf

from ntm.config import GROUP_SCHEMAS, MODELS, ConfigError, TrainConfig, validate
from ntm.hydra_glue import check_sweep_params, for_task
from ntm.lstm import LSTM
from ntm.model import NTM
from ntm.tasks import TASKS, make_task
from ntm.tasks.associative_recall import AssociativeRecallConfig
from ntm.tasks.ngram import NGramConfig
from ntm.tasks.priority_sort import PrioritySortConfig
from ntm.train import train

PRESETS = sorted(p.stem for p in (ROOT / "conf" / "preset").glob("*.yaml"))
# Small, fast settings per task and per model for real training runs.
TINY_TASK = {
    "copy": ["task.max_len=4", "task.eval_lengths=[6]"],
    "repeat_copy": ["task.max_len=3", "task.max_repeats=2", "task.eval_lengths=[4]", "task.eval_repeats=[3]"],
    "associative_recall": ["task.max_items=3", "task.eval_items=[4]"],
    "ngram": ["task.seq_len=12"],
    "priority_sort": ["task.num_inputs=5", "task.num_outputs=3", "task.eval_inputs=[7]"],
}
TINY_MODEL = {
    "ntm": ["model.memory.n=16", "model.memory.m=8", "model.controller_size=16"],
    "lstm": ["model.size=16", "model.layers=2"],
}


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_every_task_and_model_is_covered_here():
    assert set(TINY_TASK) == set(TASKS) and set(TINY_MODEL) == set(MODELS)


# --- associative recall -------------------------------------------------------------------------


def test_associative_recall_encoding():
    task = make_task(AssociativeRecallConfig())
    items, batch, width, length = 4, 64, 6, 3
    inputs, targets = task.batch(items, batch, gen(1))
    assert (task.input_size, task.output_size) == (8, 6)
    assert inputs.shape == (items * (length + 1) + length + 2, batch, 8) and targets.shape == (length, batch, 6)
    # Item delimiters (channel 6) at the start of each item; query delimiters (channel 7) around the query.
    item_starts = [i * (length + 1) for i in range(items)]
    query_marks = [items * (length + 1), items * (length + 1) + length + 1]
    assert inputs[:, :, 6].nonzero()[:, 0].unique().tolist() == item_starts
    assert inputs[:, :, 7].nonzero()[:, 0].unique().tolist() == query_marks
    assert (inputs[item_starts + query_marks, :, :width] == 0).all()
    assert (inputs[:, :, 6:].sum(-1) <= 1).all()  # a step holds at most one delimiter
    listed = inputs[: items * (length + 1)].view(items, length + 1, batch, 8)[:, 1:, :, :width]  # (items, 3, B, 6)
    query = inputs[query_marks[0] + 1 : query_marks[1], :, :width]
    asked = []
    for b in range(batch):
        matches = [i for i in range(items) if torch.equal(listed[i, :, b], query[:, b])]
        assert len(matches) == 1  # 18 random bits: two equal items would be a 1 in 2^18 accident
        asked.append(matches[0])
        assert torch.equal(targets[:, b], listed[matches[0] + 1, :, b]), "the target is the item after the query"
    # The query is any item but the last, each drawn for its own sequence.
    assert set(asked) == set(range(items - 1))


def test_associative_recall_sampling_and_generalisation_sets():
    task = make_task(AssociativeRecallConfig(min_items=2, max_items=4, eval_items=[7, 9], eval_batches=2, eval_batch_size=3))
    g = gen(2)
    counts = {task.sample(2, g)[0].shape[0] for _ in range(60)}
    assert counts == {n * 4 + 5 for n in (2, 3, 4)}  # every item count in 2..4
    sets = task.eval_sets()
    assert list(sets) == ["train", "items7", "items9"]
    for items in (7, 9):
        ((inputs, targets),) = sets[f"items{items}"]
        assert inputs.shape == (items * 4 + 5, 3, 8) and targets.shape == (3, 3, 6)


# --- priority sort ------------------------------------------------------------------------------


def test_priority_sort_encoding_and_target_order():
    task = make_task(PrioritySortConfig())
    inputs, targets = task.batch(20, 32, gen(3))
    assert (task.input_size, task.output_size) == (10, 8)
    assert inputs.shape == (21, 32, 10) and targets.shape == (16, 32, 8)
    bits, priorities = inputs[:20, :, :8], inputs[:20, :, 8]
    assert ((bits == 0) | (bits == 1)).all()
    assert (priorities.abs() <= 1).all() and priorities.min() < -0.8 and priorities.max() > 0.8
    assert (inputs[20, :, :9] == 0).all() and (inputs[20, :, 9] == 1).all() and (inputs[:20, :, 9] == 0).all()
    for b in range(32):
        by_priority = sorted(range(20), key=lambda i: -priorities[i, b].item())
        assert torch.equal(targets[:, b], bits[by_priority[:16], b])


def test_priority_sort_hand_made_order():
    # Priorities 0.1, 0.9, -0.5, 0.3 and two outputs: the second vector, then the fourth.
    task = make_task(PrioritySortConfig(seq_width=2, num_inputs=4, num_outputs=2))
    bits = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]]).unsqueeze(1)  # (4, B=1, 2)
    priorities = torch.tensor([[0.1], [0.9], [-0.5], [0.3]])
    assert task.sort(bits, priorities)[:, 0].tolist() == [[0.0, 1.0], [0.0, 0.0]]
    # Two sequences at once, each sorted by its own priorities.
    both = task.sort(bits.expand(-1, 2, -1), torch.cat([priorities, -priorities], dim=1))
    assert both[:, 1].tolist() == [[1.0, 1.0], [1.0, 0.0]]


def test_priority_sort_generalisation_set_keeps_num_outputs():
    task = make_task(PrioritySortConfig(eval_inputs=[30], eval_batches=1, eval_batch_size=2))
    ((inputs, targets),) = task.eval_sets()["inputs30"]
    assert inputs.shape == (31, 2, 10) and targets.shape == (16, 2, 8)


# --- N-grams ------------------------------------------------------------------------------------


def ngram(**kwargs):
    return make_task(NGramConfig(**kwargs))


def test_ngram_encoding():
    task = ngram()
    inputs, targets = task.sample(8, gen(5))
    assert (task.input_size, task.output_size) == (1, 1)
    assert inputs.shape == targets.shape == (200, 8, 1)
    assert ((targets == 0) | (targets == 1)).all()
    # Step t reads bit t - 1 (0 at the start: the zero context) and predicts bit t.
    assert (inputs[0] == 0).all() and torch.equal(inputs[1:], targets[:-1])
    again = task.sample(8, gen(5))
    assert torch.equal(again[1], targets)


def test_ngram_contexts_are_the_previous_five_bits():
    task = ngram()
    # P(1) = 1 exactly when the bit 5 steps back was 0: bits 0-4 (zero context) are 1, then
    # five 0s, five 1s, ... A context of 4 or 6 bits would give another period.
    tables = torch.tensor([[1.0 if (c >> 4) & 1 == 0 else 0.0 for c in range(32)]], dtype=torch.float64)
    bits = task.bits_from(tables, gen(0))[:, 0].tolist()
    assert bits[:20] == [1] * 5 + [0] * 5 + [1] * 5 + [0] * 5
    # P(1) = 1 exactly when the previous bit was 0: 1, 0, 1, 0, ...
    tables = torch.tensor([[1.0 if c & 1 == 0 else 0.0 for c in range(32)]], dtype=torch.float64)
    assert task.bits_from(tables, gen(0))[:6, 0].tolist() == [1, 0, 1, 0, 1, 0]
    # The vectorised contexts match those the generator rolled forward.
    bits = task.sample(3, gen(6))[1].squeeze(-1).long()
    contexts = task.contexts(bits)
    assert (contexts[0] == 0).all()
    assert torch.equal(contexts[1:], (contexts[:-1] * 2 + bits[:-1]) % 32)


def test_ngram_tables_are_beta_half_half():
    p = ngram().tables(4000, gen(7)).flatten()  # 128,000 draws
    assert abs(p.mean().item() - 0.5) < 0.01
    assert abs(p.var().item() - 0.125) < 0.005  # Beta(1/2, 1/2): variance 1/8
    # Arcsine CDF: P(p < 0.1) = 2/pi asin(sqrt(0.1)) = 0.2048; uniform draws would give 0.1.
    assert abs((p < 0.1).double().mean().item() - 2 / math.pi * math.asin(math.sqrt(0.1))) < 0.01


def test_ngram_optimal_cost_by_hand():
    # order 2: the context is the previous bit (0 before the sequence); P(1) = (n1 + 1/2) / (n0 + n1 + 1).
    # Sequence a = 1 1 0 1 1:
    #   bit 0, context 0, counts (0, 0): P(1) = 1/2, actual 1: 1 bit
    #   bit 1, context 1, counts (0, 0): P(1) = 1/2, actual 1: 1 bit
    #   bit 2, context 1, n1 = 1:        P(1) = 1.5/2 = 3/4, actual 0: -log2(1/4) = 2 bits
    #   bit 3, context 0, n1 = 1:        P(1) = 3/4, actual 1: -log2(3/4) = 0.415 bits
    #   bit 4, context 1, n0 = n1 = 1:   P(1) = 1.5/3 = 1/2, actual 1: 1 bit
    #   total 5 + log2(4/3) = 5.4150 bits.
    # Sequence b = 0 0 0 0 0: always context 0, P(0) = 1/2, 3/4, 5/6, 7/8, 9/10:
    #   total -log2(945 / 3840) = 2.0227 bits.
    task = ngram(order=2)
    bits = torch.tensor([[1, 1, 0, 1, 1], [0, 0, 0, 0, 0]]).T  # (T, B)
    cost = task.optimal_cost(bits)
    assert cost.tolist() == pytest.approx([5 + math.log2(4 / 3), -math.log2(945 / 3840)], abs=1e-9)
    # order 6 on seven zeros: every context is the zero context, P(0) = (k + 1/2) / (k + 1) for
    # k = 0..6, product 135135 / 645120: 2.2551 bits.
    assert ngram().optimal_cost(torch.zeros(7, 1, dtype=torch.long)).item() == pytest.approx(-math.log2(135135 / 645120))


def test_ngram_cost_is_cross_entropy_in_bits():
    task = ngram()
    targets = torch.tensor([[[1.0], [0.0]], [[0.0], [0.0]], [[1.0], [1.0]]])  # (T=3, B=2, 1)
    # P(1) = 1/2 everywhere: one bit per step.
    assert task.cost(torch.zeros(3, 2, 1), targets).tolist() == pytest.approx([3.0, 3.0])
    # P(1) = 3/4 everywhere: -log2(3/4) for each 1, 2 bits for each 0.
    logits = torch.full((3, 2, 1), math.log(3))
    assert task.cost(logits, targets).tolist() == pytest.approx([2 * -math.log2(0.75) + 2, -math.log2(0.75) + 4])


def test_ngram_reference_cost_is_the_optimal_estimators_mean_on_the_training_set():
    task = ngram(eval_batches=3, eval_batch_size=4)
    sets = task.eval_sets()
    assert list(sets) == ["train"]  # no generalisation sets: the paper has none
    expected = torch.cat([task.optimal_cost(t.squeeze(-1).long()) for _, t in sets["train"]]).mean().item()
    assert task.reference_costs(sets) == {"optimal_cost": pytest.approx(expected)}
    # Learning the table as it reads beats knowing nothing (1 bit per step).
    assert 100 < expected < 200


# --- outputs during the input (Task.predict) ----------------------------------------------------


def models(input_size: int, output_size: int) -> list[torch.nn.Module]:
    torch.manual_seed(0)
    ntm = NTM(input_size, output_size, controller_size=16, memory_n=8, memory_m=4)
    return [ntm, LSTM(input_size, output_size, size=16, layers=2)]


@pytest.mark.parametrize("which", [0, 1], ids=["ntm", "lstm"])
@pytest.mark.parametrize("blank_steps, output_steps", [(None, 3), (0, 5), (0, 2), (2, 4), (1, 6)])
def test_forward_returns_the_last_output_steps_of_input_and_blank_steps(which, blank_steps, output_steps):
    model = models(3, 2)[which].eval()
    inputs = torch.rand(5, 2, 3)
    blanks = output_steps if blank_steps is None else blank_steps
    state, stepped = model.initial_state(2), []
    with torch.no_grad():
        for x in torch.cat([inputs, torch.zeros(blanks, 2, 3)]):
            logits, state = model.step(x, state)
            stepped.append(logits)
        out = model(inputs, output_steps, blank_steps=blank_steps)
    torch.testing.assert_close(out, torch.stack(stepped[-output_steps:]), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="output_steps must be in 1..5"):
        model(inputs, 6, blank_steps=0)  # more outputs than steps


@pytest.mark.parametrize("which", [0, 1], ids=["ntm", "lstm"])
def test_ngram_predictions_use_only_the_bits_already_read(which):
    task = ngram(seq_len=10)
    model = models(1, 1)[which].eval()
    inputs, targets = task.sample(2, gen(8))
    with torch.no_grad():
        logits = task.predict(model, inputs, targets)
        assert logits.shape == targets.shape
        changed = inputs.clone()
        changed[6:] = 1 - changed[6:]
        other = task.predict(model, changed, targets)
    torch.testing.assert_close(other[:6], logits[:6])  # predictions of bits 0..5 read inputs 0..5 only
    assert not torch.allclose(other[6:], logits[6:])


def test_other_tasks_predict_after_the_input():
    task = make_task(AssociativeRecallConfig())
    model = models(8, 6)[0].eval()
    inputs, targets = task.sample(2, gen(9))
    with torch.no_grad():
        torch.testing.assert_close(task.predict(model, inputs, targets), model(inputs, targets.shape[0]))


# --- the LSTM's size ----------------------------------------------------------------------------

PAPER_SIZES = {"copy": 256, "repeat_copy": 512, "associative_recall": 256, "ngram": 128, "priority_sort": 128}


@pytest.mark.parametrize("task_name", sorted(TASKS))
def test_lstm_takes_the_papers_size_for_the_task_unless_set(task_name):
    config = validate(compose_config([f"task={task_name}", "model=lstm"]))
    assert config.model.size is None and config.model.layers == 3
    task = make_task(config.task)
    model = config.model.build(task)
    assert (model.lstm.hidden_size, model.lstm.num_layers) == (PAPER_SIZES[task_name], 3)
    assert (model.lstm.input_size, model.output.out_features) == (task.input_size, task.output_size)
    small = validate(compose_config([f"task={task_name}", "model=lstm", "model.size=64", "model.layers=2"])).model.build(task)
    assert (small.lstm.hidden_size, small.lstm.num_layers) == (64, 2)


# --- config checks, presets and defaults --------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["task=associative_recall", "task.min_items=1"], "task.min_items"),
        (["task=associative_recall", "task.min_items=5", "task.max_items=4"], "task.min_items"),
        (["task=associative_recall", "task.item_len=0"], "task.item_len"),
        (["task=associative_recall", "task.seq_width=0"], "task.seq_width"),
        (["task=associative_recall", "task.eval_items=[7,1]"], "task.eval_items"),
        (["task=associative_recall", "task.converge_threshold=0"], "task.converge_threshold"),
        (["task=ngram", "task.order=1"], "task.order"),
        (["task=ngram", "task.order=11"], "task.order"),
        (["task=ngram", "task.seq_len=0"], "task.seq_len"),
        (["task=ngram", "task.eval_batches=0"], "task.eval_batches"),
        (["task=priority_sort", "task.num_inputs=0"], "task.num_inputs"),
        (["task=priority_sort", "task.num_outputs=21"], "task.num_outputs"),
        (["task=priority_sort", "task.num_outputs=0"], "task.num_outputs"),
        (["task=priority_sort", "task.eval_inputs=[15]"], "task.eval_inputs"),
        (["task=priority_sort", "task.seq_width=0"], "task.seq_width"),
        (["model=lstm", "model.size=0"], "model.size"),
        (["model=lstm", "model.layers=0"], "model.layers"),
    ],
)
def test_bad_values_are_refused_naming_the_key(overrides, key):
    with pytest.raises(ConfigError, match="^" + re.escape(key) + "=.* is not allowed"):
        validate(compose_config(overrides))


@pytest.mark.parametrize(
    "overrides",
    [
        ["task=associative_recall", "task.min_items=2", "task.max_items=2", "task.eval_items=[2]"],
        ["task=ngram", "task.order=2"],
        ["task=ngram", "task.order=10"],
        ["task=priority_sort", "task.num_outputs=20", "task.eval_inputs=[20]"],
        ["model=lstm", "model.size=1", "model.layers=1"],
    ],
)
def test_values_at_the_bounds_are_accepted(overrides):
    validate(compose_config(overrides))


@pytest.mark.parametrize("preset", PRESETS)
def test_every_task_and_model_with_each_preset_compose_and_validate_or_are_refused_naming_the_key(preset):
    # A task preset's curriculum does not fit tasks of one size: refused in one line naming the
    # key. (Presets choose their NTM as model=ntm_per_task, so model=lstm replaces it whole.)
    # Every task with this preset, the models taken in turn: over the presets, each task meets
    # each model and each preset each model, in a third of the cross product's compositions.
    settings = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "preset" / f"{preset}.yaml"))
    assert not settings.get("model"), f"preset={preset} sets model keys: model=lstm cannot replace them"
    models = sorted(MODELS)
    for i, task in enumerate(sorted(TASKS)):
        model = models[(i + PRESETS.index(preset)) % len(models)]
        overrides = [f"task={task}", f"model={model}", f"preset={preset}"]
        if (settings.get("task") or {}).get("curriculum") and task in ("ngram", "priority_sort"):
            refused = r"task.curriculum=\d+ is not allowed: must be 0: every \w+ sequence has one size"
            with pytest.raises(ConfigError, match=refused):
                validate(compose_config(overrides))
        else:
            config = validate(compose_config(overrides))
            assert (config.task.name, config.model.name) == (task, model), overrides


@pytest.mark.parametrize("group, registry", GROUP_SCHEMAS.items())
def test_python_defaults_equal_the_yaml_defaults(group, registry):
    for name, schema in registry.items():
        composed = OmegaConf.to_object(compose_config([f"{group}={name}"])[group])
        assert composed == schema(), f"conf/{group}/{name}.yaml differs from {schema.__name__}()"
        # The YAML file sets every field, so it documents them all.
        written = OmegaConf.load(ROOT / "conf" / group / f"{name}.yaml")
        assert {f.name for f in dataclasses.fields(schema)} <= set(written), f"conf/{group}/{name}.yaml"


def test_the_train_defaults_in_config_yaml_equal_the_dataclass():
    assert OmegaConf.to_object(compose_config([]).train) == TrainConfig()
    written = OmegaConf.load(ROOT / "conf" / "config.yaml").train
    assert {f.name for f in dataclasses.fields(TrainConfig)} <= set(written), "conf/config.yaml's train: sets every key"


def test_the_paper_sweep_trains_each_preset_and_the_lstm_on_the_same_budget_in_sequences():
    budgets = {"fast": 16000, "repeat_copy": 16000, "associative_recall": 12000, "ngram": 160000, "priority_sort": 400000}
    for preset, budget in budgets.items():
        ntm, lstm = (
            validate(compose_config([f"preset={preset}", f"model={m}", "sweep=paper"])) for m in ("ntm_per_task", "lstm")
        )
        assert ntm.model.name == "ntm" and lstm.model.name == "lstm"
        assert ntm.train == lstm.train and ntm.optimizer == lstm.optimizer and ntm.task == lstm.task
        assert ntm.train.steps * ntm.train.batch_size == budget and not ntm.train.stop_at_convergence
    assert validate(compose_config(["preset=associative_recall", "sweep=paper"])).model.controller == "feedforward"
    with pytest.raises(ConfigError, match="no value for task 'sort'"):
        for_task("sort", {"copy": 1})


# --- sweeps over keys a model does not have -----------------------------------------------------


def compose_sweep(overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        return compose("config", overrides=overrides, return_hydra_config=True)


def test_sweeping_a_key_the_model_lacks_is_refused():
    with pytest.raises(ConfigError, match=r"^hydra\.sweeper\.params\.model\.controller is not allowed: .*model=lstm"):
        check_sweep_params(compose_sweep(["sweep=hpo", "model=lstm"]))
    for sweep in ("hpo", "hpo_lstm", "paper", "memory_init"):
        check_sweep_params(compose_sweep([f"sweep={sweep}"]))
    check_sweep_params(compose_sweep(["sweep=hpo_lstm", "task=ngram"]))


def test_sweeping_a_key_the_model_lacks_is_refused_on_the_command_line(tmp_path):
    result = run_py_here("-m", "sweep=hpo", "model=lstm", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().startswith("Error: hydra.sweeper.params.model.controller is not allowed")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "sweep").exists()


# --- short real trainings -----------------------------------------------------------------------


def tiny(task: str, model: str, *extra: str) -> list[str]:
    return [
        f"task={task}", f"model={model}", *TINY_TASK[task], *TINY_MODEL[model], "task.eval_batches=2",
        "task.eval_batch_size=4", "train.steps=4", "train.batch_size=2", "train.report_interval=2",
        "train.eval_interval=2", "train.checkpoint_interval=0", "train.progress=false",
        "task.converge_threshold=1e-6", *extra,
    ]  # fmt: skip


def rows(run_dir: Path) -> list[dict]:
    with (run_dir / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_trains_with_every_model(tmp_path, task, model):
    config = validate(compose_config(tiny(task, model)))
    summary = train(config, tmp_path)
    assert summary["status"] == "completed" and summary["steps"] == 4
    assert math.isfinite(summary["loss"]) and math.isfinite(summary["eval_cost"])
    sets = [name for name in make_task(config.task).eval_sets() if name != "train"]
    assert all(math.isfinite(summary[f"eval_cost_{name}"]) for name in sets)
    assert [int(r["step"]) for r in rows(tmp_path)] == [2, 4]
    if task == "ngram":
        # The optimal estimator's cost is recorded, and the criterion and objective use the gap to it.
        assert float(rows(tmp_path)[-1]["optimal_cost"]) == pytest.approx(summary["optimal_cost"])
        assert 0 < summary["optimal_cost"] < 12  # fewer bits than the 12 a coin would take
        assert summary["objective"] == pytest.approx(1e-6 + summary["eval_cost"] - summary["optimal_cost"])
    else:
        assert "optimal_cost" not in summary


@pytest.mark.slow
def test_run_py_trains_the_lstm_on_ngrams(tmp_path):
    run_dir = tmp_path / "run"
    result = run_py(*tiny("ngram", "lstm"), f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["optimal_cost"] > 0
    stored = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    assert (stored.task.name, stored.model.name, stored.model.size) == ("ngram", "lstm", 16)
