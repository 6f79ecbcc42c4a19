"""gradchain.contrib against optax.contrib (0.2.8): the same names, arguments and defaults, the same
trajectories, and gradchain's live hyperparameters, readable states and construction-time checks.

Every optimizer has one spec below (the keyword arguments used on both sides, per harness
problem); the tests are parametrized over the specs.  The step of one optimizer on the float32
``small_tree`` is compiled once (``Runner``) and reused by the float32 parity, liveness, array and
population tests: a gradchain update reads its hyperparameters from the state, so one program
serves every value (that is what the liveness test checks).
"""

from __future__ import annotations

import dataclasses
import inspect
import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optax_parity import PROBLEMS, float64, trajectory

import gradchain as gc
import gradchain.contrib as gcc
from gradchain import hyper
from gradchain.state import _matches

F64_RTOL = 1e-9  # the shared harness's criterion (tests/optax_parity.py), over 60 steps
STEPS = 60


def decaying(value, rate=0.97):
    """A schedule ``t -> value · rate^t`` in the default float dtype (strongly typed)."""
    return lambda t: value * rate ** jnp.asarray(t, hyper.float_dtype())


def strong(value):
    """``value`` as a strongly typed array of the default float dtype.

    Optax's madgrad multiplies its rate by ``√(k+1)`` of the int32 count, which is float32: with
    a Python-number (weakly typed) rate the product is rounded to float32, with a typed array it
    is not.  gradchain stores every hyperparameter as a typed array, so the parity runs give
    Optax the same typed array."""
    return jnp.asarray(value, hyper.float_dtype())


def sam_pair(lib):
    """SAM's paper form for both libraries: outer SGD, adversary ``normalize → sgd(rho)``."""
    if lib == "optax":
        def make(learning_rate=0.1, rho=0.05, sync_period=2, reset_state=True):
            adv = optax.chain(optax.contrib.normalize(), optax.sgd(rho))
            return optax.contrib.sam(optax.sgd(learning_rate), adv, sync_period, reset_state)
    else:
        def make(learning_rate=0.1, rho=0.05, sync_period=2, reset_state=True):
            adv = gc.chain(gcc.normalize(), gc.scale_by_learning_rate(rho, name="rho"))
            return gcc.sam(gc.sgd(learning_rate), adv, sync_period, reset_state)
    return make


@dataclasses.dataclass
class Spec:
    ours: Callable[..., Any]
    theirs: Callable[..., Any]
    least_squares: Callable[[], dict]  # keyword arguments on the first problem (built in its dtype)
    small_tree: Callable[[], dict]  # ... on the second (also the float32 and liveness runs)
    hypers: set[str]  # what get_hyperparams lists for the small_tree arguments
    vary: tuple[str, tuple[float, ...]]  # a constructor argument and a population of its values
    bad: list[tuple[dict, str]]  # (keyword arguments, the error's text: argument and value)
    static: tuple[str, ...] = ()  # numeric constructor arguments that are not hyperparameters
    live: dict[str, float] = dataclasses.field(default_factory=dict)  # set values that bind
    # hyperparameter -> other values set on both runs, where it binds only with them
    live_context: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    obj_fn: bool = False  # update needs obj_fn= (Sophia's Hessian estimate)


