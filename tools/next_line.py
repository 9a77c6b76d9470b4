"""Print the requirements of the next line of Hydra's Optuna sweeper, one per line, for pip.

pyproject.toml holds the project's requirements on the stable line (hydra-optuna-sweeper 1.3,
optuna 2.10); tools/next_line.txt holds only what the 1.4 release candidates change. This
prints pyproject's dependencies and its dev extra, each replaced by next_line.txt's entry for
the same project, then next_line.txt's own additions. `make venv-next` installs them.
"""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def name(requirement: str) -> str:
    """The project a requirement names, normalised as pip does (PyPA's name rules)."""
    return re.sub(r"[-_.]+", "-", re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement).group(1)).lower()


def requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    stable = project["dependencies"] + project["optional-dependencies"]["dev"]
    lines = (ROOT / "tools" / "next_line.txt").read_text().splitlines()
    changed = {name(line): line.strip() for line in (line.split("#")[0] for line in lines) if line.strip()}
    merged = {name(line): changed.get(name(line), line) for line in stable}
    return list(merged.values()) + [line for key, line in changed.items() if key not in merged]


if __name__ == "__main__":
    print("\n".join(requirements()))
