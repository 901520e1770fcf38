"""Issue 29: the writing commands and the `save_pretrained`s of hf-ext, killed mid-write (SIGKILL, in a subprocess)
and run twice at once.

Each command replaces an earlier result; killed at a point of its write (`HF_EXT_FAULT_POINT`, see
`hf_ext.transactions.fault_point`) or by a signal once its checkpoint appears, the folder must hold the earlier
result whole, and the next run must finish and leave nothing beside it. A second run into a folder being written
fails at once, naming the first one's pid.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hf_ext.seal.data import content_hash
from hf_ext.seal.filtering import SEALScores


ROOT = Path(__file__).resolve().parents[2]


def _hf_ext(argv, point=None, **popen):
    env = {**os.environ, "HF_EXT_FAULT_POINT": point or "", "HF_EXT_FAULT_PAUSE": "60"}
    return subprocess.Popen([sys.executable, "-m", "hf_ext", *argv], env=env, cwd=ROOT, text=True, **popen)


def _files(folder):
    """Every file under `folder` with its bytes (checkpoints and the model included)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _beside(folder):
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))


def _seal_filter(tmp_path, out):
    rows = [{"text": f"example number {i}"} for i in range(8)]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    hashes = [content_hash(row, ("text",)) for row in rows]
    SEALScores(hashes, torch.arange(8, dtype=torch.float32), hash_fields=("text",)).save_pretrained(tmp_path / "s")
    return ["seal-filter", "--scores", str(tmp_path / "s"), "--dataset_name", str(data), "--keep_ratio", "0.5",
            "--output_dir", str(out), "--overwrite_output_dir", "true"]  # fmt: skip


def _risk(tmp_path, out):
    table = tmp_path / "scores.jsonl"
    rows = [{"model": m, "r": float(r + (m == "a"))} for m in "ab" for r in range(6)]
    table.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return ["risk", str(table), "--metrics", "r", "--output-dir", str(out)]


def _sasa_fit(tmp_path, out):
    return ["sasa-fit", "--config", "processors/sasa_fit.yaml", "--output_dir", str(out), "--overwrite_output_dir",
            "true"]  # fmt: skip


def _merge(tmp_path, out):
    config = tmp_path / "merge.yaml"
    config.write_text(
        "merge_method: mergealign\nbase_model: hf-ext-testing/mergealign-base\nmodels:\n"
        "  - model: hf-ext-testing/mergealign-domain\n    parameters: {role: domain}\n"
        "  - model: hf-ext-testing/mergealign-aligned\n    parameters: {role: alignment}\n"
        "parameters: {alpha: 0.5}\n"
    )
    return ["merge", str(config), str(out), "--overwrite"]


COMMANDS = {"seal-filter": _seal_filter, "risk": _risk, "sasa-fit": _sasa_fit, "merge": _merge}


# Killed before the swap, every command; right after it (the new result in place, the old one left beside it to
# clean up), the quickest: the mechanism is the same for all (`hf_ext.transactions.replace_directory`).
# (merge writes with `atomic_directory` as seal-filter and sasa-fit do, so it is not killed again here; two merges
# at once are tested below.)
KILLS = [(name, "staged") for name in sorted(COMMANDS) if name != "merge"] + [("risk", "committed")]


@pytest.mark.parametrize(("name", "point"), KILLS)
def test_a_command_killed_mid_write_leaves_a_whole_result(tmp_path, name, point):
    out = tmp_path / "out"
    argv = COMMANDS[name](tmp_path, out)
    assert _hf_ext(argv).wait(timeout=300) == 0
    earlier = _files(out)
    assert _hf_ext(argv, point).wait(timeout=300) == -signal.SIGKILL
    found = _files(out)
    if point == "staged":  # killed with the new result written beside the folder: the earlier one, every byte
        assert found == earlier
    else:  # killed right after the swap: the new result, whole
        assert found.keys() == earlier.keys()
    assert _beside(out)  # the killed run's staging folder (or the earlier result it swapped out)
    assert _hf_ext(argv).wait(timeout=300) == 0  # the next run removes it
    assert _files(out).keys() == earlier.keys() and _beside(out) == []


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_two_runs_into_one_folder_the_second_fails_at_once(tmp_path, name):
    out = tmp_path / "out"
    argv = COMMANDS[name](tmp_path, out)
    first = _hf_ext(argv, "staged:pause")
    try:
        deadline = time.monotonic() + 120
        while not any(p.name.endswith(".partial") for p in tmp_path.iterdir()):  # the first one is writing
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        started = time.monotonic()
        second = _hf_ext(argv, stderr=subprocess.PIPE)
        _, err = second.communicate(timeout=120)
        assert second.returncode == 2
        assert f"hf-ext {name}: error: The output folder {out} is being written by another run (pid {first.pid}" in err
        assert time.monotonic() - started < 45  # refused before any work, not after the first one's pause
        assert not out.exists()  # the second run wrote nothing
    finally:
        first.kill()
        first.wait()


