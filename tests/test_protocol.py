"""The training protocol: one model in four frameworks, config hyperparameters, state, keys,
gradient accumulation, and the errors a user meets first.

Tolerances (tests/helpers.py says how they are derived).  Two runs that must give "the same
numbers" by different programs (four frameworks, the reported against a hand-made evaluation, a
population against separate runs, steps without augmentation, k micro-batches against one
batch, flat against tree, host-driven against scanned, streamed against step by step) sum in
other orders or fuse other operations, so they are compared in float64 (``jax.enable_x64``):
each test states its bound, ``steps × roundings a step × U64 × scale`` (U64 = 2⁻⁵³ ≈ 1.1e-16),
and a tolerance of 1e-12 to 1e-10, at least 10 times the bound and far below what a real
difference (a learning rate, a skipped or repeated step, another batch) moves.  Measured: at
most 2.2e-16 absolute (besides the float32 rounding of fit_stream's reported losses), several
of them bit-for-bit.  None of them is one XLA program against
itself, so none asks for exact equality.
"""

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import U32

import gradchain as gc
from gradchain import Split, tuning
from gradchain.examples.models import mlp_apply, mlp_init
from gradchain.flax import linen as glinen, nnx as gnnx

KEY = jax.random.PRNGKey(0)
X = jax.random.normal(jax.random.PRNGKey(1), (64, 6))
Y = jnp.arange(64) % 3
DATA = Split(X[:48], Y[:48], X[48:], Y[48:])


def sgd(config):
    return gc.sgd(config["learning_rate"])


def as_float(tree, dtype):
    """Every floating array leaf of ``tree`` in ``dtype``; other leaves (labels, functions) as they are."""
    cast = lambda x: x.astype(dtype) if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jnp.floating) else x
    return jax.tree.map(cast, tree)


def assert_trees_close(actual, expected, tol):
    """Leaf by leaf ``|actual - expected| <= tol·(1 + |expected|)``: relative for large values, absolute near 0."""
    la, le = jax.tree.leaves(actual), jax.tree.leaves(expected)
    assert len(la) == len(le) and la, (len(la), len(le))
    for a, e in zip(la, le):
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(e, np.float64), rtol=tol, atol=tol)


# --- the same network, 6 -> 8 -> batch norm -> relu -> 3, in four frameworks -------------------


def plain_params(key):
    k1, k2 = jax.random.split(key)
    return {"w1": jax.random.normal(k1, (6, 8)) / 3, "b1": jnp.zeros(8), "scale": jnp.ones(8), "bias": jnp.zeros(8),
            "w2": jax.random.normal(k2, (8, 3)) / 3, "b2": jnp.zeros(3)}


def plain_apply(params, state, x, *, train):
    h = x @ params["w1"] + params["b1"]
    h, state = gc.batch_norm(h, state, params["scale"], params["bias"], training=train, momentum=0.9)
    return jax.nn.relu(h) @ params["w2"] + params["b2"], state


class NnxNet(nnx.Module):
    def __init__(self, rngs):
        self.fc1 = nnx.Linear(6, 8, rngs=rngs)
        self.bn = gnnx.BatchNorm(8, momentum=0.9)
        self.fc2 = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x):
        return self.fc2(jax.nn.relu(self.bn(self.fc1(x))))


class LinenNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        h = glinen.BatchNorm(momentum=0.9, use_running_average=not train)(nn.Dense(8)(x))
        return nn.Dense(3)(jax.nn.relu(h))


class EqxNet(eqx.Module):
    fc1: eqx.nn.Linear
    bn: eqx.nn.BatchNorm
    fc2: eqx.nn.Linear
    activation: object = jax.nn.relu  # a non-array leaf: the unfiltered model works as it is

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.fc1 = eqx.nn.Linear(6, 8, key=k1)
        self.bn = eqx.nn.BatchNorm(8, axis_name="batch", momentum=0.9, mode="batch")
        self.fc2 = eqx.nn.Linear(8, 3, key=k2)

    def __call__(self, x, state):
        h, state = self.bn(self.fc1(x), state)
        return self.fc2(self.activation(h)), state


