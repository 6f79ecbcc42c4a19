"""Beyond one process: the same training code on one CPU, 8 devices or many hosts, on JAX's runtime.

JAX runs one Python process per host ("multi-controller"): every process runs the same program,
``jax.devices()`` lists the devices of *all* processes, ``jax.local_devices()`` its own, and a
global ``jax.Array`` is split over devices that belong to different processes.  A jitted step on
global arrays is one program over the whole mesh; the collectives cross processes by themselves
(NCCL on GPUs, ICI/DCN on TPUs, gloo on CPUs).  gradchain's transformations are pure functions of
arrays, so they run unchanged: what changes is where the arrays live.  This module holds the few
helpers that say so, and a launcher for trying it on one machine:

* :func:`launch` starts ``N`` local processes of a function, each with ``jax.distributed``
  initialised (a free port, ``local_devices`` simulated CPU devices, gloo collectives), and returns
  their return values.  On a cluster the same function runs under the cluster's launcher instead:
  ``jax.distributed.initialize()`` with no arguments finds the coordinator on Cloud TPU, SLURM and
  Open MPI (``docs/scaling_out.md``).
* :func:`global_batch` builds global arrays from each process's own rows of the batch
  (``jax.make_array_from_process_local_data``); :func:`local_rows` says which rows those are.
* :func:`place` / :func:`replicate` put values that every process holds alike (an initialisation
  from the same key, configs) onto the mesh; :func:`to_mesh` replicates what an eager ``init``
  left on one device (a step count); :func:`fsdp_shardings` splits each leaf along its first
  axis that the mesh axis divides (``gc.flat`` buffers along their one axis): the fully sharded
  layout, in which params and optimizer state cost each device ``1/size`` of their bytes.
* :func:`gather` brings global arrays back to NumPy on every process
  (``multihost_utils.process_allgather``); :func:`bytes_per_device` measures the addressable shards.

Nothing here coordinates by itself: start-up, barriers and the key-value store are
``jax.distributed``'s, checkpoints are orbax's (each process writes its own shards).
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = [
    "WorkerError",
    "launch",
    "global_batch",
    "local_rows",
    "place",
    "replicate",
    "to_mesh",
    "fsdp_shardings",
    "gather",
    "bytes_per_device",
    "check_axis",
]


class WorkerError(RuntimeError):
    """A process started by :func:`launch` failed: ``process_id``, ``returncode`` and the worker's
    ``traceback`` (or the tail of its output when it died without one)."""

    def __init__(self, message: str, process_id: int, returncode: int | None, traceback: str):
        super().__init__(message)
        self.process_id = process_id
        self.returncode = returncode
        self.traceback = traceback


# ---------------------------------------------------------------------------------------------
# The local launcher.

_FORCE = re.compile(r"--xla_force_host_platform_device_count=\S*")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: str, limit: int = 4000) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return ""
    return text if len(text) <= limit else "…" + text[-limit:]


def launch(
    fn: Callable[..., Any],
    *args: Any,
    num_processes: int = 2,
    local_devices: int = 4,
    timeout: float = 600.0,
    env: dict[str, str] | None = None,
    **kwargs: Any,
) -> list[Any]:
    """Run ``fn(*args, **kwargs)`` in ``num_processes`` local JAX processes; their return values.

    Each process is a fresh Python with ``local_devices`` simulated CPU devices
    (``--xla_force_host_platform_device_count``), gloo collectives and
    ``jax.distributed.initialize`` called on a free local port before ``fn`` is unpickled, so
    ``jax.devices()`` inside ``fn`` is the global list of ``num_processes * local_devices``
    devices.  ``fn`` must be picklable by reference (a module-level function; one defined in the
    main script is re-imported as ``__mp_main__``, as ``multiprocessing`` does, so guard the
    script's own work with ``if __name__ == "__main__"``); so must ``args`` and the return value.
    JAX arrays in the return value come back as NumPy arrays; an array spread over several
    processes cannot, so gather it first (:func:`gather`).  Each process's output (stdout and
    stderr) goes to a log of its own, whose end is shown when it fails or hangs.

    Returns:
      One return value per process, in ``process_id`` order.

    Raises:
      WorkerError: a process raised (its traceback is the message) or died (its exit code and the
        tail of its output); the other processes are then stopped, since they would wait in a
        collective for the one that is gone.
      TimeoutError: the processes had not all finished after ``timeout`` seconds (each one's
        output tail is in the message); all are stopped.
    """
    for name, value, low in (("num_processes", num_processes, 1), ("local_devices", local_devices, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
    try:
        payload = pickle.dumps((fn, args, kwargs))
    except Exception as error:
        raise TypeError(
            f"launch: fn and its arguments must be picklable (a module-level function, plain data): {error}"
        ) from None
    main = sys.modules.get("__main__")
    main_path = getattr(main, "__file__", None) if getattr(fn, "__module__", None) == "__main__" else None

    workdir = tempfile.mkdtemp(prefix="gradchain-launch-")
    try:
        spec = {
            "coordinator": f"127.0.0.1:{_free_port()}",
            "num_processes": num_processes,
            "payload": os.path.join(workdir, "payload.pkl"),
            "results": [os.path.join(workdir, f"result{i}.pkl") for i in range(num_processes)],
            "sys_path": [p for p in sys.path if p],
            "main_path": os.path.abspath(main_path) if main_path else None,
        }
        with open(spec["payload"], "wb") as f:
            f.write(payload)
        spec_path = os.path.join(workdir, "spec.json")
        with open(spec_path, "w", encoding="utf-8") as f:
            json.dump(spec, f)
        child_env = dict(os.environ if env is None else {**os.environ, **env})
        flags = _FORCE.sub("", child_env.get("XLA_FLAGS", "")).strip()
        child_env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={local_devices}".strip()
        child_env["JAX_PLATFORMS"] = "cpu"
        logs = [os.path.join(workdir, f"log{i}.txt") for i in range(num_processes)]
        procs = []
        for i in range(num_processes):
            with open(logs[i], "wb") as log:
                procs.append(subprocess.Popen(
                    [sys.executable, "-c", _WORKER, spec_path, str(i)],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=child_env,
                    start_new_session=True,  # the process group is stopped as one (a worker's own children too)
                ))
        try:
            _wait(procs, logs, spec["results"], timeout)
        finally:
            for p in procs:
                if p.poll() is None:
                    _stop(p)
        out = []
        for path in spec["results"]:
            with open(path, "rb") as f:
                out.append(pickle.load(f)[1])
        return out
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _stop(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        p.kill()
    p.wait()


def _failure(i: int, n: int, code: int | None, result_path: str, log: str) -> WorkerError:
    tb = None
    try:
        with open(result_path, "rb") as f:
            status, value = pickle.load(f)
        if status == "error":
            tb = value
    except (OSError, EOFError, pickle.UnpicklingError):
        pass
    how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
    if tb is None:
        tb = _tail(log)
        message = f"process {i} of {n} {how} without a Python traceback; the end of its output:\n{tb}"
    else:
        message = f"process {i} of {n} failed:\n{tb}"
    return WorkerError(message, i, code, tb)


def _wait(procs, logs, results, timeout: float) -> None:
    n = len(procs)
    deadline = time.monotonic() + timeout
    while True:
        codes = [p.poll() for p in procs]
        failed = [i for i, c in enumerate(codes) if c not in (None, 0)]
        if failed:
            # the others may fail too (the same error) or hang in a collective: a moment, then stop them
            grace = time.monotonic() + 3.0
            while time.monotonic() < grace and any(p.poll() is None for p in procs):
                time.sleep(0.05)
            first = failed[0]
            codes = [p.poll() for p in procs]
            # a process that raised beats one that was merely stopped by the peer's failure
            raised = [i for i, c in enumerate(codes) if c not in (None, 0) and _status(results[i]) == "error"]
            first = raised[0] if raised else first
            raise _failure(first, n, codes[first], results[first], logs[first])
        if all(c == 0 for c in codes):
            missing = [i for i in range(n) if _status(results[i]) != "ok"]
            if missing:
                raise _failure(missing[0], n, 0, results[missing[0]], logs[missing[0]])
            return
        if time.monotonic() > deadline:
            running = [i for i, c in enumerate(codes) if c is None]
            tails = "\n".join(f"--- process {i} (output tail) ---\n{_tail(logs[i], 1500)}" for i in running)
            raise TimeoutError(
                f"launch: process(es) {running} of {n} still running after {timeout:g} s (a hang, or a "
                f"collective waiting for a process that took another path); stopped them.\n{tails}"
            )
        time.sleep(0.05)


def _status(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return pickle.load(f)[0]
    except (OSError, EOFError, pickle.UnpicklingError, IndexError, TypeError):
        return None


# The worker: JAX's distributed runtime first, then the user's function (unpickled after, so that
# nothing it imports can start a backend before jax.distributed.initialize).
_WORKER = r"""
import json, os, pickle, sys, traceback
spec = json.load(open(sys.argv[1], encoding="utf-8"))
pid = int(sys.argv[2])
sys.path[:] = [p for p in spec["sys_path"] if p not in sys.path] + sys.path
result = spec["results"][pid]
def write(status, value):
    tmp = result + ".tmp"
    with open(tmp, "wb") as f:
        pickle.dump((status, value), f)
    os.replace(tmp, result)
