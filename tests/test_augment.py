"""gradchain.augment: exactness against NumPy / SciPy / PIL references, per-image randomness,
dtypes, jit, and errors.

Tolerances are stated per check.  Images are small (crops or downscaled copies of
scikit-learn's sample photos, or 8-24 pixel random images): on 2 CPU cores the XLA compiles, not
the arithmetic, are what a test pays for, so most tests compile one program and compare in NumPy.
"""

import colorsys
import functools
import importlib
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import U32

import gradchain.augment as A

KEY = jax.random.PRNGKey(0)
# Pillow, SciPy and scikit-learn are references and sample data for some tests only (the test
# extra installs them): those tests skip, saying what to install, where one is missing.
SAMPLES = pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("sklearn", "PIL")),
                             reason="the sample photos need gradchain[samples]: pip install scikit-learn pillow")


def pil(module):
    """``PIL.<module>`` (Image, ImageOps, ImageEnhance), imported when a reference is called."""
    return importlib.import_module(f"PIL.{module}")


def ndimage():
    return pytest.importorskip("scipy.ndimage", reason="the reference is scipy.ndimage: pip install scipy")


@pytest.fixture(scope="module")
def photos():
    """The two sample photos with short side 32: uint8 (2, 32, 48, 3)."""
    if not all(importlib.util.find_spec(m) for m in ("sklearn", "PIL")):
        pytest.skip("the sample photos need gradchain[samples]: pip install scikit-learn pillow")
    return A.sample_images(32)


