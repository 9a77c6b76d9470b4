"""Typed schemas behind the conf/ groups, and their value checks.

The dataclasses are the schema: Hydra rejects unknown keys and wrong types while composing;
`validate()` then checks values (ranges, names) and returns the typed config.
"""

import os
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, ClassVar

import torch
from omegaconf import MISSING, DictConfig, OmegaConf

from ntm import fused
from ntm.checks import ConfigError, finite, one_of, positive, require
from ntm.controller import CONTROLLERS
from ntm.lstm import LSTM
from ntm.model import ADD_ACTIVATIONS, MEMORY_INITS, NTM, head_stages
from ntm.tasks import TASKS, Task, TaskConfig

GRAD_CLIPS = ("value", "norm", "none")
COMPILE_CHOICES = ("auto", "true", "false", "fused")
DEVICES = ("cpu", "cuda", "auto")


@dataclass
class MemoryConfig:
    n: int = 128
    m: int = 20
    init: str = "constant"
    init_value: float = 1e-6  # for init=constant (Collier & Beel 2018)

    def check(self, prefix: str) -> None:
        positive(prefix, self, "n", "m")
        one_of(prefix, self, "init", MEMORY_INITS)


@dataclass
class NTMConfig:
    name: str = "ntm"
    controller: str = "lstm"
    controller_size: int = 100
    controller_layers: int = 1
    num_heads: int = 1  # (read, write) head pairs, used when head_order is empty
    head_order: str = ""  # e.g. "rw", "rrw", "rwrw"; empty means num_heads reads then num_heads writes
    shift_range: int = 1  # shifts -k..k
    controller_clip: float = 20.0  # clip head parameters to [-c, c]; 0 disables
    add_activation: str = "none"  # none | tanh: squash write heads' add vectors to (-1, 1)
    cell_clip: float = 0.0  # clip the LSTM controller's cell states to [-c, c]; 0 disables
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    # Seeds of this model can train as one ensemble (ntm.ensemble): its step vmaps.
    trains_as_ensemble: ClassVar[bool] = True

    def check(self, prefix: str = "model") -> None:
        one_of(prefix, self, "controller", tuple(CONTROLLERS))
        positive(prefix, self, "controller_size", "controller_layers", "num_heads")
        require(self.shift_range >= 0, f"{prefix}.shift_range", self.shift_range, ">= 0")
        require(self.controller_clip >= 0, f"{prefix}.controller_clip", self.controller_clip, ">= 0 (0 disables)")
        one_of(prefix, self, "add_activation", ADD_ACTIVATIONS)
        require(self.cell_clip >= 0, f"{prefix}.cell_clip", self.cell_clip, ">= 0 (0 disables)")
        require(
            self.cell_clip == 0 or self.controller == "lstm",
            f"{prefix}.cell_clip",
            self.cell_clip,
            f"0 with {prefix}.controller={self.controller} (only an LSTM controller has cells)",
        )
        try:
            if self.head_order:
                head_stages(self.head_order)
        except ValueError:
            require(
                False, f"{prefix}.head_order", self.head_order, "a string of r (read) and w (write) with at least one of each"
            )
        self.memory.check(f"{prefix}.memory")
        require(
            2 * self.shift_range + 1 <= self.memory.n,
            f"{prefix}.shift_range",
            self.shift_range,
            f"<= (model.memory.n - 1) / 2 = {(self.memory.n - 1) // 2}",
        )

    def activation_bytes(self, batch_size: int, task: TaskConfig) -> float:
        """Bytes one training time step holds until backward (the NTM's sizes do not depend on the task).

        Fitted to measurements on CPU (torch 2.13, resident memory over 2,000-step sequences):
        per sequence, copies of the memory and the weightings dominate; per step, autograd's
        bookkeeping adds about 100 kB for each (read, write) pair of heads.
        """
        heads = len(self.head_order) if self.head_order else 2 * self.num_heads
        writes = self.head_order.count("w") if self.head_order else self.num_heads
        n, m = self.memory.n, self.memory.m
        floats = n * m * (3.1 + 1.9 * (writes - 1)) + 7.7 * n * heads + 8 * self.controller_size * self.controller_layers
        return 4 * batch_size * (floats + 300) + 50_000 * heads

    def build(self, task: Task) -> NTM:
        """The model this config describes, sized for a task."""
        return NTM(
            task.input_size,
            task.output_size,
            controller=self.controller,
            controller_size=self.controller_size,
            controller_layers=self.controller_layers,
            num_heads=self.num_heads,
            head_order=self.head_order,
            memory_n=self.memory.n,
            memory_m=self.memory.m,
            memory_init=self.memory.init,
            memory_init_value=self.memory.init_value,
            shift_range=self.shift_range,
            controller_clip=self.controller_clip,
            add_activation=self.add_activation,
            cell_clip=self.cell_clip,
        )


