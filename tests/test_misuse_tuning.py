"""Misuse catalogue of the protocol, tuning, trial store and recipe: every case one test.

Each case states what happens now: a clear error that names the argument, the value and what is
valid, or the correct behaviour.  A comment ``# was: ...`` says what happened before (issue
"One tuning API on one protocol", section 3): a silent wrong, a vague error or a crash.
"""

import dataclasses
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradchain as gc
from gradchain import Split, tuning
from gradchain.protocol import accuracy, softmax_cross_entropy

KEY = jax.random.PRNGKey(0)
X = jax.random.normal(jax.random.PRNGKey(1), (48, 6))
Y = jnp.arange(48) % 3
DATA = Split(X[:32], Y[:32], X[32:], Y[32:])


def linear(key):
    return {"w": jax.random.normal(key, (6, 3)) * 0.1, "b": jnp.zeros(3)}


MODEL = gc.from_function(linear, lambda p, x: x @ p["w"] + p["b"])
TRAINABLE = gc.supervised(MODEL)


def sgd(config):
    return gc.sgd(config["learning_rate"])


def adam(config):
    return gc.adam(config["learning_rate"])


def fit(steps=4, **kw):
    return tuning.make_fit(TRAINABLE, sgd, DATA, steps=steps, batch_size=8, **kw)


# --- the protocol: models, trainables, losses ------------------------------------------------------

PROTOCOL = [
    ("supervised of a non-model", lambda: gc.supervised(lambda x: x), TypeError, "model must be a gradchain.Model"),
    ("unknown loss name", lambda: gc.supervised(MODEL, "hinge"), ValueError, "got loss='hinge'"),
    ("metric named loss", lambda: gc.supervised(MODEL, metrics={"loss": "accuracy"}), ValueError, "must not be named 'loss'"),
    ("metrics of a wrong type", lambda: gc.supervised(MODEL, metrics=3), TypeError, "metrics must be a dict"),
    ("augment not callable", lambda: gc.supervised(MODEL, augment=1.0), TypeError, "augment must be callable"),
    ("penalty not callable", lambda: gc.supervised(MODEL, penalty="l2"), TypeError, "penalty must be callable"),
    ("from_function init not callable", lambda: gc.from_function(3, lambda p, x: x), TypeError, "init must be callable"),
    # was: "too many values to unpack" deep inside the loss
    ("apply returning the output only", lambda: jax.jit(tuning.make_fit(
        gc.supervised(gc.Model(lambda k: (linear(k), ()), lambda p, s, x, **kw: x @ p["w"])), sgd, DATA, steps=2,
        batch_size=8))({"learning_rate": 0.1}, KEY), TypeError, r"model.apply must return \(output, state\)"),
    # was: "too many values to unpack" in make_fit's first run
    ("init returning params only", lambda: tuning.make_fit(
        gc.supervised(gc.Model(linear, lambda p, s, x, **kw: (x @ p["w"], s))), sgd, DATA, steps=2),
     TypeError, r"init\(key\) must return \(params, state\)"),
    ("stateful init returning params only", lambda: gc.from_function(linear, lambda p, s, x: (x, s), stateful=True).init(KEY),
     ValueError, r"with stateful=True, init must return \(params, state\)"),
    # was: the soft-label branch (loss 2.47 instead of 1.10)
    ("integer labels of shape (N, 1) in the loss", lambda: softmax_cross_entropy(jnp.zeros((4, 3)), jnp.zeros((4, 1), jnp.int32)),
     ValueError, r"pass y\[:, 0\]"),
    # was: an N×N broadcast
    ("integer labels of shape (N, 1) in accuracy", lambda: accuracy(jnp.zeros((4, 3)), jnp.zeros((4, 1), jnp.int32)),
     ValueError, r"class ids of shape \(4,\)"),
    ("float class ids in the loss", lambda: softmax_cross_entropy(jnp.zeros((4, 3)), jnp.zeros(4)), ValueError,
     "class labels must be integers"),
]


@pytest.mark.parametrize("name, call, error, match", PROTOCOL, ids=[c[0] for c in PROTOCOL])
def test_protocol_misuse(name, call, error, match):
    with pytest.raises(error, match=match):
        call()


