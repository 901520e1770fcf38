"""Bad input to AOT is a clear error before any work: loss arguments, non-finite rewards, missing values in the
data, and a tokenizer that does not fit the policy or the reference model."""

import re

import aot_args
import pytest
import torch
from datasets import Dataset, IterableDataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_ext.aot import AOTTrainer
from hf_ext.aot.losses import aot_paired_loss, aot_unpaired_loss, dominance_diagnostics, quantile_ot_loss


NAN, INF = float("nan"), float("inf")


def make_args(tmp_path, **kwargs):
    return aot_args.make_args(tmp_path, use_cpu=True, **kwargs)


def paired(n=8, **overrides):
    columns = {"prompt": ["the cat"] * n, "chosen": [" sat on the mat"] * n, "rejected": [" ran away"] * n}
    return Dataset.from_dict({**columns, **overrides})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"beta": -1.0}, r"beta=-1.0 is out of range; expected a number > 0"),
        ({"beta": 0.0}, r"beta=0.0 is out of range"),
        ({"beta": NAN}, r"beta=nan is out of range"),
        ({"margin": INF}, r"margin=inf is out of range; expected a finite number"),
        ({"label_smoothing": 0.7}, r"label_smoothing=0.7 is out of range; expected a number in \[0, 0.5\]"),
        ({"cost": "hinge", "label_smoothing": 0.1}, r"only applies to cost='logistic'"),
        ({"soft_sort_temperature": 0.0}, r"soft_sort_temperature=0.0 is out of range"),
        ({"cost": "bogus"}, r"cost='bogus' is not supported"),
    ],
)
def test_loss_arguments_out_of_range_are_refused_as_aotconfig_does(kwargs, match):
    u, v = torch.randn(6), torch.randn(4)
    with pytest.raises(ValueError, match=match):
        quantile_ot_loss(u, v, **kwargs)