@dataclass
class LSTMConfig:
    """The paper's LSTM baseline: `layers` stacked LSTM layers of `size` units (ntm.lstm)."""

    name: str = "lstm"
    size: int | None = None  # units per layer; None: the paper's for the task (the task's paper_lstm_size)
    layers: int = 3
    # nn.LSTM's fused op has no vmap batching rule: an ensemble's members train one by one.
    trains_as_ensemble: ClassVar[bool] = False

    def check(self, prefix: str = "model") -> None:
        require(self.size is None or self.size > 0, f"{prefix}.size", self.size, "> 0, or null for the paper's size for the task")
        positive(prefix, self, "layers")

    def size_for(self, task: TaskConfig) -> int:
        return self.size if self.size is not None else task.paper_lstm_size

    def activation_bytes(self, batch_size: int, task: TaskConfig) -> float:
        """Bytes one training time step holds until backward.

        Fitted to measurements on CPU (torch 2.13, oneDNN's LSTM, resident memory over 2,000-
        to 4,000-step sequences): about 20 floats per unit, layer and sequence, and some 25 kB
        per step whatever the size; autograd saves 16.5 of those floats.
        """
        return 4 * batch_size * 20 * self.layers * self.size_for(task) + 25_000

    def build(self, task: Task) -> LSTM:
        """The model this config describes, sized for a task."""
        return LSTM(task.input_size, task.output_size, size=self.size_for(task.config), layers=self.layers)


@dataclass
class RMSpropConfig:
    name: str = "rmsprop"
    lr: float = 1e-4
    momentum: float = 0.9
    alpha: float = 0.95
    eps: float = 1e-8  # pytorch-ntm uses PyTorch's default
    # Graves's form (2013): divide by the standard deviation of recent gradients rather than
    # their root mean square, i.e. subtract the running mean's square.
    centered: bool = False

    def check(self, prefix: str = "optimizer") -> None:
        positive(prefix, self, "lr", "eps")
        require(0 <= self.momentum < 1, f"{prefix}.momentum", self.momentum, "in [0, 1)")
        require(0 < self.alpha < 1, f"{prefix}.alpha", self.alpha, "in (0, 1)")

    def build(self, params) -> torch.optim.Optimizer:
        return torch.optim.RMSprop(
            params, lr=self.lr, momentum=self.momentum, alpha=self.alpha, eps=self.eps, centered=self.centered
        )


@dataclass
class AdamConfig:
    name: str = "adam"
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0

    def check(self, prefix: str = "optimizer") -> None:
        positive(prefix, self, "lr", "eps")
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            require(0 <= value < 1, f"{prefix}.{name}", value, "in [0, 1)")
        require(self.weight_decay >= 0, f"{prefix}.weight_decay", self.weight_decay, ">= 0")

    def build(self, params) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=self.lr, betas=(self.beta1, self.beta2), eps=self.eps, weight_decay=self.weight_decay)


# An optimiser is a config dataclass with check() and build(params), registered here, plus
# conf/optimizer/NAME.yaml. Optimisers must be elementwise (RMSprop, Adam): an ensemble keeps one
# optimiser over its members' stacked parameters (ntm.ensemble).
OPTIMIZERS = {"rmsprop": RMSpropConfig, "adam": AdamConfig}
# A model is a config dataclass with check(), build(task), activation_bytes(batch_size, task) and
# trains_as_ensemble, registered here, plus conf/model/NAME.yaml. The module it builds provides
# forward(inputs, output_steps, blank_steps=None) and compile_step(**options), and for ensembles
# initial_state(batch_size) and step(x, state).
MODELS = {"ntm": NTMConfig, "lstm": LSTMConfig}
# The schema of every option of each config group, by option name.
GROUP_SCHEMAS = {"task": {name: task.Config for name, task in TASKS.items()}, "model": MODELS, "optimizer": OPTIMIZERS}


