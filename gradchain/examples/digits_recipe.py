"""The main job: the lecture's recipe (:func:`gradchain.tuning.recipe`) on scikit-learn's digits.

``python -m gradchain recipe`` tunes a small CNN on the 8×8 images — batch norm, dropout, random
crops with padding and a small affine jitter (no flips: they change digits) — searching weight
decay, the dropout rate and the augmentation strength besides the learning rate, and writes a
report folder (``report.md`` and its pictures).  ``--model mlp`` tunes the MLP on the 64 pixels.
This is demo code: the library is :mod:`gradchain.tuning`.
"""

from __future__ import annotations

import jax

import gradchain as gc
from gradchain.examples.digits import digits, digits_images
from gradchain.examples.models import digits_augment, digits_cnn, mlp_model
from gradchain.tuning import LogUniform, RecipeSettings, Uniform, recipe

SETTINGS = {
    False: RecipeSettings(epochs={"coarse": 3, "refine": 10, "final": 30, "max_refine": 30}, max_rounds=3, ensemble=8),
    True: RecipeSettings(epochs={"coarse": 2, "refine": 4, "final": 8, "max_refine": 8}, max_rounds=2, ensemble=4),
}


def adamw_from_config(config):
    """AdamW from ``config["learning_rate"]`` and ``config["weight_decay"]``, no decay on biases."""
    return gc.adamw(config["learning_rate"], weight_decay=config["weight_decay"], mask=gc.decay_mask)


def three_way(full: gc.Split) -> tuple[gc.Split, tuple]:
    """Train / validation (every choice) / test (looked at once): the validation split of
    :func:`gradchain.examples.digits.digits` becomes the test set, and as many training rows the validation."""
    n = len(full.y_val)
    data = gc.Split(full.x_train[n:], full.y_train[n:], full.x_train[:n], full.y_train[:n])
    return data, (full.x_val, full.y_val)


def main(out: str = "gradchain-report", small: bool = False, seed: int = 0, model: str = "cnn",
         budget: float | None = None, progress: bool | None = None) -> dict:
    key = jax.random.PRNGKey(seed)
    if model == "cnn":
        data, test = three_way(digits_images(key))
        trainable = gc.supervised(digits_cnn(), "cross_entropy", augment=digits_augment)
        space = {"weight_decay": LogUniform(1e-5, 1e-3), "dropout": Uniform(0.0, 0.3), "augment": Uniform(0.0, 0.6)}
        title = ("Data: scikit-learn digits (8×8 images). Model: CNN conv3×3(16)-BN-ReLU-conv3×3(32)-BN-ReLU-"
                 "maxpool-dropout-dense(64)-dropout-dense(10); augmentation: crop after 1 px padding and ±10° / "
                 "±10% affine jitter with probability `augment`. Optimizer: AdamW, no decay on biases and norm scales.")
    elif model == "mlp":
        data, test = three_way(digits(key))
        trainable = gc.supervised(mlp_model((64, 128, 128, 10)), "cross_entropy")
        space = {"weight_decay": LogUniform(1e-5, 1e-3), "dropout": Uniform(0.0, 0.3)}
        title = "Data: scikit-learn digits (64 pixels). Model: MLP 64-128-128-10 with dropout. Optimizer: AdamW."
    else:
        raise ValueError(f"model must be 'cnn' or 'mlp', got {model!r}")
    settings = SETTINGS[bool(small)].replace(seed=seed, budget=budget, title=title, progress=progress)
    return recipe(trainable, data, space, test=test, settings=settings, out=out)