@pytest.mark.slow
def test_aot_killed_mid_training_leaves_the_earlier_model_and_resumes(tmp_path):
    out = tmp_path / "run"
    recipe = ROOT / "trainers" / "aot.yaml"
    argv = ["aot", "--config", str(recipe), "--synthetic_train_size", "16", "--max_steps", "4", "--save_steps", "1",
            "--disable_tqdm", "true", "--report_to", "none", "--output_dir", str(out)]  # fmt: skip
    assert _hf_ext(argv).wait(timeout=600) == 0
    earlier = _files(out)
    assert "model.safetensors" in earlier
    second = _hf_ext([*argv, "--overwrite_output_dir", "true", "--seed", "7"])
    working = tmp_path / ".run.hf-ext-run"
    deadline = time.monotonic() + 600
    while not (working / "checkpoint-2").is_dir():  # killed once the new run has checkpoints of its own
        assert second.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    second.send_signal(signal.SIGKILL)
    second.wait()
    assert _files(out) == earlier  # the earlier model, every file as it was
    assert (working / "checkpoint-1").is_dir()
    resumed = _hf_ext([*argv, "--seed", "7", "--resume_from_checkpoint", "true"], stdout=subprocess.PIPE)
    stdout, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and (out / "model.safetensors").read_bytes() != earlier["model.safetensors"]
    assert not working.exists() and _beside(out) == []


TRAINING = {  # AOT: killed mid-training above; seal-rank's write is the same as theirs (save_training_output)
    "larimar-train": ["larimar-train", "--config", "trainers/larimar.yaml", "--num_episodes", "4", "--episode_size",
                      "4", "--per_device_train_batch_size", "4"],
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TRAINING))
def test_a_training_command_killed_before_its_swap_leaves_the_earlier_result(tmp_path, name):
    out = tmp_path / "run"
    argv = [*TRAINING[name], "--max_steps", "1", "--save_strategy", "no", "--report_to", "none", "--disable_tqdm",
            "true", "--output_dir", str(out)]  # fmt: skip
    assert _hf_ext(argv).wait(timeout=600) == 0
    earlier = _files(out)
    # the new run finished training and wrote its result beside the folder, and dies before the swap
    assert _hf_ext([*argv, "--overwrite_output_dir", "true"], "staged").wait(timeout=600) == -signal.SIGKILL
    assert _files(out) == earlier and ".run.hf-ext-run" in _beside(out)
    assert _hf_ext([*argv, "--overwrite_output_dir", "true"]).wait(timeout=600) == 0
    assert _files(out).keys() == earlier.keys() and _beside(out) == []


def test_two_aot_runs_into_one_new_folder_the_second_fails_at_once(tmp_path):
    out = tmp_path / "run"
    argv = ["aot", "--config", str(ROOT / "trainers" / "aot.yaml"), "--synthetic_train_size", "16", "--max_steps",
            "1", "--save_strategy", "no", "--disable_tqdm", "true", "--report_to", "none", "--output_dir", str(out)]  # fmt: skip
    first = _hf_ext(argv, "staged:pause")
    try:
        deadline = time.monotonic() + 300
        while not (tmp_path / ".run.lock").exists():
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        second = _hf_ext(argv, stderr=subprocess.PIPE)
        _, err = second.communicate(timeout=300)
        assert second.returncode == 2 and f"(pid {first.pid}" in err, err
    finally:
        first.kill()
        first.wait()
    assert not out.exists()  # the first was killed before its swap: no half model where the output goes


LARIMAR_SAVE = """
import sys, torch
from hf_ext.larimar import LarimarForCausalLM, LarimarProcessor
model = LarimarForCausalLM.from_pretrained(sys.argv[1])
model.write_memory(["another fact, written by the killed save"], LarimarProcessor.from_pretrained(sys.argv[1]))
with torch.no_grad():
    for p in model.parameters():
        p.add_(1.0)
model.save_pretrained(sys.argv[1])
"""


@pytest.mark.parametrize("point", ["journaled", "moving"])
def test_larimar_save_killed_into_an_earlier_save_never_mixes_weights_and_memory(
    tmp_path, point, tiny_bert_path, tiny_gpt2_path, tiny_tokenizer
):
    from hf_ext.larimar import LarimarForCausalLM, LarimarProcessor

    model = LarimarForCausalLM.from_encoder_decoder_pretrained(
        tiny_bert_path, tiny_gpt2_path, latent_size=16, memory_size=8
    )
    processor = LarimarProcessor(tiny_tokenizer, tiny_tokenizer)
    model.write_memory(["the earlier save's fact"], processor)
    folder = tmp_path / "larimar"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    earlier = _files(folder)
    env = {**os.environ, "HF_EXT_FAULT_POINT": point}
    done = subprocess.run([sys.executable, "-c", LARIMAR_SAVE, str(folder)], env=env, cwd=ROOT)
    assert done.returncode == -signal.SIGKILL
    LarimarForCausalLM.from_pretrained(folder)  # loading rolls the half-made save back
    assert _files(folder) == earlier and _beside(folder) == []


def test_a_larimar_resave_refreshes_its_card_and_keeps_a_users(
    tmp_path, tiny_bert_path, tiny_gpt2_path, tiny_tokenizer
):
    from hf_ext.larimar import LarimarForCausalLM, LarimarProcessor

    model = LarimarForCausalLM.from_encoder_decoder_pretrained(
        tiny_bert_path, tiny_gpt2_path, latent_size=16, memory_size=8
    )
    processor = LarimarProcessor(tiny_tokenizer, tiny_tokenizer)
    model.write_memory([f"fact number {i} is {i * 7}" for i in range(2)], processor)
    folder = tmp_path / "larimar"
    model.save_pretrained(folder)
    assert "holding 2 items" in (folder / "README.md").read_text()
    model.write_memory([f"another fact number {i} is {i * 3}" for i in range(10)], processor, replace=False)
    model.save_pretrained(folder)  # the card hf-ext wrote is refreshed: no stale count
    assert "holding 12 items" in (folder / "README.md").read_text()
    (folder / "README.md").write_text("# my notes on this model\n")
    model.save_pretrained(folder)  # a card the user wrote is theirs
    assert (folder / "README.md").read_text() == "# my notes on this model\n"