@dataclass
class TrainConfig:
    steps: int = 50_000  # optimiser steps (batches)
    batch_size: int = 1
    report_interval: int = 200  # steps between metrics.csv rows and log lines
    eval_interval: int = 500  # steps between evaluations; 0 evaluates only at the end
    checkpoint_interval: int = 1000  # steps between checkpoints; 0 disables
    grad_clip: str = "value"  # value: elementwise as pytorch-ntm; norm: global norm; none
    grad_clip_value: float = 10.0
    # Sequences over which the learning rate's distance to lr_min halves, smoothly: lr_min +
    # (optimizer.lr - lr_min) * 0.5 ** (sequences / lr_half_life). Fast early learning, fine late
    # steps, and a floor for runs that learn late. 0: constant.
    lr_half_life: int = 0
    lr_min: float = 0.0
    # Once a run's evaluation cost (above the optimum, where the task has one) is below
    # lr_drop_below bits per sequence, its learning rate is multiplied by lr_drop_factor for the
    # rest of the run: large steps while it learns the task's algorithm, which each seed does at
    # its own time, small ones for its last bits. 0: never.
    lr_drop_below: float = 0.0
    lr_drop_factor: float = 0.25
    stop_at_convergence: bool = True
    # Runs trained together as one ensemble (hydra/launcher=ensemble) draw each step's sizes
    # (copy: the length; repeat copy: length and repeats; associative recall: items) once for
    # all members, each member its own bits. Every member's training distribution is unchanged
    # and no member waits for a longer one's steps, but its stream differs from its separate run
    # and depends on the group it trains with (reproducible given the same group). No effect
    # on a run trained alone.
    shared_sizes: bool = False
    threads: int = 1  # torch intra-op threads; 0 keeps torch's default
    # Floats below 1.2e-38 (subnormal) computed as zero on the CPU. A model stuck at chance (the
    # paper's LSTM on priority sort) lets RMSprop's running averages of tiny gradients decay into
    # that range, where each operation on them is many times slower: 7.7x fewer sequences a
    # second measured on such a run's checkpoint. Not a result key (ntm.run_format.NON_RESULT_KEYS):
    # every run checked gave the same numbers either way.
    flush_denormal: bool = True
    # How time steps run (ntm.train.step_path): true: each through torch.compile; false: eager,
    # the reference; fused: each whole sequence, forward and backward, in one call of a C++
    # library built for this CPU (ntm.fused; an NTM with one controller layer and its heads in one
    # stage). auto: fused for such an NTM trained alone at batch <= 4, where it is several times
    # faster; otherwise compiled when the run repays the one-off compile, else eager. Every path
    # gives the eager numbers to float tolerance.
    compile: str = "auto"
    # Time steps per call of the compiled step (NTM models trained alone). 4 trains about 1.5x faster
    # at batch 1 with the same numbers to float tolerance, but float-level differences send a
    # seed down another trajectory: the README's results were trained with 1, and with 4 one of
    # the previous preset=repeat_copy's seeds sat on a plateau instead (README, Performance).
    steps_per_call: int = 1
    # cpu, cuda, or auto (cuda when available). Batches are drawn on the CPU, so a seed gives the
    # same data on every device, and copied to the device.
    device: str = "cpu"
    progress: bool = True  # tqdm progress bar
    max_memory_gb: float | None = None  # refuse runs estimated to need more; None: the memory available now
    snapshot_interval: int | None = None  # steps between snapshots for figures; None: eval_interval; 0: none

    def __post_init__(self) -> None:
        # train.compile=true reaches a str field as "True" (YAML's bool, converted by OmegaConf).
        self.compile = str(self.compile).lower()

    def check(self, prefix: str = "train") -> None:
        positive(prefix, self, "steps", "batch_size", "report_interval", "steps_per_call")
        for name in ("eval_interval", "checkpoint_interval", "threads", "snapshot_interval", "lr_half_life"):
            value = getattr(self, name)
            if value is not None:
                require(value >= 0, f"{prefix}.{name}", value, ">= 0")
        one_of(prefix, self, "grad_clip", GRAD_CLIPS)
        one_of(prefix, self, "compile", COMPILE_CHOICES)
        one_of(prefix, self, "device", DEVICES)
        if self.device == "cuda":
            require(torch.cuda.is_available(), f"{prefix}.device", self.device, "cpu or auto: this machine has no CUDA device")
        require(self.grad_clip_value > 0, f"{prefix}.grad_clip_value", self.grad_clip_value, "> 0")
        require(self.lr_min >= 0, f"{prefix}.lr_min", self.lr_min, ">= 0")
        require(self.lr_drop_below >= 0, f"{prefix}.lr_drop_below", self.lr_drop_below, ">= 0 (bits per sequence; 0: never)")
        require(0 < self.lr_drop_factor <= 1, f"{prefix}.lr_drop_factor", self.lr_drop_factor, "in (0, 1]")
        if self.max_memory_gb is not None:
            require(self.max_memory_gb > 0, f"{prefix}.max_memory_gb", self.max_memory_gb, "> 0 or null (the memory available)")


