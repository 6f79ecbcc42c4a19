"""How close one pass over memory gets to torch's fused Adam on one big leaf (XLA:CPU).

    python benchmarks/one_pass.py [--repeats 20] [--size 25557032]

An experiment behind BUILD_NOTES.md ("Why XLA's CPU loop for one big leaf is slower than torch's
fused kernel"), not a library feature.  It compiles ``one_pass_adam.cc`` with the system's g++
against the XLA FFI headers that ship with jaxlib, calls it through ``jax.ffi``, and times, in one
run and interleaved, the Adam step on one float32 leaf:

- **gradchain**: ``gc.adam`` then ``apply_updates`` under ``jit`` with donation.  XLA:CPU emits three
  loops (m, v, then p): 40 bytes per parameter.
- **kernel, drop-in**: the ``GradientTransformation`` form.  One loop writes the update u (into the
  gradient's buffer), m and v; XLA then applies p + u.  36 bytes per parameter.
- **kernel, owns p**: one loop reads p, g, m, v and writes p, m, v.  28 bytes, torch's form; no
  ``GradientTransformation`` can take it, because the caller applies the updates.
- **torch fused**: ``torch.optim.Adam(fused=True).step()``.

Run it again with ``XLA_FLAGS=--xla_backend_extra_options=xla_cpu_use_multi_output_fusion`` to
see XLA's own multi-output fusion (off by default, and a process-wide flag).  It also prints
the largest relative difference between the kernel's parameters and gradchain's after 10 steps.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import pathlib
import statistics
import subprocess
import tempfile
import time
from functools import partial

import jax
import jax.numpy as jnp

import gradchain as gc
from update_step import jax_step, torch, torch_runner

LR, B1, B2, EPS = 1e-3, 0.9, 0.999, 1e-8


def build_kernels() -> None:
    source = pathlib.Path(__file__).with_name("one_pass_adam.cc")
    library = pathlib.Path(tempfile.mkdtemp()) / "libone_pass_adam.so"
    command = ["g++", "-O3", "-march=native", "-fno-math-errno", "-fopenmp-simd", "-std=c++17",
               "-shared", "-fPIC", f"-I{jax.ffi.include_dir()}", str(source), "-o", str(library)]
    built = subprocess.run(command, capture_output=True, text=True)
    if built.returncode != 0:
        raise SystemExit(f"building the kernel failed ({' '.join(command)}):\n{built.stderr[-2000:]}")
    loaded = ctypes.cdll.LoadLibrary(str(library))
    for name in ("gc_adam_params", "gc_adam_updates"):
        jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(loaded, name)), platform="cpu")


def hyper(count):
    """[lr / (1 - b1^t), 1 / sqrt(1 - b2^t), b1, b2, eps] at step t = count + 1."""
    t = (count + 1).astype(jnp.float32)
    return jnp.stack([LR / (1 - B1**t), jax.lax.rsqrt(1 - B2**t), B1, B2, EPS]).astype(jnp.float32)


@partial(jax.jit, donate_argnums=(0, 1))
def kernel_owns_params(params, state, grads):
    m, v, count = state
    shape = jax.ShapeDtypeStruct(params.shape, params.dtype)
    call = jax.ffi.ffi_call("gc_adam_params", (shape,) * 3, input_output_aliases={0: 0, 2: 1, 3: 2})
    params, m, v = call(params, grads, m, v, hyper(count))
    return params, (m, v, count + 1)


@partial(jax.jit, donate_argnums=(0, 1, 2))
def kernel_drop_in(params, state, grads):
    m, v, count = state
    shape = jax.ShapeDtypeStruct(params.shape, params.dtype)
    call = jax.ffi.ffi_call("gc_adam_updates", (shape,) * 3, input_output_aliases={0: 0, 1: 1, 2: 2})
    updates, m, v = call(grads, m, v, hyper(count))
    # The updates are returned too, so that they may live in the donated gradient's buffer, as
    # they would in a train step where the gradient is a temporary of the backward pass.
    return gc.apply_updates(params, updates), (m, v, count + 1), updates


class JaxRun:
    """A jitted step and the parameters and state it carries from one call to the next."""

    def __init__(self, step, params, state, grads, donates_grads=False):
        self.step, self.params, self.state, self.grads = step, params, state, grads
        self.donates_grads = donates_grads

    def __call__(self) -> float:
        """One step; returns its seconds (a donated gradient is copied before the clock starts)."""
        grads = jax.block_until_ready(self.grads.copy()) if self.donates_grads else self.grads
        start = time.perf_counter()
        self.params, self.state = self.step(self.params, self.state, grads)[:2]
        jax.block_until_ready((self.params, self.state))
        return time.perf_counter() - start


def timed(step):
    """``step`` as a run that returns its own seconds, like ``JaxRun``."""
    def run() -> float:
        start = time.perf_counter()
        step()
        return time.perf_counter() - start
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--size", type=int, default=25_557_032)
    args = parser.parse_args()
    build_kernels()
    n = args.size
    grads = jax.random.normal(jax.random.key(1), (n,)) * 1e-2
    tx = gc.adam(LR, eps=EPS)
    kernel_state = lambda: (jnp.zeros(n), jnp.zeros(n), jnp.zeros((), jnp.int32))  # noqa: E731
    runs = {
        "gradchain (XLA, 3 loops)": JaxRun(jax_step(tx), jnp.ones(n), tx.init(jnp.ones(n)), grads),
        "kernel, drop-in (36 B)": JaxRun(kernel_drop_in, jnp.ones(n), kernel_state(), grads, donates_grads=True),
        "kernel, owns p (28 B)": JaxRun(kernel_owns_params, jnp.ones(n), kernel_state(), grads),
    }
    if torch is not None:
        runs["torch fused"] = timed(torch_runner(("Adam", dict(lr=LR, eps=EPS)), [(n,)], "fused"))

    # Numerics first (10 steps from the same start), then timing.
    for _ in range(10):
        for run in runs.values():
            run()
    reference = runs["gradchain (XLA, 3 loops)"].params
    for name in ("kernel, drop-in (36 B)", "kernel, owns p (28 B)"):
        error = jnp.max(jnp.abs(runs[name].params - reference) / jnp.abs(reference))
        print(f"{name}: after 10 steps, max relative difference from gradchain's p = {float(error):.1e}")

    times = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            times[name].append(run())
    fusion = "on" if "multi_output_fusion" in os.environ.get("XLA_FLAGS", "") else "off"
    print(f"\njax {jax.__version__}, {n:,} float32, median of {args.repeats}, multi-output fusion {fusion}")
    peer = statistics.median(times["torch fused"]) if "torch fused" in times else None
    for name, samples in times.items():
        seconds = statistics.median(samples)
        versus = f"{seconds / peer:.2f}x torch fused" if peer else ""
        print(f"{name:28s} {seconds * 1e3:7.2f} ms   {versus}")


if __name__ == "__main__":
    main()
