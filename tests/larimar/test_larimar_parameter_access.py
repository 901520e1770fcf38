"""FSDP / ZeRO-3 safety by construction: every parameter of a Larimar is read inside a `forward` of the module that
owns it, the only place where sharding wrappers gather it. Checked by intercepting every torch function call
(`TorchFunctionMode`) while tracking which modules are inside their `forward`."""

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten


# Reading a parameter's metadata does not touch its values (a sharded parameter has the same dtype and device).
METADATA = {"dtype", "device", "is_floating_point", "requires_grad", "_version", "layout", "is_leaf", "grad_fn"}


class ParameterReads(TorchFunctionMode):
    """Records the torch functions that read a parameter while none of the modules owning it is in `forward`."""

    def __init__(self, model):
        super().__init__()
        self.owners = {}
        for module_name, module in model.named_modules():
            for name, parameter in module.named_parameters(recurse=False):
                self.owners.setdefault(id(parameter), []).append((module, f"{module_name}.{name}"))
        self.in_forward = []
        self.outside_forward = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(getattr(func, "__self__", None), "__name__", None) or getattr(func, "__name__", repr(func))
        if name not in METADATA:
            for value in tree_flatten((args, kwargs))[0]:
                owners = self.owners.get(id(value)) if isinstance(value, torch.nn.Parameter) else None
                if owners and not any(module in self.in_forward for module, _ in owners):
                    self.outside_forward.add((owners[0][1], name))
        return func(*args, **kwargs)

    def __enter__(self):
        self._hooks = [
            torch.nn.modules.module.register_module_forward_pre_hook(lambda module, args: self._enter(module)),
            torch.nn.modules.module.register_module_forward_hook(lambda module, args, output: self._exit()),
        ]
        return super().__enter__()

    def __exit__(self, *exc):
        for hook in self._hooks:
            hook.remove()
        return super().__exit__(*exc)

    def _enter(self, module):
        self.in_forward.append(module)

    def _exit(self):
        self.in_forward.pop()


TEXTS = ["The capital of France is Paris.", "Rivers carry sand to the sea.", "Bob plays the violin.", "Ann likes tea."]


@pytest.mark.parametrize("w_logvar_mode", ["memory", "slot"])
def test_every_parameter_is_read_inside_its_owners_forward(w_logvar_mode, larimar_factory, tiny_processor):
    model = larimar_factory("gpt2", w_logvar_mode=w_logvar_mode)
    batch = tiny_processor.episode(TEXTS, [text.rsplit(" ", 1)[0] for text in TEXTS])
    reads = ParameterReads(model)
    with reads:
        model.train()
        model(**batch).loss.backward()
        model.eval()
        model.write_memory(TEXTS[:3], processor=tiny_processor)
        model.forget_memory(TEXTS[:1], processor=tiny_processor)
        model.read_memory(TEXTS, processor=tiny_processor)
        model.generate(**tiny_processor(["The capital of France is"]), max_new_tokens=2, do_sample=False)
        model.read_long_context(TEXTS * 3, ["Ann likes"], processor=tiny_processor, episode_size=4)
    model.zero_grad(set_to_none=True)
    assert reads.outside_forward == set()


def test_the_check_sees_a_read_outside_forward(larimar_factory):
    model = larimar_factory("gpt2", w_logvar_mode="slot")
    reads = ParameterReads(model)
    with reads:
        model.model.memory.prior.detach().clone()  # what write_memory did before it went through memory()
        model.model.memory()  # the same, inside the memory's forward
    assert reads.outside_forward == {("model.memory.prior", "detach")}