@dataclass
class TensorBoardConfig:
    """logger=tensorboard (conf/logger/tensorboard.yaml); ntm.loggers."""


@dataclass
class MLflowConfig:
    """logger=mlflow (conf/logger/mlflow.yaml); ntm.loggers."""

    tracking_uri: str | None = None  # None: sqlite:///mlruns.db in the directory the command runs in
    experiment: str | None = None  # None: the run folder's parent folder's name (the sweep's)


@dataclass
class LoggerConfig:
    """Where else a run's metrics go (conf/logger/: one or several, logger=[a,b]); None: not there."""

    tensorboard: TensorBoardConfig | None = None
    mlflow: MLflowConfig | None = None

    def check(self, prefix: str = "logger") -> None:
        from ntm.loggers import check_installed

        for f in fields(self):
            if getattr(self, f.name) is not None:
                check_installed(f.name)


@dataclass
class Config:
    seed: int = 1
    task: Any = MISSING
    model: Any = MISSING
    optimizer: Any = MISSING
    train: TrainConfig = field(default_factory=TrainConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)

    def check(self) -> None:
        for group, registry in GROUP_SCHEMAS.items():
            node = getattr(self, group)
            name = getattr(node, "name", None)
            require(type(node) is registry.get(name), f"{group}.name", name, f"the name of its {group} group option")
        self.task.check("task")
        self.model.check("model")
        self.optimizer.check("optimizer")
        self.train.check("train")
        self.logger.check("logger")
        lr = self.optimizer.lr
        require(self.train.lr_min <= lr, "train.lr_min", self.train.lr_min, f"<= optimizer.lr ({lr})")
        if self.train.compile == "fused":
            check_fused(self)
        check_memory(self)


def check_fused(config: Config) -> None:
    """train.compile=fused runs ntm.fused's C++ sequence: an NTM of the shape it implements, on the CPU."""
    reason = fused_unsupported(config)
    require(reason is None, "train.compile", "fused", f"auto, true or false with this model and device ({reason})")


def fused_unsupported(config: Config) -> str | None:
    """What the fused sequence needs that this config lacks (in its keys' words), or None."""
    model = config.model
    if not isinstance(model, NTMConfig):
        return "fused needs model=ntm"
    stages = len(head_stages(model.head_order or "r" * model.num_heads + "w" * model.num_heads))
    reason = fused.unsupported(model.controller, model.controller_layers, stages)
    if reason is not None:
        return f"fused needs {reason}"
    if config.train.device != "cpu":
        return "fused needs train.device=cpu"
    return None


# Resident memory of a training process before its data and activations (torch, the model).
BASE_PROCESS_BYTES = 400 * 2**20
# Backward holds gradients of a step's activations beside the saved ones (measured: about 10%).
BACKWARD_FACTOR = 1.1