def models(dtype=jnp.float32):
    """The four models, each with its params overwritten by the plain ones (same numbers), every
    floating leaf of each framework's own init cast to ``dtype`` first (float64 under x64)."""
    p = as_float(plain_params(KEY), dtype)
    plain = gc.from_function(lambda k: as_float((plain_params(k), gc.batch_norm_init(8)), dtype), plain_apply,
                             stateful=True)
    nnx_model = gc.adapters.from_nnx(NnxNet(nnx.Rngs(0)))
    params, state = as_float(nnx_model.init(KEY), dtype)
    params["fc1"]["kernel"][...], params["fc1"]["bias"][...] = p["w1"], p["b1"]
    params["fc2"]["kernel"][...], params["fc2"]["bias"][...] = p["w2"], p["b2"]
    nnx_init = (params, state)
    linen_model = gc.adapters.from_linen(LinenNet(), X[:2])
    lp, ls = as_float(linen_model.init(KEY), dtype)
    lp = {"Dense_0": {"kernel": p["w1"], "bias": p["b1"]}, "Dense_1": {"kernel": p["w2"], "bias": p["b2"]},
          "BatchNorm_0": {"scale": p["scale"], "bias": p["bias"]}}
    eqx_model = gc.adapters.from_equinox(eqx.nn.make_with_state(EqxNet)(KEY)[0], eqx.nn.make_with_state(EqxNet)(KEY)[1])
    ep, es = as_float(eqx_model.init(KEY), dtype)
    ep = eqx.tree_at(lambda m: (m.fc1.weight, m.fc1.bias, m.fc2.weight, m.fc2.bias), ep,
                     (p["w1"].T, p["b1"], p["w2"].T, p["b2"]))
    return {"plain": (plain, (p, as_float(gc.batch_norm_init(8), dtype))), "nnx": (nnx_model, nnx_init),
            "linen": (linen_model, (lp, ls)), "equinox": (eqx_model, (ep, es))}


def test_one_network_in_four_frameworks_gives_the_same_training_losses():
    """The frameworks' matmuls, batch norms (Equinox's a pmean over a vmap axis) and means sum in
    their own orders.  Float64 bound: 5 SGD steps × (≤ 64-term sums over the batch + ~40 other
    roundings a step) × U64 × |loss| ≤ 2 = 1.2e-13; tolerance 1e-11."""
    losses = {}
    with jax.enable_x64(True):
        data = (as_float(X, jnp.float64), Y)
        for name, (model, (params, state)) in models(jnp.float64).items():
            assert {leaf.dtype for leaf in jax.tree.leaves((params, state)) if isinstance(leaf, jax.Array)
                    and jnp.issubdtype(leaf.dtype, jnp.floating)} == {jnp.dtype(jnp.float64)}, name
            trainable = gc.supervised(model, "cross_entropy")
            tx = gc.sgd(0.1)
            opt = tx.init(params)
            step = jax.jit(lambda p, s, o, k, trainable=trainable, tx=tx: _step(trainable, tx, p, s, o, k, data))
            run = []
            for i in range(5):
                params, state, opt, loss = step(params, state, opt, jax.random.PRNGKey(i))
                run.append(float(loss))
            losses[name] = run
    for name, run in losses.items():
        np.testing.assert_allclose(run, losses["plain"], rtol=1e-11, atol=1e-11, err_msg=name)
    assert losses["plain"][-1] < losses["plain"][0]


def _step(trainable, tx, params, state, opt, key, data=(X, Y)):
    (loss, (state, _)), grads = jax.value_and_grad(trainable.loss, has_aux=True)(params, state, data, key, {})
    updates, opt = tx.update(grads, opt, params)
    return gc.apply_updates(params, updates), state, opt, loss


