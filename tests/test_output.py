"""What the commands print: only what a user can act on (issue 18, item 6). Each command runs as a user runs it, in a
fresh process, and its whole output is checked: no notice of bitsandbytes' kernel fetch, no "Loading weights" bar for
a tiny model, no Python warning (none is allowed: every warning the commands below used to show was the stack's own
calls among themselves, or bitsandbytes' notice, see `hf_ext.logging_utils`).

A user without network runs with `HF_HUB_OFFLINE=1`; one with network but no route to the Hub runs without it: the
commands are checked both ways (issue 30, item 4), the second with the Hub's address on a closed local port, so that
nothing is ever downloaded. bitsandbytes fetches a kernel at import only on a CPU with AVX512-BF16: the tests below
also run with the CPU answering bitsandbytes that it has one (`SIMULATED_AVX512_BF16`), whatever this machine is."""

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hf_ext.logging_utils import (
    BITSANDBYTES_KERNEL_NOTICE,
    KERNELS_OFFLINE_TRUST_NOTICE,
    silence_bitsandbytes_kernel_notice,
)


ROOT = Path(__file__).resolve().parents[1]

WARNING_LINE = re.compile(r"\b\w*Warning\b|^\[transformers\]|^WARNING\b", re.MULTILINE)
"""A Python warning (`path:line: FutureWarning: ...`), or a warning logged by transformers or another library."""