@pytest.mark.parametrize("bad", [NAN, INF, -INF])
@pytest.mark.parametrize("side", ["u", "v", "v-with-u-empty"])
def test_non_finite_rewards_are_an_error_not_a_nan_loss(bad, side):
    good, poisoned = torch.randn(5), torch.tensor([0.1, bad, -0.3])
    if side == "u":
        u, v, name = poisoned, good, "u"
    elif side == "v":
        u, v, name = good, poisoned, "v"
    else:  # an empty side makes the loss 0 * the other side, which is NaN for a non-finite one
        u, v, name = torch.zeros(0), poisoned, "v"
    with pytest.raises(ValueError, match=rf"^{name} holds NaN or infinite rewards"):
        quantile_ot_loss(u, v)
    with pytest.raises(ValueError, match=rf"^{name} holds NaN or infinite rewards"):
        dominance_diagnostics(u, v)
    # Opting out of the check (the trainer checks within its metrics) gives the raw value back: NaN, or for an
    # infinite reward a finite number that hides it (logsigmoid(inf) = 0), which is why the check is on by default.
    if len(u) and bad != bad:
        assert not torch.isfinite(quantile_ot_loss(u, v, check_finite=False))


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: quantile_ot_loss(torch.zeros(2, 3), torch.zeros(3)), ValueError, r"u must be a 1-D tensor"),
        (lambda: quantile_ot_loss(torch.arange(3), torch.zeros(3)), TypeError, r"u must hold floating-point"),
        (lambda: quantile_ot_loss([1.0, 2.0], torch.zeros(3)), TypeError, r"u must be a torch.Tensor"),
        (lambda: aot_paired_loss(*[torch.zeros(3)] * 3, torch.zeros(4)), ValueError, r"one log-probability per pair"),
        (
            lambda: aot_unpaired_loss(torch.zeros(3), torch.zeros(3), torch.ones(2, dtype=torch.bool)),
            ValueError,
            r"must have the same shape",
        ),
        (lambda: dominance_diagnostics(torch.zeros(3), torch.zeros(3), (0.5, 1.5)), ValueError, r"quantiles=1.5"),
    ],
)
def test_wrong_shapes_and_types_are_named(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize(
    ("dataset", "variant", "match"),
    [
        (
            paired(chosen=[" sat"] + [None] + [" sat"] * 6),
            "paired",
            r"column 'chosen' has a missing value \(None\) at row 1",
        ),
        (paired(prompt=["a"] * 7 + [None]), "paired", r"column 'prompt' has a missing value \(None\) at row 7"),
        (
            Dataset.from_dict({"prompt": ["a", "b"], "completion": [" x", None], "label": [True, False]}),
            "unpaired",
            r"column 'completion' has a missing value \(None\) at row 1",
        ),
        # A view (select) reports the row of the view, not of the underlying table.
        (paired(rejected=[None] + [" no"] * 7).select([3, 0]), "paired", r"column 'rejected' .* at row 1"),
        (
            IterableDataset.from_generator(
                lambda: iter(
                    [
                        {"prompt": "a", "chosen": " x", "rejected": None},
                        {"prompt": "b", "chosen": " y", "rejected": " z"},
                    ]
                )
            ),
            "paired",
            r"train_dataset column 'rejected' has a missing value \(None\) at row 0",
        ),
    ],
)
def test_missing_values_are_named_by_column_and_row_before_loading_the_model(
    dataset, variant, match, tmp_path, monkeypatch
):
    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the data was checked")

    monkeypatch.setattr(AOTTrainer, "_load_processing_class", staticmethod(no_loading))
    with pytest.raises(ValueError, match=match):
        AOTTrainer("unused-model-id", args=make_args(tmp_path, aot_variant=variant), train_dataset=dataset)


@pytest.fixture
def no_loading(monkeypatch):
    """The model's processing class (loaded first) must not be loaded: the data is checked before."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the data was checked")

    monkeypatch.setattr(AOTTrainer, "_load_processing_class", staticmethod(refuse))


def assistant(text):
    return [{"role": "assistant", "content": text}]


@pytest.mark.parametrize(
    ("dataset", "variant", "match"),
    [
        (
            paired(chosen=[" sat"] * 3 + [""] + [" sat"] * 4),
            "paired",
            r"^train_dataset column 'chosen' holds an empty answer \('' or whitespace only\) at row 3: there is "
            r"nothing there to learn or score\. Drop or fill such rows first, e\.g\. train_dataset\.filter\(lambda "
            r"example: example\['chosen'\]\.strip\(\) != ''\)\.$",
        ),
        (
            paired(rejected=[" no", " \n "] * 4),
            "paired",
            r"^train_dataset column 'rejected' holds an empty answer \('' or whitespace only\) at rows 1, 3, 5, 7 "
            r"\(4 of 8 rows\)",
        ),
        (
            Dataset.from_dict({"prompt": ["a", "b"], "completion": [" x", ""], "label": [True, False]}),
            "unpaired",
            r"^train_dataset column 'completion' holds an empty answer .* at row 1",
        ),
        (
            Dataset.from_dict(
                {
                    "prompt": [[{"role": "user", "content": "hi"}]] * 2,
                    "chosen": [assistant("hello"), assistant("  ")],
                    "rejected": [assistant("go away"), assistant("no")],
                }
            ),
            "paired",
            r"^train_dataset column 'chosen' holds an empty answer \(its last message has no text\) at row 1",
        ),
    ],
)
def test_empty_answers_are_named_by_row_and_column_before_loading_the_model(
    dataset, variant, match, tmp_path, no_loading
):
    """Issue 29: an empty or whitespace-only answer was trained on as the end-of-sequence token alone."""
    with pytest.raises(ValueError, match=match):
        AOTTrainer("unused-model-id", args=make_args(tmp_path, aot_variant=variant), train_dataset=dataset)


def test_a_chat_message_without_content_is_named_by_row_and_message(tmp_path, no_loading):
    dataset = Dataset.from_dict(
        {
            "prompt": [[{"role": "user", "content": "hi"}], [{"role": "user", "content": None}]],
            "chosen": [assistant("hello")] * 2,
            "rejected": [assistant("no")] * 2,
        }
    )
    with pytest.raises(
        ValueError, match=r"^train_dataset column 'prompt', row 1, message 0 \(role 'user'\) has content"
    ):
        AOTTrainer("unused-model-id", args=make_args(tmp_path), train_dataset=dataset)


def test_chosen_equal_to_rejected_everywhere_is_an_error_and_in_a_few_rows_a_warning(tmp_path, no_loading):
    """Issue 29: a dataset whose chosen and rejected answers are the same trained on margins of 0, silently."""
    from hf_ext.aot.data import validate_preference_dataset

    with pytest.raises(
        ValueError,
        match=r"^train_dataset has chosen == rejected in every one of its 8 rows: there is no preference to learn",
    ):
        AOTTrainer("unused-model-id", args=make_args(tmp_path), train_dataset=paired(rejected=[" sat on the mat"] * 8))
    some = paired(rejected=[" sat on the mat", " ran away"] * 4)
    with pytest.warns(
        UserWarning,
        match=r"^train_dataset has chosen == rejected in 4 of 8 rows \(rows 0, 2, 4, 6\): such a pair carries no "
        r"preference .*train_dataset\.filter\(lambda example: example\['chosen'\] != example\['rejected'\]\)",
    ):
        validate_preference_dataset(some)
    with pytest.warns(UserWarning, match=r"in 4 among the first 8 rows of the stream"):
        validate_preference_dataset(some.to_iterable_dataset())
    conversational = Dataset.from_dict({"chosen": [assistant("yes")] * 2, "rejected": [assistant("yes")] * 2})
    with pytest.raises(ValueError, match=r"chosen == rejected in every one of its 2 rows"):
        validate_preference_dataset(conversational)


def test_rows_whose_prompt_fills_max_length_are_counted_or_refused(tiny_llama_path, tmp_path):
    """Issue 29: rows dropped for a prompt of max_length tokens or more went with a progress bar only."""
    long_prompt = "the cat sat on the mat " * 20
    dataset = paired(prompt=[long_prompt] * 3 + ["the cat"] * 5)
    with pytest.warns(
        UserWarning,
        match=r"^3 of 8 rows of the train dataset were dropped: their prompt alone has max_length=32 tokens or "
        r"more, .* Raise max_length \(AOTConfig\(max_length=\.\.\.\), --max_length; None keeps every row whole\) or "
        r"shorten the prompts to keep them\.$",
    ):
        trainer = AOTTrainer(str(tiny_llama_path), args=make_args(tmp_path, max_length=32), train_dataset=dataset)
    assert len(trainer.train_dataset) == 5
    with pytest.raises(ValueError, match=r"^Every one of the 8 rows of the train dataset would be dropped"):
        AOTTrainer(
            str(tiny_llama_path),
            args=make_args(tmp_path, max_length=32),
            train_dataset=paired(prompt=[long_prompt] * 8),
        )


@pytest.fixture
def checkpoint_with_an_extra_layer(tiny_llama_path, tmp_path):
    """The tiny Llama's weights with a config.json that asks for one more layer than they hold."""
    import json
    import shutil

    folder = shutil.copytree(tiny_llama_path, tmp_path / "grown")
    config = json.loads((folder / "config.json").read_text())
    config["num_hidden_layers"] += 1
    (folder / "config.json").write_text(json.dumps(config))
    return folder, config["num_hidden_layers"] - 1


def test_weights_missing_from_the_checkpoint_are_an_error_not_a_random_start(checkpoint_with_an_extra_layer, tmp_path):
    """Issue 29: a config.json adding a layer the checkpoint lacks trained that layer from random init, with no error
    (transformers only logs it)."""
    import transformers

    folder, layer = checkpoint_with_an_extra_layer
    real_loading = transformers.LlamaForCausalLM.from_pretrained

    def only_on_meta(*args, **kwargs):
        assert kwargs.get("device_map") == "meta", "the weights were loaded before the checkpoint was checked"
        return real_loading(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(transformers.LlamaForCausalLM, "from_pretrained", only_on_meta)
        with pytest.raises(
            ValueError,
            match=rf"^The checkpoint '{re.escape(str(folder))}' lacks 9 weight\(s\) that LlamaForCausalLM, as its "
            rf"config.json describes it, needs: model\.layers\.{layer}\.input_layernorm\.weight, .*\(9 in all\)\. "
            r"transformers would initialise them at random .*use the config.json saved with these weights",
        ):
            AOTTrainer(str(folder), args=make_args(tmp_path), train_dataset=paired())


@pytest.fixture(scope="module")
def larger_tokenizer(tiny_llama_path):
    """The model's tokenizer with 40 more tokens than the model embeds."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_path)
    tokenizer.add_tokens([f"<extra_{i}>" for i in range(40)])
    return tokenizer


@pytest.mark.parametrize("given", ["model-by-name", "model-object", "ref-model-object"])
def test_a_tokenizer_larger_than_the_model_vocabulary_is_refused_before_training(
    given, larger_tokenizer, tiny_llama_path, tmp_path
):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_path)
    model, ref_model, name = str(tiny_llama_path), None, "the model"
    if given == "model-object":
        tokenizer, model = larger_tokenizer, AutoModelForCausalLM.from_pretrained(tiny_llama_path)
    elif given == "model-by-name":
        tokenizer = larger_tokenizer
    else:  # the policy was resized for the new tokens, the reference was not
        tokenizer, model = larger_tokenizer, AutoModelForCausalLM.from_pretrained(tiny_llama_path)
        model.resize_token_embeddings(len(larger_tokenizer))
        ref_model, name = AutoModelForCausalLM.from_pretrained(tiny_llama_path), "the ref_model"
    bound = len(larger_tokenizer) - 1
    with pytest.raises(ValueError, match=rf"produces token ids up to {bound}, but {name} .*embeds only 1024 tokens"):
        AOTTrainer(
            model, ref_model=ref_model, args=make_args(tmp_path), train_dataset=paired(), processing_class=tokenizer
        )


def test_a_tokenizer_within_padded_embeddings_is_accepted(larger_tokenizer, tiny_llama_path, tmp_path):
    # Embedding matrices are often padded beyond the tokenizer (to a multiple of 64): that is no mismatch.
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_path)
    model.resize_token_embeddings(len(larger_tokenizer), pad_to_multiple_of=64)
    assert model.get_input_embeddings().num_embeddings > len(larger_tokenizer)
    trainer = AOTTrainer(
        model,
        args=make_args(tmp_path, precompute_ref_log_probs=True),
        train_dataset=paired(),
        processing_class=larger_tokenizer,
    )
    assert trainer.processing_class is larger_tokenizer


def test_rewards_that_overflow_during_training_stop_the_step(tiny_llama_path, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_path)
    with torch.no_grad():
        model.get_output_embeddings().weight.fill_(NAN)  # every log-probability of the policy is NaN
    trainer = AOTTrainer(
        model,
        args=make_args(tmp_path, max_steps=1, per_device_train_batch_size=8),
        train_dataset=paired(),
        processing_class=AutoTokenizer.from_pretrained(tiny_llama_path),
    )
    with pytest.raises(ValueError, match=r"AOT train step 0: u holds NaN or infinite rewards.*before its update"):
        trainer.train()
