"""gradchain.zoo.layerwise against Optax: the optimizers and transforms that need each leaf's shape
or norm (adafactor, fromage, lamb, lars, novograd, sm3; scale_by_factored_rms, scale_by_trust_ratio,
clip_by_block_rms, adaptive_grad_clip, centralize, normalize_by_update_norm and the pieces they use).

Every case runs 60 steps on both problems of tests/optax_parity.py in float64 (1e-9 relative to
Optax) and on small_tree in float32 (within 10 times Optax's own float32 drift).  XLA compile
time, not arithmetic, is what costs here, so ``_run_many`` is the harness's ``trajectory`` for
many transformations at once (one jitted step for all of them), the small transforms are tested
three to a chain (each of them changes the trajectory: see ``_cases``), and the comparison is the
harness's metric (``_max_rel_error`` = ``assert_parity``'s: per step, per leaf, relative to the
leaf's largest magnitude).  ``test_harness_assert_parity`` also runs the harness itself.
"""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optax_parity import PROBLEMS, assert_parity, float64

import gradchain as gc
from gradchain.multi_tensor import MultiTensorState

STEPS = 60
PROBLEM_NAMES = ("least_squares", "small_tree")


def SCHEDULE(count):
    """A schedule ``step -> value`` for both libraries, in the default float dtype (float64 under
    x64: ``optax.linear_schedule`` returns float32 there, and Optax's fromage then computes its
    1/√(1 + lr²) in float32, 3e-7 away from the float64 value)."""
    return 0.02 * 0.97 ** jnp.asarray(count, jnp.result_type(float))


def _cases(x64: bool) -> dict:
    """``name -> (gradchain factory, Optax factory)``: the same keyword arguments on both sides,
    chosen so that each optimizer moves (the largest leaf travels > 0.2 in 60 steps) and the
    clipping transforms clip.  The transforms run up to three to a chain, ahead of a plain step;
    each piece changes the trajectory (leaving it out moves the parameters by ≥ 0.03 relative on
    at least one problem; ``centralize`` is the identity on least_squares, whose one leaf is a
    vector, and ``adaptive_grad_clip`` nearly so there, 3e-5)."""
    momentum_dtype = jnp.float64 if x64 else jnp.float32
    full = dict(
        min_dim_size_to_factor=3, decay_rate=0.7, decay_offset=0, multiply_by_parameter_scale=False,
        clipping_threshold=None, momentum=0.8, dtype_momentum=momentum_dtype, weight_decay_rate=1e-3, eps=1e-20,
    )
    lars_kw = dict(weight_decay=1e-3, trust_coefficient=0.02, momentum=0.9, nesterov=True)
    same = lambda gc_fn, optax_fn, *a, **kw: (lambda: gc_fn(*a, **kw), lambda: optax_fn(*a, **kw))

    def transforms(lr, *pieces):
        """``(chain(gradchain's pieces, step), chain(Optax's pieces, step))``; a piece is
        ``(name, args, kwargs)``, the same in both libraries."""
        ours = lambda: gc.chain(*[getattr(gc, n)(*a, **kw) for n, a, kw in pieces], gc.scale_by_learning_rate(lr))
        theirs = lambda: optax.chain(*[getattr(optax, n)(*a, **kw) for n, a, kw in pieces], optax.scale(-lr))
        return ours, theirs

    return {
        "adafactor": same(gc.adafactor, optax.adafactor, 0.05, min_dim_size_to_factor=2),
        "adafactor_full": same(gc.adafactor, optax.adafactor, 0.02, **full),
        "fromage": same(gc.fromage, optax.fromage, 0.02),
        "lars": same(gc.lars, optax.lars, 0.5, **lars_kw),
        "lamb": same(gc.lamb, optax.lamb, 0.01, weight_decay=1e-2, eps_root=1e-12),
        "novograd": same(gc.novograd, optax.novograd, 0.02, weight_decay=1e-3, eps_root=1e-12),
        "sm3": same(gc.sm3, optax.sm3, 0.1, momentum=0.8),
        "scale_by_factored_rms+clip_by_block_rms+scale_by_param_block_norm": transforms(
            0.01,
            ("scale_by_factored_rms", (), dict(decay_rate=0.7, min_dim_size_to_factor=2)),
            ("clip_by_block_rms", (0.5,), {}),
            ("scale_by_param_block_norm", (1e-3,), {}),
        ),
        "centralize+adaptive_grad_clip+scale_by_trust_ratio": transforms(
            0.05,
            ("centralize", (), {}),
            ("adaptive_grad_clip", (0.05,), {}),
            ("scale_by_trust_ratio", (1e-3, 0.5, 1e-6), {}),
        ),
        "normalize_by_update_norm+scale_by_param_block_rms": transforms(
            0.05, ("normalize_by_update_norm", (1.0,), dict(eps=1e-6)), ("scale_by_param_block_rms", (1e-3,), {})
        ),
        "scale_by_sm3": transforms(0.05, ("scale_by_sm3", (0.8, 0.99, 1e-8), {})),  # b2 < 1 (sm3 fixes b2 = 1)
    }


