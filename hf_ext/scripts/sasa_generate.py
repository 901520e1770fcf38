"""`hf-ext sasa-generate`: generate with a SASA probe steering each step.

```bash
hf-ext sasa-generate --config processors/sasa_generate.yaml --beta 4
hf-ext sasa-generate --config processors/sasa_generate.yaml --prompt "You are such a"   # replaces prompts_file
```
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from hf_ext._validation import check_range
from hf_ext.scripts.utils import (
    CommandError,
    dataclass_parser,
    load_causal_lm,
    parse_dataclasses,
    read_lines,
    resolve_name_or_path,
    run_command,
)


__all__ = ["HELP", "SASAGenerateConfig", "generate", "main", "make_parser"]

NAME = "sasa-generate"
HELP = "generate with a SASA probe steering each step"


@dataclass
class SASAGenerateConfig:
    """Generate continuations with a [`SASALogitsProcessor`] (`hf-ext sasa-generate`)."""

    probe: str = field(
        default="sasa-probe", metadata={"help": "Folder or Hub repo of the probe (from `hf-ext sasa-fit`)."}
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Causal LM the probe was fitted on, required; 'hf-ext-testing/<name>' fixtures build offline."
        },
    )
    prompts_file: str | None = field(default=None, metadata={"help": "Text file of prompts, one per line."})
    prompt: list[str] = field(
        default_factory=list, metadata={"help": "Prompts given on the command line (they replace prompts_file's)."}
    )
    output_file: str = field(
        default="sasa-generations.jsonl", metadata={"help": "Where to write the continuations (JSON lines)."}
    )
    beta: float = field(default=10.0, metadata={"help": "Strength of the tilt (>= 0; 0 = plain nucleus sampling)."})
    top_p: float = field(default=0.9, metadata={"help": "Nucleus of the candidate set, in (0, 1]."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (> 0), also for the nucleus."})
    max_candidates: int = field(default=50, metadata={"help": "Cap on the candidates per step (>= 1)."})
    normalize: str = field(
        default="softmax", metadata={"help": "Margin normalization (see `SASALogitsProcessor`): 'softmax' or 'none'."}
    )
    do_sample: bool = field(default=True, metadata={"help": "Sample (True) or greedy search (False)."})
    num_beams: int = field(default=1, metadata={"help": "Beam search with this many beams (with do_sample=False)."})
    max_new_tokens: int = field(default=20, metadata={"help": "Tokens to generate per continuation."})
    num_return_sequences: int = field(default=1, metadata={"help": "Continuations per prompt."})
    batch_size: int = field(default=8, metadata={"help": "Prompts per generate call."})
    seed: int = field(default=0, metadata={"help": "Random seed of the sampling."})
    compare: bool = field(default=False, metadata={"help": "Also generate without SASA (same seed) for comparison."})
    trace_plot: str | None = field(default=None, metadata={"help": "PNG of the margin along the first generation."})
    load_in_4bit: bool = field(default=False, metadata={"help": "Load the model in 4-bit (bitsandbytes)."})

    def __post_init__(self):
        if self.model_name_or_path is None:
            raise ValueError("model_name_or_path is required (a Hub id, a folder or a hf-ext-testing/<name> fixture).")
        check_range("beta", self.beta, ge=0)
        check_range("top_p", self.top_p, gt=0, le=1)
        check_range("temperature", self.temperature, gt=0)
        check_range("max_candidates", self.max_candidates, ge=1, integer=True)
        from hf_ext.sasa.sampling import NORMALIZATIONS

        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize={self.normalize!r} is not supported; expected one of {list(NORMALIZATIONS)}.")
        for name in ("num_beams", "max_new_tokens", "num_return_sequences", "batch_size"):
            check_range(name, getattr(self, name), ge=1, integer=True)
        if self.num_beams > 1 and self.do_sample:
            raise ValueError(f"num_beams={self.num_beams} needs do_sample=False (beam search).")
        if self.num_return_sequences > self.num_beams and not self.do_sample:
            raise ValueError(
                f"num_return_sequences={self.num_return_sequences} is out of range without sampling; expected at most "
                f"num_beams={self.num_beams}."
            )
        if self.prompts_file is None and not self.prompt:
            raise ValueError("No prompts: set prompts_file or give --prompt.")


def generate(config) -> int:
    """Generate with and (with `compare`) without SASA; returns the exit status."""
    import json

    import torch
    from transformers import LogitsProcessorList

    from hf_ext.sasa.probe import SASAProbe
    from hf_ext.sasa.processor import SASALogitsProcessor
    from hf_ext.serialization import write_text

    prompts = list(config.prompt) or read_lines(config.prompts_file, "prompts_file")
    probe_path = resolve_name_or_path(config.probe, "probe")
    model, tokenizer = load_causal_lm(config.model_name_or_path, config.load_in_4bit)
    try:
        probe = SASAProbe.from_pretrained(probe_path, model=model)
    except OSError as error:  # not on the Hub
        raise CommandError(f"probe={config.probe!r}: {error}") from None
    except ValueError as error:  # not a probe folder, or fitted on another model
        raise CommandError(str(error)) from None
    try:
        sasa = SASALogitsProcessor(
            model,
            probe,
            beta=config.beta,
            top_p=config.top_p,
            temperature=config.temperature,
            max_candidates=config.max_candidates,
            normalize=config.normalize,
            record_trace=config.trace_plot is not None,
        )
    except ValueError as error:
        raise CommandError(str(error)) from None

    tokenizer.padding_side = "left"
    records = []
    first_output = first_trace = None
    settings = [[sasa]] + ([[]] if config.compare else [])
    for processors in settings:
        for start in range(0, len(prompts), config.batch_size):
            batch_prompts = prompts[start : start + config.batch_size]
            inputs = tokenizer(batch_prompts, return_tensors="pt", padding=True).to(model.device)
            torch.manual_seed(config.seed + start)
            if processors:
                sasa.reset()
            if not config.do_sample:
                sampling = {"do_sample": False}
            elif processors:  # SASA samples from its own nucleus: generate gets no top_p / top_k of its own
                sampling = sasa.sampling_kwargs()
            else:
                sampling = {"do_sample": True, "temperature": config.temperature, "top_p": config.top_p}
            output = model.generate(
                **inputs,
                num_beams=config.num_beams,
                max_new_tokens=config.max_new_tokens,
                num_return_sequences=config.num_return_sequences,
                logits_processor=LogitsProcessorList(processors),
                pad_token_id=tokenizer.pad_token_id,
                **sampling,
            )
            if processors and first_output is None:
                first_output, first_trace = output, sasa.trace
            texts = tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
            for i, text in enumerate(texts):
                records.append(
                    {
                        "prompt": batch_prompts[i // config.num_return_sequences],
                        "continuation": text,
                        "sasa": bool(processors),
                        "beta": config.beta if processors else 0.0,
                    }
                )
    write_text(config.output_file, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    for record in records[: min(len(records), 6)]:
        tag = "SASA" if record["sasa"] else "base"
        print(f"[{tag}] {record['prompt']!r} -> {record['continuation']!r}")
    print(f"{len(records)} continuations written to {config.output_file}")
    if config.trace_plot is not None and first_output is not None:
        first_trace.plot(config.trace_plot, first_output, row=0)
        print(f"margin plot: {config.trace_plot}")
    return 0


def make_parser():
    """The parser of `hf-ext sasa-generate`."""
    return dataclass_parser(NAME, HELP, (SASAGenerateConfig,))


def main(argv: Sequence[str] | None = None) -> int:
    """`hf-ext sasa-generate OPTIONS`; returns the exit status."""
    return run_command(NAME, lambda: generate(*parse_dataclasses(make_parser(), argv)))


if __name__ == "__main__":
    raise SystemExit(main())
