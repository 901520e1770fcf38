"""AOT: QLoRA on SmolLM2 against DPO: the protocol is in `examples/aot/README.md`."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from hf_ext._compat import activation_checkpointing_arg
from hf_ext.demo import DemoContext, DemoStage, StageResult


__all__ = ["REAL_SIZES", "RealAOTConfig", "run_real"]

BASE, AOT, DPO = "base", "AOT", "DPO"


@dataclass(frozen=True)
class RealAOTConfig:
    """Settings of the real-model AOT stage ([`run_real`])."""

    train_facts: int = 128
    held_out_facts: int = 60
    steps: int = 16
    batch_size: int = 16
    learning_rate: float = 5e-4
    beta: float = 0.1
    lora_r: int = 16
    lora_alpha: int = 32
    max_new_tokens: int = 8
    bootstrap: int = 1000

    def __post_init__(self):
        from hf_ext.testing.aot import facts

        pool = len(facts())
        for name in ("train_facts", "held_out_facts", "steps", "batch_size", "lora_r", "lora_alpha", "max_new_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} is out of range; expected an integer >= 1.")
        if self.held_out_facts + self.train_facts > pool:
            raise ValueError(
                f"train_facts={self.train_facts} + held_out_facts={self.held_out_facts} is out of range; expected at "
                f"most {pool} facts in all."
            )
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate={self.learning_rate!r} is out of range; expected a float > 0.")
        if not self.beta > 0:
            raise ValueError(f"beta={self.beta!r} is out of range; expected a float > 0.")
        if not isinstance(self.bootstrap, int) or self.bootstrap < 10:
            raise ValueError(f"bootstrap={self.bootstrap!r} is out of range; expected an integer >= 10.")


REAL_SIZES: dict[str, RealAOTConfig] = {
    # `make demo-real`: a few minutes of CPU time on two quiet cores
    "default": RealAOTConfig(),
    # the `real` test: a minute or two
    "short": RealAOTConfig(train_facts=64, held_out_facts=40, steps=8, batch_size=8, bootstrap=200),
}


def _evaluate(model, tokenizer, fact_list, dataset, config: RealAOTConfig) -> dict:
    """Exact match of the greedy answers and the log-likelihoods of the held-out pairs."""
    import numpy as np

    from hf_ext.aot.evaluation import preference_scores
    from hf_ext.generation import greedy_answers
    from hf_ext.testing.aot import exact_match

    answers = greedy_answers(model, tokenizer, [f.prompt for f in fact_list], max_new_tokens=config.max_new_tokens)
    chosen, rejected = preference_scores(model, tokenizer, dataset)
    return {
        "answers": answers,
        "exact": np.array([exact_match(a, f.answer) for a, f in zip(answers, fact_list)], dtype=np.float64),
        "chosen": chosen.double().numpy(),
        "rejected": rejected.double().numpy(),
    }


def _train(method: str, path, tokenizer, dataset, config: RealAOTConfig, output_dir, seed: int):
    """QLoRA training of a fresh 4-bit base with `method` (AOT or DPO); returns the trained PEFT model."""
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    from hf_ext.aot.config import AOTConfig
    from hf_ext.aot.trainer import AOTTrainer
    from hf_ext.quantization import load_quantized

    model = load_quantized(path, bits=4, prepare_for_training=True, gradient_checkpointing=False)
    common = dict(
        {activation_checkpointing_arg(): False},
        output_dir=str(output_dir),
        per_device_train_batch_size=config.batch_size,
        max_steps=config.steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type="constant",
        beta=config.beta,
        precompute_ref_log_probs=True,
        logging_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=model.device.type == "cpu",
        seed=seed,
    )
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        task_type="CAUSAL_LM",
    )
    if method == AOT:
        trainer = AOTTrainer(
            model, args=AOTConfig(**common), train_dataset=dataset, processing_class=tokenizer, peft_config=lora
        )
    else:
        trainer = DPOTrainer(
            model,
            args=DPOConfig(loss_type=["sigmoid"], **common),
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=lora,
        )
    trainer.train()
    return trainer.model


def _report(evaluation: dict, reference: dict | None, beta: float) -> dict[str, float]:
    import numpy as np
    import torch

    from hf_ext.aot.losses import dominance_diagnostics

    chosen, rejected = evaluation["chosen"], evaluation["rejected"]
    report = {
        "exact_match": float(evaluation["exact"].mean()),
        "pairwise_violation": float((chosen <= rejected).mean()),
        "distributional_violation": dominance_diagnostics(torch.from_numpy(chosen), torch.from_numpy(rejected))[
            "violation_fraction"
        ],
        "median_margin": float(np.median(chosen - rejected)),
    }
    if reference is not None:
        implicit = beta * ((chosen - reference["chosen"]) - (rejected - reference["rejected"]))
        report["implicit_reward_violation"] = float((implicit <= 0).mean())
    return report


def run_real(context: DemoContext, size: str = "default") -> StageResult:
    """Run the real-model AOT stage at `size` (a key of [`REAL_SIZES`]) and return its figures."""
    import gc

    import numpy as np
    import torch
    from transformers import AutoTokenizer

    from hf_ext.aot.plots import plot_reward_quantiles
    from hf_ext.generation import greedy_answers
    from hf_ext.real_models import real_causal_lm_dir
    from hf_ext.risk import relative_dominance
    from hf_ext.serialization import save_json
    from hf_ext.testing.aot import fact_preference_dataset, rejected_answers, split_facts

    if size not in REAL_SIZES:
        raise ValueError(f"size={size!r} is not supported; expected one of {list(REAL_SIZES)}.")
    config = REAL_SIZES[size]
    start = time.process_time()
    path = real_causal_lm_dir()
    tokenizer = AutoTokenizer.from_pretrained(path)
    train_facts, held_out_facts = split_facts(config.held_out_facts, seed=context.seed)
    train_facts = train_facts[: config.train_facts]

    # The base model's own answers, verified: its wrong answers become the rejected completions.
    from hf_ext.quantization import keep_4bit_trainable, load_quantized

    torch.manual_seed(context.seed)
    base = load_quantized(path, bits=4)
    keep_4bit_trainable(base)  # the same exact 4-bit weights as the trained models (no bfloat16 repacking)
    all_facts = train_facts + held_out_facts
    base_answers = greedy_answers(base, tokenizer, [f.prompt for f in all_facts], max_new_tokens=config.max_new_tokens)
    rejected = rejected_answers(all_facts, base_answers)
    train_set = fact_preference_dataset(train_facts, rejected[: len(train_facts)])
    held_out_set = fact_preference_dataset(held_out_facts, rejected[len(train_facts) :])
    on_policy = sum(r != f.rejected for r, f in zip(rejected, all_facts)) / len(all_facts)
    context.log(
        f"{len(train_facts)} training and {len(held_out_facts)} held-out facts; {on_policy:.0%} of the rejected "
        "answers are the base model's own wrong answers"
    )
    evaluations = {BASE: _evaluate(base, tokenizer, held_out_facts, held_out_set, config)}
    del base
    gc.collect()

    for method in (AOT, DPO):
        model = _train(method, path, tokenizer, train_set, config, context.output_dir / method.lower(), context.seed)
        evaluations[method] = _evaluate(model, tokenizer, held_out_facts, held_out_set, config)
        del model
        gc.collect()

    reports = {
        name: _report(evaluation, None if name == BASE else evaluations[BASE], config.beta)
        for name, evaluation in evaluations.items()
    }
    for name, report in reports.items():
        context.log(
            f"{name:>4}: exact match {report['exact_match']:.1%}, pairwise violation "
            f"{report['pairwise_violation']:.1%}, distributional violation {report['distributional_violation']:.1%}"
            + (
                f", implicit-reward violation {report['implicit_reward_violation']:.1%}"
                if "implicit_reward_violation" in report
                else ""
            )
        )
    margins = {name: evaluations[name]["chosen"] - evaluations[name]["rejected"] for name in (AOT, DPO)}
    risk = relative_dominance(margins, order=1, paired=True, n_bootstrap=config.bootstrap, seed=context.seed)
    context.log(f"risk (first-order dominance of the held-out margins): {risk.summary()}")
    cpu_seconds = time.process_time() - start

    save_json(
        context.output_dir / "held_out.json",
        {
            "config": asdict(config),
            "facts": [
                asdict(f) | {"prompt": f.prompt, "chosen": f.chosen, "rejected": r}
                for f, r in zip(held_out_facts, held_out_set["rejected"])
            ],
            "reports": reports,
            "evaluations": {
                name: {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in e.items()}
                for name, e in evaluations.items()
            },
            "risk": risk.to_dict(),
        },
    )
    plots = [
        plot_reward_quantiles(
            context.output_dir / f"held_out_quantiles_{method.lower()}.png",
            torch.from_numpy(evaluations[method]["chosen"]),
            torch.from_numpy(evaluations[method]["rejected"]),
            before=(torch.from_numpy(evaluations[BASE]["chosen"]), torch.from_numpy(evaluations[BASE]["rejected"])),
            labels=("chosen: log π(y⁺|x)", "rejected: log π(y⁻|x)"),
            title=f"SmolLM2-135M, QLoRA {method}, {config.steps} steps: held-out log-likelihood quantiles",
        )
        for method in (AOT, DPO)
    ]
    b, a, d = reports[BASE], reports[AOT], reports[DPO]
    figures = {}
    for key, label in (
        ("exact_match", "held-out exact match"),
        ("pairwise_violation", "pairwise violation"),
        ("distributional_violation", "distributional violation"),
        ("median_margin", "median margin"),
    ):
        for name in (BASE, AOT, DPO):
            figures[f"{label}, {name}"] = round(reports[name][key], 4)
    for name in (AOT, DPO):
        figures[f"implicit-reward violation, {name}"] = round(reports[name]["implicit_reward_violation"], 4)
    figures["risk: first-order dominance of the held-out margins"] = risk.summary()
    figures["CPU seconds (user+sys, this process)"] = round(cpu_seconds, 1)
    return StageResult(
        headline=(
            f"held-out exact match {b['exact_match']:.0%} -> AOT {a['exact_match']:.0%} / DPO {d['exact_match']:.0%}; "
            f"pairwise violation {b['pairwise_violation']:.0%} -> {a['pairwise_violation']:.0%} / "
            f"{d['pairwise_violation']:.0%}"
        ),
        figures=figures,
        plots=plots,
        details=(
            f"SmolLM2-135M-Instruct in 4-bit NF4 with LoRA (r={config.lora_r}, attention projections), aligned on "
            f"{len(train_facts)} verifiable fact pairs for {config.steps} steps of {config.batch_size} pairs with AOT "
            f"(paired, logistic) and with DPO (sigmoid): same pairs, steps, learning rate ({config.learning_rate}), "
            f"beta ({config.beta}), LoRA and seed. The chosen answer is the known one; the rejected one is the base "
            "model's own greedy answer where the verifier finds it wrong, else a plausible wrong answer. Judged on "
            f"{len(held_out_facts)} held-out facts (no subject in common): exact match of the greedy answer; the "
            "pairwise violation (held-out pairs with log π(y⁺|x) <= log π(y⁻|x)); the distributional violation (the "
            "fraction of quantile levels where the chosen log-likelihoods fall below the rejected ones); the "
            "implicit-reward violation (pairs where β log π/π_ref of the chosen answer is not above the rejected "
            "one's). Answers, log-likelihoods and the risk result are in `held_out.json`.\n\nThe held-out margins "
            "log π(y⁺|x) - log π(y⁻|x) of the AOT and DPO models, compared by their whole distribution "
            "(`hf_ext.risk`):\n\n" + risk.to_markdown()
        ),
        samples={
            name: [float(v) for v in evaluations[name]["chosen"] - evaluations[name]["rejected"]]
            for name in (BASE, AOT, DPO)
        },
        samples_description="held-out margin log π(y⁺|x) - log π(y⁻|x), nats",
    )


STAGE = DemoStage(name="aot", title="AOT: QLoRA on SmolLM2 against DPO (real offline models)", run=run_real)