def test_test_time_evaluation_uses_the_running_batch_norm_statistics():
    """The run's reported validation loss against the same forward pass by hand: two programs.
    With float64 data (the model keeps its float32 parameters and statistics) both evaluate the
    same float32 numbers in float64.  Bound: one forward pass, ≤ 40 roundings on any path × U64 ×
    |terms| ≤ 10 = 4.4e-14; tolerance 1e-12.  Batch statistics instead of the running ones
    would move it by 1.4e-2."""
    with jax.enable_x64(True):
        data = as_float(DATA, jnp.float64)
        model = gc.adapters.from_nnx(lambda rngs: NnxNet(rngs))
        fit = tuning.make_fit(gc.supervised(model), sgd, data, steps=6, batch_size=16)
        result = jax.jit(fit)({"learning_rate": jnp.float32(0.1)}, KEY)
        bn = result.model_state[1]["bn"]
        assert not np.allclose(bn["mean"][...], 0.0)  # the statistics moved during training
        # evaluation by hand with the running statistics equals the run's reported validation loss
        module = nnx.merge(nnx.graphdef(NnxNet(nnx.Rngs(0))), result.params, *result.model_state)
        module.eval()
        expected = gc.protocol.softmax_cross_entropy(module(data.x_val), data.y_val).mean()
    assert expected.dtype == result.metrics["val_loss"].dtype == jnp.float64
    np.testing.assert_allclose(result.metrics["val_loss"][-1], expected, rtol=1e-12)


# --- hyperparameters in the config -----------------------------------------------------------


class DropoutNet(nnx.Module):
    def __init__(self, rngs, dtype=jnp.float32):
        self.fc1 = nnx.Linear(6, 32, rngs=rngs, param_dtype=dtype)
        self.drop = gnnx.Dropout(0.5, rngs=rngs)
        self.fc2 = nnx.Linear(32, 3, rngs=rngs, param_dtype=dtype)

    def __call__(self, x):
        return self.fc2(self.drop(jax.nn.relu(self.fc1(x))))


def test_a_population_over_dropout_rates_equals_separate_runs():
    """vmap over the members may batch the matmuls into other kernels.  Float64 bound: 12 SGD
    steps × (≤ 32-term sums + ~40 other roundings a step) × U64 × |loss| ≤ 2 = 1.9e-13;
    tolerance 1e-11."""
    with jax.enable_x64(True):
        model = gc.adapters.from_nnx(lambda rngs: DropoutNet(rngs, jnp.float64), bind={"dropout": "drop.rate"})
        fit = tuning.make_fit(gc.supervised(model), sgd, as_float(DATA, jnp.float64), steps=12, batch_size=16,
                              eval_every=6)
        rates = [0.0, 0.1, 0.3, 0.5]
        configs = tuning.stack_configs([{"learning_rate": 0.1, "dropout": r} for r in rates])
        keys = jnp.broadcast_to(KEY, (4, 2))
        population = tuning.train_population(fit, configs, keys)
        assert population.losses.dtype == jnp.float64
        for i, rate in enumerate(rates):
            one = jax.jit(fit)({"learning_rate": jnp.float32(0.1), "dropout": jnp.float32(rate)}, KEY)
            np.testing.assert_allclose(population.losses[i], one.losses, atol=1e-11, rtol=1e-11)
    assert not np.allclose(population.losses[0], population.losses[3])  # the rate is really used


