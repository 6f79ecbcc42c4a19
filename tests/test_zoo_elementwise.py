"""gradchain.zoo.elementwise: Optax's element-wise optimizers, equal to Optax step for step.

Every optimizer: Optax's signature; float64 parity to 1e-9 over 60 steps on both harness problems
(and variants of its flags); float32 parity to a tolerance derived from Optax's own float32
rounding (below); a population over one hyperparameter under ``vmap`` equals separate runs; a
schedule and ``set_hyperparams`` reach the step; buffers under Optax's names; bad
hyperparameters refused at construction; packed (multi_tensor) on a 40-leaf tree and still
Optax's numbers there.
"""

import functools
import inspect
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optax_parity import PROBLEMS, assert_parity, float64

import gradchain as gc
from gradchain.multi_tensor import MultiTensorState, Packed

KEY = jax.random.key(3)

# Keyword arguments given to both sides: learning rates where each optimizer makes progress on
# both problems within 60 steps without blowing up (Optax in float64: least squares 3.79 -> 2.19
# (rprop) ... 3.50 (radam), the tree's loss 0.621 -> 0.044 (rprop) ... 0.388 (noisy_sgd)).
CASES = {
    "adabelief": dict(learning_rate=0.05),
    "adadelta": dict(learning_rate=1.0, rho=0.9, eps=1e-3, weight_decay=0.01),
    "adamax": dict(learning_rate=0.05),
    "adamaxw": dict(learning_rate=0.05, weight_decay=0.01),
    "adan": dict(learning_rate=0.05, weight_decay=0.01),
    "amsgrad": dict(learning_rate=0.05),
    "lion": dict(learning_rate=0.01, weight_decay=0.01),
    "nadamw": dict(learning_rate=0.05, weight_decay=0.01),
    "noisy_sgd": dict(learning_rate=0.05, eta=0.01, key=KEY),
    "optimistic_gradient_descent": dict(learning_rate=0.05, alpha=1.0, beta=0.5),
    "optimistic_adam_v2": dict(learning_rate=0.02, alpha=1.0, beta=0.5),
    "polyak_sgd": dict(max_learning_rate=0.5, f_min=0.0),
    "radam": dict(learning_rate=0.05),
    "rprop": dict(learning_rate=0.01),
    "sign_sgd": dict(learning_rate=0.01),
    "signum": dict(learning_rate=0.01),
    "yogi": dict(learning_rate=0.05),
}
NAMES = sorted(CASES)
NEEDS_VALUE = {"polyak_sgd"}  # Polyak's step size reads the loss: update(..., value=loss)


def build(name, library=gc, /, **changes):
    return getattr(library, name)(**{**CASES[name], **changes})


# --- Optax's signatures --------------------------------------------------------------------------

EXTENSIONS = {"rprop": {"lagged"}}  # gradchain's keyword-only additions


@pytest.mark.parametrize("name", NAMES)
def test_signature_is_optaxs(name):
    ours = inspect.signature(getattr(gc, name)).parameters
    theirs = inspect.signature(getattr(optax, name)).parameters
    shared = [p for p in ours if p not in EXTENSIONS.get(name, set())]
    assert shared == list(theirs), "same names in the same order"
    for p in shared:
        assert ours[p].kind == theirs[p].kind, p
        assert ours[p].default == theirs[p].default, p
    assert all(ours[p].kind is inspect.Parameter.KEYWORD_ONLY for p in EXTENSIONS.get(name, set()))


# --- float64: equal to Optax to 1e-9 over 60 steps ------------------------------------------------


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
@pytest.mark.parametrize("name", NAMES)
def test_float64_parity(name, problem):
    with float64():
        assert_parity(build(name), build(name, optax), problem, extra_args=name in NEEDS_VALUE)


def _decaying(t):
    return 0.05 * 0.97**t  # a learning-rate schedule both libraries evaluate at their count


