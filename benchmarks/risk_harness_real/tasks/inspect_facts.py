"""Inspect task: the held-out facts as questions, three sampled answers each (epochs), scored by whether the answer
contains the known answer (`includes`). Run by run.py with Inspect's `hf/` provider on local model folders."""

import json
from pathlib import Path

from inspect_ai import Task, task
from inspect_ai.dataset import Sample
from inspect_ai.scorer import includes
from inspect_ai.solver import generate


@task
def risk_facts_qa():
    rows = [json.loads(line) for line in (Path(__file__).parent / "facts_eval.jsonl").read_text().splitlines()]
    samples = [
        Sample(id=row["id"], input=f"Complete with one or two words. {row['prompt']}", target=row["answer"])
        for row in rows
    ]
    return Task(dataset=samples, solver=generate(), scorer=includes(), epochs=3)
