"""Every `deepzoo` command in a shell block of README.md and docs/*.md names what exists: its
recipe, every flag (a field of that recipe's config, its value of the right type), its benchmark
names and the arguments of eval, sample and report. A renamed recipe or flag fails here, before
a reader finds the page stale. (Commands are checked, not run: running them trains every recipe.)"""

import re
import shlex
import shutil
from pathlib import Path

import pytest

from deepzoo.bench import BENCHMARKS
from deepzoo.cli import _flag_names, build_parser, main, parse_overrides
from deepzoo.recipes import RECIPES, get_recipe
from tests.torchrun import torchrun as launch

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN_OPTIONS = {"--run-dir": 1, "--overwrite": 0, "--resume": 1}


def documented_commands() -> list[tuple[str, list[str], bool]]:
    """(page, argv after `deepzoo`, launched by torchrun) of every deepzoo command line in a
    bash/sh block, in the page's order."""
    commands = []
    for page in PAGES:
        for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", page.read_text(), re.S):
            for line in block.splitlines():
                tokens = shlex.split(line, comments=True)
                torchrun = tokens[:1] == ["torchrun"] and "-m" in tokens
                if torchrun:
                    tokens = tokens[tokens.index("-m") + 1 :]
                if tokens and Path(tokens[0]).name == "deepzoo":
                    commands.append((page.name, [t for t in tokens[1:] if t != "--debug"], torchrun))
    return commands


LINES = documented_commands()
COMMANDS = [(page, argv) for page, argv, _ in LINES]


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
    elif command == "check":
        ns, overrides = build_parser().parse_known_args(argv)
        parse_overrides(ns.recipe, get_recipe(ns.recipe).default, overrides)
    elif command == "search":
        from deepzoo.recipes.search import draw_trials, parse_dimension

        ns, overrides = build_parser().parse_known_args(argv)
        recipe = get_recipe(ns.recipe)
        (values,) = draw_trials([parse_dimension(spec) for spec in ns.space], 1, seed=0)
        parse_overrides(
            recipe.name, recipe.default, overrides + [a for f, v in values.items() for a in (f"--{f}", v)]
        )
    else:
        _, unknown = build_parser().parse_known_args(argv)
        assert unknown == [], argv


# ---- Running them: every command of a page, in order, in a fresh directory, each training run
# shrunk to a smoke run (two steps, a tiny evaluation) by flags appended after the documented ones.