def _schedule_cases() -> dict:
    """Schedules and JAX arrays as hyperparameters (float64, least_squares): the same on both sides
    (``optax.sm3`` takes a number only and ``optax.novograd`` no ``weight_decay`` schedule, so
    their references are Optax's ``inject_hyperparams``)."""
    inject = optax.inject_hyperparams
    return {
        "adafactor+schedule": (lambda: gc.adafactor(SCHEDULE, min_dim_size_to_factor=2, weight_decay_rate=SCHEDULE),
                               lambda: optax.adafactor(SCHEDULE, min_dim_size_to_factor=2, weight_decay_rate=SCHEDULE)),
        "fromage+schedule": (lambda: gc.fromage(SCHEDULE), lambda: optax.fromage(SCHEDULE)),
        "lars+schedule": (lambda: gc.lars(SCHEDULE, weight_decay=SCHEDULE, trust_coefficient=jnp.asarray(0.5)),
                          lambda: optax.lars(SCHEDULE, weight_decay=SCHEDULE, trust_coefficient=jnp.asarray(0.5))),
        "lamb+schedule": (lambda: gc.lamb(SCHEDULE, b1=jnp.asarray(0.8), weight_decay=SCHEDULE),
                          lambda: optax.lamb(SCHEDULE, b1=jnp.asarray(0.8), weight_decay=SCHEDULE)),
        "novograd+schedule": (lambda: gc.novograd(SCHEDULE, weight_decay=SCHEDULE),
                              lambda: inject(optax.novograd)(learning_rate=SCHEDULE, weight_decay=SCHEDULE)),
        "sm3+schedule": (lambda: gc.sm3(SCHEDULE, momentum=jnp.asarray(0.7)),
                         lambda: inject(optax.sm3)(learning_rate=SCHEDULE, momentum=jnp.asarray(0.7))),
    }


CASES = tuple(_cases(x64=False))
SCHEDULE_CASES = tuple(_schedule_cases())


def _run_many(factories, problem, data_dtype, run_dtype):
    """The parameters after each of ``STEPS`` updates, for every transformation built by
    ``factories``: the harness's ``trajectory`` (one jitted step applied ``STEPS`` times) for all
    of them at once, so that they compile as one program.  The problem is drawn in ``data_dtype``
    and run in ``run_dtype`` (a float32 draw run in float64 is the float64 reference of a float32
    run).  Returns, per transformation, ``{leaf: array (STEPS, *leaf shape)}``."""
    params, loss = PROBLEMS[problem](data_dtype)
    params = jax.tree.map(lambda x: x.astype(run_dtype), params)
    txs = [make() for make in factories]

    @jax.jit
    def step(carries):
        out = []
        for tx, (p, state) in zip(txs, carries):
            updates, state = tx.update(jax.grad(loss)(p), state, p)
            out.append((gc.apply_updates(p, updates), state))
        return out

    carries = [(params, tx.init(params)) for tx in txs]
    history = []
    for _ in range(STEPS):
        carries = step(carries)
        history.append(jax.tree.map(np.asarray, [p for p, _ in carries]))
    return [{leaf: np.stack([h[i][leaf] for h in history]) for leaf in params} for i in range(len(txs))]


def _max_rel_error(ours, reference) -> float:
    """``assert_parity``'s metric, the worst over all steps: per step and leaf, the largest
    |ours - reference| over the leaf's largest |reference| (floored at 1e-30)."""
    worst = 0.0
    for leaf, ref in reference.items():
        flat_ref = ref.reshape(ref.shape[0], -1)
        flat_ours = ours[leaf].reshape(ref.shape[0], -1)
        scale = np.maximum(np.abs(flat_ref).max(axis=1), 1e-30)
        worst = max(worst, float((np.abs(flat_ours - flat_ref).max(axis=1) / scale).max()))
    return worst


