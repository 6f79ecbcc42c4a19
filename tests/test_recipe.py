"""The recipe as a library call: on a user's NNX CNN, on a regression, step 7's loop acting on the
curves, resuming after SIGKILL, honest reruns, Ctrl-C and bad paths."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import gradchain as gc
from gradchain import Split, tuning
from gradchain.examples.digits import digits, digits_images
from gradchain.examples.models import mlp_model
from gradchain.flax import nnx as gnnx
from gradchain.tuning import LogUniform, RecipeSettings, Uniform

TINY = RecipeSettings(epochs={"coarse": 1, "refine": 2, "final": 2, "max_refine": 4}, population=4, ensemble=2,
                      max_rounds=2)


class CNN(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(1, 8, (3, 3), rngs=rngs)
        self.bn = gnnx.BatchNorm(8)
        self.drop = gnnx.Dropout(0.0, rngs=rngs)
        self.out = nnx.Linear(8 * 16, 10, rngs=rngs)

    def __call__(self, x):
        h = nnx.max_pool(jax.nn.relu(self.bn(self.conv(x))), (2, 2), (2, 2))
        return self.out(self.drop(h.reshape(h.shape[0], -1)))


def _split(full, n_train=None):
    n = len(full.y_val)
    data = Split(full.x_train[n:], full.y_train[n:], full.x_train[:n], full.y_train[:n])
    if n_train:
        data = data._replace(x_train=data.x_train[:n_train], y_train=data.y_train[:n_train])
    return data, (full.x_val, full.y_val)


def _report(out):
    with open(os.path.join(out, "report.md"), encoding="utf-8") as f:
        return f.read()


def test_recipe_on_a_users_nnx_cnn_with_dropout_batch_norm_and_augmentation(tmp_path):
    data, test = _split(digits_images(jax.random.PRNGKey(0)), n_train=400)  # 6 steps an epoch: a fast check
    model = gc.adapters.from_nnx(CNN, bind={"dropout": "drop.rate"})

    def augment(key, x, y, config):
        shifted = gc.augment.apply_batch(lambda k, im: gc.augment.random_crop(k, im, 8, padding=1), key, x)
        return jnp.where(jax.random.uniform(key, (x.shape[0], 1, 1, 1)) < config["augment"], shifted, x), y

    trainable = gc.supervised(model, augment=augment)
    space = {"dropout": Uniform(0.0, 0.3), "augment": Uniform(0.0, 0.5), "weight_decay": LogUniform(1e-5, 1e-3)}
    summary = tuning.recipe(trainable, data, space, test=test, out=tmp_path, settings=TINY)
    report = _report(tmp_path)
    for heading in ("## 1. Initial loss", "## 2.", "## 3.", "## 4.", "## 5. Refine, round 1", "## 6.", "## 7."):
        assert heading in report
    # structure, not accuracy: 2 epochs on 400 digits end anywhere in 0.4-0.9 depending on round-off
    assert "Step 7" in report and "Partial report" not in report and 0.0 <= summary["test_single"] <= 1.0
    assert {"test_ensemble", "config", "decisions"} <= set(summary)
    for picture in ("overfit.png", "lr_finder.png", "command_center_1.png", "final.png"):
        assert (tmp_path / picture).stat().st_size > 10_000


def test_recipe_on_a_regression_selects_on_mse(tmp_path):
    full = digits(jax.random.PRNGKey(0))
    w = jax.random.normal(jax.random.PRNGKey(1), (64, 1)) / 8
    target = lambda x: jnp.tanh(x @ w)
    data = Split(full.x_train[:800], target(full.x_train[:800]), full.x_val, target(full.x_val))
    trainable = gc.supervised(mlp_model((64, 32, 1)), "mse")
    settings = RecipeSettings(select="val_mse", mode="min", population=4, ensemble=2, max_rounds=1,
                              epochs={"coarse": 2, "refine": 6, "final": 6, "max_refine": 6})
    summary = tuning.recipe(trainable, data, {"weight_decay": LogUniform(1e-5, 1e-3)}, test=(full.x_val, target(full.x_val)),
                            out=tmp_path, settings=settings)
    report = _report(tmp_path)
    assert "selecting on val_mse (min)" in report and "log(" not in report.split("## 2.")[0]
    assert summary["test_mse"] < 0.5 * float(jnp.var(target(full.x_val)))  # well below predicting the mean


@pytest.mark.slow
def test_step_7_widens_regularization_when_the_run_overfits(tmp_path):
    # 150 training digits, a wide MLP, regularization ranges that start almost at zero
    data, test = _split(digits(jax.random.PRNGKey(0)), n_train=150)
    trainable = gc.supervised(mlp_model((64, 512, 512, 10)))
    space = {"dropout": Uniform(0.0, 0.02), "weight_decay": LogUniform(1e-6, 1e-5)}
    summary = tuning.recipe(trainable, data, space, out=tmp_path, settings=RecipeSettings(
        min_delta=0.0, max_rounds=3, population=6, ensemble=1, epochs={"coarse": 5, "refine": 20, "final": 5, "max_refine": 20}))
    actions = [d["action"] for d in summary["decisions"]]
    assert any(a.startswith("regularization widened") for a in actions), actions
    assert summary["refined_best"] > summary["first_refinement_best"]
    assert "regularization widened" in _report(tmp_path)


def test_step_7_trains_longer_when_the_run_underfits(tmp_path):
    data, _ = _split(digits(jax.random.PRNGKey(0)))
    trainable = gc.supervised(mlp_model((64, 8, 10)))
    summary = tuning.recipe(trainable, data, {}, out=tmp_path, settings=RecipeSettings(
        min_delta=0.0, max_rounds=2, population=4, ensemble=1, epochs={"coarse": 1, "refine": 2, "final": 1, "max_refine": 4}))
    assert any(d["action"].startswith("train longer: 2 → 4 epochs") for d in summary["decisions"]), summary["decisions"]


SCRIPT = textwrap.dedent("""
    import sys, jax, gradchain as gc
    from gradchain import Split
    from gradchain.examples.digits import digits
    from gradchain.examples.models import mlp_model
    from gradchain.tuning import LogUniform
    full = digits(jax.random.PRNGKey(0))
    data = Split(full.x_train[300:], full.y_train[300:], full.x_train[:300], full.y_train[:300])
    epochs = int(sys.argv[2])
    gc.tuning.recipe(gc.supervised(mlp_model((64, 32, 10))), data, {{"weight_decay": LogUniform(1e-5, 1e-3)}},
                     out=sys.argv[1], settings=dict(population=4, ensemble=2, max_rounds=2, min_delta=0.0,
                     epochs={{"coarse": epochs, "refine": epochs, "final": 1, "max_refine": epochs}}))