SPECS: dict[str, Spec] = {
    "adopt": Spec(
        gcc.adopt, optax.contrib.adopt,
        lambda: dict(learning_rate=decaying(0.05), b2=0.99, nesterov=True),
        lambda: dict(learning_rate=0.05, b2=0.99),
        {"b1", "b2", "eps", "clip_value", "learning_rate"},
        ("learning_rate", (0.01, 0.03, 0.1)),
        [(dict(learning_rate=-1.0), r"learning_rate must be in \[0, inf\], got -1.0"),
         (dict(learning_rate=0.1, b1=1.0), r"b1 must be in \[0, 1\), got 1.0"),
         (dict(learning_rate=0.1, eps=0.0), r"eps must be in \(0, inf\], got 0.0")],
        live={"eps": 1.0},
    ),
    "ademamix": Spec(
        gcc.ademamix, optax.contrib.ademamix,
        lambda: dict(learning_rate=0.05, b3=0.99, alpha=lambda t: 2.0 * jnp.minimum(t / 10.0, 1.0), weight_decay=0.01),
        lambda: dict(learning_rate=0.05, b3=decaying(0.99, 0.999), alpha=2.0, eps_root=1e-10, weight_decay=0.01),
        {"b1", "b2", "b3", "alpha", "eps", "eps_root", "weight_decay", "learning_rate"},
        ("alpha", (0.5, 2.0, 8.0)),
        [(dict(learning_rate=0.1, b3=1.5), r"b3 must be in \[0, 1\), got 1.5"),
         (dict(learning_rate=0.1, alpha=-2.0), r"alpha must be in \[0, inf\], got -2.0"),
         (dict(learning_rate=0.1, weight_decay=-1e-3), r"weight_decay must be in \[0, inf\], got -0.001")],
        live={"eps_root": 1.0},
    ),
    "madgrad": Spec(
        gcc.madgrad, optax.contrib.madgrad,
        lambda: dict(learning_rate=lambda t: strong(0.05) * 0.98 ** jnp.asarray(t, hyper.float_dtype()), weight_decay=0.01),
        lambda: dict(learning_rate=strong(0.05), momentum=0.8, eps=strong(1e-6)),
        {"learning_rate", "momentum", "eps", "weight_decay"},
        ("momentum", (0.5, 0.8, 0.95)),
        [(dict(learning_rate=0.1, momentum=1.0), r"momentum must be in \[0, 1\), got 1.0"),
         (dict(learning_rate=0.1, eps=-1.0), r"eps must be in \(0, inf\], got -1.0"),
         (dict(learning_rate=float("nan")), r"learning_rate must be finite, got nan")],
        live={"weight_decay": 0.5},
    ),
    "cocob": Spec(
        gcc.cocob, optax.contrib.cocob,
        lambda: dict(learning_rate=decaying(1.0, 0.99), weight_decay=1e-3),
        lambda: dict(alpha=1000.0, weight_decay=0.01),
        {"weight_decay", "learning_rate", "alpha", "eps"},
        ("alpha", (300.0, 1000.0, 3000.0)),
        [(dict(alpha=0.0), r"alpha must be in \(0, inf\], got 0.0"),
         (dict(eps=-1e-8), r"eps must be in \(0, inf\], got -1e-08"),
         (dict(learning_rate=-0.5), r"learning_rate must be in \[0, inf\], got -0.5")],
        live={"eps": 1.0},
    ),
    "dog": Spec(
        gcc.dog, optax.contrib.dog,
        lambda: dict(learning_rate=decaying(1.0, 0.99), init_step=("heuristic", 1e-3), weight_decay=1e-3),
        lambda: dict(learning_rate=0.5, init_step=("distance", 1e-2), weight_decay=1e-3),
        {"weight_decay", "init_step", "eps", "learning_rate"},
        ("learning_rate", (0.25, 0.5, 1.0)),
        [(dict(init_step=("distance", -1.0)), r"init_step\[1\] must be in \(0, inf\], got -1.0"),
         (dict(init_step=("guess", 1e-6)), r"init_step\[0\] must be one of .*, got 'guess'"),
         (dict(eps=0.0), r"eps must be in \(0, inf\], got 0.0")],
        live={"eps": 10.0, "init_step": 10.0},
    ),
    "dowg": Spec(
        gcc.dowg, optax.contrib.dowg,
        lambda: dict(learning_rate=decaying(1.0, 0.99)),
        lambda: dict(learning_rate=0.5, init_estim_sq_dist=1e-3, weight_decay=1e-3),
        {"weight_decay", "eps", "init_estim_sq_dist", "learning_rate"},
        ("learning_rate", (0.25, 0.5, 1.0)),
        [(dict(init_estim_sq_dist=0.0), r"init_estim_sq_dist must be in \(0, inf\], got 0.0"),
         (dict(eps=-1.0), r"eps must be in \(0, inf\], got -1.0"),
         (dict(weight_decay=-1.0), r"weight_decay must be in \[0, inf\], got -1.0")],
        live={"init_estim_sq_dist": 10.0},
    ),
    "prodigy": Spec(
        gcc.prodigy, optax.contrib.prodigy,
        lambda: dict(learning_rate=decaying(1.0, 0.99), weight_decay=0.01),
        lambda: dict(betas=(0.9, 0.99), beta3=0.98, estim_lr0=1e-3, safeguard_warmup=True),
        {"learning_rate", "beta1", "beta2", "beta3", "eps", "estim_lr0", "estim_lr_coef", "weight_decay"},
        ("estim_lr_coef", (0.5, 1.0, 2.0)),
        [(dict(betas=(0.9, 1.0)), r"betas\[1\] must be in \[0, 1\), got 1.0"),
         (dict(betas=0.9), r"betas must be a pair \(beta1, beta2\), got 0.9"),
         (dict(estim_lr0=0.0), r"estim_lr0 must be in \(0, inf\], got 0.0")],
        live={"eps": 100.0},
    ),
    "dadapt_adamw": Spec(
        gcc.dadapt_adamw, optax.contrib.dadapt_adamw,
        lambda: dict(learning_rate=decaying(1.0, 0.99), weight_decay=0.01),
        lambda: dict(betas=(0.8, 0.99), estim_lr0=1e-5),
        {"learning_rate", "beta1", "beta2", "eps", "estim_lr0", "weight_decay"},
        ("learning_rate", (0.5, 1.0, 2.0)),
        [(dict(betas=(-0.1, 0.9)), r"betas\[0\] must be in \[0, 1\), got -0.1"),
         (dict(eps=0.0), r"eps must be in \(0, inf\], got 0.0"),
         (dict(learning_rate=-1.0), r"learning_rate must be in \[0, inf\], got -1.0")],
        live={"estim_lr0": 1.0, "weight_decay": 0.5, "eps": 1.0},
    ),
    "schedule_free_sgd": Spec(
        gcc.schedule_free_sgd, optax.contrib.schedule_free_sgd,
        lambda: dict(learning_rate=0.1, warmup_steps=5, weight_decay=0.01),
        lambda: dict(learning_rate=0.2, b1=0.8, weight_decay=1e-3),
        {"learning_rate", "b1", "weight_lr_power", "weight_decay"},
        ("b1", (0.5, 0.8, 0.95)),
        [(dict(b1=0.0), r"b1 must be in \(0, 1\], got 0.0"),
         (dict(warmup_steps=-3), r"warmup_steps must be an int >= 0, got -3"),
         (dict(weight_lr_power=-1.0), r"weight_lr_power must be in \[0, inf\], got -1.0")],
        static=("warmup_steps",),
    ),
    "schedule_free_adamw": Spec(
        gcc.schedule_free_adamw, optax.contrib.schedule_free_adamw,
        lambda: dict(learning_rate=0.05, warmup_steps=5, weight_decay=0.01),
        lambda: dict(learning_rate=decaying(0.05, 0.99), b1=0.85, weight_lr_power=1.0, weight_decay=1e-3),
        {"learning_rate", "b1", "weight_lr_power", "b2", "eps", "weight_decay"},
        ("weight_lr_power", (0.0, 1.0, 2.0)),
        [(dict(b2=1.0), r"b2 must be in \[0, 1\), got 1.0"),
         (dict(eps=0.0), r"eps must be in \(0, inf\], got 0.0"),
         (dict(learning_rate=-0.1), r"learning_rate must be in \[0, inf\], got -0.1")],
        static=("warmup_steps",),
    ),
    "sophia": Spec(
        gcc.sophia, optax.contrib.sophia,
        lambda: dict(learning_rate=0.05, update_interval=2, gamma=0.05, weight_decay=1e-3),
        lambda: dict(learning_rate=decaying(0.05, 0.99), update_interval=3, clip_threshold=0.5, gamma=2.0, eps=0.3),
        {"b1", "b2", "eps", "gamma", "update_interval", "clip_threshold", "weight_decay", "learning_rate"},
        ("gamma", (0.005, 0.01, 0.05)),
        [(dict(learning_rate=0.1, gamma=0.0), r"gamma must be in \(0, inf\], got 0.0"),
         (dict(learning_rate=0.1, update_interval=2.5), r"update_interval must be a whole number of steps, got 2.5"),
         (dict(learning_rate=0.1, clip_threshold=-1.0), r"clip_threshold must be in \(0, inf\], got -1.0")],
        static=("print_win_rate_every_n_steps",),
        live={"eps": 1.0, "update_interval": 1.0, "gamma": 100.0},
        live_context={"update_interval": {"gamma": 100.0}},  # with γ·h > eps the Hessian matters
        obj_fn=True,
    ),
    "muon": Spec(
        gcc.muon, optax.contrib.muon,
        lambda: dict(learning_rate=decaying(0.02), weight_decay=0.01, adam_weight_decay=0.01),
        lambda: dict(learning_rate=0.02, beta=0.9, weight_decay=0.01, adam_weight_decay=0.01, adam_eps_root=1e-12),
        {"ns_coeffs", "beta", "eps", "weight_decay", "learning_rate", "adam_b1", "adam_b2", "adam_eps_root",
         "adam_weight_decay"},
        ("beta", (0.5, 0.9, 0.95)),
        [(dict(learning_rate=0.1, ns_coeffs=(1.0, 2.0)), r"ns_coeffs must have shape \(3,\) or \(n, 3\), got shape \(2,\)"),
         (dict(learning_rate=0.1, ns_steps=0), r"ns_steps must be an int >= 1, got 0"),
         (dict(learning_rate=0.1, preconditioning="polar"), r"preconditioning must be one of .*, got 'polar'"),
         (dict(learning_rate=0.1, adam_b2=2.0), r"adam_b2 must be in \[0, 1\), got 2.0")],
        static=("ns_steps",),
        live={"adam_eps_root": 1.0},
    ),
    "sam": Spec(
        sam_pair("gradchain"), sam_pair("optax"),
        lambda: dict(sync_period=2),
        lambda: dict(sync_period=3, reset_state=False, rho=0.1),
        {"learning_rate", "rho"},
        ("rho", (0.01, 0.05, 0.2)),
        [(dict(sync_period=0), r"sync_period must be an int >= 1, got 0"),
         (dict(rho=-0.1), r"rho must be in \[0, inf\], got -0.1"),
         (dict(reset_state=1), r"reset_state must be a bool, got 1")],
        static=("sync_period",),
    ),
}