@pytest.fixture(scope="module")
def runs():
    """``runs[kind][problem][case]``: gradchain and Optax in float64 on both problems
    (``gc64``/``optax64``; the schedule cases on least_squares only), and on small_tree both in
    float32 (``gc32``/``optax32``) and Optax in float64 on the float32 draw (``optax64_of_32``,
    the reference of the float32 drift)."""
    out = {kind: {} for kind in ("gc64", "optax64", "gc32", "optax32", "optax64_of_32")}
    with float64():
        for problem in PROBLEM_NAMES:
            cases = {**_cases(x64=True), **(_schedule_cases() if problem == "least_squares" else {})}
            for kind, side in (("gc64", 0), ("optax64", 1)):
                trajectories = _run_many([c[side] for c in cases.values()], problem, jnp.float64, jnp.float64)
                out[kind][problem] = dict(zip(cases, trajectories))
        cases = _cases(x64=False)
        reference = _run_many([c[1] for c in cases.values()], "small_tree", jnp.float32, jnp.float64)
        out["optax64_of_32"]["small_tree"] = dict(zip(cases, reference))
    for kind, side in (("gc32", 0), ("optax32", 1)):
        trajectories = _run_many([c[side] for c in cases.values()], "small_tree", jnp.float32, jnp.float32)
        out[kind]["small_tree"] = dict(zip(cases, trajectories))
    return out


@pytest.mark.parametrize("name", CASES)
def test_float64_parity_on_both_problems(runs, name):
    for problem in PROBLEM_NAMES:
        reference = runs["optax64"][problem][name]
        assert reference[next(iter(reference))].dtype == np.float64
        travelled = max(float(np.abs(ref[-1] - ref[0]).max()) for ref in reference.values())
        assert travelled > 0.2, f"{name} barely moves on {problem}: pick other hyperparameters"
        error = _max_rel_error(runs["gc64"][problem][name], reference)
        assert error <= 1e-9, f"{name}, {problem}: relative error {error:.3g} > 1e-9 over {STEPS} steps"


@pytest.mark.parametrize("name", SCHEDULE_CASES)
def test_float64_parity_with_schedules_and_arrays(runs, name):
    error = _max_rel_error(runs["gc64"]["least_squares"][name], runs["optax64"]["least_squares"][name])
    assert error <= 1e-9, f"{name}: relative error {error:.3g} > 1e-9 over {STEPS} steps"


@pytest.mark.parametrize("name", CASES)
def test_float32_within_ten_times_optaxs_own_float32_drift(runs, name):
    # The tolerance, derived per case: D = how far float32 rounding alone moves Optax in 60 steps
    # (Optax in float32 vs Optax in float64 on the same float32-drawn small_tree).  gradchain in
    # float32 rounds differently (hyperparameters are float32 arrays in the state, so e.g. 1 - b2
    # is computed in float32 where Optax folds it from the Python float in double; sums run in
    # another order), and those roundings are amplified by the same dynamics, so gradchain must
    # stay within 10·D of Optax's float32 run (floored at 10 float32 ulps, 10·2⁻²³).  Measured
    # (CPU): at most 5.6·D (scale_by_sm3: b2 = float32(0.99), so 1 - b2 is 1e-6 away from Optax's
    # 0.01), the others under 2·D; D from 2e-7 to 7e-4 (the trust ratio's chain).
    drift = _max_rel_error(runs["optax32"]["small_tree"][name], runs["optax64_of_32"]["small_tree"][name])
    tolerance = 10 * max(drift, 2.0**-23)
    error = _max_rel_error(runs["gc32"]["small_tree"][name], runs["optax32"]["small_tree"][name])
    assert error <= tolerance, f"{name}: float32 error {error:.3g} > {tolerance:.3g} = 10 × Optax's float32 drift"


def test_harness_assert_parity():
    """The shared harness itself, on the optimizer and problem where shapes matter most."""
    with float64():
        assert_parity(gc.adafactor(0.05, min_dim_size_to_factor=2), optax.adafactor(0.05, min_dim_size_to_factor=2),
                      "small_tree")


# --- hyperparameters: live, arrays, schedules, populations --------------------------------------

