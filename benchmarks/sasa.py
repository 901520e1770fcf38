"""SASA benchmark: tokens/s and peak memory of `generate` with `SASALogitsProcessor` against plain `generate` and against
a K-times-duplicated-cache implementation of the same margins (the approach of IBM/AISteer360's reference, which
copies its prefix cache once per candidate and runs the full LM on the copies).

Every configuration runs in its own subprocess (same model, same prompt, one thread), so its peak memory is that
process's high-water mark (`VmHWM`) minus its resident memory just before generating. Decoding is greedy with
exactly `--new-tokens` new tokens, and `top_p=1`, `max_candidates=K`, so every step scores exactly K candidates.

    python benchmarks/sasa.py            # writes benchmarks/results/sasa.md
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "sasa.md"
MODEL_SIZE = dict(hidden_size=256, num_layers=4, num_heads=8, num_kv_heads=4, intermediate_size=512)

CONFIGS = [
    # name, method, K, batch
    ("plain generate", "plain", 0, 1),
    ("SASA, tree forward on generate's cache", "sasa", 10, 1),
    ("SASA, tree forward on generate's cache", "sasa", 50, 1),
    ("SASA, tree forward on its own cache", "sasa-own", 10, 1),
    ("SASA, tree forward on its own cache", "sasa-own", 50, 1),
    ("K-times duplicated cache (reference approach)", "duplicated", 10, 1),
    ("K-times duplicated cache (reference approach)", "duplicated", 50, 1),
    ("K-times duplicated cache, decoder body only", "duplicated-body", 50, 1),
    ("plain generate", "plain", 0, 4),
    ("SASA, tree forward on generate's cache", "sasa", 50, 4),
]


def _memory_kib() -> tuple[int, int]:
    """(current resident set, high-water mark) of this process, in KiB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def _duplicated_cache_processor_class(body_only: bool = False):
    import torch

    from hf_ext._compat import cache_kwargs
    from hf_ext.sasa import SASALogitsProcessor

    class DuplicatedCacheSASA(SASALogitsProcessor):
        """The same margins, computed as the reference does: an own prefix cache extended at each step, copied K
        times (once per candidate), and one full-LM forward of the K candidates on the copies (or, with
        `body_only`, of the decoder body, to isolate the cost of the copies from the LM head's)."""

        @torch.no_grad()
        def _candidate_hidden_states(self, input_ids, candidate_ids):
            cache, mask, positions = self.own_cache.sync(input_ids, self._padding_mask(input_ids))
            rows, num = candidate_ids.shape
            repeated = copy.deepcopy(cache)
            repeated.batch_repeat_interleave(num)
            out = (self.body if body_only else self.lm)(
                input_ids=candidate_ids.reshape(-1, 1),
                attention_mask=torch.cat(
                    [mask.repeat_interleave(num, 0), torch.ones(rows * num, 1, dtype=mask.dtype)], 1
                ),
                position_ids=positions.repeat_interleave(num)[:, None],
                **cache_kwargs(repeated),
                use_cache=True,
                output_hidden_states=True,
                return_dict=True,
            )
            self.cache_usage["own"] += 1
            return out.hidden_states[self.probe.layer][:, -1].view(rows, num, -1), "own"

    return DuplicatedCacheSASA