NAMES = list(SPECS)


# ---------------------------------------------------------------------------------------------
# Running and comparing.


def rel_error(mine, reference) -> float:
    """The harness's measure: max over steps and leaves of |a - b| / max|b| (per leaf)."""
    worst = 0.0
    for a, b in zip(mine, reference):
        for name in b:
            scale = max(float(np.max(np.abs(b[name]))), 1e-30)
            worst = max(worst, float(np.max(np.abs(a[name] - b[name]))) / scale)
    return worst


class Runner:
    """One optimizer on one harness problem, its step compiled once; runs from any state."""

    def __init__(self, tx, problem: str, dtype, obj_fn: bool = False, *, in_float64: bool = False):
        """``in_float64``: the ``dtype`` problem's data (drawn in ``dtype``) with float64
        parameters, so float64 arithmetic (call inside ``float64()``): the exact run that a
        ``dtype`` run rounds."""
        self.tx = tx
        self.params, loss = PROBLEMS[problem](dtype)
        if in_float64:
            self.params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), self.params)
        self.loss = loss
        self.extra = (lambda: {"obj_fn": loss}) if obj_fn else dict

        @jax.jit
        def step(params, state):
            grads = jax.grad(loss)(params)
            updates, state = tx.update(grads, state, params, **self.extra())
            return gc.apply_updates(params, updates), state

        self.step = step

    def __call__(self, steps: int, state=None, params=None):
        params = self.params if params is None else params
        state = self.tx.init(params) if state is None else state
        out = []
        for _ in range(steps):
            params, state = self.step(params, state)
            out.append(jax.tree.map(np.asarray, params))
        return out, params, state