POPULATIONS = {  # name -> (factory of one value, the hyperparameter, its values)
    "adafactor": (lambda v: gc.adafactor(0.05, min_dim_size_to_factor=2, decay_rate=v), "decay_rate", (0.6, 0.8, 0.9)),
    "fromage": (lambda v: gc.fromage(v), "learning_rate", (0.005, 0.01, 0.02)),
    "lars": (lambda v: gc.lars(0.5, trust_coefficient=0.02, momentum=v), "momentum", (0.5, 0.8, 0.9)),
    "lamb": (lambda v: gc.lamb(0.01, b2=v), "b2", (0.9, 0.99, 0.999)),
    "novograd": (lambda v: gc.novograd(v), "learning_rate", (0.005, 0.01, 0.02)),
    "sm3": (lambda v: gc.sm3(0.1, momentum=v), "momentum", (0.5, 0.8, 0.9)),
    "scale_by_factored_rms": (lambda v: gc.chain(gc.scale_by_factored_rms(decay_rate=v, min_dim_size_to_factor=2),
                                                 gc.scale(-0.01)), "decay_rate", (0.6, 0.8, 0.9)),
}


@pytest.fixture(scope="module")
def populations():
    """For every entry of POPULATIONS, 5 steps on small_tree (float32): the population (init and
    update under ``jax.vmap`` over the values) and each value run on its own."""
    params, loss = PROBLEMS["small_tree"](jnp.float32)
    names = sorted(POPULATIONS)

    def run(name, value):
        make, hyperparameter, _ = POPULATIONS[name]
        tx = make(value)

        def step(carry, _):
            p, state = carry
            updates, state = tx.update(jax.grad(loss)(p), state, p)
            return (gc.apply_updates(p, updates), state), None

        p, state = jax.lax.scan(step, (params, tx.init(params)), length=5)[0]
        return p, gc.get_hyperparams(state)[hyperparameter]

    grid = jnp.asarray([POPULATIONS[n][2] for n in names])  # (entry, member)
    together = jax.jit(lambda g: [jax.vmap(lambda v, n=n: run(n, v))(g[i]) for i, n in enumerate(names)])
    alone = jax.jit(lambda column: [run(n, column[i]) for i, n in enumerate(names)])
    population = together(grid)
    separate = [alone(grid[:, j]) for j in range(grid.shape[1])]  # one compile, one call per member
    return {n: (population[i], [member[i] for member in separate]) for i, n in enumerate(names)}


@pytest.mark.parametrize("name", sorted(POPULATIONS))
def test_a_vmapped_population_equals_separate_runs(populations, name):
    (population, stored), separate = populations[name]
    np.testing.assert_allclose(stored, POPULATIONS[name][2], rtol=1e-6)  # one value per member, in the state
    for i, (single, _) in enumerate(separate):
        for leaf in single:
            # float32; a batched reduction may sum in another order than the unbatched one
            np.testing.assert_allclose(population[leaf][i], single[leaf], rtol=2e-6, atol=1e-7,
                                       err_msg=f"{name}, member {i}, leaf {leaf!r}")
    assert not np.allclose(separate[0][0][leaf], separate[-1][0][leaf]), f"{name}: the values make no difference"


SETTABLE = {  # name -> (factory of one value, the hyperparameter)
    "adafactor": (lambda v: gc.adafactor(v, min_dim_size_to_factor=2, momentum=0.5, weight_decay_rate=1e-3), "learning_rate"),
    "fromage": (lambda v: gc.fromage(v), "learning_rate"),
    "lars": (lambda v: gc.lars(0.5, trust_coefficient=v), "trust_coefficient"),
    "lamb": (lambda v: gc.lamb(0.01, weight_decay=v), "weight_decay"),
    "novograd": (lambda v: gc.novograd(0.01, weight_decay=v), "weight_decay"),  # b1 acts from step 2
    "sm3": (lambda v: gc.sm3(0.1, momentum=v), "momentum"),
}