# --- data: shape, dtype, range, finiteness -----------------------------------------------------------

DATA_CASES = [
    ("a 3-tuple for a split", lambda: gc.check_data((X, Y, X)), TypeError, "Split.*got tuple of length 3"),
    ("a dict for a split", lambda: gc.check_data({"x": X}), TypeError, "got dict"),
    ("x and y of different lengths", lambda: gc.check_data(Split(X, Y[:10], X, Y)), ValueError,
     r"data.x_train has \[48\] rows but data.y_train has 10"),
    ("an empty validation split", lambda: gc.check_data(Split(X, Y, X[:0], Y[:0])), ValueError, "data.x_val and data.y_val are empty"),
    # was: every loss NaN and val_accuracy 0.5 reported as if real
    ("NaN in the training inputs", lambda: gc.check_data(Split(X.at[5, 2].set(jnp.nan), Y, X, Y)), ValueError,
     "data.x_train has non-finite values .* 1 rows, the first at row 5"),
    ("Inf in the validation inputs", lambda: gc.check_data(Split(X, Y, X.at[7].set(jnp.inf), Y)), ValueError,
     "data.x_val has non-finite values .* row 7"),
    ("NaN in regression targets", lambda: gc.check_data(Split(X, X.at[3, 0].set(jnp.nan), X, X)), ValueError,
     "data.y_train has non-finite values .* row 3"),
    # was: the soft-label branch
    ("integer labels of shape (N, 1)", lambda: gc.check_data(Split(X, Y[:, None], X, Y)), ValueError,
     r"data.y_train holds integer class ids of shape \(48, 1\).*pass y\[:, 0\]"),
    ("scalar targets", lambda: gc.check_data(Split(X, jnp.int32(1), X, Y)), ValueError, "one row per example"),
    # was: NaN losses with finite gradients
    ("a class id beyond the outputs", lambda: tuning.train_population(
        tuning.make_fit(TRAINABLE, sgd, Split(X, Y.at[9].set(10), X, Y), steps=2, batch_size=8),
        [{"learning_rate": 0.1}], KEY[None]), ValueError,
     r"data.y_train has class ids outside 0..2 \(the model has 3 outputs\): 1 rows, the first row 9 with label 10"),
    # was: -1 silently the last class
    ("a class id of -1", lambda: tuning.train_population(
        tuning.make_fit(TRAINABLE, sgd, Split(X, Y, X, Y.at[0].set(-1)), steps=2, batch_size=8),
        [{"learning_rate": 0.1}], KEY[None]), ValueError, "data.y_val has class ids outside 0..2.*row 0 with label -1"),
    ("soft labels of the wrong width", lambda: tuning.train_population(
        tuning.make_fit(TRAINABLE, sgd, Split(X, jnp.full((48, 4), 0.25), X, Y), steps=2, batch_size=8),
        [{"learning_rate": 0.1}], KEY[None]), ValueError, r"probability rows of shape \(N, 3\)"),
]


