"""Augmentation throughput: gradchain.augment against dm-pix, augmax and torchvision.transforms.v2
(CPU), the same pipelines in the same run, images per second (higher is better).

    python benchmarks/augment.py [--repeats 15] [--only a] [--torchvision-python /tmp/tvenv/bin/python]

Peers: ``pip install --no-deps dm-pix augmax`` into the gradchain venv (``--no-deps`` keeps its
JAX as it is); torchvision in its own venv, so that the torch pinned for the tests stays as it
is: ``python -m venv /tmp/tvenv && /tmp/tvenv/bin/pip install torch torchvision`` (measured
with torch 2.14.1, torchvision 0.29.1).  A missing peer prints "n/a (...)".

Pipelines (every image gets its own random draw in every library):
  (a) CIFAR: horizontal flip + random crop (pad 4, crop 32) + colour jitter (brightness,
      contrast, saturation 0.4, hue 0.1) on 32×32 images, batch 256;
  (b) ResNet scale augmentation: short side L ~ U[256, 480], random 224×224 crop, flip, colour
      jitter as in (a), from 480×640 photos, batch 64.

JAX libraries get the same float32 [0, 1] NHWC batch and run one jitted, vmapped program (their
own recommended use); gradchain also runs on the uint8 batch.  dm-pix has no resize, so its (b)
samples the 224×224 zoom+shift grid with ``dm_pix.flat_nd_linear_interpolate`` (the
interpolator under its ``affine_transform``, which keeps the input shape).  augmax
(b) is ``RandomSizedCrop`` with the equivalent zoom range.  torchvision gets uint8 CHW tensors
(its fast path) and a Python loop over the batch, since a v2 transform called on a batch draws
one set of parameters for the whole batch; that whole-batch number is printed too, for
information only.  torchvision (b) is ``RandomShortestSize(256..480) + RandomCrop(224)``.

torchvision runs in a subprocess when it cannot be imported here (a separate venv, see
``--torchvision-python``); a peer that is missing is reported as "n/a (reason)".  Timings:
median of ``--repeats`` runs after a warm-up (compile) call, outputs blocked on; the JAX libraries
are timed round-robin so that load changes on a shared machine hit them alike.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import time

PIPELINES = {
    "a": dict(title="(a) flip + crop(pad 4) + jitter, 32x32, batch 256", n=256, h=32, w=32, out=32),
    "b": dict(title="(b) ResNet scale aug (L~U[256,480]) + 224 crop + flip + jitter, 480x640 -> 224, batch 64",
              n=64, h=480, w=640, out=224),
}
JITTER = dict(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)


def median_time(fn, repeats):
    fn()  # warm-up: compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def make_data(p, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (p["n"], p["h"], p["w"], 3), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------
# JAX libraries


def jax_rows(repeats, pipelines):
    """Images/s of the JAX libraries.  The libraries are timed round-robin (one call each per
    round, ``repeats`` rounds, median), so a change in the machine's load hits them alike."""
    import jax
    import jax.numpy as jnp

    rows = {}
    key = jax.random.PRNGKey(0)
    for name in pipelines:
        p = PIPELINES[name]
        data_u8 = jnp.asarray(make_data(p))
        data_f = data_u8.astype(jnp.float32) / 255.0
        results, calls = {}, {}
        for lib, builder in (("gradchain", gradchain_fn), ("dm-pix", dmpix_fn), ("augmax", augmax_fn)):
            try:
                fn = builder(name, p)
            except ImportError as err:
                results[lib] = f"n/a ({err.name or err} not installed)"
                continue
            calls[lib] = functools.partial(fn, key, data_f)
        calls["gradchain uint8"] = functools.partial(gradchain_fn(name, p), key, data_u8)
        for call in calls.values():
            jax.block_until_ready(call())  # compile
        times = {lib: [] for lib in calls}
        for _ in range(repeats):
            for lib, call in calls.items():
                start = time.perf_counter()
                jax.block_until_ready(call())
                times[lib].append(time.perf_counter() - start)
        for lib in calls:
            results[lib] = p["n"] / statistics.median(times[lib])
        rows[name] = {lib: results[lib] for lib in ("gradchain", "dm-pix", "augmax", "gradchain uint8") if lib in results}
    return rows


