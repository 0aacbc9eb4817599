"""Tabular loaders (being written)."""