def test_augmentation_draws_differ_per_step_and_per_member():
    def augment(key, x, y, config):
        return x + config["strength"] * jax.random.normal(key, x.shape), y

    model = gc.from_function(lambda k: {"w": jax.random.normal(k, (6, 3))}, lambda p, x: x @ p["w"])
    fit = tuning.make_fit(gc.supervised(model, augment=augment), sgd, DATA._replace(x_train=X[:16], y_train=Y[:16]),
                          steps=4, batch_size=16)
    configs = tuning.stack_configs([{"learning_rate": 0.0, "strength": 1.0}] * 2)
    keys = jnp.stack([jax.random.PRNGKey(1), jax.random.PRNGKey(2)])
    losses = np.asarray(tuning.train_population(fit, configs, keys).losses)
    # learning rate 0 and the whole split as the batch: only the augmentation changes the loss
    assert len(set(np.round(losses[0], 6))) == 4  # a new draw every step
    assert not np.allclose(losses[0], losses[1])  # and per member
    # strength 0 and learning rate 0: every step sees the same 16 rows (in another order) with
    # the same parameters, so the same mean loss.  Float64 bound: the 16-term mean of losses ≥ 0
    # in another order (15·U64 = 1.7e-15 relative) plus a row's 6-term logits summed otherwise
    # (≤ 2·5·U64·Σ|x w| = 1.1e-14 for Σ|x w| ≤ 10, through a loss of slope ≤ 2): ≤ 3e-14
    # against losses of order 1; tolerance 1e-12.
    with jax.enable_x64(True):
        model64 = gc.from_function(lambda k: {"w": jax.random.normal(k, (6, 3), jnp.float64)}, lambda p, x: x @ p["w"])
        data64 = as_float(DATA._replace(x_train=X[:16], y_train=Y[:16]), jnp.float64)
        fit64 = tuning.make_fit(gc.supervised(model64, augment=augment), sgd, data64, steps=4, batch_size=16)
        calm = tuning.train_population(fit64, tuning.stack_configs([{"learning_rate": 0.0, "strength": 0.0}] * 2),
                                       keys)
    assert calm.losses.dtype == jnp.float64
    np.testing.assert_allclose(calm.losses[:, 0], calm.losses[:, 1], rtol=1e-12)


def test_k_accumulated_micro_batches_equal_one_batch_of_k_times_the_size():
    """The mean of three 8-row gradients against one 24-row gradient: other summation orders.
    Adam's direction m̂/(√v̂ + eps) is homogeneous of degree 0 in the gradient, so a relative
    gradient error δ moves a step by ≤ ~2δ·lr, times κ = Σ|g_i|/|Σ g_i| where the rows' gradients
    nearly cancel.  Float64 bound: 6 steps × 2·(24 + ~20 roundings)·U64 × lr = 1e-2 × κ ≤ 1e3
    = 5.9e-13; tolerance 1e-11 (a missing or extra micro-batch moves the parameters by ~lr)."""
    with jax.enable_x64(True):
        model = gc.from_function(lambda k: mlp_init(k, (6, 16, 3)), mlp_apply)
        data = as_float(DATA._replace(x_train=X[:48], y_train=Y[:48]), jnp.float64)
        big = tuning.make_fit(gc.supervised(model), lambda c: gc.adam(c["learning_rate"]), data, steps=6, batch_size=24)
        small = tuning.make_fit(gc.supervised(model),
                                lambda c: gc.accumulate_gradients(gc.adam(c["learning_rate"]), c["k"]),
                                data, steps=18, batch_size=8)
        lr = jnp.float32(1e-2)
        a = jax.jit(big)({"learning_rate": lr}, KEY)
        b = jax.jit(small)({"learning_rate": lr, "k": jnp.float32(3)}, KEY)
    assert {leaf.dtype for leaf in jax.tree.leaves(a.params)} == {jnp.dtype(jnp.float64)}
    assert_trees_close(b.params, a.params, 1e-11)


def test_accumulate_gradients_waits_then_steps_with_the_mean():
    tx = gc.accumulate_gradients(gc.sgd(1.0), every=2)
    params = {"w": jnp.zeros(2)}
    state = tx.init(params)
    u1, state = tx.update({"w": jnp.array([1.0, 2.0])}, state, params)
    u2, state = tx.update({"w": jnp.array([3.0, 4.0])}, state, params)
    np.testing.assert_array_equal(u1["w"], [0.0, 0.0])
    np.testing.assert_allclose(u2["w"], [-2.0, -3.0])
    assert int(state.micro_step) == 0
    with pytest.raises(ValueError, match="every must be an int >= 1"):
        gc.accumulate_gradients(gc.sgd(1.0), every=0)