def f64_trajectory(tx, problem: str, spec: Spec):
    """The harness's trajectory (``optax_parity.trajectory``); for Sophia the same loop with
    ``obj_fn=`` (the harness's extra arguments are value/grad/value_fn)."""
    if not spec.obj_fn:
        return trajectory(tx, problem, STEPS)
    return Runner(tx, problem, jnp.float64, obj_fn=True)(STEPS)[0]


_RUNNERS: dict[str, Runner] = {}


def runner32(name: str) -> Runner:
    """The float32 small_tree run of gradchain's optimizer ``name`` (compiled once per session)."""
    if name not in _RUNNERS:
        spec = SPECS[name]
        _RUNNERS[name] = Runner(spec.ours(**spec.small_tree()), "small_tree", jnp.float32, spec.obj_fn)
    return _RUNNERS[name]


def hyper_arguments(spec: Spec, kwargs: dict) -> dict:
    """Every numeric constructor argument (explicit or default) that is a hyperparameter:
    numbers, and the numbers inside ``betas`` / ``init_step`` pairs."""
    out = {}
    for name, param in inspect.signature(spec.ours).parameters.items():
        value = kwargs.get(name, param.default)
        if name in spec.static or value is inspect.Parameter.empty:
            continue
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            out[name] = value
        elif isinstance(value, tuple) and all(isinstance(v, (numbers.Real, str)) for v in value):
            out[name] = value
    return out


PAIRS = ("betas", "init_step")  # tuples of separate hyperparameters (ns_coeffs is one array)


def mapped(name, value, f):
    if name in PAIRS:
        return tuple(v if isinstance(v, str) else f(v) for v in value)
    return f(value)


# ---------------------------------------------------------------------------------------------
# Optax's interface.


@pytest.mark.parametrize("name", NAMES)
def test_signature_is_optaxs(name):
    ours = inspect.signature(getattr(gcc, name))
    theirs = inspect.signature(getattr(optax.contrib, name))
    assert list(ours.parameters) == list(theirs.parameters)
    for p, q in zip(ours.parameters.values(), theirs.parameters.values()):
        assert p.kind == q.kind, (name, p.name)
        if p.name in ("hessian_diagonal_fn", "clip_value_fn"):  # objects: the same behaviour, tested below
            continue
        assert p.default == q.default, (name, p.name, p.default, q.default)


def test_schedule_free_eval_params_and_helpers_exist_under_optaxs_names():
    for name in ("schedule_free_eval_params", "schedule_free", "normalize", "hutchinson_estimator_diag_hessian",
                 "MuonDimensionNumbers", "scale_by_muon", "scale_by_adopt", "scale_by_ademamix", "scale_by_cocob",
                 "scale_by_madgrad"):
        assert callable(getattr(gcc, name)) and hasattr(optax.contrib, name)
    for name in ("schedule_free_eval_params", "schedule_free"):
        assert list(inspect.signature(getattr(gcc, name)).parameters) == list(
            inspect.signature(getattr(optax.contrib, name)).parameters
        )