""")


def _run(out, epochs=1, kill_after=None, sig=signal.SIGKILL):
    process = subprocess.Popen([sys.executable, "-c", SCRIPT.format(), str(out), str(epochs)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if kill_after is None:
        stdout, stderr = process.communicate(timeout=600)
        return process.returncode, stdout, stderr
    time.sleep(kill_after)
    process.send_signal(sig)
    stdout, stderr = process.communicate(timeout=600)
    return process.returncode, stdout, stderr


def _trials(out):
    with open(os.path.join(out, "trials.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.mark.slow
def test_resume_after_sigkill_runs_every_trial_exactly_once(tmp_path):
    clean = tmp_path / "clean"
    assert _run(clean)[0] == 0
    expected = sorted(r["id"] for r in _trials(clean))
    resumed = tmp_path / "resumed"
    for delay in np.random.default_rng(0).uniform(4, 20, size=3):
        _run(resumed, kill_after=float(delay))
    code, _, stderr = _run(resumed)
    assert code == 0, stderr
    ids = [r["id"] for r in _trials(resumed)]
    assert sorted(ids) == expected and len(ids) == len(set(ids))


@pytest.mark.slow
def test_a_rerun_with_other_epochs_recomputes_and_regenerates_the_report(tmp_path):
    assert _run(tmp_path, epochs=1)[0] == 0
    first = _trials(tmp_path)
    assert _run(tmp_path, epochs=2)[0] == 0
    second = _trials(tmp_path)[len(first):]
    assert second and not {r["id"] for r in second} & {r["id"] for r in first}
    report = _report(tmp_path)
    assert "Coarse grid, 2 epochs" in report and "Coarse grid, 1 epochs" not in report


def test_ctrl_c_gives_one_line_and_a_partial_report(tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "gradchain", "recipe", "--small", "--out", str(tmp_path)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(300, process.kill)  # a hung run fails the test instead of hanging it
    watchdog.start()
    assert process.stdout is not None
    for line in process.stdout:  # the recipe prints each section once it is in the report
        if line.startswith("## 2. Overfit a small sample"):
            break
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    watchdog.cancel()
    assert process.returncode == 130, stderr
    assert len(stderr.strip().splitlines()) == 1 and "interrupted during" in stderr, stderr
    report = _report(tmp_path)
    assert "Partial report" in report and "## 2. Overfit a small sample" in report


def test_bad_arguments_and_paths_are_one_line_errors(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = subprocess.run([sys.executable, "-m", "gradchain", "recipe", "--out", str(blocker / "sub")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "is not a writable folder" in result.stderr
    result = subprocess.run([sys.executable, "-m", "gradchain", "recipe", "--budget", "-3"], capture_output=True, text=True)
    assert result.returncode == 2 and "must be a positive number, got '-3'" in result.stderr
    data, _ = _split(digits(jax.random.PRNGKey(0)))
    with pytest.raises(ValueError, match="space must be a dict of hyperparameters besides learning_rate"):
        tuning.recipe(gc.supervised(mlp_model((64, 10))), data, {"learning_rate": LogUniform(1e-4, 1e-1)}, out=tmp_path)
    with pytest.raises(ValueError, match=r"regularizers \['dropout'\] are not in space"):
        tuning.recipe(gc.supervised(mlp_model((64, 10))), data, {}, settings={"regularizers": ["dropout"]}, out=tmp_path)


def test_the_main_job_small_writes_every_section(tmp_path):
    from gradchain.examples import digits_recipe

    summary = digits_recipe.main(out=str(tmp_path), small=True, progress=False)
    report = _report(tmp_path)
    for section in ("1. Initial loss", "2. Overfit", "3. Find a learning rate", "4. Coarse grid", "5. Refine",
                    "6. Loss curves", "7. Final model"):
        assert section in report
    for picture in ("overfit.png", "lr_finder.png", "command_center_1.png", "final.png"):
        assert (tmp_path / picture).exists()
    assert not (tmp_path / "command_center.png").exists()  # no byte copy of the latest round
    # far from any round-off: the small setting reaches 0.96-0.98 (measured), chance is 0.1
    assert summary["test_accuracy"] > 0.5 and "Partial report" not in report