def test_flat_parameters_train_like_the_tree():
    """The same arithmetic per element, but another program (slices of one buffer; XLA may fuse
    and order the sums otherwise).  Float64 bound: 8 SGD steps × (≤ 16-term sums + ~40 other
    roundings) × U64 × |loss|, |params| ≤ 3 = 1.5e-13; tolerance 1e-11."""
    with jax.enable_x64(True):
        model = gc.from_function(lambda k: mlp_init(k, (6, 16, 3)), mlp_apply)
        data = as_float(DATA, jnp.float64)
        tree = tuning.make_fit(gc.supervised(model), sgd, data, steps=8, batch_size=16)
        flat = tuning.make_fit(gc.supervised(model), sgd, data, steps=8, batch_size=16, flat=True)
        config = {"learning_rate": jnp.float32(0.1)}
        a, b = jax.jit(tree)(config, KEY), jax.jit(flat)(config, KEY)
    assert a.losses.dtype == jnp.float64
    np.testing.assert_allclose(b.losses, a.losses, rtol=1e-11)
    assert_trees_close(b.params, a.params, 1e-11)


def test_regression_with_mse_and_a_host_driven_progress_bar():
    """Host-driven chunks against one scan: the same steps compiled into other programs.  Float64
    bound: 40 SGD steps × (≤ 16-term sums + ~20 other roundings) × U64 × |loss| ≤ 10 = 1.6e-12;
    tolerance 1e-10, relative (the losses fall by orders of magnitude) and absolute."""
    with jax.enable_x64(True):
        x = as_float(X, jnp.float64)
        w = jax.random.normal(KEY, (6, 1), jnp.float64)
        data = Split(x[:48], x[:48] @ w, x[48:], x[48:] @ w)
        model = gc.from_function(lambda k: {"w": jnp.zeros((6, 1), jnp.float64)}, lambda p, x: x @ p["w"])
        fit = tuning.make_fit(gc.supervised(model, "mse"), sgd, data, steps=40, batch_size=16, eval_every=10,
                              select="val_mse", mode="min", patience=2)
        configs = tuning.stack_configs([{"learning_rate": 0.1}, {"learning_rate": 0.01}])
        keys = jnp.broadcast_to(KEY, (2, 2))
        driven = tuning.train_population(fit, configs, keys, progress=True)
        scanned = tuning.train_population(fit, configs, keys, progress=False)
    assert driven.losses.dtype == jnp.float64
    np.testing.assert_allclose(driven.losses, scanned.losses, rtol=1e-10, atol=1e-10)
    val_mse = np.asarray(driven.metrics["val_mse"])
    assert val_mse[0, -1] < 0.1 * val_mse[0, 0]


# --- bad input: the argument and the value ---------------------------------------------------