def test_set_hyperparams_changes_the_step_without_recompiling():
    """``set_hyperparams`` on a state gives the step of the optimizer built with that value, in the
    same compiled program (the value lives in the state, not in the compiled update)."""
    params, loss = PROBLEMS["small_tree"](jnp.float32)
    grads = jax.grad(loss)(params)
    names = sorted(SETTABLE)
    txs = [SETTABLE[n][0](0.3) for n in names]
    step = jax.jit(lambda states: [tx.update(grads, s, params) for tx, s in zip(txs, states)])
    states = [tx.init(params) for tx in txs]
    before = step(states)
    changed = step([gc.set_hyperparams(s, **{SETTABLE[n][1]: 0.1}) for n, s in zip(names, states)])
    built = step([SETTABLE[n][0](0.1).init(params) for n in names])
    assert step._cache_size() == 1, "set_hyperparams recompiled the step"
    for name, (old, _), (new, new_state), (reference, _) in zip(names, before, changed, built):
        assert float(gc.get_hyperparams(new_state)[SETTABLE[name][1]]) == pytest.approx(0.1)
        assert not all(np.array_equal(old[leaf], new[leaf]) for leaf in params), f"{name}: the value made no difference"
        for leaf in params:
            np.testing.assert_array_equal(new[leaf], reference[leaf], err_msg=f"{name}, leaf {leaf!r}")


# --- readable states ----------------------------------------------------------------------------

READABLE = {  # name -> (gradchain, Optax, Optax's buffer fields, the hyperparameters it stores)
    "adafactor": (
        gc.adafactor(0.05, min_dim_size_to_factor=2, momentum=0.9, weight_decay_rate=1e-3),
        optax.adafactor(0.05, min_dim_size_to_factor=2, momentum=0.9, weight_decay_rate=1e-3),
        ("v_row", "v_col", "v", "ema"),
        {"learning_rate", "decay_rate", "decay_offset", "clipping_threshold", "momentum", "weight_decay_rate", "eps"},
    ),
    "fromage": (gc.fromage(0.01), optax.fromage(0.01), (), {"learning_rate", "min_norm"}),
    "lars": (gc.lars(0.1), optax.lars(0.1), ("trace",),
             {"learning_rate", "weight_decay", "trust_coefficient", "eps", "momentum"}),
    "lamb": (gc.lamb(0.01), optax.lamb(0.01), ("mu", "nu"),
             {"learning_rate", "b1", "b2", "eps", "eps_root", "weight_decay"}),
    "novograd": (gc.novograd(0.01), optax.novograd(0.01), ("mu", "nu"),
                 {"learning_rate", "b1", "b2", "eps", "eps_root", "weight_decay"}),
    "sm3": (gc.sm3(0.1), optax.sm3(0.1), ("mu", "nu"), {"learning_rate", "momentum"}),
}


def _optax_field(state, field):
    found = [getattr(node, field) for node in jax.tree.leaves(state, is_leaf=lambda x: hasattr(x, "_fields"))
             if hasattr(node, "_fields") and field in node._fields]
    assert len(found) == 1, f"Optax's state has {len(found)} fields {field!r}"
    return found[0]


@pytest.mark.parametrize("name", sorted(READABLE))
def test_state_has_optaxs_fields_and_names(name):
    ours, theirs, fields, hyperparams = READABLE[name]
    params = PROBLEMS["small_tree"](jnp.float32)[0]
    state, optax_state = ours.init(params), theirs.init(params)
    assert set(gc.get_hyperparams(state)) == hyperparams  # exactly Optax's numeric arguments
    assert not any(isinstance(node, MultiTensorState)
                   for node in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, MultiTensorState)))
    for field in fields:
        buffer = gc.tree_get(state, field)
        reference = _optax_field(optax_state, field)
        if name == "sm3" and field == "mu":  # one vector per leaf: Optax's list of axis vectors, concatenated
            reference = {k: jnp.concatenate(v) for k, v in reference.items()}
        assert jax.tree.map(jnp.shape, buffer) == jax.tree.map(jnp.shape, reference), field
    for tree_map_params in (gc.tree_map_params, optax.tree_utils.tree_map_params):
        ones = tree_map_params(ours, jnp.ones_like, state)  # every parameter-like buffer, nothing else
        assert jax.tree.structure(ones) == jax.tree.structure(state)
        assert gc.get_hyperparams(ones).keys() == gc.get_hyperparams(state).keys()
        for name_, value in gc.get_hyperparams(ones).items():
            assert float(value) == float(gc.get_hyperparams(state)[name_]), name_
        for field in fields:
            assert all(bool(jnp.all(x == 1)) for x in jax.tree.leaves(gc.tree_get(ones, field))), field