def gradchain_fn(name, p):
    import jax

    from gradchain import augment as A

    if name == "a":
        pipeline = A.compose(
            A.random_flip,
            functools.partial(A.random_crop, size=p["out"], padding=4),
            functools.partial(A.color_jitter, **JITTER),
        )
    else:
        pipeline = A.compose(
            functools.partial(A.random_scale_crop, size=p["out"], short_side=(256, 480)),
            A.random_flip,
            functools.partial(A.color_jitter, **JITTER),
        )
    return jax.jit(A.batch(pipeline))


def dmpix_fn(name, p):
    import dm_pix as pix
    import jax
    import jax.numpy as jnp

    def jitter(k, x):
        k1, k2, k3, k4 = jax.random.split(k, 4)
        x = jnp.clip(x * jax.random.uniform(k1, (), minval=0.6, maxval=1.4), 0, 1)  # multiplicative, as torchvision
        x = jnp.clip(pix.random_contrast(k2, x, 0.6, 1.4), 0, 1)
        x = jnp.clip(pix.random_saturation(k3, x, 0.6, 1.4), 0, 1)
        return jnp.clip(pix.random_hue(k4, x, 0.1), 0, 1)

    if name == "a":
        def one(k, x):
            k1, k2, k3 = jax.random.split(k, 3)
            x = pix.random_flip_left_right(k1, x)
            x = pix.random_crop(k2, jnp.pad(x, ((4, 4), (4, 4), (0, 0))), (p["out"], p["out"], 3))
            return jitter(k3, x)
    else:
        out, h, w = p["out"], p["h"], p["w"]

        def one(k, x):
            k1, k2, k3, k4 = jax.random.split(k, 4)
            zoom = jax.random.uniform(k1, (), minval=256.0, maxval=480.0) / min(h, w)
            off = jax.random.uniform(k2, (2,)) * (jnp.array([h, w]) - out / zoom)
            # dm-pix's affine_transform keeps the input shape, so sample the 224x224x3 output
            # grid directly with its interpolator (the primitive under affine_transform)
            i = off[0] + (jnp.arange(out) + 0.5) / zoom - 0.5
            j = off[1] + (jnp.arange(out) + 0.5) / zoom - 0.5
            grid = jnp.stack(jnp.meshgrid(i, j, jnp.arange(3.0), indexing="ij"))
            x = pix.flat_nd_linear_interpolate(x, grid)
            x = pix.random_flip_left_right(k3, x)
            return jitter(k4, x)

    @jax.jit
    def run(key, images):
        return jax.vmap(one)(jax.random.split(key, images.shape[0]), images)

    return run


def augmax_fn(name, p):
    import augmax
    import jax
    import jax.numpy as jnp

    color = augmax.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, p=1.0)
    if name == "a":
        chain = augmax.Chain(augmax.HorizontalFlip(), augmax.RandomCrop(p["out"], p["out"]), color)

        def prepare(images):
            return jnp.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
    else:
        short = min(p["h"], p["w"])
        chain = augmax.Chain(
            augmax.RandomSizedCrop(p["out"], p["out"], zoom_range=(256 / short, 480 / short)),
            augmax.HorizontalFlip(),
            color,
        )
        prepare = lambda images: images

    @jax.jit
    def run(key, images):
        images = prepare(images)
        return jax.vmap(chain)(jax.random.split(key, images.shape[0]), images)

    return run


# ---------------------------------------------------------------------------------------------
# torchvision (may run in another interpreter: imports no JAX)


