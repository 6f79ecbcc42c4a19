"""Shared test settings: slow tests run only with --runslow; `jit_or_eager` runs both paths."""

import jax
import pytest

if not hasattr(jax, "enable_x64"):  # jax < 0.7 (the floor CI tests): the same context manager
    from jax.experimental import enable_x64 as _enable_x64

    jax.enable_x64 = _enable_x64


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=["jit", "eager"])
def jit_or_eager(request):
    """A function decorator: `jax.jit` or the identity, so each test runs both paths."""
    return jax.jit if request.param == "jit" else (lambda f: f)