# ---------------------------------------------------------------------------------------------
# Equal to Optax: float64 to 1e-9 on both problems; float32 to a derived tolerance.


@pytest.mark.parametrize("name", NAMES)
def test_equals_optax_in_float64_and_float32(name):
    spec = SPECS[name]
    with float64():
        for problem in ("least_squares", "small_tree"):
            kwargs = getattr(spec, problem)()
            mine = f64_trajectory(spec.ours(**kwargs), problem, spec)
            reference = f64_trajectory(spec.theirs(**kwargs), problem, spec)
            start = float(PROBLEMS[problem]()[1](PROBLEMS[problem]()[0]))
            end = float(PROBLEMS[problem]()[1](jax.tree.map(jnp.asarray, reference[-1])))
            assert end < 0.95 * start, f"{name} barely moves on {problem}: pick other hyperparameters"
            error = rel_error(mine, reference)
            assert error <= F64_RTOL, f"{name}, {problem}: float64 relative error {error:.3g} > {F64_RTOL:g}"

    # Float32.  The two implementations round differently (operation order; gradchain's
    # hyperparameters are float32 arrays, Optax's Python numbers: 1 - f32(0.9) and f32(1 - 0.9)
    # differ by 2.4e-7 relative), and each run's rounding errors grow through the iteration.
    # D = the drift of Optax's float32 run from the exact run of the same problem (the same
    # float32 data, float64 arithmetic), measured here over the same 60 steps.  gradchain's
    # float32 run is within D' ≈ D of that exact run (the same formula, the same precision), so
    # the two float32 runs are within D + D'.  Tolerance: 10 D (room for D' up to 9 D), and
    # never below 1e-5 (60 steps × ~1.2e-7 per rounding × a few roundings per step, for a D
    # that happens to be tiny).  The small_tree arguments are chosen where float32 is well
    # conditioned (D ≤ 1e-4 over 60 steps for every optimizer; with COCOB's default alpha or
    # Sophia's eps=1e-8 it reaches 0.1-1: chaos, where no float32 comparison means anything).
    kwargs = spec.small_tree()
    ours32 = runner32(name)
    mine32, params32, state32 = ours32(STEPS)
    reference32, params_ref, state_ref = Runner(spec.theirs(**kwargs), "small_tree", jnp.float32, spec.obj_fn)(STEPS)
    with float64():
        exact = Runner(spec.theirs(**spec.small_tree()), "small_tree", jnp.float32, spec.obj_fn, in_float64=True)
        exact_run = exact(STEPS)[0]
    drift = rel_error(reference32, exact_run)
    assert drift <= 2e-4, f"{name}: Optax's own float32 run drifts {drift:.3g}: pick better-conditioned arguments"
    tolerance = max(10 * drift, 1e-5)
    error32 = rel_error(mine32, reference32)
    assert error32 <= tolerance, f"{name}: float32 relative error {error32:.3g} > {tolerance:.3g} (Optax's drift {drift:.3g})"
    if name.startswith("schedule_free"):
        x_ours = gcc.schedule_free_eval_params(state32, params32)
        x_theirs = optax.contrib.schedule_free_eval_params(state_ref, params_ref)
        assert rel_error([jax.tree.map(np.asarray, x_ours)], [jax.tree.map(np.asarray, x_theirs)]) <= tolerance
        # gradchain's eval also reads Optax's state
        x_mixed = gcc.schedule_free_eval_params(state_ref, params_ref)
        assert rel_error([jax.tree.map(np.asarray, x_mixed)], [jax.tree.map(np.asarray, x_theirs)]) <= 1e-6


# ---------------------------------------------------------------------------------------------
# Live hyperparameters: listed, settable (changing the next steps), arrays, schedules, vmap.


def _differs(a, b) -> bool:
    return any(bool(np.any(a[k] != b[k])) for k in a)


@pytest.mark.parametrize("name", NAMES)
def test_every_hyperparameter_is_listed_and_live(name):
    spec = SPECS[name]
    run = runner32(name)
    _, params, state = run(2)
    values = gc.get_hyperparams(state)
    assert set(values) == spec.hypers
    for key, value in values.items():
        new = spec.live.get(key)
        if new is None:
            new = np.where(np.asarray(value) != 0, np.asarray(value) * 0.5, 0.1)
        context = gc.set_hyperparams(state, **spec.live_context.get(key, {}))
        base, _, _ = run(3, context, params)
        changed = gc.set_hyperparams(context, **{key: new})
        np.testing.assert_allclose(np.asarray(gc.get_hyperparams(changed)[key]), new, rtol=1e-6)
        out, _, _ = run(3, changed, params)  # the same compiled step: no recompile
        assert _differs(out[-1], base[-1]), f"{name}: setting {key} to {new} changed nothing"