@pytest.mark.parametrize("name, call, error, match", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_data_misuse(name, call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_a_split_of_numpy_arrays_trains():  # was: TracerArrayConversionError
    numpy_data = Split(*(np.asarray(a) for a in DATA))
    result = jax.jit(tuning.make_fit(TRAINABLE, sgd, numpy_data, steps=4, batch_size=8))({"learning_rate": 0.1}, KEY)
    expected = jax.jit(fit())({"learning_rate": 0.1}, KEY)
    np.testing.assert_array_equal(result.losses, expected.losses)  # the same arrays, the same program


# --- runs and populations --------------------------------------------------------------------------

RUN_CASES = [
    ("a Model for a Trainable", lambda: tuning.make_fit(MODEL, sgd, DATA, steps=2), TypeError,
     "trainable must be a gradchain.Trainable"),
    ("make_optimizer not callable", lambda: tuning.make_fit(TRAINABLE, gc.sgd(0.1), DATA, steps=2), TypeError,
     "make_optimizer must be a function config -> GradientTransformation"),
    ("make_optimizer returning a number", lambda: jax.jit(tuning.make_fit(TRAINABLE, lambda c: 0.1, DATA, steps=2))(
        {"learning_rate": 0.1}, KEY), TypeError, "make_optimizer.config. must return a gradient transformation, got 0.1"),
    ("zero steps", lambda: fit(steps=0), ValueError, "steps must be a positive int, got 0"),
    ("batch size True", lambda: tuning.make_fit(TRAINABLE, sgd, DATA, steps=2, batch_size=True), ValueError,
     "batch_size must be a positive int, got True"),
    ("eval_every not a divisor", lambda: fit(steps=10, eval_every=3), ValueError, "eval_every must be a positive divisor of steps=10"),
    ("mode up", lambda: fit(mode="up"), ValueError, "mode must be 'max' or 'min', got 'up'"),
    ("data_fraction 0", lambda: fit(data_fraction=0.0), ValueError, r"data_fraction must be in \(0, 1\]"),
    ("select a metric that is not produced", lambda: tuning.train_population(fit(select="val_acc"), [{"learning_rate": 0.1}], KEY[None]),
     ValueError, "select='val_acc' is not a metric .*'val_accuracy'"),
    ("a config key nobody reads", lambda: tuning.train_population(fit(), [{"learning_rate": 0.1, "dropuot": 0.1}], KEY[None]),
     ValueError, r"config keys \['dropuot'\] are never read"),
    # was: "every config array must have one entry per key (2)" for one raw key
    ("one key for several configs", lambda: tuning.train_population(fit(), [{"learning_rate": 0.1}] * 3, KEY), ValueError,
     r"one key for several configs: jax.random.split\(key, K\)"),
    ("configs of different sizes", lambda: tuning.train_population(fit(), {"learning_rate": jnp.ones(2)}, jax.random.split(KEY, 3)),
     ValueError, r"one entry per key \(3\), got sizes \{'learning_rate': 2\}"),
    ("a bogus strategy", lambda: tuning.train_population(fit(), [{"learning_rate": 0.1}], KEY[None], strategy="pmap"),
     ValueError, "strategy must be 'vmap', 'map' or 'sequential', got 'pmap'"),
    ("configs as a number", lambda: tuning.train_population(fit(), 0.1, KEY[None]), TypeError,
     "configs must be a dict name -> array"),
    ("stack_configs of a dict", lambda: tuning.stack_configs({"learning_rate": 0.1}), TypeError, "configs must be a list of dicts"),
    ("stack_configs of numbers", lambda: tuning.stack_configs([0.1, 0.2]), TypeError, r"configs\[0\] must be a dict"),
    ("population_evaluate of a function", lambda: tuning.population_evaluate(sgd, KEY), TypeError,
     "fit must be a gradchain.tuning.Fit"),
]


@pytest.mark.parametrize("name, call, error, match", RUN_CASES, ids=[c[0] for c in RUN_CASES])
def test_run_misuse(name, call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_a_list_of_dicts_is_a_population():  # was: AttributeError 'list' object has no attribute 'items'
    configs = [{"learning_rate": 0.1}, {"learning_rate": 0.01}]
    keys = jax.random.split(KEY, 2)
    listed = tuning.train_population(fit(), configs, keys)
    stacked = tuning.train_population(fit(), tuning.stack_configs(configs), keys)
    np.testing.assert_array_equal(listed.losses, stacked.losses)


# --- divergence: never selected, never reported as a number -----------------------------------------


def _wild_population():
    run = tuning.make_fit(TRAINABLE, sgd, DATA, steps=8, batch_size=8, eval_every=4)
    return tuning.train_population(run, [{"learning_rate": 0.1}, {"learning_rate": 1e38}], jax.random.split(KEY, 2))


def test_a_diverged_member_is_marked_and_its_metrics_are_nan():  # was: val_accuracy 0.4375 from NaN logits
    result = _wild_population()
    assert result.diverged.tolist() == [False, True]
    assert np.isnan(np.asarray(result.metrics["val_accuracy"][1])).all()
    assert np.isfinite(np.asarray(result.metrics["val_accuracy"][0])).all()


def test_a_diverged_trial_never_wins_a_search(tmp_path):  # was: best() picked the lr 1e38 member
    evaluate = tuning.population_evaluate(fit(steps=8), KEY)
    records = tuning.run_trials([{"learning_rate": 1e38}, {"learning_rate": 1e-6}], evaluate, store=tmp_path / "t.jsonl")
    assert [r["status"] for r in records] == ["diverged", "ok"]
    assert tuning.best(records, "val_accuracy")["config"]["learning_rate"] == 1e-6
    assert tuning.best(records, "val_loss", mode="min")["config"]["learning_rate"] == 1e-6


def test_a_record_marked_diverged_loses_even_with_a_finite_metric():
    records = [{"metrics": {"acc": 0.99}, "status": "diverged"}, {"metrics": {"acc": 0.5}, "status": "ok"}]
    assert tuning.best(records, "acc")["metrics"]["acc"] == 0.5


BEST_CASES = [
    ("every trial diverged", lambda: tuning.best([{"metrics": {"acc": 0.9}, "status": "diverged"}], "acc"), ValueError,
     "every run failed or diverged"),
    ("a metric the records lack", lambda: tuning.best([{"metrics": {"acc": 0.9}}], "val_acc"), ValueError,
     r"metric='val_acc' is not in the records; they have \['acc'\]"),
]


@pytest.mark.parametrize("name, call, error, match", BEST_CASES, ids=[c[0] for c in BEST_CASES])
def test_best_misuse(name, call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_nan_from_the_loss_marks_the_run_diverged():
    blowup = gc.supervised(MODEL, lambda out, y: jnp.log(-jnp.abs(out[:, 0]) - 1.0))  # log of a negative: NaN
    result = jax.jit(tuning.make_fit(blowup, sgd, DATA, steps=2, batch_size=8, select="val_loss", mode="min"))(
        {"learning_rate": 0.1}, KEY)
    assert bool(result.diverged)


# --- the trial store ------------------------------------------------------------------------------------


def _write(path, text):
    path.write_text(text)
    return path


STORE_CASES = [
    # was: read the device without end (23 GB, then out of memory)
    ("a device", lambda tmp: tuning.TrialStore("/dev/full"), ValueError, "is not a regular file"),
    ("a folder", lambda tmp: tuning.TrialStore(tmp), ValueError, "is not a regular file"),
    # was: KeyError 'id' without the line
    ("a record without id", lambda tmp: tuning.TrialStore(_write(tmp / "s.jsonl", '{"config": {}}\n')), ValueError,
     r"line 1: a record must be a JSON object with a string \"id\""),
    ("a bare number", lambda tmp: tuning.TrialStore(_write(tmp / "s.jsonl", '{"id": "a"}\n42\n')), ValueError, "line 2"),
    ("garbage before the last line", lambda tmp: tuning.TrialStore(_write(tmp / "s.jsonl", 'not json\n{"id": "a"}\n')),
     ValueError, "line 1: not JSON"),
    # was: failed only after the first trial was evaluated (its result lost)
    ("a missing folder", lambda tmp: tuning.run_trials([{"a": 1.0}], lambda cs: pytest.fail("evaluated"),
                                                       store=tmp / "missing" / "s.jsonl"), FileNotFoundError,
     "the folder .*missing.* does not exist"),
    ("a record without id added", lambda tmp: tuning.TrialStore(None).add_record({"config": {}}), ValueError,
     "a record must be a dict with a string 'id'"),
]


@pytest.mark.parametrize("name, call, error, match", STORE_CASES, ids=[c[0] for c in STORE_CASES])
def test_store_misuse(name, call, error, match, tmp_path):
    with pytest.raises(error, match=match):
        call(tmp_path)


def test_a_torn_last_line_is_dropped_and_the_store_stays_usable(tmp_path):
    path = _write(tmp_path / "s.jsonl", json.dumps({"id": "a", "metrics": {}}) + '\n{"id": "b", "met')
    store = tuning.TrialStore(path)
    assert list(store.results) == ["a"]
    store.add_record({"id": "c", "metrics": {}})
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["a", "c"]


TRIALS_CASES = [
    ("evaluate returning too few results", lambda: tuning.run_trials([{"a": 1.0}, {"a": 2.0}], lambda cs: [{"f": 0.0}]),
     ValueError, "evaluate returned 1 results for 2 configurations"),
    ("evaluate returning numbers", lambda: tuning.run_trials([{"a": 1.0}], lambda cs: [0.5]), TypeError,
     "evaluate must return a dict of metrics"),
    ("population size 0", lambda: tuning.run_trials([{"a": 1.0}], lambda cs: [{}], population=0), ValueError,
     "population must be a positive int, got 0"),
    ("evaluate not callable", lambda: tuning.run_trials([{"a": 1.0}], None), TypeError, "evaluate must be a function"),
    ("configs as one dict", lambda: tuning.run_trials({"a": 1.0}, lambda cs: [{}]), TypeError, "configs must be a list of dicts"),
]


@pytest.mark.parametrize("name, call, error, match", TRIALS_CASES, ids=[c[0] for c in TRIALS_CASES])
def test_run_trials_misuse(name, call, error, match):
    with pytest.raises(error, match=match):
        call()


def _counting(offset, calls):
    def evaluate(configs):
        calls.append(len(configs))
        return [{"f": c["a"] + offset} for c in configs]

    return evaluate


def test_a_changed_evaluate_never_reuses_an_old_result(tmp_path):  # was: ids hashed the config only
    store, calls = tmp_path / "s.jsonl", []
    first = tuning.run_trials([{"a": 1.0}], _counting(0.0, calls), store=store)
    again = tuning.run_trials([{"a": 1.0}], _counting(0.0, calls), store=store)
    changed = tuning.run_trials([{"a": 1.0}], _counting(5.0, calls), store=store)  # a closure value changed
    assert calls == [1, 1] and again == first and changed[0]["metrics"]["f"] == 6.0


def test_an_explicit_fingerprint_decides_reuse(tmp_path):
    store, calls = tmp_path / "s.jsonl", []
    tuning.run_trials([{"a": 1.0}], _counting(0.0, calls), store=store, fingerprint="v1")
    tuning.run_trials([{"a": 1.0}], _counting(9.0, calls), store=store, fingerprint="v1")
    tuning.run_trials([{"a": 1.0}], _counting(0.0, calls), store=store, fingerprint="v2")
    assert calls == [1, 1]


def test_a_population_trial_is_keyed_on_optimizer_init_and_key(tmp_path):
    # was: the recipe's fingerprint missed the optimizer factory and the initial parameters
    store = tuning.TrialStore(tmp_path / "s.jsonl")
    configs = [{"learning_rate": 0.1}]
    other_init = gc.supervised(gc.from_function(lambda k: linear(jax.random.fold_in(k, 1)), lambda p, x: x @ p["w"] + p["b"]))

    def evaluate(trainable=TRAINABLE, make=sgd, key=KEY):
        return tuning.population_evaluate(tuning.make_fit(trainable, make, DATA, steps=4, batch_size=8), key)

    ids = [tuning.run_trials(configs, e, store=store)[0]["id"] for e in
           (evaluate(), evaluate(), evaluate(make=adam), evaluate(trainable=other_init), evaluate(key=jax.random.PRNGKey(5)))]
    assert ids[0] == ids[1] and len(set(ids)) == 4


# --- settings ------------------------------------------------------------------------------------------

SETTINGS_CASES = [
    ("an epochs key spelled refnie", lambda: tuning.RecipeSettings(epochs={"refnie": 3}), ValueError,
     r"unknown keys \['refnie'\]; the valid keys are \['coarse', 'final', 'max_refine', 'refine'\]"),
    ("refine longer than max_refine", lambda: tuning.RecipeSettings(epochs={"refine": 80}), ValueError,
     r"epochs\['refine'\]=80 must not exceed settings.epochs\['max_refine'\]=60"),
    ("zero epochs", lambda: tuning.RecipeSettings(epochs={"final": 0}), ValueError, r"epochs\['final'\] must be a positive int"),
    ("an unknown setting", lambda: tuning.RecipeSettings.of({"populaton": 4}), ValueError,
     r"unknown keys \['populaton'\]; the valid keys are \['epochs', 'batch_size', 'population'"),
    ("population 0", lambda: tuning.RecipeSettings(population=0), ValueError, "settings.population must be a positive int, got 0"),
    ("a negative budget", lambda: tuning.RecipeSettings(budget=-3), ValueError, "settings.budget must be a positive number"),
    ("mode best", lambda: tuning.RecipeSettings(mode="best"), ValueError, "settings.mode must be 'max' or 'min'"),
    ("select on training", lambda: tuning.RecipeSettings(select="train_accuracy"), ValueError,
     "settings.select must name a validation metric"),
    ("settings as a list", lambda: tuning.RecipeSettings.of([("population", 4)]), TypeError, "settings must be a"),
    ("regularizers as one string", lambda: tuning.RecipeSettings(regularizers="dropout"), TypeError,
     "settings.regularizers must be a list"),
    ("min_delta NaN", lambda: tuning.RecipeSettings(min_delta=math.nan), ValueError, "settings.min_delta must be a finite number"),
    ("a float seed", lambda: tuning.RecipeSettings(seed=1.5), ValueError, "settings.seed must be an int"),
    ("assigning to frozen settings", lambda: setattr(tuning.RecipeSettings(), "population", 2),
     dataclasses.FrozenInstanceError, "population"),
]


@pytest.mark.parametrize("name, call, error, match", SETTINGS_CASES, ids=[c[0] for c in SETTINGS_CASES])
def test_settings_misuse(name, call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_settings_replace_validates_and_keeps_the_rest():
    settings = tuning.RecipeSettings(population=4).replace(ensemble=2)
    assert (settings.population, settings.ensemble, settings.epochs["final"]) == (4, 2, 40)
    with pytest.raises(ValueError, match="settings.ensemble"):
        settings.replace(ensemble=0)


# --- the recipe: everything checked before anything trains -------------------------------------------------

RECIPE_CASES = [
    ("learning_rate in the space", lambda out: tuning.recipe(TRAINABLE, DATA, {"learning_rate": tuning.LogUniform(1e-4, 1)}, out=out),
     ValueError, "besides learning_rate"),
    ("a space that is a list", lambda out: tuning.recipe(TRAINABLE, DATA, ["dropout"], out=out), TypeError, "space must be a dict"),
    ("a regularizer not in the space", lambda out: tuning.recipe(TRAINABLE, DATA, {}, settings={"regularizers": ["dropout"]}, out=out),
     ValueError, r"regularizers \['dropout'\] are not in space"),
    ("a LogUniform from zero", lambda out: tuning.recipe(TRAINABLE, DATA, {"weight_decay": tuning.LogUniform(0.0, 1.0)}, out=out),
     ValueError, r"space\['weight_decay'\] needs finite low < high"),
    # was: trained every stage and the ensemble, then failed deep in JAX with no report
    ("a test set of the wrong width", lambda out: tuning.recipe(TRAINABLE, DATA, {}, test=(X[:, :5], Y), out=out), ValueError,
     "test inputs have rows of shape/dtype"),
    ("test labels beyond the outputs", lambda out: tuning.recipe(TRAINABLE, DATA, {}, test=(X, Y + 1), out=out), ValueError,
     "test.1. has class ids outside 0..2"),
    ("a test set that is not a pair", lambda out: tuning.recipe(TRAINABLE, DATA, {}, test=X, out=out), TypeError,
     r"test must be a pair \(x_test, y_test\)"),
    ("test labels of shape (N, 1)", lambda out: tuning.recipe(TRAINABLE, DATA, {}, test=(X, Y[:, None]), out=out), ValueError,
     r"test\[1\] holds integer class ids of shape \(48, 1\)"),
    ("make_optimizer not callable", lambda out: tuning.recipe(TRAINABLE, DATA, {}, make_optimizer=gc.adam(1e-3), out=out),
     TypeError, "make_optimizer must be a function"),
    ("a Model for a Trainable", lambda out: tuning.recipe(MODEL, DATA, {}, out=out), TypeError, "trainable must be a gradchain.Trainable"),
    ("NaN in the data", lambda out: tuning.recipe(TRAINABLE, DATA._replace(x_val=DATA.x_val.at[2].set(jnp.nan)), {}, out=out),
     ValueError, "data.x_val has non-finite values"),
    ("an unknown setting", lambda out: tuning.recipe(TRAINABLE, DATA, {}, settings={"epoch": 3}, out=out), ValueError,
     r"unknown keys \['epoch'\]"),
]


@pytest.mark.parametrize("name, call, error, match", RECIPE_CASES, ids=[c[0] for c in RECIPE_CASES])
def test_recipe_misuse_fails_before_training(name, call, error, match, tmp_path):
    with pytest.raises(error, match=match):
        call(tmp_path / "out")
    assert not os.path.exists(tmp_path / "out" / "trials.jsonl")  # nothing was trained


def test_recipe_out_that_is_a_file_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError, match="is not a writable folder"):
        tuning.recipe(TRAINABLE, DATA, {}, out=blocker / "sub")


# --- the steps on their own -------------------------------------------------------------------------------

STEP_CASES = [
    ("lr_finder given a learning rate", lambda: tuning.lr_finder(TRAINABLE, sgd, DATA, KEY, {"learning_rate": 0.1}), ValueError,
     "config must not hold 'learning_rate'"),
    ("lr_finder window too long", lambda: tuning.lr_finder(TRAINABLE, sgd, DATA, KEY, steps=10, window=6), ValueError,
     "window must be a positive int with 2.window <= steps=10"),
    ("lr_finder tolerance 0", lambda: tuning.lr_finder(TRAINABLE, sgd, DATA, KEY, tolerance=0.0), ValueError,
     r"tolerance must be in \(0, 1\]"),
    ("overfit on 0 examples", lambda: tuning.overfit_small_sample(TRAINABLE, sgd, DATA, {"learning_rate": 0.1}, KEY, num_examples=0),
     ValueError, "num_examples must be a positive int"),
    ("initial loss rtol negative", lambda: tuning.check_initial_loss(TRAINABLE, DATA, KEY, rtol=-0.1), ValueError,
     "rtol must be a positive number"),
    ("initial loss of a bare function", lambda: tuning.check_initial_loss(lambda p, b: 1.0, DATA, KEY), TypeError,
     "trainable must be a gradchain.Trainable"),
    ("ensemble metric unknown", lambda: tuning.evaluate_ensemble(TRAINABLE, *_members(), (X, Y), metric="f1"), ValueError,
     r"metric='f1' is not reported by trainable.evaluate"),
    ("ensemble without predict", lambda: tuning.evaluate_ensemble(TRAINABLE._replace(predict=None), *_members(), (X, Y)),
     ValueError, "trainable.predict is None"),
    ("diagnose no losses", lambda: tuning.diagnose([]), ValueError, "losses must be a non-empty 1-d sequence"),
    ("diagnose a matrix", lambda: tuning.diagnose(np.ones((3, 3))), ValueError, r"got shape \(3, 3\)"),
]


def _members():
    result = tuning.train_population(fit(), [{"learning_rate": 0.1}] * 2, jax.random.split(KEY, 2))
    return result.params, result.model_state


@pytest.mark.parametrize("name, call, error, match", STEP_CASES, ids=[c[0] for c in STEP_CASES])
def test_step_misuse(name, call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_initial_loss_of_a_regression_has_no_expectation():
    regression = gc.supervised(MODEL, "mse")
    report = tuning.check_initial_loss(regression, Split(X, X[:, :3], X, X[:, :3]), KEY)
    assert report.kind == "no_expectation" and report.expected is None and report.ok


def test_command_center_wraps_long_titles(tmp_path):
    # was: the panel titles ran into each other
    runs = [{"title": "dropout 0.123, learning rate 0.00456, weight decay 1.23e-05, augment 0.42", "losses": [1.0, 0.5]}] * 2
    figure = tuning.command_center(runs, str(tmp_path / "cc.png"))
    assert all("\n" in ax.get_title() for ax in figure.axes if ax.get_title())