def torchvision_rows(repeats, pipelines, device="cpu", specs=None):
    """Images/s of torchvision v2 on ``device``; ``specs`` replaces ``PIPELINES``' sizes."""
    import torch
    from torchvision.transforms import v2

    torch.manual_seed(0)
    rows = {}
    for name in pipelines:
        p = (specs or PIPELINES)[name]
        data = torch.from_numpy(make_data(p)).permute(0, 3, 1, 2).contiguous().to(device)  # uint8 NCHW
        jitter = v2.ColorJitter(**JITTER)
        if name == "a":
            tf = v2.Compose([v2.RandomHorizontalFlip(), v2.RandomCrop(p["out"], padding=4), jitter])
        else:
            tf = v2.Compose([
                v2.RandomShortestSize(min_size=list(range(256, 481)), antialias=True),
                v2.RandomCrop(p["out"]),
                v2.RandomHorizontalFlip(),
                jitter,
            ])
        sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
        per_image = lambda: (torch.stack([tf(img) for img in data]), sync())
        whole = lambda: (tf(data), sync())
        rows[name] = {
            "torchvision v2": p["n"] / median_time(per_image, repeats),
            "torchvision v2 one draw per batch (info)": p["n"] / median_time(whole, repeats),
        }
    rows["version"] = f"torch {torch.__version__}, torchvision {__import__('torchvision').__version__}, {torch.get_num_threads()} threads"
    return rows


def torchvision_via(python, repeats, pipelines):
    try:
        import torchvision  # noqa: F401

        return torchvision_rows(repeats, pipelines)
    except Exception as err:  # noqa: BLE001 - any import failure means: try the other venv
        local_error = f"{type(err).__name__}: {err}".splitlines()[0][:80]
    if python and os.path.exists(python):
        proc = subprocess.run(
            [python, __file__, "--torchvision-worker", "--repeats", str(repeats), "--only", *pipelines],
            capture_output=True, text=True, timeout=1800,
        )
        if proc.returncode == 0:
            return json.loads(proc.stdout.strip().splitlines()[-1])
        return f"n/a (torchvision subprocess failed: {proc.stderr.strip().splitlines()[-1][:80]})"
    return f"n/a (torchvision not importable here: {local_error}; no --torchvision-python venv)"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--torchvision-python", default=os.environ.get("TORCHVISION_PYTHON", "/tmp/tvenv/bin/python"))
    parser.add_argument("--only", nargs="+", choices=sorted(PIPELINES), default=sorted(PIPELINES), help="pipelines to run")
    parser.add_argument("--torchvision-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.torchvision_worker:
        print(json.dumps(torchvision_rows(args.repeats, args.only)))
        return

    import jax

    tv = torchvision_via(args.torchvision_python, args.repeats, args.only)
    rows = jax_rows(args.repeats, args.only)
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, {os.cpu_count()} CPUs; "
          f"{tv['version'] if isinstance(tv, dict) else 'torchvision: ' + tv}")
    for name in args.only:
        p = PIPELINES[name]
        results = dict(rows[name])
        if isinstance(tv, dict):
            results.update(tv[name])
        else:
            results["torchvision v2"] = tv
        ours = results["gradchain"]
        peers = {k: v for k, v in results.items() if not k.startswith("gradchain") and "(info)" not in k and isinstance(v, float)}
        print(f"\n{p['title']}")
        print(f"{'library':<44}{'images/s':>12}{'gradchain f32 / this':>22}")
        for lib, value in results.items():
            if isinstance(value, float):
                print(f"{lib:<44}{value:>12.0f}{ours / value:>22.2f}")
            else:
                print(f"{lib:<44}{value:>34}")
        if peers:
            best = max(peers, key=peers.get)
            print(f"fastest peer: {best} ({peers[best]:.0f}/s); gradchain float32 is {ours / peers[best]:.2f}x of it")


if __name__ == "__main__":
    main()