@pytest.mark.parametrize("name", NAMES)
def test_hyperparameters_accept_arrays(name):
    spec = SPECS[name]
    kwargs = spec.small_tree()
    hypers = hyper_arguments(spec, kwargs)
    assert hypers, name
    run = runner32(name)
    reference, _, _ = run(5)
    # the state of the optimizer built with arrays, through the same program (an update reads
    # its hyperparameters from the state only: the liveness test checks that)
    as_arrays = spec.ours(**{**kwargs, **{k: mapped(k, v, jnp.asarray) for k, v in hypers.items()}})
    with_arrays, _, _ = run(5, as_arrays.init(run.params))
    assert rel_error(with_arrays, reference) <= 1e-6


@pytest.mark.parametrize("name", NAMES)
def test_vmap_population_with_schedules_equals_separate_runs(name):
    """A population over one hyperparameter (``jax.vmap`` over an array of its values, through
    construction, init and update), every other hyperparameter a constant schedule, equals
    separate runs of the optimizer built with plain numbers: traced values and schedules are
    accepted and mean the same (one program for both checks)."""
    spec = SPECS[name]
    key, values = spec.vary
    run = runner32(name)
    kwargs = spec.small_tree()
    constant = lambda x: (lambda t: jnp.asarray(x))
    scheduled = {k: mapped(k, v, constant) for k, v in hyper_arguments(spec, kwargs).items() if k != key}
    assert scheduled, name
    steps = 8

    def train(value):
        tx = spec.ours(**{**kwargs, **scheduled, key: value})
        params = run.params

        def body(carry, _):
            p, s = carry
            grads = jax.grad(run.loss)(p)
            updates, s = tx.update(grads, s, p, **run.extra())
            return (gc.apply_updates(p, updates), s), None

        (params, _), _ = jax.lax.scan(body, (params, tx.init(params)), None, length=steps)
        return params

    population = jax.jit(jax.vmap(train))(jnp.asarray(values, jnp.float32))
    for i, value in enumerate(values):
        single, _, _ = run(steps, spec.ours(**{**kwargs, key: value}).init(run.params))
        member = jax.tree.map(lambda x: np.asarray(x[i]), population)
        assert rel_error([member], [single[-1]]) <= 1e-5, (name, key, value)


# ---------------------------------------------------------------------------------------------
# Readable states: Optax's field names, tree_map_params.


def _optax_fields(state) -> set[str]:
    fields = set()
    for node in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, tuple) and hasattr(x, "_fields")):
        if isinstance(node, tuple) and hasattr(node, "_fields"):
            fields |= set(node._fields)
            fields |= _optax_fields(tuple(getattr(node, f) for f in node._fields))
    return fields


# Optax fields with no counterpart: muon's partition keeps its branches in
# PartitionState.inner_states, gradchain's masks in MaskedState.inner_state.
NO_COUNTERPART = {"muon": {"inner_states"}}


@pytest.mark.parametrize("name", NAMES)
def test_state_has_optaxs_field_names(name):
    spec = SPECS[name]
    run = runner32(name)
    _, _, state = run(1)
    theirs = spec.theirs(**spec.small_tree()).init(run.params)
    fields = _optax_fields(theirs) - NO_COUNTERPART.get(name, set())
    assert fields, name
    for field in sorted(fields):
        try:
            found = gc.tree_get(state, field)
        except KeyError:  # several fields of that name (muon's two `mu`s, as in Optax's state)
            found = [v for _, v in _matches(state, field)]
        assert found is not None and not (isinstance(found, list) and not found), (
            f"{name}: gc.tree_get(state, {field!r}) finds nothing")


@pytest.mark.parametrize("name", NAMES)
def test_optax_tree_map_params_works_on_the_state(name):
    run = runner32(name)
    _, _, state = run(1)
    tx = run.tx
    specs = optax.tree_utils.tree_map_params(tx, lambda p: "spec", state, transform_non_params=lambda _: None)
    assert jax.tree.structure(gc.tree_map_params(tx, lambda p: p * 0, state)) == jax.tree.structure(state)
    param_like = jax.tree.structure(run.params)
    mapped_trees = [
        t for t in jax.tree.leaves(specs, is_leaf=lambda x: bool(isinstance(x, dict) and x and set(x) <= set(run.params)))
        if isinstance(t, dict)
    ]
    assert mapped_trees, f"{name}: no parameter-shaped buffer was mapped"
    for t in mapped_trees:
        leaves = jax.tree.leaves(t)
        assert leaves and all(v == "spec" for v in leaves)
    full = [t for t in mapped_trees if jax.tree.structure(t) == param_like]
    assert full or name == "muon", name  # muon's buffers are masked: each branch holds its leaves
    for _, hyperparams in _matches(specs, "hyperparams"):
        assert all(v is None for v in hyperparams.values())


