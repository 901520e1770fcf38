"""Re-editing facts on the real natural-facts Larimar (issue 27): does the latest edit win?

Protocol (`measure_reedits`): `count` CounterFact-style records about invented people never seen in training
(`counterfact_records(count, seed)`). Every record's fact is written three times, one `write_memory` call per fact
and per round, with three different objects: A (`target_true`), B (`target_new`), then C (a third object of the
relation). Then, for the rewrite prompts (`reedit`):

- `holds_latest`: the memory holds the C text and neither A nor B;
- `reads_latest`: the rewrite prompt addresses the C text (`read_memory_items`);
- `prefers_latest`: P(C) > P(A) and P(C) > P(B) after the prompt (teacher-forced);
- `answers_latest_exact`: the greedy answer starts with C (every C token is the arg-max), against
  `answers_latest_exact_alone`, the same with only the C facts ever written (the decoder's own ceiling).

`with_other_relations` repeats the three rounds after writing, first, one fact of another relation about each
subject, which no edit may touch (`other_relations_kept`), with `replace=True` and with `replace=False` (today's
append): memory-side figures only.

`python -m examples.larimar.edits` prints the figures as JSON.
"""

from __future__ import annotations

import json
import random
import warnings


def reedit_records(count: int = 100, seed: int = 2027):
    """`(records, third_objects, other_facts)`: the records, a third object per record, and one fact of another
    relation about each record's subject."""
    from hf_ext.testing.larimar_natural import RELATIONS, counterfact_records, relation_objects

    records = counterfact_records(count, seed=seed, num_neighbours=0)
    rng = random.Random(seed)
    relations = {relation.name: relation for relation in RELATIONS}
    third, others = [], []
    for record in records:
        objects = relation_objects(relations[record.relation], held_out=True)
        third.append(rng.choice([o for o in objects if o not in (record.target_true, record.target_new)]))
        other = rng.choice([r for r in RELATIONS if r.name != record.relation])
        others.append(f"{other.prompt(record.subject, 0)} {rng.choice(relation_objects(other, held_out=True))}")
    return records, third, others


def measure_reedits(path, count: int = 100, seed: int = 2027) -> dict:
    """The figures of the protocol above for the Larimar saved in `path` (with its processor)."""
    import torch

    from hf_ext.larimar.evaluation import target_scores
    from hf_ext.larimar.modeling_larimar import LarimarForCausalLM
    from hf_ext.larimar.processing_larimar import LarimarProcessor

    records, third, others = reedit_records(count, seed)
    model = LarimarForCausalLM.from_pretrained(path).eval()
    processor = LarimarProcessor.from_pretrained(path)
    prompts = [r.rewrite_prompt for r in records]
    rounds = [[r.target_true for r in records], [r.target_new for r in records], third]
    latest = [f"{p} {c}" for p, c in zip(prompts, third)]
    earlier = [{f"{p} {o}" for o in (r.target_true, r.target_new)} for p, r in zip(prompts, records)]

    def run(first: list[str], replace: bool) -> dict:
        model.reset_memory()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # appending 400 facts passes the capacity (384): it warns
            if first:
                model.write_memory(first, processor=processor)
            for objects in rounds:
                for prompt, obj in zip(prompts, objects):
                    model.write_memory(f"{prompt} {obj}", processor=processor, replace=replace)
            stored = model.memory_texts
            items = model.read_memory_items(prompts, processor)
        figures = {
            "items_stored": len(stored),
            "holds_latest": sum(t in stored and not (e & set(stored)) for t, e in zip(latest, earlier)) / count,
            "reads_latest": sum(i is not None and stored[i] == t for i, t in zip(items, latest)) / count,
        }
        if first:
            figures["other_relations_kept"] = sum(o in stored for o in first) / count
        return figures

    results = {"num_records": count, "with_other_relations": {}}
    for replace in (True, False):
        results["with_other_relations"]["replace" if replace else "append"] = run(others, replace)
    results["reedit"] = run([], True)
    with torch.no_grad():  # what the decoder answers (the costly part: teacher-forced scores of every object)
        log_c, exact = target_scores(model, processor, prompts, third)
        log_a, _ = target_scores(model, processor, prompts, rounds[0])
        log_b, _ = target_scores(model, processor, prompts, rounds[1])
    results["reedit"]["prefers_latest"] = sum(c > a and c > b for c, a, b in zip(log_c, log_a, log_b)) / count
    results["reedit"]["answers_latest_exact"] = sum(exact) / count
    model.reset_memory()
    with torch.no_grad():
        model.write_memory(latest, processor=processor)
        _, alone = target_scores(model, processor, prompts, third)
    results["answers_latest_exact_alone"] = sum(alone) / count
    return results


def main() -> None:
    from examples.larimar.model import NATURAL_RECIPE, real_larimar_dir

    print(json.dumps(measure_reedits(real_larimar_dir(NATURAL_RECIPE)), indent=2))


if __name__ == "__main__":
    main()
