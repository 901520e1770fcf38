"""README.md's examples run as written: every ```python and ```bash / ```shell block of README.md is a test here.

A block runs alone unless the line right before its fence is one of these HTML comments (invisible on GitHub; the
block says so in words too, e.g. a first comment line "continues the example above"):

- `<!-- readme-test: skip (REASON) -->`: not run, reported as skipped with REASON (a placeholder such as
  `path/to/your-adapter`, the CI itself (`make test`), an install, a download from the Hub);
- `<!-- readme-test: continue -->`: the block continues the one above it: the chain runs as one test, in one folder
  and (for Python) one namespace, named by the indexes of its blocks;
- `<!-- readme-test: fixture NAME -->`: before the block runs, the test writes NAME into its folder: what a block
  above that cannot run here would have produced (e.g. `lm-eval-out`, small lm-eval logs; see `FIXTURES`);
- `<!-- readme-test: real -->`: the block needs the real offline models (`make real`): marked `real`, skipped when
  they are not installed.

Each test runs in a fresh temporary folder holding links to the repository's recipe folders (`trainers/`,
`processors/`), offline: Python blocks in this process (`exec`, under the suite's warning filters); shell blocks made
only of `hf-ext` commands in this process too, each line through `hf_ext.cli.main` (the console script's entry
point: a Python start-up per line would cost more than most commands), other shell blocks with
`bash -e -o pipefail`, with this environment's `hf-ext` and `python` first on `PATH`. A `print(...)  # VALUE` line
whose comment is a value (`# ['aligned', 'risky', 'base']`, `# tensor(0.7500): ...`) must print it
([`printed_claims`]). Tests are named by the README section (its nearest heading, up to a dash) and the block's index
in it, e.g. `risk-aware-evaluation-5`, or `seal-1+2` for a chain.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RUN_LANGUAGES = {"python", "bash", "shell"}
OTHER_LANGUAGES = {"yaml", ""}  # shown, not run (a recipe's text, the layout's tree)
LINKED_FOLDERS = ("trainers", "processors")  # the recipes the commands are given, and the files they name
MARKER = re.compile(
    r"^<!--\s*readme-test:\s*(?P<directive>[a-z]+)\s*(?:\((?P<argument>[^)]*)\)|(?P<name>\S+))?\s*-->$"
)
FENCE = re.compile(r"^```(?P<language>[\w-]*)\s*$")


@dataclass
class Block:
    section: str  # slug of the nearest heading above
    index: int  # 1-based, among the section's runnable blocks
    language: str
    code: str
    line: int  # of the opening fence
    directive: str | None = None
    argument: str | None = None

    @property
    def id(self) -> str:
        return f"{self.section}-{self.index}"


def _slug(heading: str) -> str:
    """`## AOT — alignment via optimal transport` -> `aot`: the words before a dash."""
    return "-".join(re.findall(r"[a-z0-9]+", heading.split(" — ")[0].lower()))


def parse_readme(text: str) -> tuple[list[Block], list[tuple[str, str, int]]]:
    """The runnable blocks in order, and every other fenced block as `(language, code, line)`."""
    blocks, others = [], []
    lines = text.splitlines()
    section, counts, i = "top", {}, 0
    while i < len(lines):
        line = lines[i]
        fence = FENCE.match(line)
        if fence is None:
            if line.startswith("#"):
                section = _slug(line.lstrip("#"))
            i += 1
            continue
        start = i
        i += 1
        while i < len(lines) and lines[i].rstrip() != "```":
            i += 1
        if i == len(lines):
            raise ValueError(f"README.md:{start + 1}: the code block opened here is never closed")
        code = "\n".join(lines[start + 1 : i]) + "\n"
        i += 1
        language = fence["language"]
        if language not in RUN_LANGUAGES:
            others.append((language, code, start + 1))
            continue
        counts[section] = counts.get(section, 0) + 1
        block = Block(section, counts[section], language, code, start + 1)
        previous = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        if previous.startswith("<!--") and "readme-test" in previous:
            marker = MARKER.match(previous)
            if marker is None:
                raise ValueError(f"README.md:{start}: unreadable marker {previous!r}")
            block.directive, block.argument = marker["directive"], marker["argument"] or marker["name"]
        blocks.append(block)
    return blocks, others


def _chains(blocks: list[Block]) -> list[list[Block]]:
    """Each block with the blocks that continue it."""
    chains: list[list[Block]] = []
    for block in blocks:
        if block.directive == "continue":
            if not chains or chains[-1][0].directive == "skip":
                raise ValueError(f"README.md:{block.line}: block {block.id} continues no runnable block")
            chains[-1].append(block)
        else:
            chains.append([block])
    return chains


BLOCKS, OTHER_BLOCKS = parse_readme(README.read_text(encoding="utf-8"))
CHAINS = _chains(BLOCKS)


# ---------------------------------------------------------------------------------------------------------------
# What a block that cannot run here (a harness, a download) would have left in the folder.


def _load_test_helper(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / "risk" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _lm_eval_logs(folder: Path) -> None:
    """`lm_eval --log_samples` folders of the README's two SmolLM2 models on arc_easy and hellaswag (200 documents,
    acc and acc_norm; the 360M model is right more often)."""
    import numpy as np

    write_lm_eval_run = _load_test_helper("harness_logs").write_lm_eval_run
    rng = np.random.default_rng(0)
    for model, p in (("HuggingFaceTB/SmolLM2-135M-Instruct", 0.45), ("HuggingFaceTB/SmolLM2-360M-Instruct", 0.6)):
        for task in ("arc_easy", "hellaswag"):
            acc = (rng.random(200) < p).astype(float).tolist()
            write_lm_eval_run(folder / "lm-eval-out", model, task, {"acc": acc, "acc_norm": acc[::-1]})


FIXTURES = {"lm-eval-out": _lm_eval_logs}


# ---------------------------------------------------------------------------------------------------------------
# Running a chain


def hf_ext_commands(code: str) -> list[list[str]] | None:
    """The argument lists of a shell block made only of `hf-ext` commands (one a line, `\\` continuations and
    comments allowed), else None."""
    commands = []
    for line in code.replace("\\\n", " ").splitlines():
        argv = shlex.split(line, comments=True)
        if not argv:
            continue
        if argv[0] != "hf-ext":
            return None
        commands.append(argv[1:])
    return commands


def _run_shell(block: Block, cwd: Path) -> None:
    commands = hf_ext_commands(block.code)
    if commands is not None:  # through the console script's entry point, in this process (no start-up per line)
        from hf_ext.cli import main

        for argv in commands:
            try:
                status = main(argv)
            except SystemExit as exit:  # --help, --version
                status = exit.code
            assert status in (0, None), f"README.md:{block.line} ({block.id}): hf-ext {shlex.join(argv)} -> {status}"
        return
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["HF_HUB_OFFLINE"] = "1"
    result = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", block.code], cwd=cwd, env=env, capture_output=True, text=True
    )
    print(result.stdout, result.stderr, sep="\n")
    assert result.returncode == 0, (
        f"README.md:{block.line} ({block.id}) exited with {result.returncode}:\n{result.stdout}\n{result.stderr}"
    )


def printed_claims(code: str) -> list[tuple[str, bool]]:
    """What a block's comments say its `print` calls show, as `(text, is_prefix)`: a printed line must equal `text`
    (or start with it). Read from `print(...)  # CLAIM` lines whose claim is a Python literal (up to `: ` or ` (`):
    `# ['aligned', 'risky', 'base']`, `# tensor(0.7500): ...`, `# 0 (...)` (a line starting with "0 "),
    `# {'alpha': 0.6, ...}` (a line starting with "{'alpha': 0.6"). Other comments describe, and are not checked."""
    claims = []
    for line in code.splitlines():
        comment = re.match(r"\s*print\(.*\)\s+# (?P<claim>.*)$", line)
        if comment is None:
            continue
        claim = re.split(r": (?![^\[{(]*[\]})])| \(", comment["claim"])[0].strip()
        if claim.endswith(", ...}"):
            claims.append((claim[: -len(", ...}")], True))
        elif re.fullmatch(r"tensor\([-\d.e]+\)", claim):
            claims.append((claim, False))
        else:
            try:
                value = ast.literal_eval(claim)
            except (ValueError, SyntaxError):
                continue
            number = isinstance(value, (int, float))
            claims.append((f"{claim} " if number else repr(value), number))
    return claims


def _marks(chain: list[Block]) -> list:
    head = chain[0]
    if head.directive == "skip":
        return [pytest.mark.skip(reason=f"README.md:{head.line}: {head.argument}")]
    marks = [pytest.mark.slow]
    if any(block.directive == "real" for block in chain):
        from hf_ext.real_models import real_models_available

        marks += [
            pytest.mark.real,
            pytest.mark.skipif(not real_models_available(), reason="real offline models not installed (make real)"),
        ]
    return marks


@pytest.mark.parametrize(
    "chain",
    [
        pytest.param(chain, id=f"{chain[0].section}-{'+'.join(str(b.index) for b in chain)}", marks=_marks(chain))
        for chain in CHAINS
    ],
)
def test_readme_example(chain, tmp_path, monkeypatch, capsys):
    for name in LINKED_FOLDERS:
        (tmp_path / name).symlink_to(ROOT / name, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__readme__"}
    for block in chain:
        if block.directive == "fixture":
            FIXTURES[block.argument](tmp_path)
        if block.language == "python":
            exec(compile(block.code, f"README.md:{block.line} ({block.id})", "exec"), namespace)
        else:
            _run_shell(block, tmp_path)
    printed = capsys.readouterr().out
    sys.stdout.write(printed)  # shown when the test fails
    lines = printed.splitlines()
    for text, is_prefix in (claim for block in chain for claim in printed_claims(block.code)):
        assert any(line == text or (is_prefix and line.startswith(text)) for line in lines), (
            f"{chain[0].id}: the README says a line {'starts with' if is_prefix else 'is'} {text!r}; printed:\n{printed}"
        )


# ---------------------------------------------------------------------------------------------------------------
# The markers themselves


def test_every_block_is_run_or_skipped_with_a_reason():
    assert len(BLOCKS) >= 40
    markers = [line for line in README.read_text(encoding="utf-8").splitlines() if line.startswith("<!-- readme-test")]
    assert len(markers) == sum(block.directive is not None for block in BLOCKS), "a marker that precedes no block"
    assert {language for language, _, _ in OTHER_BLOCKS} <= OTHER_LANGUAGES
    for block in BLOCKS:
        assert block.directive in (None, "skip", "continue", "fixture", "real"), block
        if block.directive == "skip":
            assert block.argument and len(block.argument) > 10, f"README.md:{block.line}: a skip needs a reason"
        if block.directive == "fixture":
            assert block.argument in FIXTURES, f"README.md:{block.line}: no fixture {block.argument!r}"
        if block.directive == "continue":
            first = block.code.splitlines()[0]
            assert first.startswith("#") and "above" in first, f"README.md:{block.line}: say so in its first line"


def test_placeholders_are_marked_and_skipped():
    """A block that names something the reader must supply says so (`path/to/your-...`) and is skipped as a
    placeholder; no runnable block holds one."""
    for block in BLOCKS:
        placeholder = "path/to/" in block.code or "your-" in block.code
        skipped_as_placeholder = block.directive == "skip" and block.argument.startswith("placeholder")
        assert placeholder == skipped_as_placeholder, f"README.md:{block.line} ({block.id})"


def test_the_shown_mergealign_recipe_is_the_shipped_one():
    import yaml

    shown = [code for language, code, _ in OTHER_BLOCKS if language == "yaml" and "processors/mergealign.yaml" in code]
    assert len(shown) == 1
    assert yaml.safe_load(shown[0]) == yaml.safe_load((ROOT / "processors" / "mergealign.yaml").read_text())


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("```python\nx = 1\n", "never closed"),
        ("<!-- readme-test: skip -->\n```python\nx = 1\n```\n", None),
        ("<!-- readme-test skip (oops) -->\n```python\nx = 1\n```\n", "unreadable marker"),
    ],
    ids=["unclosed", "skip-without-reason", "typo"],
)
def test_parser_errors(text, error):
    if error is None:
        (block,), _ = parse_readme(text)
        assert block.directive == "skip" and block.argument is None
    else:
        with pytest.raises(ValueError, match=error):
            parse_readme(text)


def test_printed_claims_are_read_from_print_comments():
    code = (
        "print(loss)  # tensor(0.7500): the squared W2 distance\n"
        "print(ranking)  # ['aligned', 'risky', 'base']\n"
        "print(kept, 'kept')  # 0 (a random 80 % keeps about 26)\n"
        "print(selected)  # {'alpha': 0.6, 'scale': 1.0, ...}\n"
        "print(report)  # violation_fraction, ot_violation\n"
        "x = f(y)  # ['not', 'a', 'print']\n"
    )
    assert printed_claims(code) == [
        ("tensor(0.7500)", False),
        ("['aligned', 'risky', 'base']", False),
        ("0 ", True),
        ("{'alpha': 0.6, 'scale': 1.0", True),
    ]


def test_shell_blocks_of_hf_ext_commands_run_in_process():
    code = "hf-ext env   # versions\nhf-ext risk a.jsonl --metrics x:min \\\n    --output-dir 'my report'\n\n"
    assert hf_ext_commands(code) == [["env"], ["risk", "a.jsonl", "--metrics", "x:min", "--output-dir", "my report"]]
    assert hf_ext_commands("hf-ext env\nmake test\n") is None


def test_a_continued_chain_runs_together():
    text = (
        "## A b\n```python\nx = 1\n```\n<!-- readme-test: continue -->\n```bash\necho $x\n```\n```python\ny=2\n```\n"
    )
    blocks, _ = parse_readme(text)
    assert [[block.id for block in chain] for chain in _chains(blocks)] == [["a-b-1", "a-b-2"], ["a-b-3"]]
    with pytest.raises(ValueError, match="continues no runnable block"):
        _chains(parse_readme("<!-- readme-test: continue -->\n```python\nx = 1\n```\n")[0])