try:
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=spec["coordinator"], num_processes=spec["num_processes"],
                               process_id=pid)
    if spec["main_path"]:
        import runpy, types
        main = types.ModuleType("__mp_main__")
        main.__dict__.update(runpy.run_path(spec["main_path"], run_name="__mp_main__"))
        sys.modules["__mp_main__"] = sys.modules["__main__"] = main
    with open(spec["payload"], "rb") as f:
        fn, args, kwargs = pickle.load(f)
    from gradchain.distributed import _to_host
    value = _to_host(fn(*args, **kwargs))
    write("ok", value)
except BaseException:
    write("error", traceback.format_exc())
    sys.stdout.flush(); sys.stderr.flush()
    os._exit(1)  # not the atexit shutdown: it would wait for peers that may be stuck
sys.stdout.flush(); sys.stderr.flush()
jax.distributed.shutdown()
"""


def _to_host(value: Any) -> Any:
    def one(x):
        if not isinstance(x, jax.Array):
            return x
        if not (x.is_fully_addressable or x.is_fully_replicated):
            raise TypeError(
                f"launch: the return value holds an array of shape {x.shape} spread over several processes; "
                "gather it first (gradchain.distributed.gather) or return this process's part"
            )
        return np.asarray(x)

    return jax.tree.map(one, value)


# ---------------------------------------------------------------------------------------------
# Placing arrays on a global mesh.


def check_axis(mesh: Mesh, axis: str | Sequence[str]) -> tuple[str, ...]:
    """``axis`` as a tuple of the mesh's axis names, or a ValueError naming the axes it has."""
    names = (axis,) if isinstance(axis, str) else tuple(axis)
    missing = [a for a in names if a not in mesh.axis_names]
    if missing or not names:
        raise ValueError(f"the mesh has no axis {missing[0] if missing else axis!r}: its axes are {tuple(mesh.axis_names)} "
                         f"(shape {dict(mesh.shape)})")
    return names


