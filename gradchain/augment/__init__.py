"""Data augmentation: pure per-image functions of a key, batched with ``vmap``.

The lecture's "data augmentation" regularizer: in training, random transformations of each
image (flips, crops and scales, colour jitter, affine warps, lens distortion, learned policies);
at test time, a fixed set of crops averaged (:func:`tta_predict`).

Convention: every random augmentation is ``fn(key, image, **params) -> image`` on one HWC image
(uint8 in [0, 255] or float in [0, 1]; the dtype is kept, arithmetic is float32).  Compose them
with :func:`compose`, :func:`random_apply`, :func:`random_choice`; apply to an NHWC batch with
:func:`apply_batch` / :func:`batch`, which give every image its own key, so the whole batch is
one compiled, static-shape program on CPU, GPU or TPU.

Imports only JAX and NumPy (scikit-learn only inside :func:`sample_images`).
"""

from gradchain.augment.combinators import apply_batch, batch, compose, random_apply, random_choice
from gradchain.augment.geometric import (
    affine,
    center_crop,
    flip_horizontal,
    flip_vertical,
    lens_distortion,
    random_affine,
    random_crop,
    random_flip,
    random_lens_distortion,
    random_resized_crop,
    random_scale_crop,
    resize,
    rotation_matrix,
    scale_matrix,
    shear_matrix,
    translation_matrix,
)
from gradchain.augment.photometric import (
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    color_jitter,
    pca_color,
    pca_components,
    rgb_to_grey,
)
from gradchain.augment.policies import (
    AUTOAUGMENT_POLICIES,
    OPS,
    RANDAUGMENT_OPS,
    adjust_sharpness,
    auto_augment,
    auto_contrast,
    equalize,
    invert,
    posterize,
    rand_augment,
    solarize,
)
from gradchain.augment.samples import sample_images
from gradchain.augment.test_time import RESNET_SCALES, ten_crops, tta_predict

__all__ = [
    "AUTOAUGMENT_POLICIES",
    "OPS",
    "RANDAUGMENT_OPS",
    "RESNET_SCALES",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "adjust_sharpness",
    "affine",
    "apply_batch",
    "auto_augment",
    "auto_contrast",
    "batch",
    "center_crop",
    "color_jitter",
    "compose",
    "equalize",
    "flip_horizontal",
    "flip_vertical",
    "invert",
    "lens_distortion",
    "pca_color",
    "pca_components",
    "posterize",
    "rand_augment",
    "random_affine",
    "random_apply",
    "random_choice",
    "random_crop",
    "random_flip",
    "random_lens_distortion",
    "random_resized_crop",
    "random_scale_crop",
    "resize",
    "rgb_to_grey",
    "rotation_matrix",
    "sample_images",
    "scale_matrix",
    "shear_matrix",
    "solarize",
    "ten_crops",
    "translation_matrix",
    "tta_predict",
]
