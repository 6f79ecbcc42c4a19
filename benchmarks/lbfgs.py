"""L-BFGS, side by side: gradchain.minimize vs scipy's L-BFGS-B vs optax.lbfgs, float64, tol 1e-6.

    python benchmarks/lbfgs.py [--repeat 3] [--sizes 2,10,100,1000]

Problems
  * Rosenbrock (chained, ``scipy.optimize.rosen``) in n = 2, 10, 100, 1000 dimensions, from the
    standard start x0 = (-1.2, 1, -1.2, 1, ...);
  * L2-regularised (l2 = 1e-3, bias not penalised) multinomial logistic regression on
    scikit-learn's digits (1797 × 64, pixels / 16, 10 classes, 650 parameters), from zeros.

Solvers, each run to ‖∇f‖_∞ ≤ 1e-6 (scipy's ``pgtol`` definition)
  * gradchain: ``minimize(fun, x0, method="lbfgs", tol=1e-6)`` (memory 10, strong Wolfe);
  * scipy: ``minimize(method="L-BFGS-B", jac=True, options=dict(gtol=1e-6, ftol=0))`` on NumPy
    objectives (``rosen``/``rosen_der``, a NumPy transcription of the loss).  ``ftol=0`` so that
    it stops on the gradient like the others (with ``tol=1e-6`` it would also stop when f
    decreases by less than 1e-6 relatively, far from the gradient tolerance);
  * optax: ``optax.lbfgs()`` (memory 10, zoom line search) in a jitted ``lax.while_loop`` with
    ``optax.value_and_grad_from_state``, stopping on the same infinity norm.

Evaluations (nfev) count calls of value-and-gradient, the start point included (optax: 1 plus
the line-search steps it reports).  "solved" re-checks ‖∇f(x)‖_∞ ≤ 1e-6 at the returned x.
Times are wall-clock seconds; JAX compile (lower + compile) is measured once, run times are the
minimum over ``--repeat`` rounds in which the three solvers run one after the other (so a busy
moment of a shared machine hits all three alike).  NumPy/scipy run with one BLAS thread (set below,
before NumPy is imported): on a small shared machine OpenBLAS threads spin and make scipy many
times slower, so this is the fair setting for scipy.
"""

from __future__ import annotations

import argparse
import functools
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import platform  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import scipy  # noqa: E402
import scipy.optimize  # noqa: E402

from gradchain.examples.problems import logistic_regression, rosenbrock, rosenbrock_start  # noqa: E402
from gradchain.second_order import minimize  # noqa: E402

TOL = 1e-6
MAX_ITER = 20_000


# ------------------------------------------------------------------------------- problems


def digits_data():
    from sklearn.datasets import load_digits

    inputs, labels = load_digits(return_X_y=True)
    return inputs / 16.0, labels


def numpy_logistic(features, labels, l2=1e-3):
    """The same loss as gradchain.examples.problems.logistic_regression, in NumPy, on z = [w.ravel(), b]."""
    onehot = np.eye(10)[labels]
    d = features.shape[1]

    def fun(z):
        w, b = z[: d * 10].reshape(d, 10), z[d * 10 :]
        logits = features @ w + b
        logits = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        norm = probs.sum(axis=1, keepdims=True)
        probs /= norm
        value = np.mean(np.log(norm[:, 0]) - (onehot * logits).sum(axis=1)) + 0.5 * l2 * np.sum(w * w)
        dlogits = (probs - onehot) / len(features)
        grad = np.concatenate([(features.T @ dlogits + l2 * w).ravel(), dlogits.sum(axis=0)])
        return value, grad

    return fun


class Problem:
    def __init__(self, name, jax_fun, x0, args, numpy_fun, to_numpy, from_numpy):
        self.name, self.jax_fun, self.x0, self.args = name, jax_fun, x0, args
        self.numpy_fun, self.to_numpy, self.from_numpy = numpy_fun, to_numpy, from_numpy

    def grad_inf_norm(self, x):
        g = jax.grad(self.jax_fun)(x, *self.args)
        return max(float(jnp.max(jnp.abs(leaf))) for leaf in jax.tree.leaves(g))