VARIANTS = [
    ("adabelief", dict(nesterov=True)),
    ("amsgrad", dict(eps_root=1e-8, bias_correction_mu=False, bias_correction_nu=False)),
    ("amsgrad", dict(learning_rate=_decaying)),
    ("lion", dict(b1=0.5, b2=0.9, weight_decay=0.0)),
    ("nadamw", dict(nesterov=False, eps_root=1e-10)),
    ("noisy_sgd", dict(key=7, gamma=1.0)),
    ("optimistic_adam_v2", dict(nesterov=False, b2=0.99)),
    ("polyak_sgd", dict(variant="sps+", f_min=0.3, scaling=0.5, eps=1e-3)),
    ("radam", dict(nesterov=True, threshold=4.5, b2=0.99)),
    ("rprop", dict(learning_rate=0.05, eta_minus=0.3, eta_plus=1.5, max_step_size=0.08)),
    ("signum", dict(beta=0.5, learning_rate=_decaying)),
    ("yogi", dict(b2=0.9, eps=1e-4)),
]


@pytest.mark.parametrize("name, changes", VARIANTS, ids=[f"{n}-{'-'.join(c)}" for n, c in VARIANTS])
def test_float64_parity_of_the_variants(name, changes):
    with float64():
        assert_parity(build(name, **changes), build(name, optax, **changes), "small_tree",
                      extra_args=name in NEEDS_VALUE)


# --- float32: Optax's own rounding drift × 10 -----------------------------------------------------

# Measured: max over the 60 steps of |Optax float32 - Optax float64| / leaf scale, both runs on the
# same float32 problem data (the float64 run upcasts it), for the CASES above (least_squares,
# small_tree); noisy_sgd with eta=0, because float32 and float64 draw different normals while two
# float32 runs with one key draw the same ones, so only its arithmetic can differ.  The Adam-like
# optimizers drift ~1e-5 in Optax because it takes 1-β from the Python float and β^t from the
# float32 β (gradchain uses the float32 β for both and drifts 3-30× less); in radam's ρ_t, a
# difference of two numbers near 2/(1-β₂), that inconsistency grows to 1e-3.  gradchain vs Optax
# is within the sum of the two drifts, so the tolerance is 10× Optax's.
OPTAX_FLOAT32_DRIFT = {
    "adabelief": (6e-06, 1.2e-05),
    "adadelta": (2.1e-07, 4.1e-07),
    "adamax": (2.2e-07, 7e-07),
    "adamaxw": (2.7e-07, 1e-06),
    "adan": (5e-07, 8.3e-07),
    "amsgrad": (5.3e-06, 1e-05),
    "lion": (1.4e-07, 2.8e-07),
    "nadamw": (7.1e-06, 1.2e-05),
    "noisy_sgd": (3.7e-07, 2.2e-07),
    "optimistic_gradient_descent": (2.3e-07, 5.1e-07),
    "optimistic_adam_v2": (4.7e-06, 1.2e-05),
    "polyak_sgd": (2e-07, 1.9e-07),
    "radam": (0.00029, 0.00098),
    "rprop": (1.1e-06, 1e-06),
    "sign_sgd": (4.7e-07, 5.2e-07),
    "signum": (4.5e-07, 5.2e-07),
    "yogi": (5e-06, 1.1e-05),
}


@pytest.mark.parametrize("name", NAMES)
def test_float32_parity(name):
    # least_squares (condition 1e3) amplifies rounding most; the tree's drift is in the table too
    drift = OPTAX_FLOAT32_DRIFT[name][0]
    assert_parity(build(name), build(name, optax), "least_squares", rtol=10 * drift, dtype=jnp.float32,
                  extra_args=name in NEEDS_VALUE)


# --- live hyperparameters -------------------------------------------------------------------------

# One hyperparameter per optimizer (beyond the learning rate where there is one to show) and
# three values of it: a population of three is one vmapped program.
POPULATION = {
    "adabelief": ("b1", [0.8, 0.9, 0.95]),
    "adadelta": ("rho", [0.8, 0.9, 0.95]),
    "adamax": ("b2", [0.9, 0.99, 0.999]),
    "adamaxw": ("weight_decay", [0.0, 0.01, 0.3]),
    "adan": ("b3", [0.9, 0.99, 0.999]),
    "amsgrad": ("b2", [0.9, 0.99, 0.999]),
    "lion": ("weight_decay", [0.0, 0.1, 1.0]),
    "nadamw": ("learning_rate", [0.01, 0.05, 0.1]),
    "noisy_sgd": ("eta", [0.0, 0.01, 0.1]),
    "optimistic_gradient_descent": ("beta", [0.0, 0.5, 1.0]),
    "optimistic_adam_v2": ("alpha", [0.5, 1.0, 2.0]),
    "polyak_sgd": ("max_learning_rate", [0.05, 0.2, 0.5]),
    "radam": ("threshold", [4.0, 5.0, 8.0]),
    "rprop": ("eta_plus", [1.1, 1.2, 1.5]),
    "sign_sgd": ("learning_rate", [0.001, 0.01, 0.1]),
    "signum": ("learning_rate", [0.001, 0.01, 0.1]),
    "yogi": ("eps", [1e-4, 1e-3, 1e-2]),
}


