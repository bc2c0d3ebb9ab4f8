"""Pairs: rankings expanded into soft-labelled pairwise comparisons, split leak-free by prompt."""