def test_adafactor_factors_the_real_shapes():
    params = PROBLEMS["small_tree"](jnp.float32)[0]  # w (4, 3), b (3,), k (3, 3, 2)
    state = gc.adafactor(min_dim_size_to_factor=2).init(params)
    shapes = {f: jax.tree.map(jnp.shape, gc.tree_get(state, f)) for f in ("v_row", "v_col", "v")}
    assert shapes["v_row"] == {"w": (3,), "b": (1,), "k": (3, 2)}
    assert shapes["v_col"] == {"w": (4,), "b": (1,), "k": (3, 2)}
    assert shapes["v"] == {"w": (1,), "b": (3,), "k": (1,)}
    unfactored = gc.adafactor().init(params)  # default min_dim_size_to_factor=128: nothing factored
    assert jax.tree.map(jnp.shape, gc.tree_get(unfactored, "v")) == jax.tree.map(jnp.shape, params)


def test_many_leaves_stay_per_leaf_and_equal_optax():
    """A tree with more leaves than multi_tensor packs (33 > 32, the problems' shapes): no
    optimizer packs it, and two of them (factored shapes; a per-leaf trust-ratio mask) equal
    Optax step by step (float64, 5 steps; one program)."""
    shapes = [(4, 3), (3,), (3, 3, 2)]
    with float64():
        keys = jax.random.split(jax.random.PRNGKey(3), 33)
        params = {f"p{i:02d}": jax.random.normal(k, shapes[i % 3], jnp.float64) for i, k in enumerate(keys)}
        for name in READABLE:
            state = getattr(gc, name)(0.01).init(params)
            assert not any(isinstance(n, MultiTensorState)
                           for n in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, MultiTensorState))), name
        loss = lambda p: sum(jnp.sum(jnp.sin(3 * x) + 0.5 * x**2) for x in jax.tree.leaves(p))
        matrices = lambda p: jax.tree.map(lambda x: x.ndim > 1, p)
        txs = [
            gc.adafactor(0.05, min_dim_size_to_factor=2), optax.adafactor(0.05, min_dim_size_to_factor=2),
            gc.lars(0.5, trust_coefficient=0.02, trust_ratio_mask=matrices),
            optax.lars(0.5, trust_coefficient=0.02, trust_ratio_mask=matrices),
        ]

        @jax.jit
        def step(carries):
            out = []
            for tx, (p, state) in zip(txs, carries):
                updates, state = tx.update(jax.grad(loss)(p), state, p)
                out.append((gc.apply_updates(p, updates), state))
            return out

        carries = [(params, tx.init(params)) for tx in txs]
        for _ in range(5):
            carries = step(carries)
        for i in range(0, len(txs), 2):
            ours, theirs = carries[i][0], carries[i + 1][0]
            for leaf in params:
                assert not np.allclose(ours[leaf], params[leaf]), f"optimizer {i // 2} did not move {leaf}"
                np.testing.assert_allclose(ours[leaf], theirs[leaf], rtol=1e-12, atol=1e-12, err_msg=f"{i // 2}: {leaf}")


# --- bad hyperparameters, rejected at construction ------------------------------------------------

