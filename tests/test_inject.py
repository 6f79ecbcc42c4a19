"""`gradchain.optimizers.inject_hyperparams`: Optax's wrapper made explicit for state-held
hyperparameters, and what `optax.inject_hyperparams(gc.adam)` does (documented, not supported).

The design (gradchain/optimizers.py, module docstring): a gradchain optimizer reads its
hyperparameters from its state; the constructor's arguments are initial values.  Behaviour never
depends on who calls the constructor (no stack inspection).
"""

import pathlib

import jax
import jax.numpy as jnp
import optax
import pytest

import gradchain as gc
from gradchain.optimizers import InjectHyperparamsState, inject_hyperparams

P = {"w": jnp.arange(6.0).reshape(3, 2) / 6, "b": jnp.array([0.5, -0.25])}
G = jax.tree.map(lambda x: 0.3 * x + 0.1, P)


def run(tx, steps=5, params=P, edit=None):
    state = tx.init(params)
    for i in range(steps):
        if edit is not None:
            state = edit(i, state)
        updates, state = tx.update(G, state, params)
        params = optax.apply_updates(params, updates)
    return params, state


def max_diff(a, b):
    return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize(
    "factory, kwargs",
    [(gc.adam, {"learning_rate": 1e-2, "b2": 0.99}), (gc.sgd, {"learning_rate": 0.1, "momentum": 0.9}),
     (gc.adamw, {"learning_rate": 1e-2, "weight_decay": 0.1}), (gc.rmsprop, {"learning_rate": 1e-2})],
)
def test_injected_constants_give_bit_for_bit_the_plain_optimizer(factory, kwargs):
    # the injected values are written into the inner state: the same arrays, the same program
    injected, _ = run(inject_hyperparams(factory)(**kwargs))
    plain, _ = run(factory(**kwargs))
    assert max_diff(injected, plain) == 0.0


def test_injected_schedule_equals_the_schedule_given_directly():
    schedule = gc.cosine_schedule(0.1, 6, end_value=0.01)
    injected, state = run(inject_hyperparams(gc.sgd)(learning_rate=schedule), steps=6)
    direct, _ = run(gc.sgd(schedule), steps=6)
    assert max_diff(injected, direct) == 0.0  # the same float32 values of the same schedule
    # the stored value is the one the next update uses (gradchain's convention)
    assert float(state.hyperparams["learning_rate"]) == pytest.approx(float(schedule(6)), rel=1e-6)
    assert float(gc.get_hyperparams(state)["learning_rate"]) == float(state.hyperparams["learning_rate"])


def test_optax_factories_are_driven_as_optax_drives_them():
    schedule = optax.linear_schedule(1e-2, 1e-3, 5)
    ours, _ = run(inject_hyperparams(optax.adam)(learning_rate=schedule, b1=0.8))
    theirs, _ = run(optax.inject_hyperparams(optax.adam)(learning_rate=schedule, b1=0.8))
    assert max_diff(ours, theirs) == 0.0  # the same float32 hyperparameters, the same Optax code


def test_edits_of_state_hyperparams_and_set_hyperparams_take_effect():
    tx = inject_hyperparams(gc.adam)(learning_rate=0.1)

    def edit(i, state):
        if i == 2:
            state.hyperparams["learning_rate"] = 0.0  # Optax's idiom
        return state

    edited, _ = run(tx, steps=5, edit=edit)
    two_steps, _ = run(tx, steps=2)
    assert max_diff(edited, two_steps) == 0.0  # learning rate 0 from the third step on

    def set_(i, state):
        return gc.set_hyperparams(state, learning_rate=0.0) if i == 2 else state

    assert max_diff(run(tx, steps=5, edit=set_)[0], two_steps) == 0.0


def test_a_new_value_does_not_recompile():
    traces = []
    tx = inject_hyperparams(gc.adam)(learning_rate=1e-2)

    @jax.jit
    def step(params, state):
        traces.append(1)
        updates, state = tx.update(G, state, params)
        return optax.apply_updates(params, updates), state

    params, state = P, tx.init(P)
    for lr in (1e-2, 1e-3, 1e-4):
        state = gc.set_hyperparams(state, learning_rate=lr)
        params, state = step(params, state)
    assert len(traces) == 1


def test_a_population_of_learning_rates_under_vmap():
    rates = jnp.array([0.1, 0.01])
    tx = inject_hyperparams(gc.sgd)

    def final(lr):
        return run(tx(learning_rate=lr), steps=3)[0]

    together = jax.vmap(final)(rates)
    for i, lr in enumerate(rates):
        assert max_diff(jax.tree.map(lambda a: a[i], together), run(gc.sgd(float(lr)), steps=3)[0]) < 1e-7


def test_static_args_must_name_arguments():
    with pytest.raises(ValueError, match=r"static_args must name arguments of 'adam', got \['lr'\]"):
        inject_hyperparams(gc.adam, static_args="lr")


def test_state_layout_is_optaxs():
    state = inject_hyperparams(gc.adam)(learning_rate=0.1).init(P)
    assert isinstance(state, InjectHyperparamsState)
    assert set(state.hyperparams) == {"learning_rate", "b1", "b2", "eps", "eps_root"}
    assert "InjectHyperparamsState(count=0, hyperparams={learning_rate: 0.1" in repr(state)


# --- optax.inject_hyperparams around a gradchain optimizer: documented behaviour ---------------


def test_optax_inject_uses_the_initial_values_and_does_not_see_later_edits():
    """Documented in gradchain/optimizers.py: Optax's wrapper rebuilds the optimizer with the new
    values, but a gradchain optimizer reads its state, which holds the initial ones."""
    tx = optax.inject_hyperparams(gc.adam)(learning_rate=0.1)
    first, _ = run(tx, steps=1)
    assert max_diff(first, run(gc.adam(0.1), steps=1)[0]) == 0.0  # the initial value is used

    def edit(i, state):
        if i == 1:
            state.hyperparams["learning_rate"] = jnp.zeros([])
        return state

    edited, _ = run(tx, steps=3, edit=edit)
    assert max_diff(edited, run(gc.adam(0.1), steps=3)[0]) == 0.0  # the edit does not reach it

    def set_(i, state):  # gc.set_hyperparams reaches the inner state
        return gc.set_hyperparams(state, learning_rate=0.0) if i == 1 else state

    assert max_diff(run(tx, steps=3, edit=set_)[0], run(gc.adam(0.1), steps=1)[0]) == 0.0


def test_no_stack_inspection_in_the_library():
    source = pathlib.Path(gc.__file__).parent
    offenders = [
        str(path.relative_to(source))
        for path in source.rglob("*.py")
        if any(word in path.read_text() for word in ("_getframe", "inspect.stack", "inspect.currentframe"))
    ]
    assert not offenders, offenders