def test_bad_input_names_the_argument_and_the_value():
    model = gc.from_function(lambda k: {"w": jnp.zeros((6, 3))}, lambda p, x: x @ p["w"])
    with pytest.raises(ValueError, match=r"data.x_train has \[64\] rows but data.y_train has 10"):
        tuning.make_fit(gc.supervised(model), sgd, Split(X, Y[:10], X, Y), steps=2)
    with pytest.raises(ValueError, match="loss must be a callable .* got loss='hinge'"):
        gc.supervised(model, "hinge")
    fit = tuning.make_fit(gc.supervised(model), sgd, DATA, steps=2, batch_size=8, select="val_acc")
    with pytest.raises(ValueError, match="select='val_acc' is not a metric .* 'val_accuracy'"):
        tuning.train_population(fit, tuning.stack_configs([{"learning_rate": 0.1}]), KEY[None])
    fit = tuning.make_fit(gc.supervised(model), sgd, DATA, steps=2, batch_size=8)
    with pytest.raises(ValueError, match=r"config keys \['dropuot'\] are never read"):
        tuning.train_population(fit, tuning.stack_configs([{"learning_rate": 0.1, "dropuot": 0.1}]), KEY[None])
    vector_loss = gc.supervised(model, lambda out, y: jnp.ones((out.shape[0], 2)))
    fit = tuning.make_fit(vector_loss, sgd, DATA, steps=2, batch_size=8, select="val_loss", mode="min")
    with pytest.raises(ValueError, match="loss must return one value per example or their mean"):
        jax.jit(fit)({"learning_rate": 0.1}, KEY)
    raw = gc.Trainable(lambda k: ({"w": jnp.zeros(3)}, ()), lambda p, s, b, k, c: (p["w"], (s, {})),
                       lambda p, s, b, c: {"loss": jnp.sum(p["w"])})
    fit = tuning.make_fit(raw, sgd, DATA, steps=2, batch_size=8, select="val_loss", mode="min")
    with pytest.raises(ValueError, match=r"the loss must return a scalar, got shape \(3,\)"):
        jax.jit(fit)({"learning_rate": 0.1}, KEY)
    with pytest.raises(ValueError, match="bind path 'drop.rat'"):
        gc.adapters.from_nnx(DropoutNet, bind={"dropout": "drop.rat"})


def test_a_host_iterator_trains_like_arrays_on_the_device():
    """The same minibatches, fed from the host in chunks of 3 (and a last one of 1), give the same
    run as step-by-step training_step calls: other programs (a scan over each chunk).  Float64
    bound: 4 SGD steps × (≤ 16-term sums + ~40 other roundings) × U64 × |params|, |loss| ≤ 3 =
    7.5e-14; tolerance 1e-11 on the parameters.  fit_stream reports its losses in float32 (one
    rounding, ≤ U32 relative): tolerance 2·U32 + 1e-11 on those."""
    with jax.enable_x64(True):
        model = gc.from_function(lambda k: mlp_init(k, (6, 16, 3)), mlp_apply)
        trainable = gc.supervised(model)
        x_train, x_val = np.asarray(DATA.x_train, np.float64), np.asarray(DATA.x_val, np.float64)
        order = np.asarray(jax.random.permutation(jax.random.PRNGKey(3), 48)).reshape(6, 8)[:, :8]
        batches = [(x_train[i], np.asarray(DATA.y_train)[i]) for i in order[:4]]
        config = {"learning_rate": jnp.float32(0.1)}
        streamed = tuning.fit_stream(trainable, sgd, iter(batches), config, KEY, chunk=3,
                                     evaluate_on=(x_val, DATA.y_val))
        init_key, step_key = jax.random.split(KEY)
        params, state = trainable.init(init_key)
        tx = sgd(config)
        opt = tx.init(params)
        for i, batch in enumerate(batches):
            params, state, opt, loss = tuning.training_step(trainable, tx, params, state, opt, batch,
                                                            jax.random.fold_in(step_key, i), config)
            np.testing.assert_allclose(streamed.losses[i], loss, rtol=2 * U32 + 1e-11)
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.float64)}
    assert_trees_close(streamed.params, params, 1e-11)
    assert streamed.metrics["accuracy"].shape == (2,)  # after the first chunk and at the end


def test_config_check_still_sees_the_reads_after_the_run_was_compiled():
    model = gc.from_function(lambda k: {"w": jnp.zeros((6, 3))}, lambda p, x: x @ p["w"])
    fit = tuning.make_fit(gc.supervised(model), sgd, DATA, steps=2, batch_size=8)
    config = {"learning_rate": jnp.float32(0.1)}
    jax.jit(fit)(config, KEY)
    tuning.train_population(fit, tuning.stack_configs([{"learning_rate": 0.1}]), KEY[None])  # no false alarm