def rosenbrock_problem(n):
    def jax_fun(x):
        return rosenbrock(x)

    return Problem(
        f"rosenbrock n={n}", jax_fun, rosenbrock_start(n, jnp.float64), (),
        lambda z: (scipy.optimize.rosen(z), scipy.optimize.rosen_der(z)),
        lambda x: np.asarray(x), lambda z: jnp.asarray(z),
    )


def logistic_problem():
    features, labels = digits_data()
    x0 = {"w": jnp.zeros((64, 10)), "b": jnp.zeros((10,))}
    return Problem(
        "logistic digits", logistic_regression, x0, (jnp.asarray(features), jnp.asarray(labels)),
        numpy_logistic(features, labels),
        lambda p: np.concatenate([np.asarray(p["w"]).ravel(), np.asarray(p["b"])]),
        lambda z: {"w": jnp.asarray(z[:640].reshape(64, 10)), "b": jnp.asarray(z[640:])},
    )


# ------------------------------------------------------------------------------- solvers


def timed(fn):
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return time.perf_counter() - start, out


def compile_time(jitted, *args):
    start = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    return time.perf_counter() - start, compiled


# Each prepare_* compiles (JAX) and returns (compile seconds, run(), summarise(output)); the
# runs of the three solvers are then interleaved, so that a busy moment of the machine hits all.


def prepare_gradchain(problem):
    fun = problem.jax_fun

    def solve(x0, args):
        return minimize(fun, x0, "lbfgs", args=args, tol=TOL, max_iter=MAX_ITER)

    t_compile, compiled = compile_time(jax.jit(solve), problem.x0, problem.args)

    def summarise(res):
        return dict(x=res.x, nit=int(res.nit), nfev=int(res.nfev), fun=float(res.fun),
                    note=res.message.split(":")[0])

    return t_compile, lambda: compiled(problem.x0, problem.args), summarise


def prepare_optax(problem):
    fun = problem.jax_fun

    def solve(x0, args):
        def value_fn(p):
            return fun(p, *args)

        opt = optax.lbfgs()
        value_and_grad = optax.value_and_grad_from_state(value_fn)

        def step(carry):
            x, state, nfev, k = carry
            value, grad = value_and_grad(x, state=state)
            updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=value_fn)
            steps = optax.tree.get(state, "num_linesearch_steps")
            return optax.apply_updates(x, updates), state, nfev + steps, k + 1

        def cond(carry):
            _, state, _, k = carry
            grad = optax.tree.get(state, "grad")
            gnorm = functools.reduce(jnp.maximum, [jnp.max(jnp.abs(leaf)) for leaf in jax.tree.leaves(grad)])
            return (k == 0) | ((k < MAX_ITER) & (gnorm > TOL))

        x, state, nfev, k = jax.lax.while_loop(cond, step, (x0, opt.init(x0), jnp.asarray(1), jnp.asarray(0)))
        return x, optax.tree.get(state, "value"), nfev, k

    t_compile, compiled = compile_time(jax.jit(solve), problem.x0, problem.args)

    def summarise(out):
        x, value, nfev, k = out
        return dict(x=x, nit=int(k), nfev=int(nfev), fun=float(value), note="cap" if int(k) >= MAX_ITER else "")

    return t_compile, lambda: compiled(problem.x0, problem.args), summarise


def prepare_scipy(problem):
    z0 = problem.to_numpy(problem.x0)
    options = dict(gtol=TOL, ftol=0.0, maxiter=MAX_ITER, maxfun=4 * MAX_ITER)

    def solve():
        return scipy.optimize.minimize(problem.numpy_fun, z0, jac=True, method="L-BFGS-B", options=options)

    def summarise(res):
        return dict(x=problem.from_numpy(res.x), nit=int(res.nit), nfev=int(res.nfev), fun=float(res.fun),
                    note=str(res.message)[:28])

    return 0.0, solve, summarise