def _axis_size(mesh: Mesh, names: tuple[str, ...]) -> int:
    return math.prod(mesh.shape[a] for a in names)


def local_rows(global_size: int, mesh: Mesh, axis: str | Sequence[str] = "data") -> slice:
    """The rows ``[start, stop)`` of a batch of ``global_size`` rows split over ``axis`` that this
    process's devices hold (what its data loader should read)."""
    names = check_axis(mesh, axis)
    size = _axis_size(mesh, names)
    if global_size % size:
        raise ValueError(f"a batch of {global_size} rows cannot be split over mesh axis {axis!r} of size {size}")
    sharding = NamedSharding(mesh, PartitionSpec(names))
    indices = sharding.addressable_devices_indices_map((global_size,)).values()
    starts = sorted({(idx[0].start or 0) if idx is not None else 0 for idx in indices})
    per = global_size // size
    if starts != list(range(starts[0], starts[0] + per * len(starts), per)):
        raise ValueError(f"this process's devices do not hold one contiguous block of mesh axis {axis!r}; "
                         "order the mesh's devices by process (jax.make_mesh does)")
    return slice(starts[0], starts[-1] + per)


def global_batch(local: Any, mesh: Mesh, axis: str | Sequence[str] = "data") -> Any:
    """Global arrays whose leading axis is split over mesh ``axis``, from this process's rows.

    ``local`` is a pytree of this process's rows (``local_rows`` of the global batch; every
    process the same number); the global batch is their concatenation in process order.
    """
    names = check_axis(mesh, axis)
    sharding = NamedSharding(mesh, PartitionSpec(names))

    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local)


