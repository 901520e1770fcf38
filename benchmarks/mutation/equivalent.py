"""Surviving mutants of `make mutate` that no test can kill, because the mutated code computes the same thing.

Each entry names the module and function, the changed line before and after the mutation (as benchmarks/mutation/run.py
prints them: stripped, several lines joined by " / "), and why the two are equivalent. An entry matches by that text,
not by mutmut's mutant number, so it survives renumbering; an entry that no longer matches anything is simply unused.
"""

EQUIVALENT: list[dict[str, str]] = []