SOLVERS = (("gradchain", prepare_gradchain), ("scipy", prepare_scipy), ("optax", prepare_optax))


def benchmark(problem, repeat):
    prepared = {name: prepare(problem) for name, prepare in SOLVERS}
    best = {name: np.inf for name in prepared}
    outputs = {}
    for _ in range(repeat):
        for name, (_, run, _) in prepared.items():
            seconds, outputs[name] = timed(run)
            best[name] = min(best[name], seconds)
    rows = {}
    for name, (t_compile, _, summarise) in prepared.items():
        rows[name] = dict(summarise(outputs[name]), compile=t_compile, run=best[name])
    return rows


# ------------------------------------------------------------------------------- table


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per solver (minimum reported)")
    parser.add_argument("--sizes", default="2,10,100,1000", help="Rosenbrock dimensions")
    parser.add_argument("--no-logistic", action="store_true", help="skip the logistic regression problem")
    cli = parser.parse_args()

    # Warm up JAX/XLA (the first compilation in a process pays one-time set-up costs).
    jax.jit(lambda x: jnp.sin(x) @ x).lower(jnp.ones(3)).compile()
    problems = [rosenbrock_problem(int(n)) for n in cli.sizes.split(",")]
    if not cli.no_logistic:
        problems.append(logistic_problem())

    print(f"# gradchain L-BFGS benchmark — jax {jax.__version__}, optax {optax.__version__}, "
          f"scipy {scipy.__version__}, numpy {np.__version__}")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, device {jax.devices()[0]}, "
          f"float64, tol {TOL:g} on ||grad||_inf, OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}, "
          f"min of {cli.repeat} runs\n")
    header = (f"{'problem':18s} {'solver':9s} {'ok':>3s} {'nit':>6s} {'nfev':>6s} {'f':>10s} {'|g|_inf':>9s} "
              f"{'compile':>8s} {'run':>9s} {'total':>8s}  note")
    print(header)
    print("-" * len(header))
    totals = {s: dict(solved=0, nfev=0, run=0.0) for s in ("gradchain", "scipy", "optax")}
    ratios = []
    for problem in problems:
        rows = benchmark(problem, cli.repeat)
        for solver, r in rows.items():
            r["gnorm"] = problem.grad_inf_norm(r["x"])
            r["ok"] = r["gnorm"] <= TOL
            t = totals[solver]
            t["solved"] += r["ok"]
            t["nfev"] += r["nfev"]
            t["run"] += r["run"]
            print(f"{problem.name:18s} {solver:9s} {'yes' if r['ok'] else 'NO':>3s} {r['nit']:6d} {r['nfev']:6d} "
                  f"{r['fun']:10.3e} {r['gnorm']:9.2e} {r['compile']:8.3f} {r['run']:9.5f} "
                  f"{r['compile'] + r['run']:8.3f}  {r['note']}")
        g, s, o = rows["gradchain"], rows["scipy"], rows["optax"]
        ratios.append((problem.name, g["nfev"] / s["nfev"], g["nfev"] / o["nfev"], g["run"] / o["run"],
                       (g["compile"] + g["run"]) / s["run"], (g["compile"] + g["run"]) / (o["compile"] + o["run"])))
        print()

    print("ratios gradchain / peer (< 1 is better for gradchain)")
    print(f"{'problem':18s} {'nfev/scipy':>10s} {'nfev/optax':>10s} {'run/optax':>10s} "
          f"{'total/scipy':>11s} {'total/optax':>11s}")
    for name, a, b, c, d, e in ratios:
        print(f"{name:18s} {a:10.3f} {b:10.3f} {c:10.3f} {d:11.3f} {e:11.3f}")
    print()
    print("totals (nfev over all problems; 'solved' = ||grad||_inf <= tol at the returned x)")
    for solver, t in totals.items():
        print(f"  {solver:9s} solved {t['solved']}/{len(problems)}  nfev {t['nfev']:6d}  run {t['run']:.3f} s")


if __name__ == "__main__":
    main()
