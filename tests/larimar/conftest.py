"""Larimar fixtures: small random Larimars built from the tiny offline models, and the trained tiny Larimar."""

import pytest
import torch

from tests.portable import SEED


@pytest.fixture(scope="session")
def larimar_factory(tiny_bert_path, tiny_gpt2_path, tiny_llama_path):
    """Build a random Larimar over the tiny encoder and a tiny GPT-2 or Llama decoder (scaled-up projections, so
    that the memory slot visibly changes the decoder's output)."""
    from hf_ext.larimar.modeling_larimar import LarimarForCausalLM

    decoders = {"gpt2": tiny_gpt2_path, "llama": tiny_llama_path}

    def build(family="gpt2", seed=0, **config):
        config = {
            "latent_size": 32,
            "memory_size": 48,
            "w_logvar_mode": "slot",
            "pooling": "mean",
            **config,
        }
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = LarimarForCausalLM.from_encoder_decoder_pretrained(tiny_bert_path, decoders[family], **config)
            with torch.no_grad():
                for module in (model.model.prefix_projection, model.model.embedding_projection):
                    if module is not None:
                        module.weight.normal_(0, 0.3)
        return model.eval()

    return build


@pytest.fixture(scope="session")
def tiny_processor(tiny_tokenizer):
    from hf_ext.larimar.processing_larimar import LarimarProcessor

    return LarimarProcessor(tiny_tokenizer, tiny_tokenizer)


@pytest.fixture(scope="session")
def trained_larimar_path():
    """The trained tiny Larimar (trained once, cached across sessions; a few minutes the first time)."""
    from hf_ext.testing.larimar import TinyLarimarRecipe, tiny_larimar_dir

    return tiny_larimar_dir(TinyLarimarRecipe(seed=SEED), progress=False)