SMOKE = [
    "--train.steps", "2", "--train.eval-every", "2", "--train.checkpoint-every", "2",
    "--train.log-every", "1", "--train.no-progress", "--train.precision", "fp32", "--train.device", "cpu",
]  # fmt: skip
_DIFFUSION = ["--model.steps", "2", "--model.net.channels", "8", "16", "16"]
_LIKELIHOOD = ["--eval.samples", "1", "--model.hidden", "16"]
_PIXELS = [*_LIKELIHOOD, "--model.layers", "2"]
_SCENES = ["--data.train", "64", "--data.test", "16"]
_STREAMS = [
    "--data.train-streams", "4", "--data.test-streams", "2", "--data.train-length", "256",
    "--data.test-length", "256", "--train.batch-size", "8",
]  # fmt: skip
_DANCE = [
    "--data.train-songs", "6", "--data.test-songs", "4", "--data.seconds", "2", "--train.batch-size", "4",
]  # fmt: skip
_SMALL_GPT = ["--model.gpt.layers", "1", "--model.gpt.dim", "32"]
SMOKE_OF = {
    "knn-mnist": ["--train-limit", "500", "--model.k", "3", "--train.steps", "0"],
    "resnet-mnist": ["--model.widths", "8", "16", "32"],
    "cnn-mnist-wide": ["--model.channels", "8", "16", "32"],
    "gpt-shakespeare": ["--model.layers", "1", "--model.dim", "32"],
    "char-lstm-shakespeare": ["--model.hidden", "32"],
    "vqvae-mnist": ["--model.hidden", "16", "--model.res-hidden", "8"],
    "vqvae-prior-mnist": _SMALL_GPT,
    "ddpm-mnist": _DIFFUSION, "edm-mnist": _DIFFUSION, "flow-matching-mnist": _DIFFUSION,
    "rectified-flow-mnist": [
        *_DIFFUSION, "--pairs", "32", "--teacher-steps", "2", "--train.batch-size", "16",
    ],
    "nice-mnist": _LIKELIHOOD, "realnvp-mnist": _LIKELIHOOD, "glow-mnist": _LIKELIHOOD,
    "pixelcnn-mnist": _PIXELS, "gated-pixelcnn-mnist": _PIXELS, "pixelrnn-mnist": _PIXELS,
    "pointnet-ae-digits": ["--data.train", "256", "--data.test", "64"],
    "unet-scenes": _SCENES, "fcn-scenes": _SCENES, "faster-rcnn-scenes": _SCENES, "mask-rcnn-scenes": _SCENES,
    "vqgan-scenes": _SCENES,
    "vqvae-scenes": _SCENES, "vqgan-prior-scenes": [*_SCENES, *_SMALL_GPT],
    "lstm-streams": _STREAMS, "trn-streams": _STREAMS, "idn-streams": _STREAMS,
    "lstm-digit-streams": [*_STREAMS, "--data.pool", "1000"],
    "trn-digit-streams": [*_STREAMS, "--data.pool", "1000"],
    "idn-digit-streams": [*_STREAMS, "--data.pool", "1000"],
    "dance-vqvae": _DANCE, "dance-gpt": [*_DANCE, *_SMALL_GPT], "dance-ac": [*_DANCE, "--window-steps", "4"],
    "clip-dance": [*_DANCE, "--eval.segment", "60", "--eval.short-segment", "30", "--eval.per-song", "2"],
}  # fmt: skip
PARENT_OF = {  # second-stage recipe: (its flag naming the first stage's run, the first stage's recipe)
    "vqvae-prior-mnist": ("--vqvae-run", "vqvae-mnist"),
    "rectified-flow-mnist": ("--flow-run", "flow-matching-mnist"),
    "ac-vqvae-prior-mnist": ("--prior-run", "vqvae-prior-mnist"),
    "vqgan-prior-scenes": ("--tokenizer-run", "vqgan-scenes"),
    "dance-gpt": ("--vqvae-run", "dance-vqvae"),
    "dance-ac": ("--gpt-run", "dance-gpt"),
}
SMALL_EVAL = {
    "eval.samples": "16", "eval.iwae-k": "2", "eval.iwae-examples": "16", "eval.examples": "64",
    "eval.episodes": "2",
}  # fmt: skip


def smoke_flags(recipe: str) -> list[str]:
    """SMOKE, the smaller evaluation sizes the recipe's config has, then its own SMOKE_OF."""
    names = _flag_names(get_recipe(recipe).default)
    small = [part for name, value in SMALL_EVAL.items() if name in names for part in (f"--{name}", value)]
    return [*SMOKE, *small, *SMOKE_OF.get(recipe, [])]


class Page:
    """A page's commands, run in order in `cwd`. A documented run directory runs/RECIPE/NAME that
    does not exist yet is first trained there as a smoke run (its first stage likewise); a .wav to
    dance to is a synthetic song; /data/aist is a small AIST++ tree in the release's layout."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd

    def run(self, argv: list[str], torchrun: bool = False) -> None:
        argv = self.resolve(argv)
        helping = bool({"-h", "--help"} & set(argv))
        if argv[0] == "bench" and not helping:
            return  # minutes even with --quick: test_a_documented_benchmark_runs_quick (make test-docs-bench)
        if argv[0] == "train" and argv[1] != "--resume" and not helping:
            argv = [*argv, *smoke_flags(argv[1])]  # the last value of a flag wins
        if argv[0] == "search" and not helping:
            argv = [*argv, *smoke_flags(argv[1]), "--trials", "2"]
        if argv[0] == "check" and not helping:
            argv = [*argv, *smoke_flags(argv[1]), "--steps", "2", "--lr-steps", "2"]
        if torchrun:  # --standalone: a free port, so that pages run side by side do not collide
            run_dir = self.cwd / argv[argv.index("--run-dir") + 1] if "--run-dir" in argv else None
            forget = lambda: run_dir and shutil.rmtree(run_dir, ignore_errors=True)  # noqa: E731
            launch(2, ["-m", "deepzoo", *argv], cwd=self.cwd, before_retry=forget)
            return
        try:
            main([*argv, "--debug"])
        except SystemExit as exit_:
            assert exit_.code in (0, None), f"deepzoo {' '.join(argv)} exited with {exit_.code}"

    def resolve(self, argv: list[str]) -> list[str]:
        resolved = []
        for before, token in zip(["", *argv], argv):
            if before == "--data.root" and token == "/data/aist":
                token = str(self.aist())
            elif before == "--wav":
                token = str(self.song(token))
            elif before != "--run-dir" and token.startswith("runs/") and len(Path(token).parts) == 3:
                self.ensure_run(token)
            resolved.append(token)
        return resolved

    def ensure_run(self, run: str) -> None:
        recipe = Path(run).parts[1]
        if recipe not in RECIPES or (self.cwd / run / "config.json").exists():
            return
        argv = ["train", recipe, "--run-dir", run]
        if recipe in PARENT_OF:
            flag, parent = PARENT_OF[recipe]
            argv += [flag, f"runs/{parent}/RUN"]
        self.run(argv)

    def song(self, name: str) -> Path:
        from deepzoo.data.synthetic_dance import make_song, write_wav

        path = self.cwd / name
        if not path.exists():
            write_wav(path, make_song(seed=0, genre=0, seconds=3.0).audio)
        return path

    def aist(self) -> Path:
        from tests.data.test_aist import write_aist

        root = self.cwd / "aist"
        return root if root.exists() else write_aist(root, frames=150)


@pytest.mark.parametrize("page", sorted({page for page, _ in COMMANDS}))
def test_the_commands_of_a_page_run(page, tmp_path, monkeypatch, capsys):
    """Each command exits with status 0 (a `bench NAME` line runs in the docs_bench test below)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "benchmarks").symlink_to(ROOT / "benchmarks")
    runner = Page(tmp_path)
    for name, argv, torchrun in LINES:
        if name == page:
            runner.run(argv, torchrun)
    capsys.readouterr()


