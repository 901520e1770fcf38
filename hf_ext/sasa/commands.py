"""`hf-ext sasa-fit` and `hf-ext sasa-generate`.

```bash
hf-ext sasa-fit --config processors/sasa_fit.yaml                 # fit a probe, save it to output_dir
hf-ext sasa-generate --config processors/sasa_generate.yaml --beta 4  # steer generation with it
```
"""

from __future__ import annotations

from ..cli import CommandError, DataclassCommand


__all__ = ["get_commands"]


def get_commands():
    return [
        DataclassCommand("sasa-fit", "fit a SASA probe on desired / undesired texts", _fit_types, fit),
        DataclassCommand("sasa-generate", "generate with a SASA probe steering each step", _generate_types, generate),
    ]


def _fit_types():
    from .config import SASAFitConfig

    return (SASAFitConfig,)


def _generate_types():
    from .config import SASAGenerateConfig

    return (SASAGenerateConfig,)


def resolve_model(name_or_path: str) -> str:
    """The folder or Hub id to load: the planted task's model, a `hf-ext-testing/<name>` tiny model, or as given."""
    from .config import PLANTED_MODEL_ID

    if name_or_path == PLANTED_MODEL_ID:
        from .planted import PlantedToxicityTask

        return str(PlantedToxicityTask().model_dir())
    from ..testing import resolve_model_name_or_path

    return resolve_model_name_or_path(name_or_path)


def load_model(name_or_path: str, load_in_4bit: bool = False):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(name_or_path)
    if load_in_4bit:
        from ..quantization import load_quantized

        model = load_quantized(path, bits=4)
    else:
        model = AutoModelForCausalLM.from_pretrained(path)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _read_lines(path: str, what: str) -> list[str]:
    from pathlib import Path

    file = Path(path)
    if not file.is_file():
        raise CommandError(f"{what}={path!r} does not exist.")
    lines = [line.strip() for line in file.read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise CommandError(f"{what}={path!r} has no non-empty line.")
    return lines


def _labelled_texts(config) -> tuple[list[str], list[str]]:
    if config.dataset_name is None:
        desired = _read_lines(config.desired_file, "desired_file")
        undesired = _read_lines(config.undesired_file, "undesired_file")
    else:
        from datasets import load_dataset

        dataset = load_dataset(config.dataset_name, config.dataset_config, split=config.dataset_split)
        for column in (config.text_column, config.label_column):
            if column not in dataset.column_names:
                raise CommandError(f"column {column!r} is not in the dataset; it has {dataset.column_names}.")
        desired, undesired = [], []
        for text, label in zip(dataset[config.text_column], dataset[config.label_column]):
            if isinstance(text, str) and text.strip() and label is not None:
                (undesired if float(label) >= config.label_threshold else desired).append(text)
    if config.max_texts is not None:
        desired, undesired = desired[: config.max_texts], undesired[: config.max_texts]
    if not desired or not undesired:
        raise CommandError(f"need texts of both classes; got {len(desired)} desired and {len(undesired)} undesired.")
    return desired, undesired


def _fit_from_judge(config, options: dict):
    from .evaluation import ProfanityCheckJudge
    from .probe import SASAProbe

    texts = _read_lines(config.texts_file, "texts_file") if config.texts_file else None
    prompts = _read_lines(config.prompts_file, "prompts_file") if config.prompts_file else None
    if texts is not None and prompts is not None and len(texts) != len(prompts):
        raise CommandError(
            f"texts_file has {len(texts)} lines and prompts_file {len(prompts)}: with both, line i of texts_file "
            "continues line i of prompts_file."
        )
    judge = ProfanityCheckJudge()  # a missing package fails before the model loads
    model, tokenizer = load_model(config.model_name_or_path, config.load_in_4bit)
    return SASAProbe.fit_from_judge(
        model,
        tokenizer,
        judge,
        texts,
        prompts=prompts,
        num_continuations=config.num_continuations,
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        threshold=config.judge_threshold,
        prefixes=config.prefixes,
        min_prefix_words=config.min_prefix_words,
        seed=config.seed,
        **options,
    )


def _fit_from_labels(config, options: dict):
    from .probe import SASAProbe

    desired, undesired = _labelled_texts(config)  # bad data fails before the model loads
    model, tokenizer = load_model(config.model_name_or_path, config.load_in_4bit)
    return SASAProbe.fit(model, tokenizer, desired, undesired, seed=config.seed, **options)


def fit(config) -> int:
    options = dict(
        layer=config.layer_value,
        balance=config.balance,
        validation_fraction=config.validation_fraction,
        shrinkage=config.shrinkage_value,
        batch_size=config.batch_size,
        max_length=config.max_length,
    )
    try:
        probe = (_fit_from_judge if config.labelled_by_judge else _fit_from_labels)(config, options)
    except ValueError as error:
        raise CommandError(str(error)) from None
    if config.model_name_or_path != probe.model_info.get("model_name_or_path"):
        probe.model_info["model_id"] = config.model_name_or_path
    folder = probe.save_pretrained(config.output_dir, push_to_hub=config.push_to_hub, repo_id=config.hub_model_id)
    info = probe.fit_info
    held_out = (
        f", held-out AUC {info['held_out_auc']:.3f} / balanced accuracy {info['held_out_balanced_accuracy']:.3f}"
        if "held_out_auc" in info
        else ""
    )
    print(
        f"SASA probe: {info['num_desired']} desired / {info['num_undesired']} undesired texts, layer {probe.layer} "
        f"({info['layer_selection']}), shrinkage {info['shrinkage']:.4f}, training accuracy "
        f"{info['train_accuracy']:.3f}{held_out}; saved to {folder}"
    )
    return 0


def generate(config) -> int:
    import json

    import torch
    from transformers import LogitsProcessorList

    from ..serialization import write_text
    from .probe import SASAProbe
    from .processor import SASALogitsProcessor

    prompts = list(config.prompt) + (_read_lines(config.prompts_file, "prompts_file") if config.prompts_file else [])
    model, tokenizer = load_model(config.model_name_or_path, config.load_in_4bit)
    try:
        probe = SASAProbe.from_pretrained(config.probe, model=model)
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
            sampling = {"temperature": config.temperature, "top_p": None if processors else config.top_p}
            output = model.generate(
                **inputs,
                do_sample=config.do_sample,
                num_beams=config.num_beams,
                max_new_tokens=config.max_new_tokens,
                num_return_sequences=config.num_return_sequences,
                logits_processor=LogitsProcessorList(processors),
                pad_token_id=tokenizer.pad_token_id,
                **(sampling if config.do_sample else {}),
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