def random_u8(*shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def random_f32(*shape, seed=0):
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


# ----------------------------------------------------------------------------------------------
# Geometric: exactness


@SAMPLES
def test_sample_images():
    full = A.sample_images()
    assert full.shape == (2, 427, 640, 3) and full.dtype == jnp.uint8
    small = A.sample_images(32)
    assert small.shape == (2, 32, 48, 3) and small.dtype == jnp.uint8


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_flip_twice_is_identity_and_random_flip_extremes(jit_or_eager, dtype):
    x = random_u8(9, 7, 3) if dtype == "uint8" else random_f32(9, 7, 3)
    twice = jit_or_eager(lambda im: A.flip_horizontal(A.flip_horizontal(im)))(x)
    np.testing.assert_array_equal(np.asarray(twice), x)  # exact
    np.testing.assert_array_equal(np.asarray(A.flip_horizontal(x)), x[:, ::-1])
    np.testing.assert_array_equal(np.asarray(A.flip_vertical(x)), x[::-1])
    flip = jit_or_eager(lambda k, im: (A.random_flip(k, im, p=1.0), A.random_flip(k, im, p=0.0)))
    always, never = flip(KEY, x)
    np.testing.assert_array_equal(np.asarray(always), x[:, ::-1])
    np.testing.assert_array_equal(np.asarray(never), x)
    assert always.dtype == x.dtype


@pytest.mark.parametrize("degrees, k", [(90, 1), (180, 2), (-90, 3), (270, 3)])
def test_rotation_by_quarter_turns_equals_rot90(degrees, k):
    x8 = random_u8(8, 8, 3, seed=k)
    xf = random_f32(8, 8, 3, seed=k)
    m = A.rotation_matrix(degrees)
    np.testing.assert_array_equal(np.asarray(A.affine(x8, m)), np.rot90(x8, k))  # exact
    # a quarter turn samples pixel centres: bilinear weights 0 and 1 up to the rounding of the
    # matrix and the coordinates (a few U32), so |Δ| ≤ ~4·U32·max|x| = 2.4e-7 (measured 0)
    np.testing.assert_allclose(np.asarray(A.affine(xf, m)), np.rot90(xf, k), atol=1e-6)


def test_identity_affine_and_zero_translation_return_the_image(jit_or_eager):
    x8, xf = random_u8(7, 10, 3), random_f32(7, 10, 3)

    def run(a, b):
        return (
            A.affine(a, jnp.eye(3)),
            A.affine(a, A.translation_matrix(0.0, 0.0)),
            A.affine(b, jnp.eye(3)[:2]),
            A.random_affine(KEY, a),  # the defaults change nothing
            A.random_affine(KEY, b, translation=0.0),
            A.lens_distortion(b, 0.0, 0.0),
        )

    outs = jit_or_eager(run)(x8, xf)
    # float outputs: the identity resampling's weights are 1 and 0 up to a few U32 (see the quarter
    # turns above); atol 1e-6 ≈ 17 U32 for values ≤ 1 (measured ≤ 0.11 of it)
    for out, ref in zip(outs, (x8, x8, xf, x8, xf, xf)):
        assert out.dtype == ref.dtype
        if ref.dtype == np.uint8:
            np.testing.assert_array_equal(np.asarray(out), ref)
        else:
            np.testing.assert_allclose(np.asarray(out), ref, atol=1e-6)


def test_integer_translation_shifts_pixels_and_fills():
    x = random_u8(6, 9, 3)
    out = np.asarray(A.affine(x, A.translation_matrix(2.0, -1.0), fill=7))
    expected = np.full_like(x, 7)
    expected[:-1, 2:] = x[1:, :-2]  # content moves 2 right and 1 up
    np.testing.assert_array_equal(out, expected)


def test_affine_matches_scipy_bilinear_with_constant_fill():
    x = random_f32(11, 13, 3, seed=3)
    m = np.asarray(A.translation_matrix(1.3, -0.7) @ A.rotation_matrix(23.0) @ A.shear_matrix(0.2, -0.1) @ A.scale_matrix(1.2, 0.9), np.float64)
    out = np.asarray(A.affine(x, m, fill=0.25))
    # reference: output pixel p (centred) reads the input at A^-1 (p - t), per-tap constant fill
    h, w = x.shape[:2]
    cy, cx = (h - 1) / 2, (w - 1) / 2
    inv = np.linalg.inv(m)
    yy, xx = np.meshgrid(np.arange(h) - cy, np.arange(w) - cx, indexing="ij")
    src = inv @ np.stack([xx.ravel(), yy.ravel(), np.ones(h * w)])
    coords = np.stack([src[1] + cy, src[0] + cx])
    ref = np.stack(
        [ndimage().map_coordinates(x[..., c].astype(np.float64), coords, order=1, mode="grid-constant", cval=0.25)
         for c in range(3)], -1).reshape(h, w, 3)
    # float32 against float64: the source coordinates (≤ 13 px, ~6 roundings) err by ≤ 6·U32·13 =
    # 4.7e-6 px, which moves a bilinear sample of values in [0, 1] by ≤ 2× that, plus ~4·U32 for
    # the weights: ≤ 1e-5 < 2e-5 (measured ≤ 0.05 of it)
    np.testing.assert_allclose(out, ref, atol=2e-5)


def test_lens_distortion_matches_radial_model_and_direction():
    x = random_f32(12, 16, 3, seed=5)
    k1, k2 = 0.3, -0.1
    out = np.asarray(A.lens_distortion(x, k1, k2, fill=0.5))
    h, w = x.shape[:2]
    cy, cx = (h - 1) / 2, (w - 1) / 2
    radius = np.hypot(cy, cx)
    yy, xx = np.meshgrid((np.arange(h) - cy) / radius, (np.arange(w) - cx) / radius, indexing="ij")
    r2 = xx**2 + yy**2
    factor = 1 + k1 * r2 + k2 * r2**2
    coords = np.stack([(yy * factor * radius + cy).ravel(), (xx * factor * radius + cx).ravel()])
    ref = np.stack(
        [ndimage().map_coordinates(x[..., c].astype(np.float64), coords, order=1, mode="grid-constant", cval=0.5)
         for c in range(3)], -1).reshape(h, w, 3)
    np.testing.assert_allclose(out, ref, atol=2e-5)  # as for the affine map above (≤ 16 px)
    # barrel (k1 > 0) pulls the outside in: corners read the fill; pincushion keeps them inside
    ones = np.ones((12, 16, 1), np.float32)
    assert float(A.lens_distortion(ones, 0.4)[0, 0, 0]) == 0.0
    assert float(A.lens_distortion(ones, -0.4)[0, 0, 0]) == 1.0


def test_random_crop_windows_are_exact_copies_in_bounds_and_per_image():
    n, pad = 16, 3
    images = np.repeat(random_u8(1, 10, 12, 3), n, axis=0)  # identical images: any difference is the draw
    out = np.asarray(jax.jit(A.batch(functools.partial(A.random_crop, size=(8, 9), padding=pad, fill=0)))(KEY, images))
    padded = np.pad(images[0], ((pad, pad), (pad, pad), (0, 0)))
    offsets = []
    for crop in out:
        hits = [(t, l) for t in range(padded.shape[0] - 8 + 1) for l in range(padded.shape[1] - 9 + 1)
                if np.array_equal(padded[t : t + 8, l : l + 9], crop)]
        assert hits, "a crop is not a window of the padded image"
        offsets.append(hits[0])
    assert len(set(offsets)) > 4  # different images get different draws


def test_reflect_and_edge_padding_match_numpy():
    x = random_u8(6, 6, 3)
    for mode, np_mode in (("reflect", "reflect"), ("edge", "edge")):
        out = np.asarray(A.random_crop(KEY, x, size=10, padding=2, padding_mode=mode))
        padded = np.pad(x, ((2, 2), (2, 2), (0, 0)), mode=np_mode)
        assert any(np.array_equal(padded[t : t + 10, l : l + 10], out) for t in range(1) for l in range(1))


def coordinates(h, w):
    """A float image whose pixel (i, j) holds (i / h, j / w, 0.5): bilinear resampling reproduces
    an affine function exactly, so every output pixel tells where in the input it was sampled."""
    rows, cols = np.meshgrid(np.arange(h) / h, np.arange(w) / w, indexing="ij")
    return np.stack([rows, cols, np.full((h, w), 0.5)], -1).astype(np.float32)


def sampled_windows(outs, h, w):
    """The input windows ``(top, left, height, width)`` that produced crops of ``coordinates(h, w)``,
    from the sample positions ``top + (i + ½)·height / out - ½``; checks that the samples are
    evenly spaced (a sample clamped at the border would break the spacing)."""
    windows = []
    # the coordinates (i/h, j/w) resampled in float32 and scaled back by h, w ≤ 80: ≤ ~6·U32·80 =
    # 2.9e-5 px; atol 1e-4 px (measured ≤ 0.11 of it), 1e-3 for a window's extent
    for out in outs:
        rows, cols = out[:, 0, 0] * h, out[0, :, 1] * w
        np.testing.assert_allclose(out[..., 0] * h, rows[:, None].repeat(out.shape[1], 1), atol=1e-4)
        np.testing.assert_allclose(out[..., 1] * w, cols[None, :].repeat(out.shape[0], 0), atol=1e-4)
        dy, dx = np.diff(rows), np.diff(cols)
        np.testing.assert_allclose(dy, dy.mean(), atol=1e-4)
        np.testing.assert_allclose(dx, dx.mean(), atol=1e-4)
        win_h, win_w = dy.mean() * out.shape[0], dx.mean() * out.shape[1]
        windows.append((rows[0] - dy.mean() / 2 + 0.5, cols[0] - dx.mean() / 2 + 0.5, win_h, win_w))
    return np.array(windows)


def test_scale_crop_windows_have_the_zoom_and_stay_in_bounds():
    # short side L ~ U[40, 50] of a 60×80 image, then a 16×16 crop: the window is 16·60/L pixels
    h, w, size = 60, 80, 16
    run = jax.jit(A.batch(functools.partial(A.random_scale_crop, size=size, short_side=(40, 50))))
    windows = sampled_windows(np.asarray(run(KEY, np.stack([coordinates(h, w)] * 12))), h, w)
    top, left, win_h, win_w = windows.T
    np.testing.assert_allclose(win_h, win_w, atol=1e-3)  # the zoom keeps the aspect
    assert np.all((win_h >= size * 60 / 50 - 1e-3) & (win_h <= size * 60 / 40 + 1e-3))
    assert np.all((top >= -1e-3) & (left >= -1e-3) & (top + win_h <= h + 1e-3) & (left + win_w <= w + 1e-3))
    assert len(np.unique(np.round(windows, 3), axis=0)) == len(windows)  # every image its own draw


def test_random_resized_crop_windows_whole_image_and_fallback():
    h, w = 60, 80
    run = jax.jit(A.batch(functools.partial(A.random_resized_crop, size=10)))
    windows = sampled_windows(np.asarray(run(KEY, np.stack([coordinates(h, w)] * 12))), h, w)
    top, left, win_h, win_w = windows.T
    area, ratio = win_h * win_w / (h * w), win_w / win_h
    assert np.all((area >= 0.08 - 1e-3) & (area <= 1 + 1e-3) & (ratio >= 3 / 4 - 1e-3) & (ratio <= 4 / 3 + 1e-3))
    assert np.all((top >= -1e-3) & (left >= -1e-3) & (top + win_h <= h + 1e-3) & (left + win_w <= w + 1e-3))
    assert len(np.unique(np.round(windows, 3), axis=0)) == len(windows)
    x8 = random_u8(12, 18, 3)
    full = A.random_resized_crop(KEY, x8, size=(12, 18), area=(1.0, 1.0), ratio=(1.5, 1.5))
    np.testing.assert_array_equal(np.asarray(full), x8)
    # no square window of the whole area fits a 12×18 image: the fallback (torchvision's) is the
    # central 12×12 square
    centre = A.random_resized_crop(KEY, x8, size=(12, 12), area=(1.0, 1.0), ratio=(1.0, 1.0))
    np.testing.assert_array_equal(np.asarray(centre), x8[:, 3:15])


def test_resize_short_side_and_center_crop():
    x = random_u8(20, 30, 3)
    assert A.resize(x, 10).shape == (10, 15, 3)
    assert A.resize(x.transpose(1, 0, 2), 10).shape == (15, 10, 3)
    assert A.resize(x, (7, 9)).dtype == jnp.uint8
    np.testing.assert_array_equal(np.asarray(A.resize(x, 20)), x)
    np.testing.assert_array_equal(np.asarray(A.center_crop(x, (8, 10))), x[6:14, 10:20])


# ----------------------------------------------------------------------------------------------
# Photometric


def test_adjustments_match_their_formulas():
    # float32 against NumPy's float32 of the same formula: ≤ 4 roundings each of values ≤ 1 and a
    # 3-term dot for the grey, ≤ 10·U32 = 6e-7; contrast's mean of 30 greys errs by ≤ 30·U32·0.5 =
    # 9e-7, of which (1 - 0.6) reaches the output: 3.6e-7.  atol 1e-6 (measured ≤ 0.06 of it)
    x = random_f32(6, 5, 3, seed=7)
    grey = x @ np.array([0.299, 0.587, 0.114], np.float32)
    np.testing.assert_allclose(A.adjust_brightness(x, 1.3), np.clip(1.3 * x, 0, 1), atol=1e-6)
    m = grey.mean()
    np.testing.assert_allclose(A.adjust_contrast(x, 0.6), np.clip(m + 0.6 * (x - m), 0, 1), atol=1e-6)
    g = grey[..., None]
    np.testing.assert_allclose(A.adjust_saturation(x, 1.7), np.clip(g + 1.7 * (x - g), 0, 1), atol=1e-6)
    np.testing.assert_allclose(A.rgb_to_grey(x)[..., 0], grey, atol=1e-6)


@pytest.mark.parametrize("delta", [0.0, 0.13, -0.4, 0.5])
def test_hue_shift_matches_colorsys(delta):
    x = random_f32(8, 8, 3, seed=11)
    x[0, 0] = 0.5  # a grey pixel: no hue
    ref = np.array([colorsys.hsv_to_rgb(((h + delta) % 1.0), s, v)
                    for h, s, v in (colorsys.rgb_to_hsv(*p) for p in x.reshape(-1, 3))]).reshape(x.shape)
    # float32 RGB → HSV → RGB against float64 colorsys: the hue's error grows as 1/(max - min) but
    # its effect on RGB scales with max - min, so |Δ| ≤ ~20·U32 = 1.2e-6 for values ≤ 1 (measured
    # ≤ 0.2 of atol 2e-6, the same with and without FMA)
    np.testing.assert_allclose(np.asarray(A.adjust_hue(x, delta)), ref, atol=2e-6)


def test_color_jitter_fixed_ranges_compose_the_adjustments():
    x = random_f32(6, 7, 3, seed=2)
    jitter = functools.partial(A.color_jitter, brightness=(1.2, 1.2), contrast=(0.7, 0.7), saturation=(1.5, 1.5), hue=(0.1, 0.1))
    ref = A.adjust_hue(A.adjust_saturation(A.adjust_contrast(A.adjust_brightness(x, 1.2), 0.7), 1.5), 0.1)
    # the same four adjustments, fused into one program or not (FMA contraction may differ): ≤ 4
    # roundings each of values ≤ 1, ≤ 16·U32 = 9.5e-7 (measured ≤ 0.19 of atol 1e-6; 0 without FMA)
    np.testing.assert_allclose(jitter(KEY, x), ref, atol=1e-6)
    assert np.array_equal(np.asarray(A.color_jitter(KEY, x, brightness=0, contrast=0, saturation=0)), x)
    # uint8 in, uint8 out: the float result rounded to the nearest level
    x8 = np.round(x * 255).astype(np.uint8)
    out8 = jitter(KEY, x8)
    assert out8.dtype == jnp.uint8
    scaled = np.asarray(jitter(KEY, x8 / np.float32(255))) * 255  # the float program compiled above
    # rounding to the nearest level moves ≤ 0.5; the two float programs differ by ≤ 16·U32·255 =
    # 2.4e-4 levels (see above), inside the 1e-3 slack
    assert np.abs(np.asarray(out8, int) - scaled).max() <= 0.5 + 1e-3


def test_pca_components_match_numpy(photos):
    vals, vecs = A.pca_components(photos)
    pixels = np.asarray(photos, np.float64).reshape(-1, 3) / 255
    ref_vals, ref_vecs = np.linalg.eigh(np.cov(pixels, rowvar=False))
    # float32 against float64.  The covariance is a sum of n products of centred pixels, so in any
    # summation order (a GEMM kernel's blocking depends on the CPU) each entry errs by at most
    # (n + 3)·U32·(|C|ᵀ|C|)/(n - 1) (Higham §3.5; +3: the conversion, the mean, the division), and
    # by Weyl's theorem every eigenvalue by at most the norm of that error, ≤ 3 × its largest entry
    # (7e-5 here).  That is an absolute bound: relative to the smallest eigenvalue (1.3e-3) the
    # measured error is 2.3e-4, which used 0.23 of the old rtol 1e-3.
    n = len(pixels)
    centred = np.abs(pixels - pixels.mean(0))
    bound = 3 * (n + 3) * U32 * float(np.max(centred.T @ centred)) / (n - 1)
    np.testing.assert_allclose(vals, ref_vals[::-1], rtol=0, atol=bound)
    # eigenvectors move by ≤ bound / gap (the smallest gap is 0.027), so 1 - |cos| ≤ (bound/gap)²/2
    # = 3.3e-6 < 1e-4
    for i in range(3):  # same direction up to sign
        assert abs(float(np.dot(vecs[:, i], ref_vecs[:, 2 - i]))) > 1 - 1e-4


def test_pca_color_offsets_have_the_requested_covariance():
    # offset ~ N(0, std² Σ): estimate the covariance from 20,000 single-pixel images of mid grey
    vals = np.array([0.05, 0.01, 0.002], np.float32)
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((3, 3)))
    vecs = q.astype(np.float32)
    std = 0.2
    grey = np.full((20_000, 1, 1, 3), 0.5, np.float32)
    out = jax.jit(A.batch(functools.partial(A.pca_color, eigvals=vals, eigvecs=vecs, std=std)))(KEY, grey)
    offsets = np.asarray(out, np.float64).reshape(-1, 3) - 0.5
    assert np.abs(offsets).max() < 0.5  # no clipping, so the estimate is unbiased
    expected = std**2 * (vecs * vals) @ vecs.T
    # 5 standard errors of a covariance entry from n draws: 5·sqrt(2/n)·max variance ≈ 0.05
    np.testing.assert_allclose(np.cov(offsets, rowvar=False), expected, atol=0.05 * expected.max())
    np.testing.assert_allclose(offsets.mean(0), 0.0, atol=5 * np.sqrt(expected.max() / len(offsets)))


