"""Surviving mutants of `make mutate` that no test can kill, because the mutated code computes the same thing.

Each entry names the module and function, the changed line before and after the mutation (as benchmarks/mutation/run.py
prints them: stripped, several lines joined by " / "), and why the two are equivalent. An entry matches by that text,
not by mutmut's mutant number, so it survives renumbering; an entry that no longer matches anything is simply unused.
"""

_ONE_DEVICE = (
    "Both branches compute the same flags: one stacked copy to the host when the flags share a device, one `bool` per "
    "flag otherwise; only the number of device-to-host copies differs."
)
_SCALAR_DEVICE = (
    "`w_logvar` is a float (a 0-dim tensor, which combines with tensors on any device) or the model's own tensor, "
    "already on `w_mean`'s device, which `as_tensor` leaves there; only a non-scalar CPU tensor with a CUDA `w_mean` "
    "would differ, which no caller passes."
)

EQUIVALENT: list[dict[str, str]] = [
    *(
        {
            "module": "larimar/memory",
            "function": "_check_finite",
            "before": "if len({f.device for f in flags}) == 1:",
            "after": after,
            "reason": _ONE_DEVICE,
        }
        for after in ("if len({f.device for f in flags}) != 1:", "if len({f.device for f in flags}) == 2:")
    ),
    *(
        {"module": "larimar/memory", "function": "w_kl", "before": before, "after": after, "reason": _SCALAR_DEVICE}
        for before, after in (
            (
                "_check_finite(w_mean=w_mean, w_logvar=torch.as_tensor(w_logvar, device=w_mean.device))",
                "_check_finite(w_mean=w_mean, w_logvar=torch.as_tensor(w_logvar, device=None))",
            ),
            (
                "_check_finite(w_mean=w_mean, w_logvar=torch.as_tensor(w_logvar, device=w_mean.device))",
                "_check_finite(w_mean=w_mean, w_logvar=torch.as_tensor(w_logvar, ))",
            ),
            (
                "w_logvar = torch.as_tensor(w_logvar, dtype=w_mean.dtype, device=w_mean.device)",
                "w_logvar = torch.as_tensor(w_logvar, dtype=w_mean.dtype, device=None)",
            ),
            (
                "w_logvar = torch.as_tensor(w_logvar, dtype=w_mean.dtype, device=w_mean.device)",
                "w_logvar = torch.as_tensor(w_logvar, dtype=w_mean.dtype, )",
            ),
        )
    ),
]
