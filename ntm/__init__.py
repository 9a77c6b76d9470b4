"""A batched Neural Turing Machine, its tasks and its training loop, usable without Hydra."""

from ntm.model import NTM, NTMState
from ntm.tasks import TASKS, make_task

__all__ = ["NTM", "NTMState", "TASKS", "make_task"]