def place(tree: Any, shardings: Any) -> Any:
    """Global arrays with ``shardings`` (a matching pytree, or one sharding for all) from values
    that every process holds alike: each process fills only its own devices' shards."""
    if isinstance(shardings, jax.sharding.Sharding):
        shardings = jax.tree.map(lambda _: shardings, tree)

    def one(x, sharding):
        if isinstance(x, jax.Array) and _is_key(x):
            data = np.asarray(jax.random.key_data(x))
            impl = jax.random.key_impl(x)
            raw = jax.make_array_from_callback(data.shape, _with_trailing(sharding, data.ndim - x.ndim), lambda i: data[i])
            return jax.random.wrap_key_data(raw, impl=impl)
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda i: host[i])

    return jax.tree.map(one, tree, shardings)


def _is_key(x: Any) -> bool:
    dtype = getattr(x, "dtype", None)
    return dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key)


def _with_trailing(sharding: NamedSharding, extra: int) -> NamedSharding:
    """The sharding of a key array's raw data (its trailing key-data axes unsplit)."""
    return NamedSharding(sharding.mesh, PartitionSpec(*sharding.spec, *([None] * extra))) if extra else sharding


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Every leaf as a global array replicated on every device of ``mesh`` (data parallelism's params)."""
    return place(tree, NamedSharding(mesh, PartitionSpec()))


def to_mesh(tree: Any, mesh: Mesh) -> Any:
    """Every array leaf on ``mesh``: those already placed on its devices stay as they are; the rest
    (host values, single-device arrays such as an eagerly initialised optimizer state's step
    count, alike on every process) are replicated.  Then ``jax.tree.map(lambda x: x.sharding, tree)``
    is a valid ``out_shardings`` for a step that returns the tree."""
    devices = set(mesh.devices.flat)
    replicated = NamedSharding(mesh, PartitionSpec())

    def one(x):
        if isinstance(x, jax.Array) and set(x.sharding.device_set) == devices:
            return x
        if isinstance(x, (jax.Array, np.ndarray, np.generic, int, float)):
            return place(x, replicated)
        return x

    return jax.tree.map(one, tree)


def fsdp_shardings(tree: Any, mesh: Mesh, axis: str | Sequence[str] = "data", *, min_size: int = 0) -> Any:
    """Per leaf, a sharding that splits its first dimension divisible by the size of ``axis``
    (the fully sharded layout; a ``gc.flat`` buffer along its one axis); leaves with no such
    dimension, or fewer than ``min_size`` elements, are replicated."""
    names = check_axis(mesh, axis)
    size = _axis_size(mesh, names)
    entry: Any = names[0] if len(names) == 1 else names

    def one(x):
        shape = np.shape(x)
        spec: list[Any] = [None] * len(shape)
        if math.prod(shape) >= min_size:
            for d, n in enumerate(shape):
                if n % size == 0 and n >= size:
                    spec[d] = entry
                    break
        return NamedSharding(mesh, PartitionSpec(*spec))

    return jax.tree.map(one, tree)


def gather(tree: Any) -> Any:
    """Every array leaf as a NumPy array of its global value, on every process
    (``jax.experimental.multihost_utils.process_allgather``; a collective: call it on all).
    Typed PRNG keys come back as key arrays on this process's default device."""
    from jax.experimental import multihost_utils

    def host(x):
        if x.is_fully_addressable or x.is_fully_replicated:
            return np.asarray(x)
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    def one(x):
        if not isinstance(x, jax.Array):
            return x
        if _is_key(x):  # typed keys travel as their data and come back typed (on the default device)
            return jax.random.wrap_key_data(jnp.asarray(host(jax.random.key_data(x))), impl=jax.random.key_impl(x))
        return host(x)

    return jax.tree.map(one, tree)


def bytes_per_device(tree: Any) -> dict[int, int]:
    """``{device id: bytes}`` of the array leaves' shards held by this process's devices."""
    out: dict[int, int] = {d.id: 0 for d in jax.local_devices()}
    for x in jax.tree.leaves(tree):
        if isinstance(x, jax.Array):
            for shard in x.addressable_shards:
                out[shard.device.id] = out.get(shard.device.id, 0) + shard.data.nbytes
    return out
