"""Larimar: a language model with an episodic memory (Das et al., ICML 2024)."""
