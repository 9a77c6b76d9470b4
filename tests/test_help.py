"""`python run.py --help`: what the program does, the options a user can pick, the composed config."""

import re

import pytest
from conftest import ROOT, run_py_here

pytestmark = pytest.mark.slow  # a run.py subprocess

# The config groups a user picks from; their options are the YAML files in conf/GROUP/.
GROUPS = ("task", "model", "optimizer", "logger", "preset", "sweep")


@pytest.fixture(scope="module")
def help_run():
    # An override shows that the config printed is the one composed from the command line.
    return run_py_here("model.memory.n=64", "--help")


def listed_options(text: str) -> set[tuple[str, str]]:
    """(group, option) pairs of the 'GROUP=OPTION  description' lines in the groups section."""
    section = text.split("== Config groups", 1)[1].split("\n== ", 1)[0]
    return {(m[1], m[2]) for m in re.finditer(r"^(\w+)=(\w+)\s", section, flags=re.MULTILINE)}


def test_help_exits_0(help_run):
    assert help_run.returncode == 0, help_run.stderr
    assert "powered by Hydra" not in help_run.stdout  # ours, not Hydra's default page


def test_help_lists_exactly_the_option_files_of_every_group(help_run):
    # A new group in conf/ must be added to the help (conf/hydra/help/ntm.yaml) and to GROUPS.
    assert {p.name for p in (ROOT / "conf").iterdir() if p.is_dir()} - {"hydra"} == set(GROUPS)
    files = {
        (group, path.stem) for group in GROUPS for path in (ROOT / "conf" / group).glob("*.yaml") if not path.stem.startswith("_")
    }
    assert {group for group, _ in files} == set(GROUPS)
    assert listed_options(help_run.stdout) == files


def test_help_hides_the_typed_schemas(help_run):
    assert "_schema" not in help_run.stdout


def test_help_says_what_the_program_does_and_where_to_go_next(help_run):
    text = help_run.stdout
    assert "Neural Turing Machine" in text
    assert "python run.py -m" in text
    for pointer in ("sweep=seeds_memory", "sweep=hpo", "python -m analysis PATH", "README.md"):
        assert pointer in text, pointer


def test_help_shows_the_composed_config(help_run):
    config = help_run.stdout.split("== Config:", 1)[1]
    assert "controller_size: 100" in config and "'n': 64" in config and "steps: 50000" in config
    assert "hydra:" not in config  # the job's config, without Hydra's own node