@functools.cache
def problem(name, dtype):
    """``(params, jitted value_and_grad)``: built and compiled once for the whole file (the eager
    steps below then cost a few small kernels each, not a retrace of the loss)."""
    params, loss = (many_leaves if name == "many_leaves" else PROBLEMS[name])(dtype)
    return params, jax.jit(jax.value_and_grad(loss))


def _step(tx, value_and_grad):
    def step(params, state):
        value, grads = value_and_grad(params)
        updates, state = tx.update(grads, state, params, value=value)
        return gc.apply_updates(params, updates), state

    return step


def _optax_step(tx, value_and_grad, name):
    def step(params, state):
        value, grads = value_and_grad(params)
        updates, state = tx.update(grads, state, params, **({"value": value} if name in NEEDS_VALUE else {}))
        return optax.apply_updates(params, updates), state

    return step


def _max_rel(a, b):
    return max(
        float(jnp.max(jnp.abs(x - y))) / max(float(jnp.max(jnp.abs(y))), 1e-30)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


@pytest.mark.parametrize("name", NAMES)
def test_population_under_vmap_equals_separate_runs(name):
    hp, values = POPULATION[name]
    with float64():
        params, grad = problem("least_squares", jnp.float64)

        def run(value):  # init and update under vmap: the hyperparameter is a traced array
            tx = build(name, **{hp: value})
            step = _step(tx, grad)
            (p, _), _ = jax.lax.scan(lambda c, _: (step(*c), None), (params, tx.init(params)), None, length=10)
            return p

        together = jax.jit(jax.vmap(run))(jnp.asarray(values))
        for i, value in enumerate(values):  # each run on its own, eagerly, from a Python number
            tx = build(name, **{hp: value})
            p, state = params, tx.init(params)
            for _ in range(10):
                p, state = _step(tx, grad)(p, state)
            assert _max_rel(jax.tree.map(lambda x: x[i], together), p) <= 1e-10, (hp, value)
        assert _max_rel(jax.tree.map(lambda x: x[0], together), jax.tree.map(lambda x: x[-1], together)) > 1e-6


@pytest.mark.parametrize("name", NAMES)
def test_a_schedule_is_the_value_set_before_each_step(name):
    hp, values = POPULATION[name]
    lo, hi = values[0], values[-1]
    schedule = lambda t: lo + (hi - lo) * jnp.minimum(t, 4) / 4
    with float64():
        params, grad = problem("small_tree", jnp.float64)
        scheduled = build(name, **{hp: schedule})
        fixed = build(name, **{hp: jnp.asarray(lo)})  # an array works as a constant
        p, s = params, scheduled.init(params)
        q, r = params, fixed.init(params)
        for t in range(5):
            assert float(gc.get_hyperparams(s)[hp]) == pytest.approx(float(schedule(t)), rel=1e-12)
            p, s = _step(scheduled, grad)(p, s)
            q, r = _step(fixed, grad)(q, gc.set_hyperparams(r, **{hp: schedule(t)}))
        assert _max_rel(p, q) <= 1e-12


@pytest.mark.parametrize("name", ["adan", "noisy_sgd", "polyak_sgd", "rprop"])
def test_set_hyperparams_changes_the_step_without_a_recompile(name):
    hp, values = POPULATION[name]
    params, grad = problem("least_squares", jnp.float32)
    traces = []

    def step(params, state):
        traces.append(1)
        return _step(tx, grad)(params, state)

    tx = build(name, **{hp: values[0]})
    jitted = jax.jit(step)
    for value in values:  # three steps from a state set to `value` == three steps of gc.<name>(value)
        p, s = params, gc.set_hyperparams(tx.init(params), **{hp: value})
        other = build(name, **{hp: value})
        q, r = params, other.init(params)
        for _ in range(3):
            p, s = jitted(p, s)
            q, r = _step(other, grad)(q, r)
        assert _max_rel(p, q) <= 1e-6, value
    assert len(traces) == 1


NON_NUMERIC = {"mu_dtype", "accumulator_dtype", "mask", "weight_decay_mask", "key", "seed", "nesterov",
               "variant", "bias_correction_mu", "bias_correction_nu", "lagged"}


@pytest.mark.parametrize("name", NAMES)
def test_every_numeric_argument_is_a_hyperparameter_in_the_state(name):
    params, _ = PROBLEMS["small_tree"](jnp.float32)
    names = set(gc.get_hyperparams(build(name).init(params)))
    expected = set(inspect.signature(getattr(optax, name)).parameters) - NON_NUMERIC
    assert names == expected | ({"eps_root"} if name == "yogi" else set())  # yogi's piece keeps eps_root = 0


# --- readable state: Optax's buffer names ---------------------------------------------------------

FIELDS = {
    "adabelief": ["mu", "nu"],
    "adadelta": ["e_g", "e_x"],
    "adamax": ["mu", "nu"],
    "adamaxw": ["mu", "nu"],
    "adan": ["m", "v", "n", "g"],
    "amsgrad": ["mu", "nu", "nu_max"],
    "lion": ["mu"],
    "nadamw": ["mu", "nu"],
    "noisy_sgd": [],  # rng_key: checked below
    "optimistic_gradient_descent": ["previous_gradient"],
    "optimistic_adam_v2": ["mu", "nu", "previous_gradient"],
    "polyak_sgd": [],
    "radam": ["mu", "nu"],
    "rprop": ["step_sizes", "prev_updates"],
    "sign_sgd": [],
    "signum": ["ema"],
    "yogi": ["mu", "nu"],
}


@pytest.mark.parametrize("name", NAMES)
def test_buffers_have_optaxs_names_and_values(name):
    with float64():  # in float32 Optax's 1-β (from the Python float) shows in nu at 1e-5
        params, grad = problem("small_tree", jnp.float64)
        ours, theirs = build(name), build(name, optax)
        p, s = params, ours.init(params)
        q, r = params, theirs.init(params)
        for _ in range(3):
            p, s = _step(ours, grad)(p, s)
            q, r = _optax_step(theirs, grad, name)(q, r)
        for field in FIELDS[name]:
            mine = gc.tree_get(s, field)
            assert jax.tree.structure(mine) == jax.tree.structure(params), field
            assert _max_rel(mine, optax.tree_utils.tree_get(r, field)) <= 1e-12, field
        if name == "noisy_sgd":
            np.testing.assert_array_equal(jax.random.key_data(gc.tree_get(s, "rng_key")),
                                          jax.random.key_data(optax.tree_utils.tree_get(r, "rng_key")))
        mapped = optax.tree_utils.tree_map_params(ours, lambda _: "P", s)
        for field in FIELDS[name]:
            assert jax.tree.leaves(gc.tree_get(mapped, field)) == ["P"] * len(jax.tree.leaves(params))
        assert all(f"{field}=" in repr(s) for field in FIELDS[name]) and len(repr(s)) < 1200


def many_leaves(dtype):
    """40 small leaves (packed by the optimizers' multi_tensor) of five shapes."""
    shapes = [(3,), (2, 2), (), (2, 3, 1), (5,)]
    keys = jax.random.split(jax.random.PRNGKey(4), 40)
    params = {f"p{i:02d}": jax.random.normal(k, shapes[i % 5], dtype) for i, k in enumerate(keys)}
    scales = {name: 0.5 + i / 20 for i, name in enumerate(params)}

    def loss(p):
        return sum(scales[n] * jnp.sum(0.5 * x**2 + 0.1 * jnp.cos(3 * x)) for n, x in p.items()) + 1.0

    return params, loss


def _nonempty(p):
    return jax.tree.map(lambda x: x.ndim >= 2, p)  # decay on the matrices and kernels only


MANY = [(name, {}) for name in NAMES] + [
    ("adadelta", dict(weight_decay_mask=_nonempty)),
    ("adamaxw", dict(mask=_nonempty)),
    ("adan", dict(mask=_nonempty)),
    ("lion", dict(mask=_nonempty)),
    ("nadamw", dict(mask=_nonempty)),
]


@pytest.mark.parametrize("name, changes", MANY, ids=[n + ("-mask" if c else "") for n, c in MANY])
def test_many_leaves_are_packed_and_still_optaxs_numbers(name, changes):
    with float64():
        params, grad = problem("many_leaves", jnp.float64)
        ours, theirs = build(name, **changes), build(name, optax, **changes)
        p, s = params, ours.init(params)
        q, r = params, theirs.init(params)
        for _ in range(6):  # eager updates: cheaper than compiling two 40-leaf programs per case
            p, s = _step(ours, grad)(p, s)
            q, r = _optax_step(theirs, grad, name)(q, r)
        assert _max_rel(p, q) <= 1e-9
    packed = [node for node in jax.tree.leaves(s, is_leaf=lambda x: isinstance(x, MultiTensorState))
              if isinstance(node, MultiTensorState) and node.slots is not None]
    if name == "noisy_sgd":  # per leaf, so that each leaf draws Optax's noise
        assert not packed
        return
    assert packed
    for field in FIELDS[name]:
        assert isinstance(gc.tree_get(s, field), Packed), field
    for field in FIELDS[name]:  # tree_map_params maps the packed buffers (Optax's and ours)
        for tree_map_params in (gc.tree_map_params, optax.tree_utils.tree_map_params):
            mapped = gc.tree_get(tree_map_params(ours, jnp.zeros_like, s), field)
            assert isinstance(mapped, Packed) and not any(jnp.any(x) for x in jax.tree.leaves(mapped)), field


# --- bad hyperparameters: refused at construction, naming the argument and the value --------------

BAD = [
    ("adabelief", {"learning_rate": -0.1}, "learning_rate"),
    ("adabelief", {"b1": 1.0}, "b1"),
    ("adabelief", {"eps": -1e-8}, "eps"),
    ("adadelta", {"rho": 1.5}, "rho"),
    ("adadelta", {"eps": 0.0}, "eps"),
    ("adadelta", {"weight_decay": -1.0}, "weight_decay"),
    ("adamax", {"b2": -0.1}, "b2"),
    ("adamaxw", {"weight_decay": float("nan")}, "weight_decay"),
    ("adan", {"b3": 1.0}, "b3"),
    ("adan", {"eps_root": -1.0}, "eps_root"),
    ("amsgrad", {"bias_correction_mu": 1}, "bias_correction_mu"),
    ("amsgrad", {"mu_dtype": "not a dtype"}, "mu_dtype"),
    ("lion", {"b1": 1.5}, "b1"),
    ("lion", {"b2": 1.0}, "b2"),
    ("nadamw", {"nesterov": "yes"}, "nesterov"),
    ("noisy_sgd", {"eta": -0.01}, "eta"),
    ("noisy_sgd", {"gamma": -1.0}, "gamma"),
    ("noisy_sgd", {"key": "seed"}, "key"),
    ("optimistic_gradient_descent", {"beta": -1.0}, "beta"),
    ("optimistic_adam_v2", {"alpha": -1.0}, "alpha"),
    ("polyak_sgd", {"variant": "sps++"}, "variant"),
    ("polyak_sgd", {"max_learning_rate": -1.0}, "max_learning_rate"),
    ("polyak_sgd", {"scaling": -1.0}, "scaling"),
    ("radam", {"threshold": 3.0}, "threshold"),
    ("rprop", {"eta_minus": 0.0}, "eta_minus"),
    ("rprop", {"eta_plus": 0.9}, "eta_plus"),
    ("rprop", {"min_step_size": 1.0, "max_step_size": 0.1}, "min_step_size"),
    ("sign_sgd", {"learning_rate": -1.0}, "learning_rate"),
    ("signum", {"beta": 1.0}, "beta"),
    ("yogi", {"eps": -1.0}, "eps"),
    ("yogi", {"learning_rate": lambda t: -0.1 + 0 * t}, "learning_rate"),  # a schedule, probed at 0
]


@pytest.mark.parametrize("name, changes, argument", BAD, ids=[f"{n}-{a}" for n, _, a in BAD])
def test_bad_hyperparameters_are_refused_at_construction(name, changes, argument):
    with pytest.raises((ValueError, TypeError)) as info:
        build(name, **changes)
    message = str(info.value)
    assert argument in message
    value = changes[argument]
    if not callable(value):
        assert repr(value) in message or str(value) in message, message


# --- what is specific to one optimizer ------------------------------------------------------------


def test_adadelta_without_a_learning_rate_descends_where_optaxs_ascends():
    params, grad = problem("least_squares", jnp.float32)
    grads = grad(params)[1]
    ours, _ = gc.adadelta().update(grads, gc.adadelta().init(params), params)
    one, _ = optax.adadelta(1.0).update(grads, optax.adadelta(1.0).init(params), params)
    none, _ = optax.adadelta().update(grads, optax.adadelta().init(params), params)
    np.testing.assert_allclose(ours["x"], one["x"], rtol=1e-6)
    np.testing.assert_allclose(ours["x"], -none["x"], rtol=1e-6)  # Optax's None adds +Δ: ascent
    assert float(jnp.vdot(ours["x"], grads["x"])) < 0


def test_rprop_lagged_false_is_torchs_rprop():
    """A NumPy transcription of ``torch.optim.Rprop`` (its ``_single_tensor_rprop``)."""
    lr, eta_minus, eta_plus, smin, smax = 0.05, 0.5, 1.2, 1e-6, 50.0
    with float64():
        params, value_and_grad = problem("least_squares", jnp.float64)
        grad = lambda p: value_and_grad(p)[1]
        x = np.asarray(params["x"])
        prev, size = np.zeros_like(x), np.full_like(x, lr)
        expected = []
        for _ in range(60):
            g = np.asarray(grad({"x": jnp.asarray(x)})["x"])
            sign = np.sign(g * prev)
            size = np.clip(size * np.where(sign > 0, eta_plus, np.where(sign < 0, eta_minus, 1.0)), smin, smax)
            g = np.where(sign < 0, 0.0, g)
            x = x - np.sign(g) * size
            prev = g
            expected.append(x)
        tx = gc.rprop(lr, eta_minus, eta_plus, smin, smax, lagged=False)
        p, s = params, tx.init(params)
        step = jax.jit(_step(tx, value_and_grad))
        for t in range(60):
            p, s = step(p, s)
            np.testing.assert_allclose(p["x"], expected[t], rtol=1e-12, atol=1e-12)
        lagged = gc.rprop(lr)
        first, _ = lagged.update(grad(params), lagged.init(params), params)
        assert not np.any(np.asarray(first["x"]))  # Optax's form: the first update is zero


def test_noisy_sgd_keys_follow_optax():
    params = {"a": jnp.ones(3), "b": jnp.ones((2, 2))}
    grads = jax.tree.map(jnp.ones_like, params)

    def first(tx):
        return tx.update(grads, tx.init(params), params)[0]

    reference = first(optax.noisy_sgd(0.1, key=jax.random.key(5)))
    for key in (5, jax.random.key(5), jax.random.PRNGKey(5)):  # a legacy key too (Optax refuses it)
        assert _max_rel(first(gc.noisy_sgd(0.1, key=key)), reference) == 0.0
    with pytest.warns(DeprecationWarning, match="seed"):
        assert _max_rel(first(gc.noisy_sgd(0.1, seed=5)), reference) == 0.0
    with pytest.warns(UserWarning, match="key 0"):
        zero = first(gc.noisy_sgd(0.1))
    assert _max_rel(zero, first(optax.noisy_sgd(0.1, key=0))) == 0.0
    with pytest.raises(ValueError, match="only one of seed or key"):
        gc.noisy_sgd(0.1, key=1, seed=1)
    key = jax.random.key(5)
    tx = gc.noisy_sgd(0.1, key=key)
    first_key, second_key = (gc.tree_get(tx.init(params), "rng_key") for _ in range(2))
    assert first_key is not second_key and first_key is not key  # a state owns its key (donation)


def test_polyak_sgd_asks_for_the_loss():
    params, grad = problem("least_squares", jnp.float32)
    tx = gc.polyak_sgd()
    with pytest.raises(ValueError, match=re.escape("value=loss")):
        tx.update(grad(params)[1], tx.init(params), params)


@pytest.mark.parametrize("variant", ["sps", "sps+"])
def test_polyak_sgd_below_f_min_as_optax(variant):
    params, grad = problem("least_squares", jnp.float32)
    value, grads = grad(params)
    kwargs = dict(f_min=float(value) + 1.0, variant=variant)  # the loss is below f_min: gap < 0
    ours, theirs = gc.polyak_sgd(**kwargs), optax.polyak_sgd(**kwargs)
    mine, _ = ours.update(grads, ours.init(params), params, value=value)
    reference, _ = theirs.update(grads, theirs.init(params), params, value=value)
    np.testing.assert_allclose(mine["x"], reference["x"], rtol=1e-6)
    assert bool(jnp.all(mine["x"] == 0)) == (variant == "sps+")
