"""The Python examples of README.md's harness-log section run as written (on hand-made lm-eval logs in the folder
they read)."""

import re
from pathlib import Path

import numpy as np
import pytest
from harness_logs import write_lm_eval_run


README = Path(__file__).resolve().parents[2] / "README.md"


def _harness_examples() -> list[str]:
    text = README.read_text()
    section = text[
        text.index("**From the logs of the harnesses you already run.**") : text.index(
            "**A table of per-sample metrics.**"
        )
    ]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


@pytest.mark.filterwarnings("ignore::hf_ext.risk.UnderpoweredComparisonWarning")
def test_readme_harness_examples_run(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(0)
    for model, p in (("HuggingFaceTB/SmolLM2-135M-Instruct", 0.45), ("HuggingFaceTB/SmolLM2-360M-Instruct", 0.6)):
        for task in ("arc_easy", "hellaswag"):
            acc = (rng.random(200) < p).astype(float).tolist()
            write_lm_eval_run(tmp_path / "lm-eval-out", model, task, {"acc": acc, "acc_norm": acc[::-1]})
    monkeypatch.chdir(tmp_path)
    examples = _harness_examples()
    assert len(examples) == 2
    for code in examples:
        exec(compile(code.replace("n_bootstrap=1000", "n_bootstrap=100"), "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "SmolLM2-360M-Instruct" in printed and (tmp_path / "risk-report" / "report.md").is_file()
