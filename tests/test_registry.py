"""The name -> factory registry (recourse_ray._registry) and the dataset registry built on it."""

from __future__ import annotations

import re

import pytest

import recourse_ray as rr
from recourse_ray._registry import Registry, suggest


def make() -> Registry:
    reg: Registry = Registry("widget")
    reg.register("alpha", 1)
    reg.register("beta", 2)
    return reg


def test_register_and_get():
    reg = make()
    assert reg.get("alpha") == 1
    assert reg.get("beta") == 2
    assert "alpha" in reg and "gamma" not in reg
    assert len(reg) == 2
    assert reg.names() == ["alpha", "beta"]
    assert list(reg) == ["alpha", "beta"]
    assert reg.items() == [("alpha", 1), ("beta", 2)]


def test_names_are_sorted_whatever_the_registration_order():
    reg: Registry = Registry("widget")
    for name in ("zeta", "alpha", "mu"):
        reg.register(name, name.upper())
    assert reg.names() == ["alpha", "mu", "zeta"]


def test_duplicate_raises_and_keeps_the_first_entry():
    reg = make()
    with pytest.raises(ValueError, match=r"widget 'alpha' is already registered"):
        reg.register("alpha", 99)
    assert reg.get("alpha") == 1


@pytest.mark.parametrize("bad", ["", None, 3])
def test_invalid_name_raises(bad):
    with pytest.raises(ValueError, match="must be a non-empty string"):
        Registry("widget").register(bad, 1)


def test_unknown_name_lists_valid_names_and_closest_match():
    reg = make()
    with pytest.raises(KeyError) as info:
        reg.get("alpah")
    message = info.value.args[0]
    assert "Unknown widget 'alpah'" in message
    assert "Did you mean 'alpha'?" in message
    assert "Valid widget names: alpha, beta (or an import path" in message


def test_unknown_name_without_close_match_has_no_suggestion():
    reg = make()
    with pytest.raises(KeyError, match=r"Valid widget names: alpha, beta") as info:
        reg.get("zzzzzz")
    assert "Did you mean" not in info.value.args[0]


def test_unhashable_name_is_a_key_error_not_a_type_error():
    with pytest.raises(KeyError, match="Unknown widget"):
        make().get(["alpha"])


def test_decorator_form_registers_and_returns_the_function():
    reg: Registry = Registry("widget")

    @reg.register("double")
    def double(x):
        return 2 * x

    assert reg.get("double") is double
    assert double(21) == 42  # the decorator returned the function itself, not a wrapper
    with pytest.raises(ValueError, match="already registered"):

        @reg.register("double")
        def other(x):  # pragma: no cover - never called
            return x


def test_suggest():
    assert suggest("moon", ["moons", "circles"]) == " Did you mean 'moons'?"
    assert suggest("xyz", ["moons", "circles"]) == ""


def test_dataset_registry_unknown_name_message():
    with pytest.raises(KeyError) as info:
        rr.data.load("moosn", seed=0)
    message = info.value.args[0]
    assert "Did you mean 'moons'?" in message
    for name in ("overlapping", "linearly_separable", "circles", "moons", "credit_default"):
        assert re.search(rf"\b{name}\b", message)


def test_dataset_register_adds_a_loader_and_rejects_duplicates():
    registry = rr.data.DATASETS
    name = "test-registry-tiny"
    assert name not in registry

    def tiny(*, seed, n_samples=None):
        return rr.data.synthetic.blobs(4 if n_samples is None else n_samples, seed=seed, name=name)

    try:
        rr.data.register(name, tiny)
        assert name in rr.data.names()
        assert rr.data.load(name, seed=0).n_samples == 4
        assert rr.data.load(name, seed=0, n_samples=6).n_samples == 6
        with pytest.raises(ValueError, match="already registered"):
            rr.data.register(name, tiny)
    finally:
        registry._entries.pop(name, None)  # keep the global registry as other tests expect it
