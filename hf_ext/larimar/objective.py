"""Larimar's training objectives, the training path of [`LarimarForCausalLM.forward`]: the paper's objective (plus
a prompt-query term) for `memory_readout="latent"`, the addressing objective for `memory_readout="text"`."""

from __future__ import annotations

import torch
from transformers.utils import ModelOutput

from . import memory as memory_math


__all__ = ["LarimarObjectiveMixin"]


class LarimarObjectiveMixin:
    """The training objectives of [`LarimarForCausalLM`] (see its `forward`)."""

    def _objective(
        self,
        input_ids,
        attention_mask,
        labels,
        encoder_input_ids,
        encoder_attention_mask,
        query_input_ids,
        query_attention_mask,
        episode_size,
        **kwargs,
    ) -> ModelOutput:
        config = self.config
        kwargs.pop("num_items_in_batch", None)
        items = input_ids.shape[0]
        episode_size = int(episode_size or items)
        if items % episode_size:
            raise ValueError(
                f"The batch of {items} items does not split into episodes of episode_size={episode_size}."
            )
        episodes = items // episode_size
        model = self.model
        if config.memory_readout == "text":
            return self._addressing_objective(
                encoder_input_ids, encoder_attention_mask, query_input_ids, query_attention_mask, episodes
            )
        z = model.encode(encoder_input_ids, encoder_attention_mask)
        z_episodes = z.view(episodes, episode_size, -1)
        queries = z_episodes
        if query_input_ids is not None:
            q = model.encode(query_input_ids, query_attention_mask).view(episodes, episode_size, -1)
            queries = torch.cat([z_episodes, q], 1)  # one pseudo-inverse of the memory for both reads
        read = model.memory(
            z_episodes,
            queries,
            noise_std=config.write_noise_std if self.training else 0.0,
            sample=self.training and not config.deterministic_read,
        )
        read_out = read.read_latents
        z_read, w_mean = read_out[:, :episode_size], read.read_weights[:, :episode_size]
        kl = memory_math.w_kl(w_mean, read.read_logvar.to(w_mean.dtype), check_finite=False).mean()

        streams = {"reconstruction": z_read.reshape(items, -1), "autoencoder": z, "no_memory": torch.zeros_like(z)}
        if query_input_ids is not None:
            streams["query"] = read_out[:, episode_size:].reshape(items, -1)
        weights = {
            "reconstruction": config.reconstruction_weight,
            "autoencoder": config.autoencoder_weight,
            "no_memory": config.no_memory_weight,
            "query": config.query_weight,
        }
        names = [name for name in streams if weights[name] > 0 or name == "reconstruction"]
        latents = torch.cat([streams[name].to(z.dtype) for name in names], 0)
        repeat = len(names)
        outputs = model.decode(
            input_ids=input_ids.repeat(repeat, 1),
            attention_mask=attention_mask.repeat(repeat, 1) if attention_mask is not None else None,
            memory_latent=latents,
            use_cache=False,
            **kwargs,
        )
        logits = self.lm_head(outputs.last_hidden_state)
        losses = {}
        for index, name in enumerate(names):
            chunk = logits[index * items : (index + 1) * items]
            losses[name] = self.loss_function(logits=chunk, labels=labels, vocab_size=self.vocab_size)
        loss = sum(weights[name] * losses[name] for name in names) + config.kl_beta * self.kl_scale * kl.to(
            logits.dtype
        )
        return _output(
            loss=loss,
            logits=logits[:items],
            memory_latent=streams["reconstruction"],
            reconstruction_loss=losses["reconstruction"].detach(),
            autoencoder_loss=losses.get("autoencoder", torch.zeros(())).detach(),
            no_memory_loss=losses.get("no_memory", torch.zeros(())).detach(),
            query_loss=losses["query"].detach() if "query" in losses else None,
            kl_loss=kl.detach(),
        )

    def _addressing_objective(
        self, encoder_input_ids, encoder_attention_mask, query_input_ids, query_attention_mask, episodes
    ) -> ModelOutput:
        """The objective of `memory_readout="text"`: the decoder only reads the text of the item a query
        addresses, so what trains is the addressing. In each episode the first half of the items is stored; every
        item's query must address its own item among those ([`~hf_ext.larimar.memory.addressing_loss`]), and the
        second half's queries (about nothing stored) must fall outside the scope threshold."""
        if query_input_ids is None:
            raise ValueError(
                'memory_readout="text" trains the addressing: the batch needs query_input_ids (each item\'s query, '
                "e.g. a paraphrase of its prompt; LarimarEpisodeCollator(prompt_field=...))."
            )
        model = self.model
        size = encoder_input_ids.shape[0] // episodes
        if size < 2:
            raise ValueError(f"episode_size={size} is too small to store some items and query others; use >= 2.")
        z = model.encode(encoder_input_ids, encoder_attention_mask).view(episodes, size, -1)
        q = model.encode(query_input_ids, query_attention_mask).view(episodes, size, -1)
        stored = (size + 1) // 2
        targets = torch.arange(size, device=z.device)
        targets = torch.where(targets < stored, targets, -1).expand(episodes, -1)
        threshold = self.config.scope_threshold if self.config.scope_threshold is not None else 0.5
        loss = memory_math.addressing_loss(q, z[:, :stored], targets, threshold=threshold)
        return _output(loss=loss, query_loss=loss.detach())


def _output(**fields) -> ModelOutput:
    from .modeling_larimar import LarimarCausalLMOutputWithPast

    return LarimarCausalLMOutputWithPast(**fields)