def test_tree_map_params_maps_a_packed_contrib_state():
    params = {f"b{i}": jnp.ones(3) for i in range(40)}
    tx = gcc.prodigy()
    state = tx.init(params)
    for tree_map_params in (gc.tree_map_params, optax.tree_utils.tree_map_params):
        zeroed = tree_map_params(tx, jnp.zeros_like, state)
        assert isinstance(gc.tree_get(zeroed, "params0"), gc.Packed)
        assert all(float(jnp.abs(x).max()) == 0 for x in jax.tree.leaves(gc.tree_get(zeroed, "params0")))
        assert jax.tree.structure(zeroed) == jax.tree.structure(state)


# ---------------------------------------------------------------------------------------------
# Construction-time checks.


@pytest.mark.parametrize("name, case", [(n, i) for n in NAMES for i in range(len(SPECS[n].bad))])
def test_bad_hyperparameters_are_rejected_at_construction(name, case):
    kwargs, message = SPECS[name].bad[case]
    with pytest.raises((ValueError, TypeError), match=message):
        SPECS[name].ours(**kwargs)


def test_bad_structural_arguments_are_rejected():
    with pytest.raises(TypeError, match="optimizer must be a gradient transformation"):
        gcc.sam(0.1, gc.sgd(0.1))
    with pytest.raises(ValueError, match="ns_coeffs has 5 rows, more than ns_steps=3"):
        gcc.muon(0.1, ns_coeffs="dion", ns_steps=3)
    with pytest.raises(ValueError, match="ns_coeffs must be one of 'standard', 'dion', got 'muon'"):
        gcc.muon(0.1, ns_coeffs="muon")
    with pytest.raises(TypeError, match="nesterov must be a bool, got 'yes'"):
        gcc.adopt(0.1, nesterov="yes")
    with pytest.raises(ValueError, match=r"init_step must be a pair \(kind, value\)"):
        gcc.dog(init_step=1e-6)
    with pytest.raises(TypeError, match="base_optimizer must be a gradient transformation"):
        gcc.schedule_free(None, 0.1)


# ---------------------------------------------------------------------------------------------
# Calling conventions beyond the harness: Sophia's obj_fn, SAM's opaque mode, eval params.


def test_sophia_without_obj_fn_says_what_it_needs():
    tx = gcc.sophia(0.1)
    params = {"w": jnp.ones(3)}
    with pytest.raises(ValueError, match="obj_fn"):
        tx.update(params, tx.init(params), params)


def test_sam_opaque_mode_equals_optax():
    params, loss = PROBLEMS["small_tree"](jnp.float32)
    grad_fn = lambda p, i: jax.grad(loss)(p)
    results = []
    for lib in ("gradchain", "optax"):
        if lib == "optax":
            tx = optax.contrib.sam(optax.adam(0.05), optax.chain(optax.contrib.normalize(), optax.sgd(0.05)),
                                   sync_period=3, opaque_mode=True)
        else:
            tx = gcc.sam(gc.adam(0.05, eps=1e-8), gc.chain(gcc.normalize(), gc.sgd(0.05)), sync_period=3,
                         opaque_mode=True)

        @jax.jit
        def step(p, s, tx=tx):
            updates, s = tx.update(jax.grad(loss)(p), s, p, grad_fn=grad_fn)
            return gc.apply_updates(p, updates), s

        p, s = params, tx.init(params)
        for _ in range(20):
            p, s = step(p, s)
        results.append(jax.tree.map(np.asarray, p))
    assert rel_error([results[0]], [results[1]]) <= 1e-5
    with pytest.raises(ValueError, match="grad_fn"):
        tx = gcc.sam(gc.sgd(0.1), gc.sgd(0.1), opaque_mode=True)
        tx.update(params, tx.init(params), params)


def test_sam_keeps_a_set_adversarial_rate_across_syncs():
    params = {"w": jnp.array([1.0, -2.0])}
    adv = gc.chain(gcc.normalize(), gc.scale_by_learning_rate(0.05, name="rho"))
    tx = gcc.sam(gc.sgd(0.1), adv, sync_period=2)
    state = gc.set_hyperparams(tx.init(params), rho=0.3)
    for _ in range(4):
        _, state = tx.update({"w": jnp.array([0.5, 0.5])}, state, params)
    assert float(gc.get_hyperparams(state)["rho"]) == pytest.approx(0.3)
    assert int(state.steps_since_sync) == 0