def worker(method: str, num_candidates: int, batch: int, prompt_length: int, new_tokens: int, repeats: int) -> dict:
    import torch

    from hf_ext.sasa import SASALogitsProcessor, SASAProbe
    from hf_ext.sasa.fingerprint import model_fingerprint
    from hf_ext.testing import build_tiny_causal_lm

    torch.set_num_threads(1)
    model = build_tiny_causal_lm("llama", seed=0, **MODEL_SIZE)
    generator = torch.Generator().manual_seed(0)
    hidden = MODEL_SIZE["hidden_size"]
    probe = SASAProbe(
        torch.randn(hidden, generator=generator),
        torch.randn(hidden, generator=generator) * 0.1,
        model_info={
            "model_type": "llama",
            "hidden_size": hidden,
            "num_hidden_layers": MODEL_SIZE["num_layers"],
            "fingerprint": model_fingerprint(model, -1),  # a probe for this model (random, for timing only)
        },
    )
    input_ids = torch.randint(10, model.config.vocab_size, (batch, prompt_length), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    if batch > 1:  # left padding of different lengths
        for row in range(1, batch):
            attention_mask[row, : 16 * row] = 0
            input_ids[row, : 16 * row] = model.config.pad_token_id

    def make_processor():
        kwargs = dict(beta=10.0, top_p=1.0, max_candidates=num_candidates)
        if method == "sasa":
            return [SASALogitsProcessor(model, probe, **kwargs)]
        if method == "sasa-own":
            return [SASALogitsProcessor(model, probe, use_generate_cache=False, **kwargs)]
        if method.startswith("duplicated"):
            cls = _duplicated_cache_processor_class(body_only=method == "duplicated-body")
            return [cls(model, probe, use_generate_cache=False, **kwargs)]
        return []

    def run(tokens):
        processors = make_processor()
        out = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            do_sample=False,
            max_new_tokens=tokens,
            min_new_tokens=tokens,
            logits_processor=processors,
            pad_token_id=model.config.pad_token_id,
        )
        return out, processors

    with torch.no_grad():
        run(4)  # warm-up
        rss_before, _ = _memory_kib()
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            out, processors = run(new_tokens)
            seconds.append(time.perf_counter() - start)
        _, peak = _memory_kib()
    usage = processors[0].cache_usage if processors else {}
    return {
        "tokens_per_second": batch * new_tokens / statistics.median(seconds),
        "seconds": statistics.median(seconds),
        "peak_extra_mib": max(0, peak - rss_before) / 1024,
        "sequences": out[:, prompt_length:].tolist(),
        "cache_usage": usage,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompt-length", type=int, default=512)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--worker", nargs=3, metavar=("METHOD", "K", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        method, k, batch = args.worker[0], int(args.worker[1]), int(args.worker[2])
        print(json.dumps(worker(method, k, batch, args.prompt_length, args.new_tokens, args.repeats)))
        return

    results = []
    for name, method, k, batch in CONFIGS:
        command = [
            sys.executable,
            __file__,
            "--worker",
            method,
            str(k),
            str(batch),
            "--prompt-length",
            str(args.prompt_length),
            "--new-tokens",
            str(args.new_tokens),
            "--repeats",
            str(args.repeats),
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        results.append({"name": name, "method": method, "k": k, "batch": batch, **result})
        print(f"{name:48s} K={k:<3d} batch={batch}  {result['tokens_per_second']:8.1f} tok/s  "
              f"+{result['peak_extra_mib']:7.1f} MiB", flush=True)  # fmt: skip
    write_report(results, args)


def write_report(results: list[dict], args) -> None:
    import torch
    import transformers

    def find(method, k, batch=1):
        return next(r for r in results if r["method"] == method and r["k"] == k and r["batch"] == batch)

    plain = find("plain", 0)
    lines = [
        "# SASA benchmark",
        "",
        f"`python benchmarks/sasa.py` — tiny Llama ({MODEL_SIZE['hidden_size']} hidden, {MODEL_SIZE['num_layers']} layers, "
        f"{MODEL_SIZE['num_kv_heads']} KV heads), prompt of {args.prompt_length} tokens, {args.new_tokens} new tokens "
        f"(greedy, exactly K candidates per step), median of {args.repeats} runs, one CPU thread, each configuration "
        "in its own process. Peak memory: the process's high-water mark minus its resident memory just before "
        "generating.",
        "",
        f"Machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
        f"torch {torch.__version__}, transformers {transformers.__version__}.",
        "",
        "| implementation | K | batch | tokens/s | vs plain | peak extra memory (MiB) |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        base = find("plain", 0, r["batch"])
        lines.append(
            f"| {r['name']} | {r['k'] or '-'} | {r['batch']} | {r['tokens_per_second']:.1f} "
            f"| {r['tokens_per_second'] / base['tokens_per_second']:.2f}x | {r['peak_extra_mib']:.1f} |"
        )
    lines += ["", "Ratios measured in this run:", ""]
    for k in (10, 50):
        fast, own, dup = find("sasa", k), find("sasa-own", k), find("duplicated", k)
        same = fast["sequences"] == dup["sequences"]
        body = [r for r in results if r["method"] == "duplicated-body" and r["k"] == k]
        versus_body = (
            f"; {fast['tokens_per_second'] / body[0]['tokens_per_second']:.2f}x against the duplicated cache on the "
            "decoder body only"
            if body
            else ""
        )
        lines.append(
            f"- K = {k}: tree forward on generate's cache is **{fast['tokens_per_second'] / dup['tokens_per_second']:.2f}x** "
            f"as fast as the duplicated cache ({own['tokens_per_second'] / dup['tokens_per_second']:.2f}x on its own "
            f"cache{versus_body}), with {fast['peak_extra_mib']:.1f} MiB of peak extra memory against {dup['peak_extra_mib']:.1f} MiB "
            f"(plain generate: {plain['peak_extra_mib']:.1f} MiB); same generated tokens as the duplicated cache: "
            f"{'yes' if same else 'no'}."
        )
    f10, f50 = find("sasa", 10), find("sasa", 50)
    d10, d50 = find("duplicated", 10), find("duplicated", 50)
    lines += [
        f"- Memory from K = 10 to K = 50: tree forward {f10['peak_extra_mib']:.1f} -> {f50['peak_extra_mib']:.1f} MiB; "
        f"duplicated cache {d10['peak_extra_mib']:.1f} -> {d50['peak_extra_mib']:.1f} MiB.",
        f"- Cache path used by the tree forward: {f50['cache_usage']} (one call per new token).",
        "",
        "Goals (issue 5): at K = 50, >= 2x the duplicated cache's tokens/s; memory flat in K.",
        "",
    ]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
