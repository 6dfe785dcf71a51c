"""Every `deepzoo` command in a shell block of README.md and docs/*.md names what exists: its
recipe, every flag (a field of that recipe's config, its value of the right type), its benchmark
names and the arguments of eval, sample and report. A renamed recipe or flag fails here, before
a reader finds the page stale. (Commands are checked, not run: running them trains every recipe.)"""

import re
import shlex
from pathlib import Path

import pytest

from deepzoo.bench import BENCHMARKS
from deepzoo.cli import build_parser, parse_overrides
from deepzoo.recipes import get_recipe

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN_OPTIONS = {"--run-dir": 1, "--overwrite": 0, "--resume": 1}


def documented_commands() -> list[tuple[str, list[str]]]:
    """(page, argv after `deepzoo`) of every deepzoo command line in a bash/sh block."""
    commands = []
    for page in PAGES:
        for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", page.read_text(), re.S):
            for line in block.splitlines():
                tokens = shlex.split(line, comments=True)
                if tokens[:1] == ["torchrun"] and "-m" in tokens:
                    tokens = tokens[tokens.index("-m") + 1 :]
                if tokens and Path(tokens[0]).name == "deepzoo":
                    commands.append((page.name, [t for t in tokens[1:] if t != "--debug"]))
    return commands


COMMANDS = documented_commands()


def test_the_pages_show_commands():
    assert len(COMMANDS) > 30 and {argv[0] for _, argv in COMMANDS} >= {"train", "sample", "report", "bench"}


@pytest.mark.parametrize("page, argv", COMMANDS, ids=[f"{p}: {' '.join(a)}" for p, a in COMMANDS])
def test_a_documented_command_names_what_exists(page, argv):
    command, rest = argv[0], argv[1:]
    if command == "train":
        if "--resume" in rest or {"-h", "--help"} & set(rest):
            return
        recipe = get_recipe(rest[0])
        overrides, i = [], 1
        while i < len(rest):
            width = RUN_OPTIONS.get(rest[i])
            if width is None:
                overrides.append(rest[i])
                i += 1
            else:
                i += 1 + width
        parse_overrides(recipe.name, recipe.default, overrides)
    elif command == "bench":
        assert all(name in BENCHMARKS for name in rest if not name.startswith("-")), argv
    else:
        _, unknown = build_parser().parse_known_args(argv)
        assert unknown == [], argv
