"""The Python examples of README's SASA section run as written, each block on its own (planted task, offline)."""

import re
from pathlib import Path

import pytest


README = Path(__file__).resolve().parents[2] / "README.md"


def _sasa_blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## SASA") : text.index("## MergeAlign")]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_section_has_its_examples():
    assert len(_sasa_blocks()) >= 5


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(_sasa_blocks())))
def test_readme_block_runs_alone(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks that save write here
    block = _sasa_blocks()[index]
    exec(compile(block, f"README.md SASA block {index}", "exec"), {"__name__": "__readme__"})