HUB = {
    # how users without network run (and the default of these tests)
    "offline": {"HF_HUB_OFFLINE": "1"},
    # online, the Hub unreachable: a closed port on this machine answers at once, and nothing is downloaded
    "unreachable": {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"},
}
"""The Hub settings of the fresh processes, by name."""

SIMULATED_AVX512_BF16 = """\
# Written by tests/test_output.py: bitsandbytes' native library answers that the CPU has AVX512-BF16 (only that
# question, recorded in the file the test names); bitsandbytes then fetches its CPU kernel through `kernels` at import.
import ctypes
import os

_symbol = ctypes.CDLL.__getattr__


def _has_avx512_bf16(library, name):
    if name != "has_avx512bf16_cpu":
        return _symbol(library, name)
    open(os.environ["HF_EXT_TEST_AVX512_BF16_ASKED"], "w").close()
    return lambda: True


ctypes.CDLL.__getattr__ = _has_avx512_bf16
"""
"""A `sitecustomize` module for the fresh process. Only for commands that run no 4-bit kernel: on a CPU without
AVX512-BF16, bitsandbytes' own fallback kernel would then execute instructions the CPU lacks."""


def run_python(*args: str, cwd: Path, hub: str = "offline", avx512_bf16: bool = False) -> subprocess.CompletedProcess:
    """`python ARGS` in a fresh process, with the Hub settings `HUB[hub]` and none of this process's output settings;
    `avx512_bf16`: bitsandbytes is told the CPU has AVX512-BF16 (see `SIMULATED_AVX512_BF16`)."""
    env = {key: value for key, value in os.environ.items() if key not in ("TQDM_DELAY", "PYTHONWARNINGS")}
    env.pop("HF_ENDPOINT", None)
    paths = [str(ROOT), env.get("PYTHONPATH")]
    if avx512_bf16:
        shim = cwd / ".simulated-avx512-bf16"
        shim.mkdir()
        (shim / "sitecustomize.py").write_text(SIMULATED_AVX512_BF16)
        paths.insert(0, str(shim))
        env["HF_EXT_TEST_AVX512_BF16_ASKED"] = str(shim / "asked")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
    env.update(HUB[hub])
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def run_hf_ext(*args: str, cwd: Path, **settings) -> subprocess.CompletedProcess:
    """`hf-ext ARGS` (`python -m hf_ext` is the console script's entry point); `settings` as [`run_python`]."""
    return run_python("-m", "hf_ext", *args, cwd=cwd, **settings)


def assert_clean(result: subprocess.CompletedProcess) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert BITSANDBYTES_KERNEL_NOTICE not in output and "gemm_4bit_forward" not in output
    assert "publisher trust check" not in output  # `kernels`, offline, about bitsandbytes' kernel
    assert "Loading weights" not in output  # transformers' bar for a tiny model: milliseconds of work
    assert not WARNING_LINE.findall(output), output
    return output


@pytest.mark.slow
@pytest.mark.parametrize("hub", sorted(HUB))
@pytest.mark.parametrize(
    ("args", "expected"),
    [(["env"], "- bitsandbytes backend: "), (["--help"], "sasa-generate")],
    ids=["env", "help"],
)
def test_informational_commands_print_only_their_answer(args, expected, hub, tmp_path):
    output = assert_clean(run_hf_ext(*args, cwd=tmp_path, hub=hub))
    assert expected in output


@pytest.mark.slow
@pytest.mark.parametrize("hub", sorted(HUB))
def test_bitsandbytes_kernel_fetch_on_an_avx512_bf16_cpu_prints_nothing(hub, tmp_path):
    """`hf-ext env` imports bitsandbytes, which on such a CPU asks `kernels` for its CPU kernel and cannot have it:
    `kernels` missing (No module named 'kernels'), the Hub unreachable (the publisher's trust unverifiable), or
    offline and not in the cache (and, with `kernels` >= 0.19, the trust check skipped): all of it silent."""
    output = assert_clean(run_hf_ext("env", cwd=tmp_path, hub=hub, avx512_bf16=True))
    assert (tmp_path / ".simulated-avx512-bf16" / "asked").exists()  # bitsandbytes did ask: the fetch was tried
    assert "- bitsandbytes backend: " in output


@pytest.fixture(scope="module")
def planted_probe_dir(tmp_path_factory):
    from hf_ext.sasa import SASAProbe
    from hf_ext.testing.sasa import PlantedToxicityTask

    task = PlantedToxicityTask()
    model, tokenizer = task.load()
    probe = SASAProbe.fit(model, tokenizer, *task.probe_texts(100), layer=-1, show_progress=False)
    folder = tmp_path_factory.mktemp("output") / "probe"
    probe.save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_sasa_generate_prints_its_continuations_only_and_prompt_replaces_the_prompts_file(planted_probe_dir, tmp_path):
    (tmp_path / "processors").symlink_to(ROOT / "processors")  # the recipe names its files relative to the repository
    args = ["--config", "processors/sasa_generate.yaml", "--probe", str(planted_probe_dir), "--compare", "false"]
    output = assert_clean(run_hf_ext("sasa-generate", *args, "--prompt", "n01 t0", "n02", cwd=tmp_path))
    records = [json.loads(line) for line in (tmp_path / "sasa-generations.jsonl").read_text().splitlines()]
    # the two prompts given, twice each (num_return_sequences: 2), and none of the recipe's prompts file
    assert [r["prompt"] for r in records] == ["n01 t0", "n01 t0", "n02", "n02"]
    assert "4 continuations written" in output


@pytest.mark.slow
def test_demo_stage_with_4bit_loading_and_peft_prints_no_noise(tmp_path):
    # 4-bit loading imports bitsandbytes' CPU backend; peft reads a deprecated transformers property; the QLoRA step
    # trains under gradient checkpointing
    output = assert_clean(run_hf_ext("demo", "--stages", "foundation", "--output-dir", "tour", cwd=tmp_path))
    assert re.search(r"foundation\s+ok", output)


def test_only_the_kernel_notice_is_dropped_from_bitsandbytes_logger(caplog):
    """`import hf_ext` drops that one record; other records of the same logger still reach the user."""
    import hf_ext  # noqa: F401  (installs the filter)

    silence_bitsandbytes_kernel_notice()  # idempotent: still one filter
    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    assert len(logger.filters) == 1
    with caplog.at_level(logging.WARNING, logger=logger.name):
        logger.warning("%s: %s. Please make sure ...", BITSANDBYTES_KERNEL_NOTICE, "No module named 'kernels'")
        logger.warning("Something else went wrong: %s", "kept")
    assert [record.getMessage() for record in caplog.records] == ["Something else went wrong: kept"]


def test_only_the_trust_notice_about_bitsandbytes_kernel_is_dropped_from_kernels_logger(caplog):
    """The trust check `kernels` skips offline for bitsandbytes' kernel is dropped; for any other repository (a kernel
    the user loads) the same notice, and every other record of that logger, still reach the user."""
    import hf_ext  # noqa: F401  (installs the filter)

    silence_bitsandbytes_kernel_notice()
    logger = logging.getLogger("kernels._internals.hf_hub")  # the logger of `kernels`' trust check (kernels 0.19)
    assert len(logger.filters) == 1
    with caplog.at_level(logging.WARNING, logger=logger.name):
        logger.warning(f"{KERNELS_OFFLINE_TRUST_NOTICE} because Hugging Face Hub is in offline mode.")
        for repo in ("my-org/my-kernel", "kernels-community/quantization-bitsandbytes-next"):
            logger.warning(f"Skipping publisher trust check for '{repo}' because Hugging Face Hub is in offline mode.")
    assert [record.getMessage().split("'")[1] for record in caplog.records] == [
        "my-org/my-kernel",
        "kernels-community/quantization-bitsandbytes-next",
    ]


@pytest.mark.slow
def test_library_use_offline_on_an_avx512_bf16_cpu_drops_only_the_kernel_fetch_notices(tmp_path):
    """In a user's own code, offline, `import hf_ext` then bitsandbytes: its kernel fetch prints nothing, and a
    notice of `kernels` about another repository still shows."""
    code = (
        "import logging\n"
        "import hf_ext, bitsandbytes\n"
        "logging.getLogger('kernels._internals.hf_hub').warning(\n"
        "    \"Skipping publisher trust check for 'my-org/my-kernel' because Hugging Face Hub is in offline mode.\"\n"
        ")\n"
    )
    result = run_python("-c", code, cwd=tmp_path, avx512_bf16=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / ".simulated-avx512-bf16" / "asked").exists()
    assert "gemm_4bit_forward" not in result.stderr and KERNELS_OFFLINE_TRUST_NOTICE not in result.stderr
    assert result.stderr.strip() == (
        "Skipping publisher trust check for 'my-org/my-kernel' because Hugging Face Hub is in offline mode."
    )


@pytest.mark.slow
def test_library_use_drops_the_kernel_notice_but_keeps_the_users_progress_bars(tmp_path):
    """In a user's own code, `import hf_ext` (4-bit loading included) drops bitsandbytes' notice and changes nothing
    else: transformers' progress bars stay as the user set them (on by default)."""
    code = (
        "from hf_ext.quantization import load_quantized\n"
        "from hf_ext.testing import tiny_model_dir\n"
        "load_quantized(tiny_model_dir('tiny-llama'), bits=4)\n"
    )
    result = run_python("-c", code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "gemm_4bit_forward" not in result.stderr
    assert "Loading weights" in result.stderr  # not switched off by importing the library


@pytest.mark.slow
def test_seal_filter_on_a_small_dataset_prints_no_progress_bar(tmp_path):
    import torch

    from hf_ext.seal import SEALScores
    from hf_ext.seal.data import content_hash

    rows = [{"text": f"example number {i}"} for i in range(8)]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    hashes = [content_hash(row, ("text",)) for row in rows]
    SEALScores(hashes, torch.arange(8, dtype=torch.float32), hash_fields=("text",)).save_pretrained(tmp_path / "s")
    args = ["--scores", "s", "--dataset_name", "data.jsonl", "--keep_ratio", "0.5", "--output_dir", "kept"]
    output = assert_clean(run_hf_ext("seal-filter", *args, cwd=tmp_path))
    assert "Saving the dataset" not in output and "%|" not in output  # datasets' save_to_disk bar
    assert "kept" in output
