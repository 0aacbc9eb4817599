"""Worked examples of user components: a penalty term, a classifier, a dataset (see docs/guide.md)."""
