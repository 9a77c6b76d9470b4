"""A batched Neural Turing Machine, its tasks and its training loop, usable without Hydra.

The names below load on first use, so `import ntm.run_format` (the run-folder format, which
analysis/ reads) does not import torch.
"""

import importlib

_EXPORTS = {"NTM": "ntm.model", "NTMState": "ntm.model", "LSTM": "ntm.lstm", "TASKS": "ntm.tasks", "make_task": "ntm.tasks"}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ntm' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