# ----------------------------------------------------------------------------------------------
# Policy ops against PIL


def _pil(x):
    return pil("Image").fromarray(np.asarray(x))


@pytest.mark.parametrize(
    "ours, theirs, atol",
    [
        (A.equalize, lambda im: pil("ImageOps").equalize(im), 0),
        (A.invert, lambda im: pil("ImageOps").invert(im), 0),
        (lambda x: A.posterize(x, 3), lambda im: pil("ImageOps").posterize(im, 3), 0),
        (lambda x: A.solarize(x, 100), lambda im: pil("ImageOps").solarize(im, 100), 0),
        (A.auto_contrast, lambda im: pil("ImageOps").autocontrast(im), 1),
        (lambda x: A.adjust_sharpness(x, 1.8), lambda im: pil("ImageEnhance").Sharpness(im).enhance(1.8), 2),
        (lambda x: A.adjust_sharpness(x, 0.2), lambda im: pil("ImageEnhance").Sharpness(im).enhance(0.2), 2),
        (lambda x: A.adjust_contrast(x, 0.4), lambda im: pil("ImageEnhance").Contrast(im).enhance(0.4), 2),
        (lambda x: A.adjust_saturation(x, 0.3), lambda im: pil("ImageEnhance").Color(im).enhance(0.3), 2),
        (lambda x: A.adjust_brightness(x, 1.6), lambda im: pil("ImageEnhance").Brightness(im).enhance(1.6), 1),
    ],
    ids=["equalize", "invert", "posterize", "solarize", "autocontrast", "sharpen", "smooth", "contrast", "color", "brightness"],
)
def test_policy_ops_match_pil(photos, ours, theirs, atol):
    x = np.asarray(photos[1, :24, 8:40])  # a 24×32 piece of the flower photo, uint8
    x = (x // 2 + 40).astype(np.uint8)  # not already full range, so autocontrast/equalize act
    out = np.asarray(ours(x)).astype(int)
    ref = np.asarray(theirs(_pil(x))).astype(int)
    assert np.abs(out - ref).max() <= atol


def test_policy_tables_are_the_published_ones():
    for name in ("imagenet", "cifar10"):
        table = A.AUTOAUGMENT_POLICIES[name]
        assert len(table) == 25 and all(len(sub) == 2 for sub in table)
        for sub in table:
            for op, prob, level in sub:
                assert op in A.OPS and 0 <= prob <= 1 and (level is None or 0 <= level <= 9)
    assert A.AUTOAUGMENT_POLICIES["imagenet"][0] == (("Posterize", 0.4, 8), ("Rotate", 0.6, 9))
    assert A.AUTOAUGMENT_POLICIES["cifar10"][0] == (("Invert", 0.1, None), ("Contrast", 0.2, 6))
    assert len(A.RANDAUGMENT_OPS) == 14 and "Invert" not in A.RANDAUGMENT_OPS


def test_auto_augment_switches_sub_policies_per_image_in_one_program(photos):
    x = photos[0, :24, :24]
    # 25 sub-policies of 2 steps, like the published tables: one compiled program serves them all
    kinds = [("Invert", 1.0, None), ("Identity", 1.0, None), ("Posterize", 1.0, 9), ("Rotate", 1.0, 9)]
    policy = [(kinds[i % 4], ("Identity", 0.5, None)) for i in range(25)]
    batch = np.repeat(np.asarray(x)[None], 16, axis=0)
    out = np.asarray(A.apply_batch(functools.partial(A.auto_augment, policy=policy), KEY, batch))
    x = np.asarray(x)
    candidates = {
        "invert": 255 - x,
        "identity": x,
        "posterize": np.asarray(A.posterize(x, 4)),
        "rotate+": np.asarray(A.affine(x, A.rotation_matrix(30.0), fill=128)),
        "rotate-": np.asarray(A.affine(x, A.rotation_matrix(-30.0), fill=128)),
    }
    seen = set()
    for image in out:
        match = [k for k, c in candidates.items() if np.abs(image.astype(int) - c.astype(int)).max() <= 1]
        assert match, "an output is none of the sub-policies"
        seen.update(match)
    assert {"invert", "identity", "posterize"} <= seen and seen & {"rotate+", "rotate-"}


def test_policies_on_photos_keep_dtype_range_and_differ_per_image(photos):
    x8 = photos[:, :24, :24]
    xf = x8.astype(jnp.float32) / 255
    many = jnp.concatenate([x8] * 8)  # (16, 24, 24, 3): the shape of the test above, same program

    def run(key):  # eager apply_batch: each policy's jitted kernel is compiled once per shape
        return (
            A.apply_batch(A.auto_augment, key, many),
            A.apply_batch(functools.partial(A.auto_augment, policy="cifar10"), key, many),
            A.apply_batch(functools.partial(A.rand_augment, num_ops=2, magnitude=9), key, xf),
        )

    aa, cifar, ra = run(KEY)
    assert aa.dtype == jnp.uint8 and cifar.dtype == jnp.uint8 and ra.dtype == jnp.float32
    assert aa.shape == many.shape and ra.shape == xf.shape
    assert float(ra.min()) >= 0.0 and float(ra.max()) <= 1.0
    # the four copies of each photo got different draws, and the same key gives the same batch
    assert len({np.asarray(aa[i]).tobytes() for i in range(0, 8, 2)}) > 1
    np.testing.assert_array_equal(np.asarray(run(KEY)[0]), np.asarray(aa))
    assert np.array_equal(np.asarray(A.rand_augment(KEY, x8[0], num_ops=0)), np.asarray(x8[0]))


# ----------------------------------------------------------------------------------------------
# Combinators, batching, dtypes, jit


def test_combinators_use_split_keys():
    x = random_f32(8, 8, 3)
    f = functools.partial(A.color_jitter, brightness=0.5)
    g = functools.partial(A.random_crop, size=6, padding=1)
    k1, k2 = jax.random.split(KEY)
    np.testing.assert_array_equal(A.compose(f, g)(KEY, x), g(k2, f(k1, x)))
    np.testing.assert_array_equal(A.random_apply(f, p=1.0)(KEY, x), f(jax.random.split(KEY)[1], x))
    np.testing.assert_array_equal(A.random_apply(f, p=0.0)(KEY, x), x)
    choice = A.random_choice([lambda k, im: A.flip_horizontal(im), lambda k, im: im], p=[0.5, 0.5])
    picked = np.asarray(jax.jit(jax.vmap(choice, (0, None)))(jax.random.split(KEY, 12), x))
    outs = {o.tobytes() for o in picked}
    assert outs == {x[:, ::-1].tobytes(), x.tobytes()}


def test_batch_gives_each_image_its_own_draw_and_is_reproducible():
    images = np.repeat(random_f32(1, 8, 8, 3), 6, axis=0)
    pipeline = A.compose(A.random_flip, functools.partial(A.color_jitter, brightness=0.4))
    run = jax.jit(A.batch(pipeline))
    out = np.asarray(run(KEY, images))
    assert len({o.tobytes() for o in out}) == 6
    np.testing.assert_array_equal(np.asarray(run(KEY, images)), out)
    assert not np.array_equal(np.asarray(run(jax.random.PRNGKey(1), images)), out)
    keys = jax.random.split(KEY, 6)
    # one image of the batch against the image alone: the same element-wise program (measured
    # equal); atol 1e-6 ≈ 17 U32 would cover another fusion's FMA contraction
    np.testing.assert_allclose(out[2], jax.jit(pipeline)(keys[2], images[2]), atol=1e-6)


def test_every_augmentation_keeps_dtype_shape_and_range_under_jit():
    # uint8 for all (float paths are checked against references above; crop's here)
    fns = {
        "flip": A.random_flip,
        "crop": functools.partial(A.random_crop, size=10, padding=2),
        "scale": functools.partial(A.random_scale_crop, size=8, short_side=(10, 14)),
        "rrc": functools.partial(A.random_resized_crop, size=8),
        "affine": functools.partial(A.random_affine, rotation=20, translation=0.1, scale=(0.8, 1.2), stretch=(0.8, 1.25), shear=10),
        "lens": A.random_lens_distortion,
        "jitter": functools.partial(A.color_jitter, hue=0.1),
        "pca": functools.partial(A.pca_color, eigvals=jnp.array([0.05, 0.01, 0.001]), eigvecs=jnp.eye(3)),
    }
    x8 = jnp.asarray(random_u8(3, 12, 12, 3))
    xf = jnp.asarray(random_f32(3, 12, 12, 3))

    @jax.jit
    def run(key, a, b):
        return {name: A.apply_batch(f, key, a) for name, f in fns.items()}, A.apply_batch(fns["crop"], key, b)

    outs, crop_f = run(KEY, x8, xf)
    for name, o8 in outs.items():
        assert o8.dtype == jnp.uint8 and o8.shape[0] == 3, name
    assert outs["crop"].shape == crop_f.shape == (3, 10, 10, 3) and crop_f.dtype == jnp.float32
    assert outs["scale"].shape == outs["rrc"].shape == (3, 8, 8, 3)
    assert outs["affine"].shape == outs["lens"].shape == outs["jitter"].shape == x8.shape


# ----------------------------------------------------------------------------------------------
# Test-time augmentation


def numpy_ten_crops(image, h, w):
    height, width = image.shape[:2]
    top, left = (height - h) // 2, (width - w) // 2
    five = [image[:h, :w], image[:h, width - w:], image[height - h:, :w], image[height - h:, width - w:],
            image[top:top + h, left:left + w]]
    return np.stack(five + [c[:, ::-1] for c in five])


def test_ten_crops_match_numpy_protocol():
    x = random_u8(13, 17, 3)
    np.testing.assert_array_equal(np.asarray(A.ten_crops(x, (8, 10))), numpy_ten_crops(x, 8, 10))
    np.testing.assert_array_equal(np.asarray(A.ten_crops(x, 9, flips=False)), numpy_ten_crops(x, 9, 9)[:5])


def test_tta_predict_averages_softmax_over_crops_and_scales():
    images = random_f32(2, 12, 16, 3, seed=4)
    weights = np.random.default_rng(1).standard_normal((3, 5)).astype(np.float32)

    def model(batch):  # logits from the mean colour of the top-left quarter: crop dependent
        return jnp.mean(batch[:, :4, :4], axis=(1, 2)) @ weights

    def softmax(z):
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    # the scale equal to the short side is no resize: a pure NumPy reference
    # softmax probabilities ≤ 1 averaged over 10 crops and 2 scales in float32 against NumPy's
    # float32/float64: ≤ ~12 roundings of values ≤ 1, ≤ 12·U32 = 7e-7 < 1e-6 (measured ≤ 0.11 of it)
    got = np.asarray(A.tta_predict(model, images, scales=(12,), crop_size=8))
    ref = np.stack([softmax(np.mean(numpy_ten_crops(im, 8, 8)[:, :4, :4], axis=(1, 2)) @ weights).mean(0) for im in images])
    np.testing.assert_allclose(got, ref, atol=1e-6)
    # several scales: the mean over scales of the per-scale averages
    two = np.asarray(A.tta_predict(model, images, scales=(12, 16), crop_size=8))
    at16 = np.stack([softmax(np.mean(numpy_ten_crops(np.asarray(A.resize(im, 16)), 8, 8)[:, :4, :4], axis=(1, 2)) @ weights).mean(0)
                     for im in images])
    np.testing.assert_allclose(two, (ref + at16) / 2, atol=1e-6)
    np.testing.assert_allclose(two.sum(-1), 1.0, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: A.random_flip(KEY, np.zeros((4, 4))), ValueError, r"image must have rank 3.*\(4, 4\)"),
        (lambda: A.random_flip(KEY, np.zeros((2, 4, 4, 3))), ValueError, r"rank 3.*apply_batch"),
        (lambda: A.color_jitter(KEY, np.zeros((3, 8, 8), np.float32)), ValueError, r"3 channels.*got 8"),
        (lambda: A.affine(np.zeros((8, 8, 5), np.uint8), np.eye(3)), ValueError, r"1 or 3 or 4 channels.*got 5"),
        (lambda: A.random_crop(KEY, np.zeros((8, 8, 3)), size=9), ValueError, r"size=9 is larger than the padded image"),
        (lambda: A.center_crop(np.zeros((8, 8, 3)), (4, 10)), ValueError, r"size=\(4, 10\) is larger than the image"),
        (lambda: A.ten_crops(np.zeros((8, 8, 3)), 9), ValueError, r"ten_crops: size=9"),
        (lambda: A.tta_predict(lambda b: b, np.zeros((1, 8, 8, 3)), scales=(8,), crop_size=9), ValueError, r"crop_size=9"),
        (lambda: A.random_scale_crop(KEY, np.zeros((8, 8, 3)), size=224, short_side=(200, 480)), ValueError, r"short_side=\(200, 480\)"),
        (lambda: A.auto_augment(KEY, np.zeros((8, 8, 3), np.uint8), policy="svhn2"), ValueError, r"policy='svhn2' is not a known policy name; use 'cifar10' or 'imagenet'"),
        (lambda: A.auto_augment(KEY, np.zeros((8, 8, 3), np.uint8), policy=[[("Blur", 1.0, 3)]]), ValueError, r"unknown op 'Blur'"),
        (lambda: A.random_flip(KEY, np.full((4, 4, 3), 2.0, np.float32)), ValueError, r"values in \[0, 1\], got values in \[2, 2\].*divide by 255"),
        (lambda: A.color_jitter(KEY, np.full((4, 4, 3), -0.1, np.float32)), ValueError, r"values in \[0, 1\]"),
        (lambda: A.apply_batch(A.random_flip, KEY, np.full((2, 4, 4, 3), np.nan, np.float32)), ValueError, r"images must have values in \[0, 1\]"),
        (lambda: A.random_flip(KEY, np.zeros((4, 4, 3), np.int32)), TypeError, r"uint8 in \[0, 255\] or floating.*int32"),
        (lambda: A.random_flip(0, np.zeros((4, 4, 3))), TypeError, r"key must be a JAX PRNG key"),
        (lambda: A.random_flip(KEY, np.zeros((4, 4, 3)), p=1.5), ValueError, r"p must be in \[0, 1\], got 1.5"),
        (lambda: A.color_jitter(KEY, np.zeros((4, 4, 3)), hue=0.7), ValueError, r"hue must be in \[0, 0.5\], got 0.7"),
        (lambda: A.affine(np.zeros((4, 4, 3)), np.zeros((3, 3))), ValueError, r"matrix must be finite and invertible"),
        (lambda: A.affine(np.zeros((4, 4, 3)), np.eye(2)), ValueError, r"matrix must have shape \(2, 3\) or \(3, 3\)"),
        (lambda: A.rand_augment(KEY, np.zeros((4, 4, 3)), magnitude=11), ValueError, r"magnitude must be in \[0, 10\], got 11"),
        (lambda: A.pca_color(KEY, np.zeros((4, 4, 3)), np.ones(2), np.eye(3)), ValueError, r"eigvals must have shape \(3,\)"),
        (lambda: A.compose(A.random_flip, "flip"), TypeError, r"fns\[1\] must be a per-image augmentation"),
        (lambda: A.random_choice([]), ValueError, r"fns must be a non-empty sequence"),
        (lambda: A.solarize(np.zeros((4, 4, 3), np.float32), 2.0), ValueError, r"threshold must be in \[0, 1\], got 2.0"),
    ],
)
def test_bad_input_raises_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_traced_float_values_are_not_checked_but_shapes_are():
    f = jax.jit(A.batch(A.random_flip))
    f(KEY, jnp.full((2, 4, 4, 3), 2.0))  # under jit the values cannot be inspected: no error
    with pytest.raises(ValueError, match=r"images must have rank 4"):
        f(KEY, jnp.zeros((4, 4, 3)))


def test_jitter_strength_is_a_traced_input_no_retrace():
    import chex

    images = jnp.asarray(random_f32(4, 8, 8, 3))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def augment(key, x, strength):
        return A.apply_batch(functools.partial(A.color_jitter, brightness=strength, contrast=strength, saturation=0), key, x)

    weak = augment(KEY, images, jnp.float32(0.0))
    strong = augment(jax.random.PRNGKey(3), images, jnp.float32(0.8))  # new key and strength: same program
    np.testing.assert_allclose(weak, images, atol=1e-6)  # strength 0: factors are exactly 1 (measured equal)
    assert not np.allclose(strong, images)
