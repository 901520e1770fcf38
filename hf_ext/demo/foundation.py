"""The first stage of `hf-ext demo`: a tiny offline model, loaded in 4-bit and trained with LoRA (QLoRA) on a CPU."""

from __future__ import annotations

from hf_ext.demo.runner import DemoContext, DemoStage, StageResult


def _run(context: DemoContext) -> StageResult:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_ext.plotting import line_plot
    from hf_ext.quantization import load_quantized
    from hf_ext.testing import tiny_model_dir

    path = tiny_model_dir("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    prompt = tokenizer("The capital of France is", return_tensors="pt")
    generated = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    context.log(f"tiny-llama (random weights) continues: {tokenizer.decode(generated[0], skip_special_tokens=True)!r}")

    fp32_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    quantized = load_quantized(path, bits=4, prepare_for_training=True)
    nf4_bytes = quantized.get_memory_footprint()
    lora = get_peft_model(quantized, LoraConfig(r=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    optimizer = torch.optim.AdamW([p for p in lora.parameters() if p.requires_grad], lr=3e-3)
    batch = tokenizer(["The capital of France is Paris."] * 4, return_tensors="pt")
    torch.manual_seed(context.seed)
    losses = []
    lora.train()
    for _ in range(30):
        loss = lora(**batch, labels=batch["input_ids"], use_cache=False).loss  # no cache under checkpointing
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    plot = line_plot(
        context.output_dir / "qlora_loss.png",
        {"QLoRA (NF4 base, LoRA r=8)": losses},
        title="QLoRA on a 4-bit tiny Llama, CPU",
        xlabel="step",
        ylabel="loss",
    )
    return StageResult(
        headline=f"QLoRA loss {losses[0]:.2f} -> {losses[-1]:.2f} on a 4-bit model",
        figures={
            "fp32 weights (KiB)": round(fp32_bytes / 1024, 1),
            "4-bit model footprint (KiB)": round(nf4_bytes / 1024, 1),
            "QLoRA loss, first step": round(losses[0], 4),
            "QLoRA loss, step 30": round(losses[-1], 4),
        },
        plots=[plot],
    )


STAGE = DemoStage(name="foundation", title="Tiny offline models, 4-bit loading and a QLoRA step", run=_run)