BAD = [  # (factory, keyword arguments, the argument named, the value shown)
    (gc.adafactor, dict(learning_rate=-1.0), "learning_rate", -1.0),
    (gc.adafactor, dict(min_dim_size_to_factor=0), "min_dim_size_to_factor", 0),
    (gc.adafactor, dict(decay_rate=-0.5), "decay_rate", -0.5),
    (gc.adafactor, dict(decay_offset=-1), "decay_offset", -1),
    (gc.adafactor, dict(clipping_threshold=0.0), "clipping_threshold", 0.0),
    (gc.adafactor, dict(momentum=1.0), "momentum", 1.0),
    (gc.adafactor, dict(weight_decay_rate=-1e-3), "weight_decay_rate", -1e-3),
    (gc.adafactor, dict(eps=0.0), "eps", 0.0),
    (gc.adafactor, dict(factored="yes"), "factored", "yes"),
    (gc.adafactor, dict(multiply_by_parameter_scale=1), "multiply_by_parameter_scale", 1),
    (gc.adafactor, dict(dtype_momentum="not a dtype"), "dtype_momentum", "not a dtype"),
    (gc.fromage, dict(learning_rate=-0.1), "learning_rate", -0.1),
    (gc.fromage, dict(learning_rate=0.1, min_norm=-1.0), "min_norm", -1.0),
    (gc.lars, dict(learning_rate=float("nan")), "learning_rate", float("nan")),
    (gc.lars, dict(learning_rate=0.1, weight_decay=-1.0), "weight_decay", -1.0),
    (gc.lars, dict(learning_rate=0.1, trust_coefficient=-0.1), "trust_coefficient", -0.1),
    (gc.lars, dict(learning_rate=0.1, eps=-1.0), "eps", -1.0),
    (gc.lars, dict(learning_rate=0.1, momentum=1.5), "momentum", 1.5),
    (gc.lars, dict(learning_rate=0.1, nesterov="no"), "nesterov", "no"),
    (gc.lamb, dict(learning_rate=lambda step: -1.0), "learning_rate(0)", -1.0),
    (gc.lamb, dict(learning_rate=0.1, b1=1.0), "b1", 1.0),
    (gc.lamb, dict(learning_rate=0.1, b2=-0.1), "b2", -0.1),
    (gc.lamb, dict(learning_rate=0.1, eps=0.0), "eps", 0.0),
    (gc.lamb, dict(learning_rate=0.1, eps_root=-1.0), "eps_root", -1.0),
    (gc.lamb, dict(learning_rate=0.1, weight_decay=-1.0), "weight_decay", -1.0),
    (gc.novograd, dict(learning_rate=-1.0), "learning_rate", -1.0),
    (gc.novograd, dict(learning_rate=0.1, b1=1.0), "b1", 1.0),
    (gc.novograd, dict(learning_rate=0.1, b2=1.0), "b2", 1.0),
    (gc.novograd, dict(learning_rate=0.1, eps=0.0), "eps", 0.0),
    (gc.novograd, dict(learning_rate=0.1, eps_root=-1.0), "eps_root", -1.0),
    (gc.novograd, dict(learning_rate=0.1, weight_decay=-1.0), "weight_decay", -1.0),
    (gc.sm3, dict(learning_rate=-1.0), "learning_rate", -1.0),
    (gc.sm3, dict(learning_rate=0.1, momentum=1.0), "momentum", 1.0),
    (gc.scale_by_factored_rms, dict(min_dim_size_to_factor=0), "min_dim_size_to_factor", 0),
    (gc.scale_by_factored_rms, dict(epsilon=0.0), "epsilon", 0.0),
    (gc.scale_by_factored_rms, dict(step_offset=-2), "step_offset", -2),
    (gc.scale_by_trust_ratio, dict(min_norm=-1.0), "min_norm", -1.0),
    (gc.clip_by_block_rms, dict(threshold=0.0), "threshold", 0.0),
    (gc.adaptive_grad_clip, dict(clipping=-1.0), "clipping", -1.0),
    (gc.adaptive_grad_clip, dict(clipping=0.1, eps=-1.0), "eps", -1.0),
    (gc.adaptive_grad_clip, dict(clipping=0.1, axis="rows"), "axis", "rows"),
    (gc.normalize_by_update_norm, dict(eps=-1.0), "eps", -1.0),
    (gc.scale_by_param_block_rms, dict(min_scale=-1.0), "min_scale", -1.0),
    (gc.scale_by_param_block_norm, dict(min_scale=-1.0), "min_scale", -1.0),
    (gc.scale_by_novograd, dict(b1=1.0), "b1", 1.0),
    (gc.scale_by_sm3, dict(b2=1.5), "b2", 1.5),
]


@pytest.mark.parametrize("factory, kwargs, argument, value", BAD,
                         ids=[f"{f.__name__}-{a}" for f, _, a, _ in BAD])
def test_bad_hyperparameters_are_rejected_at_construction(factory, kwargs, argument, value):
    shown = "nan" if isinstance(value, float) and math.isnan(value) else re.escape(repr(value))
    with pytest.raises((ValueError, TypeError), match=rf"^{re.escape(argument)} must .*{shown}"):
        factory(**kwargs)


@pytest.mark.parametrize("name", gc.zoo.layerwise.__all__)
def test_optaxs_signature_and_defaults(name):
    import inspect

    ours, theirs = inspect.signature(getattr(gc, name)).parameters, inspect.signature(getattr(optax, name)).parameters
    assert list(ours) == list(theirs)
    for arg in ours:
        mine, optax_default = ours[arg].default, theirs[arg].default
        if arg == "decay_rate_fn":  # scale_by_factored_rms's default: the same schedule (gradchain's function)
            assert mine(jnp.asarray(4), 0.8) == pytest.approx(float(optax_default(jnp.asarray(4), 0.8)))
        else:
            assert mine == optax_default or (mine is None and optax_default is None), arg