def test_the_code_of_the_adding_a_model_page_runs(tmp_path, monkeypatch, capsys):
    """Its python blocks, run in order in one namespace: the two toy recipes train and learn (each
    block asserts what it reaches); they leave the registry as they found it."""
    from deepzoo.recipes import RECIPES

    page = (ROOT / "docs" / "adding-a-model.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, re.S)
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("deepzoo.recipes.registry.RECIPES", dict(RECIPES))
    namespace: dict = {"__name__": "adding_a_model"}
    for block in blocks:
        exec(compile(block, "docs/adding-a-model.md", "exec"), namespace)
    assert (tmp_path / "runs" / "mlp-mnist" / "model.safetensors").exists()
    capsys.readouterr()


LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
FAMILY_PAGES = [
    p for p in PAGES if p.parent.name == "docs" and p.stem not in ("training", "report", "adding-a-model")
]


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_the_links_of_a_page_lead_to_files(page):
    targets = [t for t in LINK.findall(page.read_text()) if "://" not in t]
    missing = [t for t in targets if not (page.parent / t).exists()]
    assert not missing, f"{page.name} links to missing files: {missing}"


def test_every_family_page_links_its_code_and_shows_how_to_run_it_and_the_readme_links_every_page():
    for page in FAMILY_PAGES:
        text = page.read_text()
        assert "](../src/deepzoo/" in text, f"{page.name} links no source file"
        assert any(name == page.name and argv[0] == "train" for name, argv in COMMANDS), page.name
    readme = (ROOT / "README.md").read_text()
    assert all(f"](docs/{p.name})" in readme for p in PAGES if p.parent.name == "docs")


def test_every_recipe_is_documented_on_a_family_page():
    text = "\n".join(p.read_text() for p in FAMILY_PAGES)
    assert [name for name in RECIPES if not re.search(rf"(?<![\w-]){name}(?![\w-])", text)] == []


BENCH_LINES = [(p, a) for p, a in COMMANDS if a[0] == "bench" and not {"-h", "--help"} & set(a)]


@pytest.mark.docs_bench
@pytest.mark.parametrize("page, argv", BENCH_LINES, ids=[f"{p}: {' '.join(a)}" for p, a in BENCH_LINES])
def test_a_documented_benchmark_runs_quick(page, argv, tmp_path, capsys):
    """Each documented `deepzoo bench NAME ...` with --quick, its results in a temporary directory:
    every named benchmark writes its JSON there (and nothing into benchmarks/results)."""
    main([*argv, "--quick", "--results", str(tmp_path)])
    names = [a for a in argv[1:] if not a.startswith("-")]
    assert names and all((tmp_path / f"{name}.json").exists() for name in names)
    capsys.readouterr()
