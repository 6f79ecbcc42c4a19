"""The bad-input catalogue: what users get wrong, and the clear error each gets.

Each case must raise the stated error type with a message that names the argument (and, where
there is one, the value).  Cases documented as supported are in `SUPPORTED` and must work.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradchain as gc
from gradchain import augment as A, tuning

P = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
KEY = jax.random.PRNGKey(0)
X = jnp.ones((4, 5))
IMAGES = jnp.ones((4, 8, 8, 3))
LABELS = jnp.arange(4)
NAN, INF = float("nan"), float("inf")
PHOTO = jnp.full((8, 8, 3), 0.5)  # one HWC image, float in [0, 1]
PHOTO8 = jnp.full((8, 8, 3), 128, jnp.uint8)

CASES = [
    # optimizers and transforms: hyperparameters
    ("sgd lr negative", lambda: gc.sgd(-1e-3), ValueError, r"learning_rate must be in \[0, inf\], got -0.001"),
    ("sgd lr nan", lambda: gc.sgd(NAN), ValueError, "learning_rate must be finite, got nan"),
    ("sgd lr inf", lambda: gc.sgd(INF), ValueError, "learning_rate must be finite"),
    ("sgd lr -inf", lambda: gc.sgd(-INF), ValueError, "learning_rate must be finite"),
    ("sgd lr string", lambda: gc.sgd("1e-3"), TypeError, "learning_rate must be a real number.*'1e-3'"),
    ("sgd lr None", lambda: gc.sgd(None), TypeError, "learning_rate.*None"),
    ("sgd lr list", lambda: gc.sgd([1e-3]), TypeError, r"learning_rate.*\[0.001\]"),
    ("sgd lr bool", lambda: gc.sgd(True), TypeError, "learning_rate.*True"),
    ("sgd lr complex", lambda: gc.sgd(1e-3 + 1j), TypeError, "learning_rate"),
    ("sgd lr complex array", lambda: gc.sgd(jnp.array(1e-3 + 0j)), TypeError, "learning_rate.*complex"),
    ("sgd lr array with negative", lambda: gc.sgd(jnp.array([1e-3, -1.0])), ValueError, "learning_rate"),
    ("sgd momentum 1", lambda: gc.sgd(0.1, momentum=1.0), ValueError, r"momentum must be in \[0, 1\), got 1.0"),
    ("sgd momentum negative", lambda: gc.sgd(0.1, momentum=-0.1), ValueError, "momentum"),
    ("sgd momentum nan", lambda: gc.sgd(0.1, momentum=NAN), ValueError, "momentum must be finite"),
    ("sgd nesterov string", lambda: gc.sgd(0.1, 0.9, nesterov="true"), TypeError, "nesterov must be a bool"),
    ("adagrad eps zero", lambda: gc.adagrad(0.1, eps=0.0), ValueError, r"eps must be in \(0, inf\], got 0.0"),
    ("rmsprop decay 1", lambda: gc.rmsprop(0.1, decay=1.0), ValueError, "decay"),
    ("rmsprop decay > 1", lambda: gc.rmsprop(0.1, decay=2.0), ValueError, "decay"),
    ("adam b1 1", lambda: gc.adam(b1=1.0), ValueError, "b1"),
    ("adam b2 negative", lambda: gc.adam(b2=-0.5), ValueError, "b2"),
    ("adam eps negative", lambda: gc.adam(eps=-1e-8), ValueError, "eps"),
    ("adam eps inf", lambda: gc.adam(eps=INF), ValueError, "eps must be finite"),
    ("adam bias_correction int", lambda: gc.adam(bias_correction=0), TypeError, "bias_correction must be a bool"),
    ("adamw weight_decay negative", lambda: gc.adamw(weight_decay=-1.0), ValueError, "weight_decay"),
    ("schedule returning a string", lambda: gc.sgd(lambda step: "x"), TypeError, r"learning_rate\(0\)"),
    ("schedule with wrong arity", lambda: gc.sgd(lambda: 0.1), TypeError, "learning_rate is callable"),
    ("schedule negative at 0", lambda: gc.sgd(lambda step: -0.1), ValueError, r"learning_rate\(0\) must be in"),
    ("clip negative", lambda: gc.clip(-1.0), ValueError, "max_delta"),
    ("clip_by_global_norm zero", lambda: gc.clip_by_global_norm(0.0), ValueError, "max_norm"),
    ("scale nan", lambda: gc.scale(NAN), ValueError, "factor must be finite"),
    ("l1 negative", lambda: gc.add_l1_penalty(-1.0), ValueError, "l1"),
    ("l2 negative", lambda: gc.add_l2_penalty(-1.0), ValueError, "l2"),
    ("moment order 3", lambda: gc.moment(0.9, order=3), ValueError, "order must be 1 or 2, got 3"),
    ("apply_if_finite negative", lambda: gc.apply_if_finite(gc.sgd(0.1), -1), ValueError, "max_consecutive_errors"),
    ("apply_if_finite float", lambda: gc.apply_if_finite(gc.sgd(0.1), 2.5), ValueError, "max_consecutive_errors"),
    ("chain with a function", lambda: gc.chain(lambda g: g), TypeError, r"transforms\[0\]"),
    ("ratio with a non-transform", lambda: gc.ratio(gc.identity(), 3.0), TypeError, "denominator"),
    # trees that do not match
    ("update tree differs from state", lambda: gc.adam().update({"w": jnp.ones((2, 3))}, gc.adam().init(P), P), ValueError, "structure"),
    ("apply_updates trees differ", lambda: gc.apply_updates(P, {"w": jnp.ones((2, 3))}), ValueError, "updates do not have the structure of params"),
    ("state of another chain", lambda: gc.chain(gc.scale(1.0)).update(P, (), P), ValueError, "state does not belong"),
    ("state of another transform", lambda: gc.scale(1.0).update(P, gc.sgd(0.1).init(P).inner[0]._replace(hyperparams={}), P), ValueError, "state belongs to another transformation"),
    ("decay without params", lambda: gc.add_decayed_weights(1e-4).update(P, gc.add_decayed_weights(1e-4).init(P)), ValueError, "needs the current parameters"),
    ("mask of wrong structure", lambda: gc.masked(gc.scale(1.0), {"x": True}).init(P), ValueError, "mask must have the structure"),
    ("mask with int leaves", lambda: gc.masked(gc.scale(1.0), {"w": 1, "b": 0}).init(P), TypeError, "mask leaves must be Python bools"),
    # parameters no gradient step can update (issue 17: silent NaN before)
    ("integer parameters", lambda: gc.adam().init({"w": jnp.arange(3)}), TypeError, r"\['w'\] has dtype int32"),
    ("bool parameters", lambda: gc.sgd(0.1).init({"m": jnp.array([True])}), TypeError, r"\['m'\] has dtype bool"),
    ("non-array leaf with adam", lambda: gc.adam().init({"w": jnp.ones(2), "act": jax.nn.relu}), TypeError, r"\['act'\].*eqx\.filter\(model, eqx\.is_array\)"),
    ("traced mask flag", lambda: jax.jit(lambda f: gc.masked(gc.scale(1.0), {"w": f, "b": True}).init(P))(jnp.array(True)), TypeError, "mask leaves must be concrete"),
    ("mask with string leaves", lambda: gc.masked(gc.scale(1.0), {"w": "yes", "b": True}).init(P), TypeError, "mask leaves must be Python bools"),
    ("tree_get ambiguous field", lambda: gc.tree_get(gc.adam().init(P), "moment"), KeyError, "2 fields are named 'moment'"),
    ("tree_set unknown name", lambda: gc.tree_set(gc.adam().init(P), lr=0.1), ValueError, "no field or hyperparameter named 'lr'"),
    ("minimize ftol negative", lambda: gc.minimize(lambda x: jnp.sum(x**2), jnp.ones(2), ftol=-1.0), ValueError, "ftol"),
    ("adam eps_root negative", lambda: gc.adam(eps_root=-1.0), ValueError, "eps_root"),
    ("rmsprop centered string", lambda: gc.rmsprop(0.1, centered="yes"), TypeError, "centered must be a bool"),
    ("adagrad negative initial value", lambda: gc.adagrad(0.1, initial_accumulator_value=-0.1), ValueError, "initial_value"),
    # live hyperparameters
    ("set unknown hyperparameter", lambda: gc.set_hyperparams(gc.sgd(0.1).init(P), lr=0.1), ValueError, "no hyperparameter named 'lr'"),
    ("set nan hyperparameter", lambda: gc.set_hyperparams(gc.sgd(0.1).init(P), learning_rate=NAN), ValueError, "learning_rate must be finite"),
    ("set string hyperparameter", lambda: gc.set_hyperparams(gc.sgd(0.1).init(P), learning_rate="0.1"), TypeError, "learning_rate"),
    # schedules
    ("cosine decay_steps 0", lambda: gc.cosine_schedule(0.1, 0), ValueError, "decay_steps must be a positive int, got 0"),
    ("cosine decay_steps float", lambda: gc.cosine_schedule(0.1, 10.5), TypeError, "decay_steps"),
    ("linear decay_steps negative", lambda: gc.linear_schedule(0.1, -5), ValueError, "decay_steps"),
    ("step boundaries unsorted", lambda: gc.step_schedule(0.1, [60, 30]), ValueError, "boundaries"),
    ("step boundaries negative", lambda: gc.step_schedule(0.1, [-1, 30]), ValueError, "boundaries"),
    ("step factor zero", lambda: gc.step_schedule(0.1, [30], factor=0.0), ValueError, "factor"),
    ("warmup steps zero", lambda: gc.warmup(gc.constant_schedule(0.1), 0), ValueError, "warmup_steps"),
    ("warmup of a number", lambda: gc.warmup(0.1, 10), TypeError, "schedule"),
    ("sgdr period zero", lambda: gc.sgdr_schedule(0.1, 0), ValueError, "period"),
    ("sgdr t_mult below 1", lambda: gc.sgdr_schedule(0.1, 10, t_mult=0.5), ValueError, "t_mult"),
    ("join length mismatch", lambda: gc.join_schedules([gc.constant_schedule(1.0)], [10]), ValueError, "boundaries"),
    ("batch_scaled zero batch", lambda: gc.batch_scaled(0.1, 0, 256), ValueError, "batch_size"),
    # tuning
    ("grid empty space", lambda: tuning.grid({}), ValueError, "space must be a non-empty dict"),
    ("grid empty values", lambda: tuning.grid({"lr": []}), ValueError, r"space\['lr'\]"),
    ("grid string values", lambda: tuning.grid({"lr": "0.1"}), ValueError, r"space\['lr'\]"),
    ("random zero trials", lambda: tuning.sample({"lr": tuning.LogUniform(1e-4, 1e-1)}, 0, jax.random.PRNGKey(0)), ValueError, "num_trials must be a positive int, got 0"),
    ("log-uniform from zero", lambda: tuning.sample({"lr": tuning.LogUniform(0.0, 1e-1)}, 2, jax.random.PRNGKey(0)), ValueError, "LogUniform"),
    ("uniform reversed", lambda: tuning.sample({"x": tuning.Uniform(1.0, 0.0)}, 2, jax.random.PRNGKey(0)), ValueError, "low < high"),
    ("refine shrink 1", lambda: tuning.refine({"lr": tuning.LogUniform(1e-4, 1e-1)}, {"lr": 1e-3}, shrink=1.0), ValueError, "shrink must be > 1"),
    ("best of all-NaN", lambda: tuning.best([{"metrics": {"acc": NAN}}], "acc"), ValueError, "every run failed"),
    ("best mode", lambda: tuning.best([], "acc", mode="up"), ValueError, "mode must be 'max' or 'min'"),
    ("stack mismatched configs", lambda: tuning.stack_configs([{"lr": 1.0}, {"wd": 1.0}]), ValueError, r"configs\[1\]"),
    ("stack empty configs", lambda: tuning.stack_configs([]), ValueError, "configs must hold at least one"),
    ("early stopping mode", lambda: tuning.EarlyStopping(mode="best").init(P), ValueError, "mode"),
    ("early stopping min_delta", lambda: tuning.EarlyStopping(min_delta=-1.0).init(P), ValueError, "min_delta"),
    ("initial loss of a function", lambda: tuning.check_initial_loss(lambda p, b: 1.0, P, None), TypeError, "trainable must be a gradchain.Trainable"),
    ("moving average window 0", lambda: tuning.moving_average([1.0, 2.0], 0), ValueError, "window must be a positive int, got 0"),
    ("moving average 2-d", lambda: tuning.moving_average(np.ones((2, 2)), 1), ValueError, "one-dimensional"),
    ("command center empty", lambda: tuning.command_center([]), ValueError, "runs must hold at least one run"),
    ("lr finder one rate", lambda: tuning.lr_finder(None, None, None, None, rates=[1e-3]), ValueError, "rates must be at least two"),
    ("lr finder negative rate", lambda: tuning.lr_finder(None, None, None, None, rates=[1e-3, -1.0]), ValueError, "rates"),
    # regularizers
    ("dropout rate 1", lambda: gc.dropout(KEY, X, 1.0), ValueError, "rate"),
    ("dropout rate negative", lambda: gc.dropout(KEY, X, -0.1), ValueError, "rate"),
    ("dropout without key", lambda: gc.dropout(None, X, 0.5), (TypeError, ValueError), "key"),
    ("dropconnect rate nan", lambda: gc.dropconnect(KEY, X, NAN), ValueError, "rate"),
    ("mixup alpha zero", lambda: gc.mixup(KEY, IMAGES, LABELS, 0.0, num_classes=10), ValueError, "alpha"),
    ("mixup batch sizes differ", lambda: gc.mixup(KEY, IMAGES, LABELS[:3], 0.4, num_classes=10), ValueError, "labels"),
    ("cutmix alpha negative", lambda: gc.cutmix(KEY, IMAGES, LABELS, -1.0, num_classes=10), ValueError, "alpha"),
    ("cutout larger than image", lambda: gc.cutout(KEY, IMAGES, 9), ValueError, "size"),
    ("cutout wrong rank", lambda: gc.cutout(KEY, X, 2), ValueError, "images"),
    ("stochastic depth survival 0", lambda: gc.stochastic_depth(KEY, X, 0.0), ValueError, "survival_prob"),
    ("stochastic depth mode", lambda: gc.stochastic_depth(KEY, X, 0.8, mode="col"), ValueError, "mode"),
    ("fractional pool ratio below 1", lambda: gc.fractional_max_pool(KEY, IMAGES, ratio=0.5), ValueError, "ratio"),
    ("marginalize zero samples", lambda: gc.marginalize(lambda k, x: x, KEY, X, 0), ValueError, "num_samples"),
    ("penalty mask of wrong structure", lambda: gc.l2_penalty(P, 0.1, mask={"x": True}), ValueError, "mask"),
    # augmentation: image layout (HWC images, NHWC batches)
    ("augment image without channel axis", lambda: A.random_flip(KEY, jnp.ones((8, 8))), ValueError, r"random_flip: image must have rank 3 .*got shape \(8, 8\).*image\[\.\.\., None\]"),
    ("augment batch to a per-image fn", lambda: A.random_crop(KEY, IMAGES, 4), ValueError, r"random_crop: image must have rank 3 .*got shape \(4, 8, 8, 3\).*apply_batch"),
    ("augment one image as a batch", lambda: A.apply_batch(A.random_flip, KEY, PHOTO), ValueError, r"images must have rank 4 .*got shape \(8, 8, 3\).*images\[None\]"),
    ("augment CHW image", lambda: A.color_jitter(KEY, jnp.ones((3, 8, 8))), ValueError, r"image must have 3 channels .*got 8 in shape \(3, 8, 8\).*channels go last"),
    ("augment 2 channels", lambda: A.random_flip(KEY, jnp.ones((8, 8, 2))), ValueError, r"image must have 1 or 3 or 4 channels .*got 2"),
    ("augment hue of a grey image", lambda: A.adjust_hue(jnp.ones((8, 8, 1)), 0.1), ValueError, r"adjust_hue: image must have 3 channels .*got 1"),
    # augmentation: crops larger than the image
    ("augment crop larger than image", lambda: A.random_crop(KEY, PHOTO, 9), ValueError, r"random_crop: size=9 is larger than the padded image \(8×8"),
    ("augment crop larger than padded image", lambda: A.random_crop(KEY, PHOTO, (11, 4), padding=1), ValueError, r"size=\(11, 4\) is larger than the padded image \(10×10"),
    ("augment center crop larger", lambda: A.center_crop(PHOTO, (4, 9)), ValueError, r"center_crop: size=\(4, 9\) is larger than the image \(8×8"),
    ("augment ten crops larger", lambda: A.ten_crops(PHOTO, 9), ValueError, r"ten_crops: size=9 is larger than the image"),
    ("augment tta crop above a scale", lambda: A.tta_predict(lambda b: b, IMAGES, scales=(6,), crop_size=7), ValueError, r"crop_size=7 is larger than the images resized to short side 6"),
    ("augment scale crop below crop size", lambda: A.random_scale_crop(KEY, PHOTO, 224, short_side=(200, 480)), ValueError, r"short_side=\(200, 480\) must start at or above the crop size 224"),
    # augmentation: policies
    ("augment unknown policy name", lambda: A.auto_augment(KEY, PHOTO8, policy="svhn"), ValueError, r"policy='svhn' is not a known policy name; use 'cifar10' or 'imagenet'"),
    ("augment unknown policy op", lambda: A.auto_augment(KEY, PHOTO8, policy=[[("Blur", 0.5, 3)]]), ValueError, r"unknown op 'Blur'"),
    ("augment policy level 10", lambda: A.auto_augment(KEY, PHOTO8, policy=[[("Rotate", 0.5, 10)]]), ValueError, r"level of 'Rotate' in sub-policy 0 must be in \[0, 9\], got 10"),
    ("augment magnitude above max", lambda: A.rand_augment(KEY, PHOTO8, magnitude=12), ValueError, r"magnitude must be in \[0, 10\], got 12"),
    # augmentation: values outside the dtype's range
    ("augment float image in 0..255", lambda: A.random_flip(KEY, jnp.full((4, 4, 3), 255.0)), ValueError, r"float image must have values in \[0, 1\], got values in \[255, 255\]; .*divide by 255"),
    ("augment float image negative", lambda: A.color_jitter(KEY, jnp.full((4, 4, 3), -0.5)), ValueError, r"values in \[0, 1\], got values in \[-0.5, -0.5\]"),
    ("augment float image nan", lambda: A.apply_batch(A.random_flip, KEY, jnp.full((2, 4, 4, 3), NAN)), ValueError, r"float images must have values in \[0, 1\], got values in \[nan, nan\]"),
    ("augment int32 image", lambda: A.random_flip(KEY, jnp.ones((4, 4, 3), jnp.int32)), TypeError, r"image must be uint8 in \[0, 255\] or floating in \[0, 1\], got dtype int32"),
    ("augment uint8 fill above 255", lambda: A.random_crop(KEY, PHOTO8, 8, padding=2, fill=300), ValueError, r"fill must be in \[0, 255\], got 300"),
    ("augment float fill above 1", lambda: A.affine(PHOTO, jnp.eye(3), fill=2.0), ValueError, r"fill must be in \[0, 1\], got 2.0"),
    ("augment uint8 threshold above 256", lambda: A.solarize(PHOTO8, 300), ValueError, r"threshold must be in \[0, 256\], got 300"),
    # second-order
    ("minimize unknown method", lambda: gc.minimize(lambda x: jnp.sum(x**2), jnp.ones(2), method="adam"), ValueError, "method"),
    ("minimize non-scalar fun", lambda: gc.minimize(lambda x: x**2, jnp.ones(2)), (TypeError, ValueError), "fun"),
    ("minimize tol zero", lambda: gc.minimize(lambda x: jnp.sum(x**2), jnp.ones(2), tol=0.0), ValueError, "tol"),
    ("minimize max_iter zero", lambda: gc.minimize(lambda x: jnp.sum(x**2), jnp.ones(2), max_iter=0), ValueError, "max_iter"),
    ("lbfgs memory zero", lambda: gc.lbfgs(memory_size=0), ValueError, "memory_size"),
    ("minimize integer x0", lambda: gc.minimize(lambda x: jnp.sum(x**2), jnp.ones(2, jnp.int32)), (TypeError, ValueError), "x0"),
]


@pytest.mark.parametrize("make, error, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gets_a_clear_error(make, error, message):
    with pytest.raises(error, match=message):
        make()


# Inputs that look odd but are supported on purpose.
def test_supported_edge_cases():
    # an empty parameter tree: every optimizer is a no-op on it
    for tx in (gc.sgd(0.1, 0.9), gc.adam(), gc.adamw(), gc.apply_if_finite(gc.adam())):
        updates, _ = tx.update({}, tx.init({}), {})
        assert updates == {}
    # None leaves are empty subtrees, skipped by every transform
    params = {"w": jnp.ones(2), "frozen": None}
    tx = gc.adam(0.1)
    updates, _ = tx.update({"w": jnp.ones(2), "frozen": None}, tx.init(params), params)
    assert updates["frozen"] is None
    # issue 17: NumPy/JAX boolean mask leaves, momentum=None, NumPy float64 parameters, and a
    # non-array leaf (an Equinox activation) passed through by stateless SGD
    gc.masked(gc.scale(1.0), {"w": np.bool_(True), "b": jnp.bool_(False)}).init(P)
    gc.sgd(0.1, momentum=None).init(P)
    tx = gc.adam(0.1)
    params64 = np.ones(3)
    updates, _ = tx.update(params64, tx.init(params64), params64)
    assert updates.dtype == jnp.float32
    model = {"w": jnp.ones(2), "act": jax.nn.relu}
    tx = gc.sgd(0.1)
    updates, _ = tx.update({"w": jnp.ones(2), "act": None}, tx.init(model), model)
    assert gc.apply_updates(model, updates)["act"] is jax.nn.relu
    # numpy scalars and 0-d arrays as hyperparameters
    gc.sgd(np.float32(0.1), momentum=np.float64(0.9))
    gc.adam(jnp.asarray(1e-3))
    # typed and raw keys both work wherever a key is taken
    for key in (jax.random.PRNGKey(0), jax.random.key(0)):
        assert len(tuning.sample({"x": tuning.Uniform(0.0, 1.0)}, 2, key)) == 2
        assert A.apply_batch(A.random_flip, key, IMAGES).shape == IMAGES.shape
    # augmentation keeps any float dtype in [0, 1] (bfloat16 too), and uint8
    for image in (PHOTO.astype(jnp.bfloat16), PHOTO8):
        assert A.random_flip(KEY, image).dtype == image.dtype