def estimate_memory(config: Config) -> float:
    """Peak bytes a run will hold: process, evaluation sets, and the longest training batch's
    activations kept for backward. Computed from the config alone, before anything is built."""
    profile = config.task.memory_profile()
    activations = profile.longest_steps * config.model.activation_bytes(config.train.batch_size, config.task) * BACKWARD_FACTOR
    return BASE_PROCESS_BYTES + 4 * profile.eval_floats + activations


def available_memory() -> float | None:
    """Bytes of memory available to a new process now (Linux MemAvailable), else the machine's total, else None."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(config: Config) -> None:
    """Refuse a run that would not fit in memory, naming the keys that size it."""
    limit = config.train.max_memory_gb * 2**30 if config.train.max_memory_gb is not None else available_memory()
    needed = estimate_memory(config)
    if limit is None or needed <= limit:
        return
    profile = config.task.memory_profile()
    gib = 2**30
    source = "train.max_memory_gb" if config.train.max_memory_gb is not None else "available now"
    raise ConfigError(
        f"{profile.length_keys}, train.batch_size={config.train.batch_size} need an estimated {needed / gib:.1f} GiB "
        f"of memory (longest training sequence {profile.longest_steps:,} steps; evaluation sets "
        f"{4 * profile.eval_floats / gib:.1f} GiB), more than the {limit / gib:.1f} GiB {source}; "
        "make them smaller, or set train.max_memory_gb=GB to allow it"
    )


def validate(cfg: DictConfig | Config) -> Config:
    """The one place a config is checked: its keys against the schema, every number finite,
    every value in range, and its estimated memory. Raises ConfigError naming the key; returns
    the typed config."""
    config = OmegaConf.to_object(cfg) if isinstance(cfg, DictConfig) else cfg
    if not isinstance(config, Config):
        raise ConfigError("the composed config does not follow ntm.config.Config (config_schema)")
    check_keys_and_numbers(config)
    config.check()
    return config


def check_keys_and_numbers(node: Any, prefix: str = "") -> None:
    """Refuse keys no schema has and non-finite numbers anywhere in a typed config.

    Hydra lets `+key=value`, `++key=value` and YAML files add keys to a structured config, and
    OmegaConf.to_object keeps them as extra attributes: this catches every such key however it
    was added.
    """
    known = [f.name for f in fields(node)]
    for key in vars(node):
        if key not in known:
            where = f"keys of {prefix.rstrip('.')}" if prefix else "top-level keys"
            raise ConfigError(f"{prefix}{key} is not a config key; the {where} are: {', '.join(known)}")
    for name in known:
        value, key = getattr(node, name), f"{prefix}{name}"
        if is_dataclass(value):
            check_keys_and_numbers(value, f"{key}.")
        for item in value if isinstance(value, list) else [value]:
            finite(key, item)


def from_container(stored: dict) -> Config:
    """The typed, validated config of a run folder's .hydra/config.yaml (group options by their names)."""
    groups = {}
    for group, registry in GROUP_SCHEMAS.items():
        name = (stored.get(group) or {}).get("name")
        if name not in registry:
            raise ConfigError(f"{group}.name={name!r} is not allowed: must be one of {', '.join(registry)}")
        groups[group] = registry[name]()
    schema = OmegaConf.structured(Config(**groups))
    return validate(OmegaConf.merge(schema, stored))


def schema_defaults(stored: dict) -> dict:
    """Every key's default for a stored config's group options (by their names), as plain dicts.

    A run folder written before a key existed holds no value for it: the run behaved as the key's
    default. A group whose name is unknown gets no defaults.
    """
    defaults = to_container(Config(task=None, model=None, optimizer=None))
    for group, registry in GROUP_SCHEMAS.items():
        name = (stored.get(group) or {}).get("name")
        defaults[group] = to_container(registry[name]()) if name in registry else {}
    return defaults


def to_container(config: Any) -> dict:
    """A typed config (or one group's) as plain dicts and lists (for checkpoints and comparisons)."""
    return OmegaConf.to_container(OmegaConf.structured(config))