def test_muon_variants_equal_optax():
    """Preconditionings, adaptive scaling, consistent RMS, the Dion coefficients and dimension
    numbers that make the 3-d kernel a batch of matrices."""
    with float64():
        kw = dict(learning_rate=0.02, ns_coeffs="dion", preconditioning="aol", adaptive=True, nesterov=False,
                  consistent_rms=0.2, adam_learning_rate=0.01)
        ours = gcc.muon(**kw, muon_weight_dimension_numbers={
            "w": gcc.MuonDimensionNumbers(), "b": None, "k": gcc.MuonDimensionNumbers((0, 1), 2)})
        theirs = optax.contrib.muon(**kw, muon_weight_dimension_numbers={
            "w": optax.contrib.MuonDimensionNumbers(), "b": None, "k": optax.contrib.MuonDimensionNumbers((0, 1), 2)})
        error = rel_error(trajectory(ours, "small_tree"), trajectory(theirs, "small_tree"))
        assert error <= F64_RTOL, error
        state = ours.init(PROBLEMS["small_tree"]()[0])
        assert {"adam_learning_rate", "consistent_rms", "ns_coeffs"} <= set(gc.get_hyperparams(state))


def test_orthogonalize_via_newton_schulz_equals_optax():
    from optax.contrib import _muon

    x = jax.random.normal(jax.random.PRNGKey(3), (5, 3))
    y = jax.random.normal(jax.random.PRNGKey(4), (2, 4, 3))
    dims = gcc.MuonDimensionNumbers(reduction_axis=1, output_axis=2)

    @jax.jit
    def both(x, y):
        out = []
        c = jnp.asarray((3.4445, -4.7750, 2.0315))
        for pre in ("spectral", "schatten"):  # frobenius: every muon test; aol: test_muon_variants
            out.append((gcc.orthogonalize_via_newton_schulz(x, c, 5, pre),
                        _muon.orthogonalize_via_newton_schulz(x, c, 5, pre)))
        out.append((gcc.orthogonalize_via_newton_schulz(y, c, 4, "frobenius", dimension_numbers=dims),
                    _muon.orthogonalize_via_newton_schulz(y, c, 4, "frobenius", dimension_numbers=_muon.MuonDimensionNumbers(1, 2))))
        return out

    for ours, theirs in both(x, y):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)


def test_muon_sets_the_shared_learning_rate_on_both_branches():
    """Without ``adam_learning_rate`` AdamW's rate *is* ``learning_rate`` (as in Optax): one
    ``set_hyperparams`` stops both branches (the decays are multiplied by the rate too)."""
    run = runner32("muon")
    state = gc.set_hyperparams(run.tx.init(run.params), learning_rate=0.0)
    (after,), _, _ = run(1, state)
    for key, value in run.params.items():
        np.testing.assert_array_equal(after[key], np.asarray(value))


@pytest.mark.parametrize("name", ["schedule_free_sgd", "dog"])
def test_packed_many_leaf_tree_equals_optax(name):
    """Packed (33 small leaves: multi_tensor packs them into one buffer) equals Optax per leaf;
    schedule-free's eval params are unpacked from the packed ``z``.  (DoG with its third kind
    of first step, a learning rate.)"""
    params = {f"p{i}": jnp.linspace(-1.0, 1.0, 3) * (i + 1) / 33 for i in range(33)}
    loss = lambda p: sum(jnp.sum((v - 0.3) ** 2) * (1 + i % 3) for i, v in enumerate(jax.tree.leaves(p)))
    kwargs = {**SPECS[name].small_tree(), **({"init_step": ("learning_rate", 1e-2)} if name == "dog" else {})}
    out = []
    for tx in (SPECS[name].ours(**kwargs), SPECS[name].theirs(**kwargs)):
        @jax.jit
        def step(p, s, tx=tx):
            updates, s = tx.update(jax.grad(loss)(p), s, p)
            return gc.apply_updates(p, updates), s

        p, s = params, tx.init(params)
        for _ in range(10):
            p, s = step(p, s)
        out.append((jax.tree.map(np.asarray, p), s))
    (mine, state), (theirs, optax_state) = out
    assert state.slots is not None  # packed
    assert rel_error([mine], [theirs]) <= 1e-5
    if name == "schedule_free_sgd":
        x_ours = gcc.schedule_free_eval_params(state, mine)
        x_theirs = optax.contrib.schedule_free_eval_params(optax_state, theirs)
        assert rel_error([jax.tree.map(np.asarray, x_ours)], [jax.tree.map(np.asarray, x_theirs)]) <= 1e-5


def test_repr_is_short():
    state = gcc.prodigy().init({"w": jnp.zeros((3, 2))})
    text = repr(state)
    assert "f32[3,2]" in text and len(text) < 800, text
