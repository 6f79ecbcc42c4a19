"""Across processes on JAX's own distributed runtime: 2 local processes × 4 simulated CPU devices
(one global mesh of 8, gloo collectives) against 1 process × 8 devices.

``gradchain.distributed.launch`` starts the processes; what each one runs is in
``tests/multiprocess_cases.py``, one function for both topologies.  Each topology is launched
once per group of checks (module-scoped fixtures): a JAX process start and its compiles are what
cost on a CPU.  The default share (data-parallel, FSDP and ``gc.flat`` training, multi_tensor's
decision under jit, bad axes, the launcher's errors) stays small; populations, Flax NNX, K-FAC and
the orbax kill-and-resume run are ``slow``.

Tolerances.  The per-device programs of the two topologies are the same (same global shapes and
shardings, so the same SPMD partitioning), and so are their inputs; what differs is the
implementation of the collectives (XLA:CPU's in-process all-reduce against gloo's across
processes), which may add the 8 devices' partial sums in another order.  Any order of ``m``
float32 terms is within ``(m - 1)·u·Σ|s_i|`` of the exact sum (u = 2⁻²⁴ ≈ 6e-8), so two orders
differ by at most ``2·7·u ≈ 8.3e-7`` relative to ``Σ|s_i|``; for a gradient entry whose partials
nearly cancel, ``Σ|s_i| / |Σ s_i|`` (κ) multiplies that, and we allow κ ≤ 100 on these smooth
problems.  Adam's direction ``m̂/(√v̂+ε)`` is homogeneous of degree 0 in the gradient, so a relative
gradient error δ moves it by at most ~2δ, and ``T = 4`` steps of ``lr = 1e-2`` move a parameter
by at most ``T·lr·2δκ ≈ 4·1e-2·2·8.3e-7·100 ≈ 6.6e-6``: ``TOL = 1e-5`` absolute (parameters are
O(1)), with ``rtol = 1e-5`` for the larger ones.  Runs without cross-device arithmetic (a
population member lives on one device; multi_tensor's elementwise Adam on ``cos(params)``) must be
bit-for-bit equal.  K-FAC's damped inverses amplify the same all-reduce error by their condition
number (≤ (λ_max + damping)/damping); the tolerances of tests/test_kfac_distributed.py (which
compares 8 devices with one, a larger difference than 1 × 8 with 2 × 4) cover it.  In practice
every float32 comparison below has come out bit-for-bit equal on CPU.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys
import time

import jax
import numpy as np
import pytest

import gradchain.distributed as gd

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import multiprocess_cases as cases  # the workers import it by this name too (sys.path travels)

TOL = dict(rtol=1e-5, atol=1e-5)  # derived in the module docstring
HAS_ORBAX = importlib.util.find_spec("orbax") is not None and importlib.util.find_spec("orbax.checkpoint") is not None
CORE = ("dp", "mt", "bad")
HEAVY = ("nnx", "pop", "kfac", "ckpt")


def _close(a, b, **tol):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb) and la, (len(la), len(lb))
    for x, y in zip(la, lb):
        if tol:
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tol)
        else:
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _same_on_every_process(results):
    """Every process returns the same gathered values (timings aside)."""
    strip = lambda r: {k: v for k, v in r.items() if k != "timings"}
    for other in results[1:]:
        _close(strip(results[0]), strip(other))


@pytest.fixture(scope="module")
def core():
    one = gd.launch(cases.suite, None, CORE, num_processes=1, local_devices=8, timeout=600)
    two = gd.launch(cases.suite, None, CORE, num_processes=2, local_devices=4, timeout=600)
    return one[0], two


@pytest.fixture(scope="module")
def heavy(tmp_path_factory):
    directory, killed, parts = None, None, HEAVY if HAS_ORBAX else tuple(p for p in HEAVY if p != "ckpt")
    if HAS_ORBAX:
        directory = str(tmp_path_factory.mktemp("ckpt"))
        with pytest.raises(gd.WorkerError) as info:
            gd.launch(cases.checkpoint_then_die, directory, num_processes=2, local_devices=4, timeout=600)
        killed = info.value
    one = gd.launch(cases.suite, directory, parts, num_processes=1, local_devices=8, timeout=900)
    two = gd.launch(cases.suite, directory, parts, num_processes=2, local_devices=4, timeout=900)
    return one[0], two, killed


# ---------------------------------------------------------------------------------------------
# The launcher.


def test_launch_reports_a_failing_worker_with_its_traceback():
    start = time.monotonic()
    with pytest.raises(gd.WorkerError) as info:
        gd.launch(cases.fails_on_one, 1, num_processes=2, local_devices=1, timeout=300)
    error = info.value
    assert error.process_id == 1 and error.returncode == 1, (error.process_id, error.returncode)
    assert "process 1 of 2 failed" in str(error) and "ValueError: process 1 was told to fail" in str(error), str(error)
    assert "fails_on_one" in error.traceback  # the frame of the user's function
    assert time.monotonic() - start < 110  # the waiting peer was stopped, not waited for (it sleeps 120 s)


def test_launch_stops_hung_workers_after_the_timeout():
    with pytest.raises(TimeoutError, match=r"still running after 10 s"):
        gd.launch(cases.hangs, num_processes=2, local_devices=1, timeout=10)


def test_launch_refuses_what_cannot_travel():
    with pytest.raises(TypeError, match="picklable"):
        gd.launch(lambda: 1)
    with pytest.raises(ValueError, match="num_processes"):
        gd.launch(cases.hangs, num_processes=0)


def test_helpers_name_the_axes_the_mesh_has():
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    with pytest.raises(ValueError, match=r"no axis 'batch': its axes are \('data',\)"):
        gd.global_batch(np.zeros((4, 2)), mesh, "batch")
    with pytest.raises(ValueError, match="no axis 'model'"):
        gd.fsdp_shardings({"w": np.zeros(8)}, mesh, "model")
    assert gd.local_rows(4, mesh, "data") == slice(0, 4)  # one process holds every row


def test_multi_tensor_sharded_argument_and_placement_in_one_process():
    import gradchain as gc
    from gradchain.multi_tensor import spans_devices

    params = {f"b{i:02d}": jax.numpy.full((4,), float(i)) for i in range(40)}
    tx = gc.multi_tensor(gc.scale_by_adam(), sharded={k: k == "b03" for k in params})
    state = tx.init(params)
    assert [k for k, slot in zip(sorted(params), state.slots) if slot is None] == ["b03"]
    assert sum(slot is not None for slot in gc.adam(1e-2).init(params).slots) == 40  # default: all packed
    with pytest.raises(ValueError, match="one bool per leaf"):
        gc.multi_tensor(gc.scale_by_adam(), sharded=[True]).init(params)
    with pytest.raises(TypeError, match="Python bools"):
        gc.multi_tensor(gc.scale_by_adam(), sharded=dict.fromkeys(params, 1)).init(params)
    seen = []
    jax.jit(lambda x: seen.append(spans_devices(x)) or x)(jax.numpy.ones(3))
    assert spans_devices(jax.numpy.ones(3)) is False and spans_devices(np.ones(3)) is False
    assert seen == [None]  # a tracer with no mesh in its type: not known (packed, as before)


# ---------------------------------------------------------------------------------------------
# Data parallel, fully sharded, gc.flat, multi_tensor: 2 × 4 == 1 × 8.


def test_topologies(core):
    one, two = core
    assert (one["processes"], one["devices"], one["local"]) == (1, 8, 8)
    assert [(r["processes"], r["devices"], r["local"]) for r in two] == [(2, 8, 4)] * 2
    _same_on_every_process(two)


def test_data_parallel_equals_one_process(core):
    one, two = core
    _close(two[0]["dp"], one["dp"], **TOL)


def test_fully_sharded_equals_one_process_and_data_parallel(core):
    one, two = core
    _close(two[0]["fsdp"], one["fsdp"], **TOL)
    _close(two[0]["fsdp"], two[0]["dp"], **TOL)  # another partitioning of the same arithmetic
    assert two[0]["fsdp_specs"] == {"w1": ("data", None), "b1": ("data",), "w2": ("data", None), "b2": ("data",)}


def test_flat_buffer_sharded_along_its_axis_equals_one_process(core):
    one, two = core
    _close(two[0]["flat"], one["flat"], **TOL)
    _close(two[0]["flat"], two[0]["dp"], **TOL)  # flat Adam is the per-leaf Adam (gc.flat docstring)
    assert two[0]["flat_spec"] == ("data",)


def test_per_device_bytes_fall_as_one_over_eight(core):
    """Exact counts from the shapes: the MLP 8→16→8 has 8·16 + 16 + 16·8 + 8 = 280 float32 params;
    AdamW holds two moments like them, so params + state arrays are 3·280·4 = 3360 bytes.  Data
    parallel keeps all of them on every device; FSDP (and the flat buffer split 280 = 8·35) keeps
    3360/8 = 420.  The state's scalars (step count, hyperparameters) are replicated in both."""
    one, two = core
    for result in (one, *two):
        assert result["dp_bytes"]["arrays_global"] == 3 * 280 * 4
        assert result["dp_bytes"]["arrays_per_device"] == [3 * 280 * 4]
        for name in ("fsdp_bytes", "flat_bytes"):
            assert result[name]["arrays_global"] == 3 * 280 * 4
            assert result[name]["arrays_per_device"] == [3 * 280 * 4 // 8], (name, result[name])
            assert result[name]["scalars_per_device"] == result["dp_bytes"]["scalars_per_device"]


def test_multi_tensor_decides_under_jit_from_the_types(core):
    one, two = core
    for result in (one, *two):
        assert result["loose_under_jit"] == ["w"]  # split over the global mesh: loose; the 40 others packed
        assert result["loose_eager_auto"] == ["w"]  # eagerly, from the concrete shardings (Auto mesh)
        assert result["loose_jit_auto_told"] == ["w"]  # under jit on an Auto mesh: from sharded=
        assert result["mt_w_spec"] == ("data", None)  # the update kept it split (never gathered)
    _close(two[0]["mt"], one["mt"])  # elementwise, no cross-device sums: bit for bit


def test_bad_axes_are_named(core):
    _, two = core
    assert two[0]["bad_global_batch"] == "the mesh has no axis 'batch': its axes are ('data',) (shape {'data': 8})"
    assert two[0]["bad_fsdp_shardings"].startswith("the mesh has no axis 'model'")


# ---------------------------------------------------------------------------------------------
# Slow: Flax NNX, populations, K-FAC, orbax checkpoints.


@pytest.mark.slow
def test_heavy_parts_agree_on_every_process(heavy):
    _, two, _ = heavy
    _same_on_every_process(two)


@pytest.mark.slow
def test_nnx_model_data_parallel_and_fully_sharded(heavy):
    one, two, _ = heavy
    _close(two[0]["nnx_dp"], one["nnx_dp"], **TOL)
    _close(two[0]["nnx_fsdp"], one["nnx_fsdp"], **TOL)
    _close(two[0]["nnx_fsdp"], two[0]["nnx_dp"], **TOL)
    assert two[0]["nnx_dp_bytes_global"] == 3 * 280 * 4  # the same layer sizes as the plain MLP
    assert two[0]["nnx_fsdp_bytes"]["arrays_per_device"] == [3 * 280 * 4 // 8]


@pytest.mark.slow
def test_population_across_processes_equals_one_process(heavy):
    one, two, _ = heavy
    for result in two:
        assert result["pop_addressable"]  # gathered: every process holds every member's results
        np.testing.assert_array_equal(result["pop_losses"], one["pop_losses"])  # one device per member: exact
        np.testing.assert_array_equal(result["pop_val"], one["pop_val"])
        assert result["pop_records"] == one["pop_records"]
    assert one["pop_losses"].shape == (8, 4) and np.all(np.isfinite(one["pop_losses"]))


@pytest.mark.slow
def test_population_not_divisible_by_the_global_devices_is_refused(heavy):
    one, two, _ = heavy
    assert one["pop_6"] is None  # one process: run unsplit, as before
    assert two[0]["pop_6"].startswith("a population of 6 members cannot be split over the 8 devices of 2 processes")


@pytest.mark.slow
def test_kfac_across_processes_equals_one_process(heavy):
    one, two, _ = heavy
    _close(two[0]["kfac_chain"], one["kfac_chain"], rtol=2e-5, atol=2e-6)
    _close(two[0]["kfac_adaptive"], one["kfac_adaptive"], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_kfac_names_a_missing_mesh_axis(heavy):
    # was: jax's pmean over the unbound axis inside shard_map raised a bare AssertionError
    one, two, _ = heavy
    for result in (one, *two):
        assert result["kfac_wrong_axis"].startswith(  # jax may append a note on its filtered frames
            "ValueError: kfac_curvature(axis_name='batch'): no axis 'batch' in the enclosing shard_map/pmap/vmap; "
            "the axes bound here are ('data',). Pass the data-parallel axis of the map the K-FAC step runs in, "
            "or axis_name=None outside one"), result["kfac_wrong_axis"]


@pytest.mark.slow
def test_checkpoint_killed_run_resumes_to_the_uninterrupted_parameters(heavy):
    if not HAS_ORBAX:
        pytest.skip("orbax-checkpoint is not installed (the test extra: orbax-checkpoint>=0.12)")
    one, two, killed = heavy
    assert killed.returncode == -9, killed  # the first run was killed (SIGKILL) after its checkpoint
    for result in (one, *two):
        assert result["ckpt_step"] == cases.STEPS // 2
        assert result["ckpt_slots_packed"] == 40  # the multi_tensor state is the packed one
        assert result["ckpt_shardings_kept"]
    for result in two:
        assert result["ckpt_restored_equals_saved"]  # orbax restores the bits that were saved
        _close(result["ckpt_resumed"], result["ckpt_whole"], **TOL)
    # 1 × 8 restores the checkpoint that 2 × 4 wrote (orbax reshards), and resumes to the same
    _close(one["ckpt_resumed"], one["ckpt_whole"], **TOL)
    _close(two[0]["ckpt_whole"], one["ckpt_whole"], **TOL)


@pytest.mark.slow
def test_the_recipe_as_a_two_process_job_writes_once_and_resumes(tmp_path):
    # was: both processes appended every trial (29 duplicate ids) and both wrote the report
    out = str(tmp_path / "job")
    first = gd.launch(cases.recipe_job, out, num_processes=2, local_devices=4, timeout=900)
    assert first[0]["config"] == first[1]["config"] and first[0]["test_single"] == first[1]["test_single"]
    lines = (tmp_path / "job" / "trials.jsonl").read_text().splitlines()
    ids = [line.split('"id": "')[1][:16] for line in lines]
    assert len(ids) == len(set(ids)) and (tmp_path / "job" / "report.md").exists()
    again = gd.launch(cases.recipe_job, out, num_processes=2, local_devices=4, timeout=900)
    assert (tmp_path / "job" / "trials.jsonl").read_text().splitlines() == lines  # every trial reused, none added
    assert again[0]["config"] == first[0]["config"]
