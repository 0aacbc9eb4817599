"""User components that raise when called: a dataset loader, a classifier factory, a generator factory."""


def loader(*, seed, n_samples=None, **options):
    raise RuntimeError("the loader's database is down")


def classifier(input_dim, *, seed, **params):
    raise ZeroDivisionError("a factory bug")


def generator(**overrides):
    raise SystemExit(3)
