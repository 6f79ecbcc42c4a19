"""A catalogue of misuses of the adapters (from_linen, from_nnx, from_equinox), one test each.

Each case asserts the exact behaviour: an error whose type and text name the argument, its value
and what is valid, or the right result.  The comment on each says what it did before the fix
(measured by running this file against the adapters of the commit before):

* silent wrong: no error, a wrong result;
* vague error: an error that names neither the adapter's argument nor the fix;
* crash: a raw error deep in JAX / Flax / Equinox;
* already right.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradchain as gc

nn = pytest.importorskip("flax.linen")
nnx = pytest.importorskip("flax.nnx")
eqx = pytest.importorskip("equinox")
gnnx = pytest.importorskip("gradchain.flax.nnx")

A = gc.adapters
KEY = jax.random.PRNGKey(0)
X = jnp.ones((4, 6))


def init_apply(model, x=X, **kwargs):
    """``model.apply(*model.init(KEY), x, **kwargs)``."""
    params, state = model.init(KEY)
    return model.apply(params, state, x, **kwargs)


def train_and_test_outputs(model):
    """The outputs of the training path (one key) and of the test path, on ``X`` (all ones)."""
    params, state = model.init(KEY)
    y_train, _ = model.apply(params, state, X, key=jax.random.PRNGKey(1), train=True)
    y_test, _ = model.apply(params, state, X, train=False)
    return np.asarray(y_train), np.asarray(y_test)


def assert_dropout_runs_only_in_training(model):
    y_train, y_test = train_and_test_outputs(model)
    assert (y_train == 0).any() and set(np.unique(y_train)) <= {0.0, 2.0}  # rate 0.5, inverted
    np.testing.assert_array_equal(y_test, np.ones_like(y_test))


# =================================================================================================
# Flax Linen


class IsTrain(nn.Module):
    @nn.compact
    def __call__(self, x, is_train: bool = False):
        return nn.Dropout(0.5, deterministic=not is_train)(x)


class Stochastic(nn.Module):
    @nn.compact
    def __call__(self, x, stochastic: bool = False):
        return nn.Dropout(0.5, deterministic=not stochastic)(x)


class EvalMode(nn.Module):
    @nn.compact
    def __call__(self, x, eval_mode: bool = True):
        return nn.Dropout(0.5, deterministic=eval_mode)(x)


class LinenDense(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(3)(x)


def test_linen_is_train_flag_runs_dropout():
    # before: silent wrong (is_train never set: no dropout in training)
    assert_dropout_runs_only_in_training(A.from_linen(IsTrain(), X))


def test_linen_unknown_bool_flag_is_refused():
    # before: silent wrong (stochastic never set)
    with pytest.raises(ValueError, match=r"Stochastic.__call__ has the argument stochastic=False.*"
                                         r"train_flag='stochastic'.*train_flag=None"):
        A.from_linen(Stochastic(), X)


def test_linen_explicit_train_flag_runs_dropout():
    # new argument (before: no way to name the switch)
    assert_dropout_runs_only_in_training(A.from_linen(Stochastic(), X, train_flag="stochastic"))


def test_linen_inverted_train_flag_runs_dropout():
    # new argument: a switch that is True at test time
    assert_dropout_runs_only_in_training(A.from_linen(EvalMode(), X, train_flag="not eval_mode"))


def test_linen_train_flag_none_accepts_a_non_switch_boolean():
    # new argument: a boolean that is not the switch is passed nowhere, on request
    y_train, _ = train_and_test_outputs(A.from_linen(Stochastic(), X, train_flag=None))
    np.testing.assert_array_equal(y_train, np.ones_like(y_train))


def test_linen_train_flag_naming_a_missing_argument():
    with pytest.raises(ValueError, match=r"train_flag='stochastc': Stochastic.__call__ has no argument 'stochastc' "
                                         r"\(its arguments: x, stochastic\)"):
        A.from_linen(Stochastic(), X, train_flag="stochastc")


def test_linen_train_flag_of_the_wrong_type():
    with pytest.raises(TypeError, match=r"train_flag must be 'auto', None, an argument name.*got True"):
        A.from_linen(Stochastic(), X, train_flag=True)


def test_linen_required_argument_the_adapter_never_passes():
    # before: vague error at init (Python's "missing 1 required positional argument: 'mask'")
    class TwoInputs(nn.Module):
        @nn.compact
        def __call__(self, x, mask, train: bool = False):
            return nn.Dense(3)(x * mask)

    with pytest.raises(TypeError, match=r"TwoInputs.__call__ requires the argument 'mask'.*one pytree"):
        A.from_linen(TwoInputs(), X)


class DrawsDrop(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        if not train:
            return x
        return x * jax.random.bernoulli(self.make_rng("drop"), 0.5, x.shape)


def test_linen_rng_collection_not_in_rng_names():
    # before: vague error (flax: 'None needs PRNG for "drop"')
    model = A.from_linen(DrawsDrop(), X)
    with pytest.raises(ValueError, match=r"rng collection 'drop'.*not in rng_names=\('dropout',\); "
                                         r"pass rng_names=\('dropout', 'drop'\)"):
        init_apply(model, key=KEY, train=True)


def test_linen_rng_names_including_the_collection_works():
    # already right
    y, _ = init_apply(A.from_linen(DrawsDrop(), X, rng_names=("drop",)), key=KEY, train=True)
    assert (np.asarray(y) == 0).any()


def test_linen_training_without_a_key():
    # before: vague error (flax: 'None needs PRNG for "drop"')
    model = A.from_linen(DrawsDrop(), X, rng_names=("drop",))
    with pytest.raises(ValueError, match=r"rng collection 'drop'.*apply\(train=True\), but got key=None; pass key="):
        init_apply(model, train=True)


def test_linen_input_shape_differs_from_example_input():
    # before: vague error (flax ScopeParamShapeError, which does not name example_input)
    model = A.from_linen(LinenDense(), X)
    with pytest.raises(ValueError, match=r"apply got x of shape \(4, 5\).*example_input of shape \(4, 6\)"):
        init_apply(model, jnp.ones((4, 5)))


@pytest.mark.parametrize("example_input, error, text", [
    (None, ValueError, r"example_input must be an input batch .*got example_input=None"),  # before: crash at init (IndexError)
    (jnp.float32(1.0), ValueError, r"example_input must be a batch .*got a scalar"),  # before: crash at init (IndexError)
    ("x", TypeError, r"example_input must hold arrays .*got a str leaf 'x'"),  # before: crash at init
], ids=["none", "scalar", "string"])
def test_linen_example_input_that_is_no_batch(example_input, error, text):
    with pytest.raises(error, match=text):
        A.from_linen(LinenDense(), example_input)


def test_linen_module_class_instead_of_an_instance():
    # before: vague error ("from_linen: expected a flax.linen.Module, got type")
    with pytest.raises(TypeError, match=r"got the class LinenDense; pass an instance: from_linen\(LinenDense\(...\)"):
        A.from_linen(LinenDense, X)


def test_linen_adapter_given_an_nnx_module():
    # before: vague error ("expected a flax.linen.Module, got Linear": no pointer to from_nnx)
    with pytest.raises(TypeError, match=r"module must be a flax.linen.Module instance, got Linear\(...\); "
                                        r"Linear is a Flax NNX module: use gradchain.adapters.from_nnx"):
        A.from_linen(nnx.Linear(6, 3, rngs=nnx.Rngs(0)), X)


def test_linen_switch_set_both_in_the_constructor_and_by_the_adapter():
    # before: vague error (flax: 'Parameter "deterministic" was passed to the constructor and at call time')
    class Both(nn.Module):
        deterministic: bool | None = None

        @nn.compact
        def __call__(self, x, deterministic: bool | None = None):
            return nn.Dropout(0.5)(x, deterministic=nn.merge_param("deterministic", self.deterministic, deterministic))

    with pytest.raises(ValueError, match=r"deterministic= is set in the module's constructor, and the adapter passes "
                                         r"deterministic= at every call.*train_flag=None"):
        A.from_linen(Both(deterministic=True), X).init(KEY)


def test_linen_sow_does_not_grow_the_state():
    # already right (Module.init leaves "intermediates" out of the state, so sow is a no-op in apply)
    class Sows(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            h = nn.Dense(3)(x)
            self.sow("intermediates", "h", h)
            return nn.BatchNorm(use_running_average=not train)(h)

    model = A.from_linen(Sows(), X)
    params, state = model.init(KEY)
    _, new_state = model.apply(params, state, X, key=KEY, train=True)
    assert set(state) == {"batch_stats"}
    assert jax.tree.structure(new_state) == jax.tree.structure(state)


def test_linen_variable_created_only_in_training():
    # before: silent wrong (the state came back with a new entry; a training loop's carry then fails)
    class Late(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            self.variable("batch_stats", "a", jnp.zeros, ())
            if train:
                self.variable("batch_stats", "b", jnp.zeros, ())
            return x

    with pytest.raises(ValueError, match=r"changed the structure of the state \(added \['batch_stats.b'\]\)"):
        init_apply(A.from_linen(Late(), X), key=KEY, train=True)


def test_linen_numeric_call_argument_is_not_taken_for_a_switch():
    # already right (kept: a number named like a regularizer is not a train/test switch)
    class Rate(nn.Module):
        @nn.compact
        def __call__(self, x, dropout_rate=0.1):
            return nn.Dense(3)(x) * (1 - dropout_rate)

    assert init_apply(A.from_linen(Rate(), X), key=KEY, train=True)[0].shape == (4, 3)


def test_linen_bind_is_refused_with_the_alternative():
    # already right
    with pytest.raises(ValueError, match=r"bind= cannot write into them; give __call__ a `config` argument"):
        A.from_linen(IsTrain(), X, bind={"dropout": "rate"})


def test_linen_rng_names_as_a_string():
    # already right (the message now shows the argument as rng_names=...)
    with pytest.raises(TypeError, match=r"rng_names must be a tuple of collection names .*got rng_names='dropout'"):
        A.from_linen(IsTrain(), X, rng_names="dropout")


def test_linen_config_that_is_not_a_mapping():
    # before: crash ("'float' object is not subscriptable" inside the module)
    class Reads(nn.Module):
        @nn.compact
        def __call__(self, x, config):
            return x * config["scale"]

    with pytest.raises(TypeError, match=r"apply\(config=...\) must be a dict of hyperparameters .*got config=0.5"):
        init_apply(A.from_linen(Reads(), X), config=0.5)


# =================================================================================================
# Flax NNX


class NnxDropout(nnx.Module):
    """Linear + dropout, with Flax's own ``nnx.Dropout`` or gradchain's."""

    def __init__(self, rngs, layer=None):
        self.fc = nnx.Linear(6, 3, rngs=rngs)
        self.drop = (layer or gnnx.Dropout)(0.5, rngs=rngs)
        self.layers = nnx.List([nnx.Linear(3, 3, rngs=rngs)])

    def __call__(self, x):
        return self.drop(x)


def test_nnx_flax_dropout_with_bind_names_the_layer_to_use():
    # before: crash (TracerBoolConversionError at the first jitted call)
    with pytest.raises(TypeError, match=r"bind\['dropout'\] = 'drop.rate' is the rate of a flax.nnx.Dropout.*"
                                        r"gradchain.flax.nnx.Dropout\(rate, rngs=rngs\)"):
        A.from_nnx(lambda rngs: NnxDropout(rngs, nnx.Dropout), bind={"dropout": "drop.rate"})


def test_nnx_gradchain_dropout_takes_a_traced_rate():
    # already right: the bound rate is traced under jit and used
    model = A.from_nnx(NnxDropout, bind={"dropout": "drop.rate"})
    params, state = model.init(KEY)

    @jax.jit
    def run(rate):
        return model.apply(params, state, X, key=KEY, train=True, config={"dropout": rate})[0]

    np.testing.assert_array_equal(run(0.0), X)
    assert (np.asarray(run(0.9)) == 0).mean() > 0.5


@pytest.mark.parametrize("bind, error, text", [
    ({"dropout": "drop.rat"}, ValueError, r"bind path 'drop.rat': drop \(Dropout\) has no attribute 'rat'"),  # already right
    ({"dropout": "layers.5.rate"}, ValueError, r"bind path 'layers.5.rate': layers has no item \[5\] \(it has 1 items\)"),  # before: crash (IndexError)
    ({"dropout": "fc"}, TypeError, r"bind\['dropout'\] = 'fc' points at Linear\(...\), not a number"),  # before: crash at the call ("'float' object is not callable")
    ({"dropout": "fc.bias"}, TypeError, r"bind\['dropout'\] = 'fc.bias' points at Param.*not a number"),  # before: crash at the call ("'float' object is not subscriptable")
    ("drop.rate", TypeError, r"bind must be a dict config key -> attribute path .*got bind='drop.rate'"),  # already right
    ({"dropout": "drop..rate"}, ValueError, r"bind\['dropout'\] must be a dotted attribute path .*got 'drop..rate'"),  # before: vague error
], ids=["missing-attribute", "index-out-of-range", "submodule", "param", "not-a-dict", "empty-part"])
def test_nnx_bad_bind(bind, error, text):
    with pytest.raises(error, match=text):
        A.from_nnx(NnxDropout, bind=bind)


def test_nnx_bind_reads_a_missing_config_key():
    # already right
    model = A.from_nnx(NnxDropout, bind={"dropout": "drop.rate"})
    with pytest.raises(KeyError, match=r"bind reads config keys \['dropout'\] that the config does not have "
                                       r"\(it has \['dropuot'\]\)"):
        init_apply(model, key=KEY, train=True, config={"dropuot": 0.1})


def test_nnx_bind_value_that_is_not_a_scalar():
    # before: crash (a broadcasting error; silent wrong when the shape happens to broadcast)
    model = A.from_nnx(NnxDropout, bind={"dropout": "drop.rate"})
    with pytest.raises(ValueError, match=r"config\['dropout'\] into \['drop.rate'\], so it must be one number per run, "
                                         r"got shape \(3,\)"):
        init_apply(model, key=KEY, train=True, config={"dropout": jnp.array([0.1, 0.2, 0.3])})


def test_nnx_layer_that_tests_a_bound_value_in_python():
    # before: crash (raw TracerBoolConversionError)
    class PythonRate(nnx.Module):
        def __init__(self, rngs):
            self.rate = 0.5

        def __call__(self, x):
            return x if self.rate == 0 else x * (1 - self.rate)

    model = A.from_nnx(PythonRate, bind={"dropout": "rate"})
    params, state = model.init(KEY)
    with pytest.raises(TypeError, match=r"bind writes a traced value .* into 'dropout' -> \['rate'\].*"
                                        r"TracerBoolConversionError"):
        jax.jit(lambda r: model.apply(params, state, X, config={"dropout": r}))(0.1)


def test_nnx_factory_that_does_not_take_rngs():
    # before: vague error ("<lambda>() takes 0 positional arguments but 1 was given")
    with pytest.raises(TypeError, match=r"the factory must be callable as factory\(rngs\) or factory\(rngs=rngs\).*"
                                        r"got <lambda>\(\)"):
        A.from_nnx(lambda: NnxDropout(nnx.Rngs(0)))


def test_nnx_factory_with_keyword_only_rngs_works():
    # before: crash ("takes 1 positional argument but 2 were given")
    class KeywordRngs(nnx.Module):
        def __init__(self, *, rngs):
            self.fc = nnx.Linear(6, 3, rngs=rngs)

        def __call__(self, x):
            return self.fc(x)

    assert init_apply(A.from_nnx(KeywordRngs))[0].shape == (4, 3)


@pytest.mark.parametrize("given, text", [
    (LinenDense(), r"got LinenDense\(...\); LinenDense is a Flax Linen module: use gradchain.adapters.from_linen"),  # before: crash (CallCompactUnboundModuleError)
    (eqx.nn.Linear(6, 3, key=KEY), r"got Linear\(...\); Linear is an Equinox module: use gradchain.adapters.from_equinox"),  # before: crash ("unsupported operand type(s) for @: ... 'Rngs'")
    (3, r"module_or_factory must be an nnx.Module or a factory rngs -> nnx.Module, got 3"),  # already right
], ids=["linen", "equinox", "int"])
def test_nnx_adapter_given_something_else(given, text):
    with pytest.raises(TypeError, match=text):
        A.from_nnx(given)


def test_nnx_factory_returning_something_else():
    # already right (the message now also says what it got)
    with pytest.raises(TypeError, match=r"the factory's result must be an nnx.Module, got tuple of 2 \(NnxDropout, NoneType\)"):
        A.from_nnx(lambda rngs: (NnxDropout(rngs), None))


def test_nnx_module_without_call():
    # before: crash at the first call ("'NoCall' object is not callable")
    class NoCall(nnx.Module):
        def __init__(self, rngs):
            self.fc = nnx.Linear(6, 3, rngs=rngs)

    with pytest.raises(TypeError, match=r"NoCall has no __call__, so it cannot be a model"):
        A.from_nnx(NoCall)


def test_nnx_unknown_bool_flag_is_refused_and_can_be_named():
    # before: silent wrong (is_eval never set)
    class IsEval(nnx.Module):
        def __init__(self, rngs):
            self.drop = gnnx.Dropout(0.5, rngs=rngs)

        def __call__(self, x, is_eval: bool = True):
            return self.drop(x, deterministic=is_eval)

    with pytest.raises(ValueError, match=r"IsEval.__call__ has the argument is_eval=True.*train_flag='not is_eval'"):
        A.from_nnx(IsEval)
    assert_dropout_runs_only_in_training(A.from_nnx(IsEval, train_flag="not is_eval"))


def test_nnx_train_argument_is_set():
    # already right
    class TrainArg(nnx.Module):
        def __init__(self, rngs):
            self.drop = gnnx.Dropout(0.5, rngs=rngs)

        def __call__(self, x, train: bool = False):
            return self.drop(x, deterministic=not train)

    assert_dropout_runs_only_in_training(A.from_nnx(TrainArg))


def test_nnx_variable_created_during_the_call():
    # before: silent wrong (the state came back with a new entry: the next call or a scan fails)
    class Grows(nnx.Module):
        def __init__(self, rngs):
            self.fc = nnx.Linear(6, 3, rngs=rngs)

        def __call__(self, x):
            self.seen = nnx.BatchStat(jnp.zeros(()))
            return self.fc(x)

    with pytest.raises(ValueError, match=r"changed the structure of the state \(added \['seen'\]\); create every "
                                         r"nnx.Variable in __init__"):
        init_apply(A.from_nnx(Grows))


def test_nnx_forward_pass_writing_a_parameter():
    # before: silent wrong (the write was dropped: apply returns only the state)
    class Writes(nnx.Module):
        def __init__(self, rngs):
            self.fc = nnx.Linear(6, 3, rngs=rngs)

        def __call__(self, x):
            self.fc.bias[...] = self.fc.bias[...] + 1.0
            return self.fc(x)

    with pytest.raises(ValueError, match=r"the call wrote the nnx.Param 'fc.bias'.*nnx.BatchStat"):
        init_apply(A.from_nnx(Writes))


def test_nnx_training_without_a_key_advances_the_masks():
    # before: silent wrong (the streams were returned unadvanced: the same mask at every step)
    model = A.from_nnx(NnxDropout)
    params, state = model.init(KEY)
    y1, state = model.apply(params, state, X, train=True)
    y2, _ = model.apply(params, state, X, train=True)
    assert not np.array_equal(y1, y2)


def test_nnx_state_that_is_not_the_pair_init_returned():
    # before: crash ("too many values to unpack")
    model = A.from_nnx(NnxDropout)
    params, (rng_state, rest) = model.init(KEY)
    with pytest.raises(TypeError, match=r"apply's state must be the \(rng_state, rest\) pair init returned"):
        model.apply(params, rest, X)


def test_nnx_config_that_is_not_a_mapping():
    # before: crash ("argument of type 'float' is not iterable")
    model = A.from_nnx(NnxDropout, bind={"dropout": "drop.rate"})
    with pytest.raises(TypeError, match=r"apply\(config=...\) must be a dict of hyperparameters .*got config=0.1"):
        init_apply(model, config=0.1)


# =================================================================================================
# Equinox


class WithBuffer(eqx.Module):
    """A trained weight, a fixed float buffer read under stop_gradient, an integer index array."""

    weight: jax.Array
    buffer: jax.Array
    index: jax.Array

    def __init__(self, key):
        self.weight = jax.random.normal(key, (6, 3))
        self.buffer = jnp.full((6, 3), 2.0)
        self.index = jnp.array([2, 0, 1])

    def __call__(self, x):
        return (x @ (self.weight + jax.lax.stop_gradient(self.buffer)))[self.index]


def _decayed_buffer(model):
    """The buffer after one AdamW step with weight decay 0.5 (zero gradients, as stop_gradient gives)."""
    import optax

    params, state = model.init(KEY)
    tx = optax.adamw(0.1, weight_decay=0.5)
    grads = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    params = optax.apply_updates(params, updates)
    return params, state


@pytest.mark.parametrize("frozen", [lambda m: m.buffer, "buffer", ("buffer",)], ids=["where", "path", "paths"])
def test_equinox_frozen_buffer_is_state_and_not_decayed(frozen):
    # before: silent wrong (the buffer was a parameter: weight decay shrank it)
    params, state = _decayed_buffer(A.from_equinox(WithBuffer, frozen=frozen))
    assert params.buffer is None and params.weight is not None
    assert isinstance(state, A.equinox.EquinoxState)
    np.testing.assert_array_equal(state.buffers.buffer, 2.0)


def test_equinox_unfrozen_float_buffer_is_a_parameter():
    # already right, and documented: an inexact array not in frozen= is trained (and decayed)
    params, state = _decayed_buffer(A.from_equinox(WithBuffer))
    assert params.buffer is not None and float(params.buffer[0, 0]) < 2.0


def test_equinox_factory_with_an_integer_array():
    # before: crash (IndexError: the index was a ShapeDtypeStruct left from eval_shape)
    model = A.from_equinox(WithBuffer, frozen=lambda m: m.buffer)
    params, state = model.init(KEY)
    y, new_state = model.apply(params, state, X)
    expected = jax.vmap(WithBuffer(KEY))(X)
    np.testing.assert_allclose(y, expected, rtol=1e-6)  # one float32 matmul of 6 terms: ~6 ulp
    np.testing.assert_array_equal(new_state.buffers.index, [2, 0, 1])


def test_equinox_frozen_submodule_next_to_batch_norm_state():
    # new argument: a whole submodule frozen, the eqx.nn.State carried beside it
    class Projected(eqx.Module):
        fc: eqx.nn.Linear
        proj: eqx.nn.Linear
        bn: eqx.nn.BatchNorm

        def __init__(self, key):
            k1, k2 = jax.random.split(key)
            self.fc, self.proj = eqx.nn.Linear(6, 3, key=k1), eqx.nn.Linear(3, 3, key=k2)
            self.bn = eqx.nn.BatchNorm(3, axis_name="batch", mode="batch")

        def __call__(self, x, state):
            h, state = self.bn(self.fc(x), state)
            return jax.lax.stop_gradient(self.proj)(h), state

    model = A.from_equinox(lambda key: eqx.nn.make_with_state(Projected)(key), frozen=lambda m: m.proj)
    params, state = model.init(KEY)
    assert params.proj.weight is None and params.fc.weight is not None
    assert isinstance(state.state, eqx.nn.State) and state.buffers.proj.weight.shape == (3, 3)
    _, new_state = jax.jit(lambda p, s: model.apply(p, s, X, train=True))(params, state)
    assert jax.tree.structure(new_state) == jax.tree.structure(state)


@pytest.mark.parametrize("frozen, error, text", [
    (lambda m: m.bufer, ValueError, r"frozen=<function .*> does not select leaves of WithBuffer: AttributeError"),  # new argument
    ("bufer", ValueError, r"bind path 'bufer': the model \(WithBuffer\) has no attribute 'bufer'"),  # new argument
    (3, TypeError, r"frozen must be a function module -> leaves .*got frozen=3"),  # new argument
], ids=["where-typo", "path-typo", "int"])
def test_equinox_bad_frozen(frozen, error, text):
    with pytest.raises(error, match=text):
        A.from_equinox(WithBuffer, frozen=frozen)


class Stateful(eqx.Module):
    fc: eqx.nn.Linear
    bn: eqx.nn.BatchNorm

    def __init__(self, key, axis_name="batch"):
        self.fc = eqx.nn.Linear(6, 3, key=key)
        self.bn = eqx.nn.BatchNorm(3, axis_name=axis_name, mode="batch")

    def __call__(self, x, state):
        return self.bn(self.fc(x), state)


def test_equinox_state_given_with_a_factory():
    # before: silent wrong (the state was ignored)
    _, state = eqx.nn.make_with_state(Stateful)(KEY)
    with pytest.raises(ValueError, match=r"state= is for a module given as an instance; a factory returns its own "
                                         r"state .*got state=State"):
        A.from_equinox(lambda key: eqx.nn.make_with_state(Stateful)(key), state)


def test_equinox_stateful_module_without_its_state():
    # before: crash at the call ("missing 1 required positional argument: 'state'")
    module, _ = eqx.nn.make_with_state(Stateful)(KEY)
    with pytest.raises(TypeError, match=r"Stateful.__call__ requires the argument 'state'.*from_equinox\(model, state\)"):
        A.from_equinox(module)


def test_equinox_state_for_a_module_that_takes_none():
    # before: crash at the call ("takes 2 positional arguments but 3 ... were given")
    _, state = eqx.nn.make_with_state(Stateful)(KEY)
    with pytest.raises(TypeError, match=r"a state was given, but Linear.__call__\(x, key\) takes no state argument"):
        A.from_equinox(eqx.nn.Linear(6, 3, key=KEY), state)


def test_equinox_stateful_model_returning_only_the_output():
    # before: crash (a vmap out_axes error)
    class ForgetsState(Stateful):
        def __call__(self, x, state):
            return self.bn(self.fc(x), state)[0]

    module, state = eqx.nn.make_with_state(ForgetsState)(KEY)
    with pytest.raises(TypeError, match=r"a model with state must return \(y, state\) .*ForgetsState.__call__ returned "
                                        r"an array of shape \(3,\)"):
        init_apply(A.from_equinox(module, state), train=True)


def test_equinox_batch_norm_axis_name_differs_from_the_adapters():
    # before: vague error (JAX: "Found an unbound axis name: b. ... call psum under jax.shard_map")
    model = A.from_equinox(lambda key: eqx.nn.make_with_state(Stateful)(key, axis_name="b"))
    with pytest.raises(ValueError, match=r"reduces over the axis 'b'.*axis_name='batch'.*pass per_example=True, "
                                         r"axis_name='b'"):
        init_apply(model, train=True)


def test_equinox_collective_with_per_example_false():
    # before: vague error (JAX: "unbound axis name: batch")
    class Centres(eqx.Module):
        def __call__(self, x):
            return x - jax.lax.pmean(x, "batch")

    model = A.from_equinox(Centres(), per_example=False)
    with pytest.raises(ValueError, match=r"reduces over the axis 'batch'.*per_example=False.*pass per_example=True"):
        init_apply(model, train=True)


def test_equinox_factory_returning_three_things():
    # before: crash ("too many values to unpack")
    with pytest.raises(TypeError, match=r"the factory's result must be an eqx.Module or a pair \(module, state\), "
                                        r"got tuple of 3 \(Stateful, State, NoneType\)"):
        A.from_equinox(lambda key: (*eqx.nn.make_with_state(Stateful)(key), None))


def test_equinox_class_whose_init_takes_more_than_the_key():
    # before: vague error (MLP.__init__ missing arguments, from inside eval_shape)
    with pytest.raises(TypeError, match=r"the factory must be callable as factory\(key\) or factory\(key=key\).*"
                                        r"got MLP\(in_size.*wrap it: lambda key: MLP\(..., key=key\)"):
        A.from_equinox(eqx.nn.MLP)


@pytest.mark.parametrize("given, text", [
    (nnx.Linear(6, 3, rngs=nnx.Rngs(0)), r"got Linear\(...\); Linear is a Flax NNX module: use gradchain.adapters.from_nnx"),  # before: crash (dot_general shapes)
    (LinenDense(), r"got LinenDense\(...\); LinenDense is a Flax Linen module: use gradchain.adapters.from_linen"),  # before: crash (CallCompactUnboundModuleError)
    ("model", r"model_or_factory must be an eqx.Module or a factory .*got 'model'"),  # already right
], ids=["nnx", "linen", "str"])
def test_equinox_adapter_given_something_else(given, text):
    with pytest.raises(TypeError, match=text):
        A.from_equinox(given)


class StaticRate(eqx.Module):
    rate: float = eqx.field(static=True)

    def __call__(self, x):
        return x * (1 - self.rate)


def test_equinox_bind_to_a_static_field():
    # before: vague error at the call (Equinox: "Operation undefined, 0.5 is not a leaf of the pytree")
    with pytest.raises(TypeError, match=r"bind\['scale'\] = 'rate' is a static field \(eqx.field\(static=True\)\)"):
        A.from_equinox(StaticRate(0.5), bind={"scale": "rate"})


def test_equinox_bind_to_an_array_parameter():
    # before: crash at the call ("matmul input operand 0 must have ndim at least 1")
    with pytest.raises(TypeError, match=r"bind\['dropout'\] = 'weight' points at ArrayImpl\(shape=\(3, 6\).*not a number"):
        A.from_equinox(eqx.nn.Linear(6, 3, key=KEY), bind={"dropout": "weight"})


class EqxDropout(eqx.Module):
    fc: eqx.nn.Linear
    drop: eqx.nn.Dropout

    def __init__(self, key):
        self.fc = eqx.nn.Linear(6, 6, key=key)
        self.drop = eqx.nn.Dropout(0.5)

    def __call__(self, x, *, key=None):
        return self.drop(x, key=key)


def test_equinox_dropout_takes_a_traced_rate():
    # already right
    model = A.from_equinox(EqxDropout, bind={"dropout": "drop.p"})
    params, state = model.init(KEY)

    @jax.jit
    def run(rate):
        return model.apply(params, state, X, key=KEY, train=True, config={"dropout": rate})[0]

    np.testing.assert_array_equal(run(0.0), X)
    assert (np.asarray(run(0.9)) == 0).mean() > 0.5


def test_equinox_bound_scalar_array_is_not_trained():
    # before: silent wrong (a bound jnp scalar was also a parameter, with a zero gradient and weight decay)
    class ArrayRate(eqx.Module):
        rate: jax.Array
        w: jax.Array

        def __init__(self, key):
            self.rate, self.w = jnp.float32(0.5), jnp.ones(6)

        def __call__(self, x):
            return x * self.w * self.rate

    params, state = A.from_equinox(ArrayRate, bind={"scale": "rate"}).init(KEY)
    assert params.rate is None and state.buffers.rate is not None


def test_equinox_unknown_bool_flag_is_refused_and_can_be_named():
    # before: silent wrong (deterministic never set: the model always ran its training path)
    class Deterministic(eqx.Module):
        drop: eqx.nn.Dropout

        def __init__(self, key):
            self.drop = eqx.nn.Dropout(0.5)

        def __call__(self, x, *, key=None, deterministic: bool = False):
            return self.drop(x, key=key, inference=deterministic)

    with pytest.raises(ValueError, match=r"Deterministic.__call__ has the argument deterministic=False.*"
                                         r"train_flag='not deterministic'"):
        A.from_equinox(Deterministic)
    assert_dropout_runs_only_in_training(A.from_equinox(Deterministic, train_flag="not deterministic"))


def test_equinox_inference_argument_is_set():
    # before: crash (inference never passed, so its default False ran dropout on the test path: "Dropout requires a key")
    class Inference(eqx.Module):
        drop: eqx.nn.Dropout

        def __init__(self, key):
            self.drop = eqx.nn.Dropout(0.5)

        def __call__(self, x, *, key=None, inference: bool = False):
            return self.drop(x, key=key, inference=inference)

    assert_dropout_runs_only_in_training(A.from_equinox(Inference))


def test_equinox_non_array_leaves_stay_static():
    # already right: functions, Python numbers and strings are static, never parameters
    class Mixed(eqx.Module):
        w: jax.Array
        scale: float
        name: str
        activation: object

        def __init__(self, key):
            self.w, self.scale, self.name, self.activation = jnp.ones(6), 2.0, "mixed", jax.nn.relu

        def __call__(self, x):
            return self.activation(x * self.w * self.scale)

    model = A.from_equinox(Mixed)
    params, state = model.init(KEY)
    assert jax.tree.leaves(params) == [params.w] and state == ()
    np.testing.assert_array_equal(model.apply(params, state, X)[0], 2 * X)


def test_equinox_per_example_that_is_not_a_bool():
    # before: silent wrong (per_example="no" is truthy: the model was vmapped)
    with pytest.raises(TypeError, match=r"per_example must be True .* or False .*got per_example='no'"):
        A.from_equinox(EqxDropout, per_example="no")


def test_linen_nested_list_example_input_works():
    # already right (kept, and now converted to an array: JAX deprecates lists as arrays)
    params, _ = A.from_linen(LinenDense(), [[1.0] * 6, [0.0] * 6]).init(KEY)
    assert params["Dense_0"]["kernel"].shape == (6, 3)


@pytest.mark.parametrize("adapter", ["linen", "equinox"])
def test_module_without_call(adapter):
    # before: crash at the first call ("... object is not callable")
    class LinenNoCall(nn.Module):
        def setup(self):
            self.dense = nn.Dense(3)

    class EqxNoCall(eqx.Module):
        w: jax.Array = None

    with pytest.raises(TypeError, match=r"NoCall has no __call__, so it cannot be a model"):
        if adapter == "linen":
            A.from_linen(LinenNoCall(), X)
        else:
            A.from_equinox(EqxNoCall())


def test_equinox_config_that_is_not_a_mapping():
    # before: crash ("argument of type 'float' is not iterable")
    model = A.from_equinox(EqxDropout, bind={"dropout": "drop.p"})
    with pytest.raises(TypeError, match=r"apply\(config=...\) must be a dict of hyperparameters .*got config=0.1"):
        init_apply(model, config=0.1)
