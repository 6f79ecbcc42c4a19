"""One training run as a pure function, and a population of runs as one compiled program.

A run is ``fit(config, key) -> RunResult`` built by :func:`make_fit` from a
:class:`gradchain.Trainable` (model, loss, metrics; see :mod:`gradchain.protocol`), an
optimizer factory ``make_optimizer(config)`` and the data.  ``config`` is a dict of
hyperparameters: any of them may be a traced scalar — the learning rate, weight decay, a dropout
rate the model reads, an augmentation strength, a gradient-accumulation factor — so a population
of K configurations is ``vmap(fit)`` over stacked configs and keys: one program, one compile, and
on several devices the population axis is sharded across them.

Inside a run: minibatches drawn without replacement epoch by epoch from the run's key, each step
with its own key (dropout masks, augmentation draws), the model state (batch-norm statistics)
carried along, and every ``eval_every`` steps an evaluation on the test-time path of the
training and validation splits; the best snapshot by the ``select`` metric is kept
(:class:`EarlyStopping`).  The run is a scan of chunks of ``eval_every`` steps;
:func:`train_population` drives the chunks from the host when a progress bar is shown.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradchain import flat as flat_params
from gradchain.core import GradientTransformation, apply_updates
from gradchain.protocol import Split, Trainable, check_data, check_labels, num_outputs
from gradchain.transforms.wrappers import _all_finite
from gradchain.tuning.early_stopping import EarlyStopping


class RunResult(NamedTuple):
    params: Any  # the best snapshot by the `select` metric when evaluating, else the last
    model_state: Any  # the model state of that snapshot (batch-norm statistics), () if none
    losses: jax.Array  # [steps] training loss of each minibatch
    metrics: dict[str, jax.Array]  # "train_<m>" and "val_<m>" for each metric m, [evals]
    best_step: jax.Array  # step of the snapshot in `params`
    diverged: jax.Array  # True when a training loss, the parameters or a final metric was NaN/Inf

    @property
    def train_acc(self) -> jax.Array:
        return self.metrics["train_accuracy"]

    @property
    def val_acc(self) -> jax.Array:
        return self.metrics["val_accuracy"]

    @property
    def val_loss(self) -> jax.Array:
        return self.metrics["val_loss"]


class _Carry(NamedTuple):
    params: Any
    model_state: Any
    opt_state: Any
    stop: Any
    chunk: jax.Array


class _Reads(Mapping):
    """A read-only view of a config that records which keys were read while tracing."""

    def __init__(self, config: Mapping[str, Any], reads: set[str]):
        self._config, self._reads = config, reads

    def __getitem__(self, name):
        self._reads.add(name)
        return self._config[name]

    def __iter__(self):
        return iter(self._config)

    def __len__(self):
        return len(self._config)


class Fit:
    """The pure run ``fit(config, key) -> RunResult`` (see :func:`make_fit`)."""

    def __init__(self, trainable, make_optimizer, data, *, steps, batch_size, eval_every, patience,
                 select, mode, data_fraction, flat, eval_batch_size, unroll=1):
        self.trainable, self.make_optimizer = trainable, make_optimizer
        self.steps, self.eval_every, self.patience = steps, eval_every, patience
        self.select, self.mode, self.flat = select, mode, flat
        self.eval_batch_size, self.unroll = eval_batch_size, unroll
        self.num_chunks = steps // eval_every
        n = max(1, round(len(data.y_train) * data_fraction))
        self.x_train = jax.tree.map(lambda a: a[:n], data.x_train)
        self.y_train = data.y_train[:n]
        self.x_val, self.y_val = data.x_val, data.y_val
        self.n = n
        self.batch_size = min(batch_size, n)
        self.per_epoch = n // self.batch_size
        self.epochs = -(-steps // self.per_epoch)
        self.stopper = EarlyStopping(mode=mode, patience=patience)
        self.layout = None
        if flat:  # the layout from the shapes alone, computed once outside any trace
            shapes, _ = jax.eval_shape(trainable.init, jax.random.PRNGKey(0))
            self.layout = flat_params.ravel(jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes))[1]
        self.reads: set[str] = set()
        self.has_conv = False
        self._checked: set[frozenset[str]] = set()
        self._fingerprints: dict[frozenset[str], str] = {}

    # -- pieces -----------------------------------------------------------------------------

    def _evaluate(self, params, state, x, y, config):
        """Size-weighted mean of ``evaluate`` over the split, in chunks of ``eval_batch_size``."""
        n = len(y)
        b = min(self.eval_batch_size, n)
        full = n // b
        evaluate = lambda xs, ys: self.trainable.evaluate(params, state, (xs, ys), config)
        take = lambda a, lo, hi: jax.tree.map(lambda v: v[lo:hi], a)
        chunks = jax.tree.map(lambda v: v[: full * b].reshape((full, b) + v.shape[1:]), (x, y))
        means = jax.lax.map(lambda c: evaluate(*c), chunks)
        total = jax.tree.map(lambda m: jnp.sum(m, 0) * b, means)
        if n > full * b:
            rest = evaluate(take(x, full * b, n), take(y, full * b, n))
            total = jax.tree.map(lambda t, r: t + r * (n - full * b), total, rest)
        return jax.tree.map(lambda t: t / n, total)

    def _metrics(self, params, state, config):
        """Every metric on both splits; all NaN once the parameters or a split's loss are not finite
        (the argmax of NaN logits is class 0: an "accuracy" of a diverged run means nothing)."""
        train = self._evaluate(params, state, self.x_train, self.y_train, config)
        val = self._evaluate(params, state, self.x_val, self.y_val, config)
        metrics = {f"train_{k}": v for k, v in train.items()} | {f"val_{k}": v for k, v in val.items()}
        finite = _all_finite(params) & jnp.isfinite(train["loss"]) & jnp.isfinite(val["loss"])
        metrics = {k: jnp.where(finite, v, jnp.nan) for k, v in metrics.items()}
        if self.select not in metrics:
            raise ValueError(f"select={self.select!r} is not a metric the evaluation produces; "
                             f"it produces {sorted(metrics)}")
        return metrics

    def _tree(self, params):
        return params if self.layout is None else self.layout.unravel(params)

    def _batches(self, key):
        orders = jax.vmap(lambda k: jax.random.permutation(k, self.n))(jax.random.split(key, self.epochs))
        batches = orders[:, : self.per_epoch * self.batch_size].reshape(-1, self.batch_size)[: self.steps]
        return batches.reshape(self.num_chunks, self.eval_every, self.batch_size)

    # -- the run ----------------------------------------------------------------------------

    def start(self, config, key):
        """The carry before the first step: ``(carry, context)``."""
        config = _Reads(config, self.reads)
        init_key, data_key, step_key = jax.random.split(key, 3)
        params, model_state = self.trainable.init(init_key)
        if self.layout is not None:
            params = self.layout.ravel(params)
        tx = self._optimizer(config)
        carry = _Carry(params, model_state, tx.init(params), self.stopper.init((params, model_state)), jnp.int32(0))
        return carry, (self._batches(data_key), step_key)

    def _optimizer(self, config) -> GradientTransformation:
        tx = self.make_optimizer(config)
        if not (callable(getattr(tx, "init", None)) and callable(getattr(tx, "update", None))):
            raise TypeError(f"make_optimizer(config) must return a gradient transformation, got {tx!r}")
        return tx

    def step(self, config, carry: _Carry, context, i):
        """Training step ``i`` of the run: ``(carry, loss)``."""
        batches, step_key = context
        return self.train_step(config, carry, batches.reshape(-1, self.batch_size)[i], jax.random.fold_in(step_key, i))

    def train_step(self, config, carry: _Carry, idx, key):
        """One step on the training rows ``idx`` with the step's ``key``: ``(carry, loss)``.

        Depends on the run's length only through its arguments, so runs of different lengths
        that share the model, the data and ``make_optimizer`` share one compiled step.
        """
        config = _Reads(config, self.reads)
        batch = (jax.tree.map(lambda a: a[idx], self.x_train), self.y_train[idx])
        params, model_state, opt_state, loss = training_step(
            self.trainable, self._optimizer(config), carry.params, carry.model_state, carry.opt_state, batch, key,
            config, unravel=self._tree)
        return carry._replace(params=params, model_state=model_state, opt_state=opt_state), loss

    def evaluate(self, config, carry: _Carry, step=None):
        """The evaluation closing a chunk (and the early-stopping update): ``(carry, metrics)``."""
        config = _Reads(config, self.reads)
        metrics = self._metrics(self._tree(carry.params), carry.model_state, config)
        step = (carry.chunk + 1) * self.eval_every if step is None else step
        stop = self.stopper.update(carry.stop, metrics[self.select], (carry.params, carry.model_state), step)
        return carry._replace(stop=stop, chunk=carry.chunk + 1), metrics

    def signature(self) -> tuple:
        """What the compiled ``train_step`` and ``evaluate`` depend on (shared between runs)."""
        return (self.trainable, self.make_optimizer, id(self.x_train), id(self.x_val), self.n, self.batch_size,
                self.flat, self.select, self.mode, self.patience, self.eval_batch_size)

    def chunk(self, config, carry: _Carry, context):
        """``eval_every`` steps, then one evaluation: ``(carry, (losses, metrics))``."""
        first = carry.chunk * self.eval_every
        carry, losses = jax.lax.scan(lambda c, i: self.step(config, c, context, i), carry,
                                     first + jnp.arange(self.eval_every), unroll=self.unroll)
        carry, metrics = self.evaluate(config, carry)
        return carry, (losses, metrics)

    def result(self, carry: _Carry, losses, metrics) -> RunResult:
        """The run's result from the last carry and the stacked chunk outputs."""
        best_params, best_state = carry.stop.best_params if self.patience is not None else (carry.params, carry.model_state)
        losses = losses.reshape(-1)
        last = jnp.stack([m[-1] for m in metrics.values()])
        diverged = ~(jnp.all(jnp.isfinite(losses)) & _all_finite(carry.params) & jnp.all(jnp.isfinite(last)))
        return RunResult(self._tree(best_params), best_state, losses, metrics, carry.stop.best_step, diverged)

    def __call__(self, config, key) -> RunResult:
        carry, context = self.start(config, key)

        def body(carry, _):
            return self.chunk(config, carry, context)

        carry, (losses, metrics) = jax.lax.scan(body, carry, None, length=self.num_chunks)
        return self.result(carry, losses, metrics)

    def check_config(self, config: Mapping[str, Any], key: jax.Array) -> None:
        """Trace one run and raise if a config key is never read by the model, loss or optimizer;
        check class labels against the model's outputs; remember the run's fingerprint."""
        names = frozenset(config)
        if names in self._checked:
            return
        if self.trainable.classification and self.trainable.predict is not None:
            self._check_classes(config)  # before tracing: the loss's own shape error says less
        self.reads.clear()
        # a fresh function: a cached trace (after jax.jit(fit) ran) would record no reads
        closed = jax.make_jaxpr(lambda c, k: self(c, k))(dict(config), key)
        program = re.sub(r"0x[0-9a-f]+", "", str(closed))  # no object addresses: equal runs, equal hashes
        digest = hashlib.sha1(program.encode())
        for const in closed.consts:  # the data, and any array the model or optimizer closes over
            if isinstance(const, jax.Array) and jnp.issubdtype(const.dtype, jax.dtypes.prng_key):
                const = jax.random.key_data(const)
            digest.update(np.ascontiguousarray(np.asarray(const)).tobytes())
        self._fingerprints[names] = digest.hexdigest()[:16]
        # XLA:CPU runs convolutions inside a loop about 10x slower than outside one (measured:
        # BUILD_NOTES, "Training protocol"); train_population then drives such runs step by step.
        self.has_conv = "conv_general_dilated" in program
        unread = sorted(set(config) - self.reads)
        if unread:
            raise ValueError(f"config keys {unread} are never read by the model, the loss, the augmentation or "
                             f"make_optimizer (they read {sorted(self.reads)}); a typo, or a hyperparameter "
                             "the model does not use (bind= / config= in gradchain.adapters)")
        self._checked.add(names)

    def _check_classes(self, config) -> None:
        classes = num_outputs(self.trainable, self.x_train, config)
        for name, y in (("data.y_train", self.y_train), ("data.y_val", self.y_val)):
            check_labels(y, classes, name)

    def fingerprint(self, config: Mapping[str, Any], key: jax.Array) -> str:
        """A hash of everything besides ``(config, key)`` that decides the run's result: its whole
        traced program (model, loss, augmentation, optimizer, schedule, lengths, selection) and
        every array it closes over (the data).  Equal programs on equal data give equal hashes."""
        self.check_config(config, key)
        return self._fingerprints[frozenset(config)]


def training_step(trainable: Trainable, tx: GradientTransformation, params, model_state, opt_state, batch, key,
                  config, *, unravel: Callable[[Any], Any] | None = None):
    """One step of the protocol: loss and gradient on ``batch``, the optimizer's update.

    Returns ``(params, model_state, opt_state, loss)``; ``unravel`` maps stored (flat)
    parameters to the model's tree.
    """
    unravel = (lambda p: p) if unravel is None else unravel

    def objective(p):
        return trainable.loss(unravel(p), model_state, batch, key, config)

    loss, backward, (model_state, _) = jax.vjp(objective, params, has_aux=True)
    if jnp.ndim(loss) != 0:
        raise ValueError(f"the loss must return a scalar, got shape {jnp.shape(loss)}")
    (grads,) = backward(jnp.ones_like(loss))
    updates, opt_state = tx.update(grads, opt_state, params)
    return apply_updates(params, updates), model_state, opt_state, loss


class StreamResult(NamedTuple):
    params: Any
    model_state: Any
    opt_state: Any
    losses: np.ndarray  # [steps]
    metrics: dict[str, np.ndarray]  # evaluate's metrics on `evaluate_on`, [evaluations]


def fit_stream(
    trainable: Trainable,
    make_optimizer: Callable[[Mapping[str, Any]], GradientTransformation],
    batches: Iterable[tuple[Any, Any]],
    config: Mapping[str, Any],
    key: jax.Array,
    *,
    chunk: int = 16,
    evaluate_on: tuple[Any, Any] | None = None,
    eval_every: int = 1,
    progress: bool | None = None,
) -> StreamResult:
    """Train on minibatches from a host iterator, for data that does not fit on the device.

    ``batches`` yields ``(x, y)`` of one shape (NumPy or JAX arrays); they are stacked ``chunk``
    at a time and fed to one compiled ``lax.scan`` of ``chunk`` steps (a shorter last chunk runs
    step by step), so the host reads the next chunk while the device trains.  Step ``i`` draws
    its randomness from ``fold_in(key, i)`` as in :func:`make_fit`; every ``eval_every`` chunks
    the model is evaluated on ``evaluate_on`` (the test-time path).
    """
    if not isinstance(chunk, int) or chunk <= 0:
        raise ValueError(f"chunk must be a positive int, got {chunk!r}")
    if not isinstance(eval_every, int) or eval_every <= 0:
        raise ValueError(f"eval_every must be a positive int, got {eval_every!r}")
    init_key, step_key = jax.random.split(key)
    params, model_state = trainable.init(init_key)
    tx = make_optimizer(config)
    opt_state = tx.init(params)

    def one(carry, xs):
        batch, i = xs
        params, model_state, opt_state = carry
        params, model_state, opt_state, loss = training_step(
            trainable, tx, params, model_state, opt_state, batch, jax.random.fold_in(step_key, i), config)
        return (params, model_state, opt_state), loss

    scan = jax.jit(lambda carry, stacked, first: jax.lax.scan(one, carry, (stacked, first + jnp.arange(chunk))))
    single = jax.jit(lambda carry, batch, i: one(carry, (batch, i)))
    measure = jax.jit(lambda p, s, batch: trainable.evaluate(p, s, batch, config))
    carry, losses, metrics, step, pending = (params, model_state, opt_state), [], [], 0, []
    from gradchain.tuning.progress import progress_bar

    def flush(carry, pending, step):
        if len(pending) == chunk:
            stacked = jax.tree.map(lambda *a: jnp.stack([jnp.asarray(v) for v in a]), *pending)
            carry, out = scan(carry, stacked, jnp.int32(step))
            losses.extend(np.asarray(out))
        else:
            for j, batch in enumerate(pending):
                carry, out = single(carry, jax.tree.map(jnp.asarray, batch), jnp.int32(step + j))
                losses.append(float(out))
        return carry, step + len(pending)

    with progress_bar(total=0, desc="stream", enable=progress, unit="chunk") as bar:
        chunks = 0
        for batch in batches:
            pending.append(batch)
            if len(pending) == chunk:
                carry, step = flush(carry, pending, step)
                pending, chunks = [], chunks + 1
                bar.update(1)
                if evaluate_on is not None and chunks % eval_every == 0:
                    metrics.append(jax.device_get(measure(carry[0], carry[1], evaluate_on)))
        if pending:
            carry, step = flush(carry, pending, step)
            if evaluate_on is not None:
                metrics.append(jax.device_get(measure(carry[0], carry[1], evaluate_on)))
    if step == 0:
        raise ValueError("batches yielded no minibatch: nothing was trained")
    stacked = {k: np.asarray([m[k] for m in metrics]) for k in (metrics[0] if metrics else {})}
    params, model_state, opt_state = carry
    return StreamResult(params, model_state, opt_state, np.asarray(losses, np.float32), stacked)


def make_fit(
    trainable: Trainable,
    make_optimizer: Callable[[Mapping[str, jax.Array]], GradientTransformation],
    data: Split,
    *,
    steps: int,
    batch_size: int = 64,
    eval_every: int | None = None,
    patience: int | None = None,
    select: str = "val_accuracy",
    mode: str = "max",
    data_fraction: float = 1.0,
    flat: bool = False,
    eval_batch_size: int = 1024,
    unroll: int | bool = 1,
) -> Fit:
    """Build the pure training run ``fit(config, key) -> RunResult``.

    Args:
      trainable: a :class:`gradchain.Trainable` (:func:`gradchain.supervised` of a model).
      make_optimizer: ``config -> GradientTransformation``; ``config["learning_rate"]`` may be a
        number, a traced array or a schedule (the recipe's final stage passes one); wrap it in
        :func:`gradchain.accumulate_gradients` for a batch-size multiplier.
      data: a :class:`gradchain.Split` (arrays held on the device, indexed inside the scan; checked
        by :func:`gradchain.check_data`).
      steps: optimizer steps (micro-batches when accumulating).
      batch_size: examples per step, drawn without replacement epoch by epoch.
      eval_every: steps between evaluations (a divisor of ``steps``; default: once, at the end).
      patience: with a value, keep the best snapshot by ``select`` (:class:`EarlyStopping`).
      select: the metric that decides the best snapshot, e.g. ``"val_accuracy"``, ``"val_loss"``.
      mode: ``"max"`` or ``"min"`` for ``select``.
      data_fraction: train on that leading share of the training split (the overfit check).
      flat: keep the parameters in flat buffers inside the run (:mod:`gradchain.flat`): far fewer
        kernels for trees of many leaves.  The optimizer then sees one buffer per dtype, so a
        per-leaf ``mask`` (``decay_mask``) must be expressed per buffer.
      eval_batch_size: evaluation runs in chunks of this many examples.
    """
    check_trainable(trainable)
    data = check_data(data)
    if not callable(make_optimizer):
        raise TypeError(f"make_optimizer must be a function config -> GradientTransformation, got {make_optimizer!r}")
    for name, value in (("steps", steps), ("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    eval_every = steps if eval_every is None else eval_every
    if not isinstance(eval_every, int) or not 0 < eval_every <= steps or steps % eval_every:
        raise ValueError(f"eval_every must be a positive divisor of steps={steps}, got {eval_every!r}")
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    if not 0.0 < data_fraction <= 1.0:
        raise ValueError(f"data_fraction must be in (0, 1], got {data_fraction!r}")
    if trainable.num_classes is None and jnp.issubdtype(data.y_train.dtype, jnp.integer):
        trainable = trainable._replace(num_classes=int(jnp.max(data.y_train)) + 1)
    return Fit(trainable, make_optimizer, data, steps=steps, batch_size=batch_size, eval_every=eval_every,
               patience=patience, select=select, mode=mode, data_fraction=data_fraction, flat=flat,
               eval_batch_size=eval_batch_size, unroll=unroll)


def check_trainable(trainable: Any, name: str = "trainable") -> Trainable:
    """A :class:`gradchain.Trainable` whose ``init(key)`` returns ``(params, state)``, or a clear error."""
    if not isinstance(trainable, Trainable):
        raise TypeError(f"{name} must be a gradchain.Trainable (gradchain.supervised(model, ...)), got "
                        f"{type(trainable).__name__}")
    out = jax.eval_shape(trainable.init, jax.random.PRNGKey(0))
    if not (isinstance(out, tuple) and len(out) == 2):
        raise TypeError(f"{name}.init(key) must return (params, state) (state () when there is none), got "
                        f"{type(out).__name__}; an init that returns the parameters alone becomes a model with "
                        "gradchain.from_function(init, apply)")
    return trainable


def stack_configs(configs: list[Mapping[str, float]]) -> dict[str, jax.Array]:
    """``[{lr: a}, {lr: b}] -> {lr: [a, b]}``: the population's hyperparameters as arrays."""
    if isinstance(configs, Mapping) or not isinstance(configs, (list, tuple)):
        raise TypeError(f"configs must be a list of dicts name -> number, got {type(configs).__name__}")
    if not configs:
        raise ValueError("configs must hold at least one configuration, got an empty list")
    for i, c in enumerate(configs):
        if not isinstance(c, Mapping):
            raise TypeError(f"configs[{i}] must be a dict name -> number, got {c!r}")
    names = set(configs[0])
    for i, c in enumerate(configs):
        if set(c) != names:
            raise ValueError(f"configs[{i}] has keys {sorted(c)}, expected {sorted(names)}")
    return {name: jnp.asarray([float(c[name]) for c in configs], jnp.float32) for name in sorted(names)}


def choose_strategy(trainable: Fit | Trainable, batch_size: int) -> str:
    """``"vmap"`` or ``"sequential"`` for a population on the current backend.

    Batching K runs with ``vmap`` turns every matmul into a batched one.  On accelerators that is
    always the better use of the hardware.  On a CPU the batched matmuls of a medium model lose
    to plain ones (``benchmarks/population.py``: 0.75× for 64→256→256→10 at batch 128, and
    ``lax.map`` inside one program 0.82×), so above ~1M multiply-adds per step the members run
    one after another through the same compiled single-run program.
    """
    if jax.default_backend() != "cpu":
        return "vmap"
    init = trainable.trainable.init if isinstance(trainable, Fit) else trainable.init
    params = jax.eval_shape(init, jax.random.PRNGKey(0))
    weights = sum(math.prod(p.shape) for p in jax.tree.leaves(params))
    return "vmap" if weights * batch_size <= 1_000_000 else "sequential"


def train_population(
    fit: Callable[[Mapping[str, jax.Array], jax.Array], RunResult],
    configs: Mapping[str, jax.Array] | list[Mapping[str, float]],
    keys: jax.Array,
    *,
    strategy: str = "vmap",
    progress: bool | None = None,
    desc: str = "training",
) -> RunResult:
    """Train one run per (config, key) pair in one compiled program; results gain a leading axis.

    ``strategy``: ``"vmap"`` (batched), ``"map"`` (members one after another inside one program)
    or ``"sequential"`` (one compiled single-run program called per member); see
    :func:`choose_strategy`.  With several devices and a population divisible by their number,
    the population axis is sharded across devices; with several processes (``jax.distributed``)
    across the devices of all of them, the results then gathered onto every process (a population
    that the global device count does not divide is an error there; ``docs/scaling_out.md``).
    ``progress`` (default: on a terminal) shows a bar that advances with every evaluation chunk,
    the chunks then being driven from the host.
    A :class:`Fit` first checks that every config key is read by the run.

    ``configs``: a dict of arrays with one entry per member (:func:`stack_configs`) or a list of
    dicts (stacked here); ``keys``: one PRNG key per member (``jax.random.split(key, K)``, or
    ``jnp.broadcast_to(key, (K, 2))`` for the same init and batches in every member).
    """
    if isinstance(configs, (list, tuple)):
        configs = stack_configs(list(configs))
    if not isinstance(configs, Mapping):
        raise TypeError(f"configs must be a dict name -> array (one entry per member) or a list of dicts, got "
                        f"{type(configs).__name__}")
    stacked: dict[str, Any] = dict(configs)
    keys = _check_keys(keys)
    sizes = {name: jnp.shape(v)[0] if jnp.ndim(v) else None for name, v in stacked.items()}
    k = len(keys)
    bad = {name: s for name, s in sizes.items() if s != k}
    if bad:
        raise ValueError(f"every config array must have one entry per key ({k}), got sizes {bad}")
    if strategy not in ("vmap", "map", "sequential"):
        raise ValueError(f"strategy must be 'vmap', 'map' or 'sequential', got {strategy!r}")
    if isinstance(fit, Fit):
        fit.check_config({name: v[0] for name, v in stacked.items()}, keys[0])
    stacked, keys = _placed(stacked, keys, k, strategy)
    from gradchain.tuning.progress import progress_bar, wants_progress

    per_step = isinstance(fit, Fit) and fit.has_conv and jax.default_backend() == "cpu"
    if isinstance(fit, Fit) and (wants_progress(progress) or per_step):
        with progress_bar(total=fit.num_chunks * k, desc=desc, enable=progress, unit="eval") as bar:
            if strategy == "sequential":
                runs = [_driven(fit, {n: v[i] for n, v in stacked.items()}, keys[i], None, bar, 1, per_step)
                        for i in range(k)]
                return jax.tree.map(lambda *xs: jnp.stack(xs), *runs)
            return _gathered(_driven(fit, stacked, keys, strategy, bar, k, per_step))
    if strategy == "vmap":
        return _gathered(_vmapped(fit)(stacked, keys))
    if strategy == "map":
        return _gathered(_mapped(fit)(stacked, keys))
    single = _single(fit)
    runs = [single({name: v[i] for name, v in stacked.items()}, keys[i]) for i in range(k)]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *runs)


def train_padded(fit: Fit, configs: list[Mapping[str, float]], keys: jax.Array, **options: Any) -> RunResult:
    """:func:`train_population` of any number of members: in a multi-process job, where the
    member axis must split evenly over the global devices, the population is padded with copies
    of its last member (config and key) and their results dropped; in one process it is
    ``train_population`` itself."""
    devices, k = jax.device_count(), len(configs)
    extra = (-k) % devices if jax.process_count() > 1 and options.get("strategy") != "sequential" else 0
    if not extra:
        return train_population(fit, configs, keys, **options)
    keys = jnp.concatenate([keys, jnp.broadcast_to(keys[-1], (extra,) + keys.shape[1:])])
    result = train_population(fit, list(configs) + [configs[-1]] * extra, keys, **options)
    return jax.tree.map(lambda a: a[:k], result)


class PopulationEvaluate:
    """``evaluate(configs) -> records`` for :func:`gradchain.tuning.run_trials`: the configs trained
    as one population of ``fit`` (see :func:`population_evaluate`)."""

    def __init__(self, fit: Fit, key: jax.Array, *, strategy: str | None = None, history: bool = True,
                 progress: bool | None = None, desc: str = "training"):
        if not isinstance(fit, Fit):
            raise TypeError(f"fit must be a gradchain.tuning.Fit (make_fit(...)), got {type(fit).__name__}")
        self.fit, self.key, self.history, self.progress, self.desc = fit, _check_keys(jnp.asarray(key)[None])[0], history, progress, desc
        self.strategy = choose_strategy(fit, fit.batch_size) if strategy is None else strategy
        self.last: RunResult | None = None  # the latest population, parameters included

    def fingerprint(self, config: Mapping[str, Any]) -> str:
        """The run's fingerprint and the key: what decides a trial's result besides its config."""
        key_bytes = np.asarray(jax.random.key_data(self.key) if jnp.issubdtype(self.key.dtype, jax.dtypes.prng_key)
                               else self.key).tobytes().hex()
        return f"{self.fit.fingerprint({k: jnp.float32(v) for k, v in config.items()}, self.key)}-{key_bytes}"

    def __call__(self, configs: list[Mapping[str, float]]) -> list[dict]:
        keys = jnp.broadcast_to(self.key, (len(configs),) + self.key.shape)  # same init and batches: a fair race
        result = train_padded(self.fit, list(configs), keys, strategy=self.strategy, progress=self.progress,
                              desc=self.desc)
        self.last = result
        return [run_record(result, j, history=self.history) for j in range(len(configs))]


def population_evaluate(fit: Fit, key: jax.Array, *, strategy: str | None = None, history: bool = True,
                        progress: bool | None = None, desc: str = "training") -> PopulationEvaluate:
    """The evaluation of a search: each list of configs trained as one population of ``fit``.

    Every member starts from ``key`` — the same initialisation and minibatches, so trials differ
    only by their config (a fair race) and a trial's result depends on nothing else: with
    :func:`gradchain.tuning.run_trials` and a store, a rerun reuses exactly the finished trials,
    and any change of model, data, optimizer factory, initialisation, lengths or key makes new
    ones (the fingerprint hashes the whole traced run and its data).  Each record holds the last
    evaluation's metrics, the best step, ``"status"`` (``"diverged"`` when a loss, the parameters
    or a final metric was not finite: such a trial is never selected) and, with ``history``, the
    curves.  ``strategy``: default :func:`choose_strategy`.
    """
    return PopulationEvaluate(fit, key, strategy=strategy, history=history, progress=progress, desc=desc)


def run_record(result: RunResult, j: int, *, history: bool = True) -> dict:
    """Member ``j`` of a population as a trial record (JSON-ready floats)."""
    record = {"metrics": {k: float(v[j, -1]) for k, v in result.metrics.items()},
              "best_step": int(result.best_step[j]),
              "status": "diverged" if bool(result.diverged[j]) else "ok"}
    if history:
        record["history"] = {"losses": _round(result.losses[j]), **{k: _round(v[j]) for k, v in result.metrics.items()}}
    return record


def _round(values) -> list[float]:
    return [float(f"{v:.6g}") for v in np.asarray(values, np.float64).ravel()]


def _check_keys(keys: Any) -> jax.Array:
    """One key per member: raw ``uint32[K, 2]`` keys or typed ``key<impl>[K]``."""
    keys = jnp.asarray(keys) if not isinstance(keys, jax.Array) else keys
    typed = jnp.issubdtype(keys.dtype, jax.dtypes.prng_key)
    if (typed and keys.ndim != 1) or (not typed and (keys.ndim != 2 or keys.dtype != jnp.uint32)):
        raise ValueError(f"keys must hold one PRNG key per member, shape (K, 2) uint32 (jax.random.split(key, K)) "
                         f"or (K,) typed keys; got shape {keys.shape} {keys.dtype}"
                         f"{' — one key for several configs: jax.random.split(key, K)' if keys.ndim == 1 and not typed else ''}")
    return keys


def _placed(configs, keys, k: int, strategy: str):
    """The population axis split over all devices when their number divides it.

    Several processes (``jax.distributed``): ``jax.devices()`` is every process's devices, so the
    members are split over the global mesh, each process filling its own devices from the values
    that all of them hold alike; a population that the global device count does not divide is an
    error (each process would otherwise train every member itself).  ``"sequential"`` runs every
    member on every process, one after another, unsplit.
    """
    devices = jax.devices()
    multi = jax.process_count() > 1
    if multi and strategy == "sequential":
        return configs, keys
    if multi and k % len(devices):
        raise ValueError(
            f"a population of {k} members cannot be split over the {len(devices)} devices of "
            f"{jax.process_count()} processes: use a multiple of {len(devices)} members (pad with copies "
            f"of a config and drop their results), or strategy='sequential' (every process trains every member)"
        )
    if len(devices) > 1 and k % len(devices) == 0:
        mesh = jax.sharding.Mesh(np.array(devices), ("population",))
        sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("population"))
        if multi:
            from gradchain.distributed import place

            return place((configs, keys), sharding)
        return jax.device_put((configs, keys), sharding)
    return configs, keys


def _gathered(result: RunResult) -> RunResult:
    """With several processes, the population's results on every process (a collective)."""
    if jax.process_count() == 1:
        return result
    from gradchain.distributed import gather

    return jax.tree.map(jnp.asarray, gather(result))


def _driven(fit: Fit, configs, keys, strategy, bar, members, per_step) -> RunResult:
    """The run called from the host chunk by chunk (``per_step``: step by step, then each
    evaluation), with the same numbers as the scanned run; the bar moves after each chunk."""
    programs = _programs(fit, strategy)
    carry, (batches, step_keys) = programs["start"](configs, keys)
    losses, metrics = [], []
    for c in range(fit.num_chunks):
        if per_step:
            chunk_losses = []
            for i in range(c * fit.eval_every, (c + 1) * fit.eval_every):
                idx, key = programs["batch"](batches, step_keys, np.int32(i))
                carry, loss = programs["train_step"](configs, carry, idx, key)
                chunk_losses.append(loss)
            step = np.int32((c + 1) * fit.eval_every)
            carry, m = programs["evaluate"](configs, carry, step if strategy is None else np.full(members, step))
            chunk_losses = jnp.stack(chunk_losses, axis=-1)
        else:
            carry, (chunk_losses, m) = programs["chunk"](configs, carry, (batches, step_keys))
        jax.block_until_ready(m)
        losses.append(chunk_losses)
        metrics.append(m)
        bar.update(members)
    axis = 0 if strategy is None else 1
    stack = lambda *xs: jnp.stack(xs, axis=axis)
    return programs["result"](carry, jax.tree.map(stack, *losses), jax.tree.map(stack, *metrics))


_SHARED: dict[tuple, dict] = {}


def _programs(fit: Fit, strategy) -> dict:
    """The compiled pieces of a run, batched over the population by ``strategy`` (None: one run).

    ``train_step`` and ``evaluate`` are shared by every run with the same :meth:`Fit.signature`
    (the recipe's stages differ only in length: one compile serves them all).
    """
    wrap = (lambda f: f) if strategy is None else jax.vmap if strategy == "vmap" else _lax_map
    key = (fit.signature(), strategy)
    if key not in _SHARED:
        if len(_SHARED) > 32:
            _SHARED.clear()
        _SHARED[key] = {name: jax.jit(wrap(getattr(fit, name))) for name in ("train_step", "evaluate")}
    per_run = _per_run(fit, strategy)
    return {**_SHARED[key], **per_run}


@functools.lru_cache(maxsize=64)
def _per_run(fit: Fit, strategy) -> dict:
    wrap = (lambda f: f) if strategy is None else jax.vmap if strategy == "vmap" else _lax_map
    batch_of = lambda batches, keys, i: (batches.reshape(-1, fit.batch_size)[i], jax.random.fold_in(keys, i))
    batch = jax.jit(batch_of if strategy is None else jax.vmap(batch_of, in_axes=(0, 0, None)))
    return {"batch": batch, **{name: jax.jit(wrap(getattr(fit, name))) for name in ("start", "chunk", "result")}}


def _lax_map(f):
    return lambda *args: jax.lax.map(lambda a: f(*a), args)


@functools.lru_cache(maxsize=64)
def _vmapped(fit):
    """One compiled population program per ``fit`` (cached: calling again does not recompile)."""
    return jax.jit(jax.vmap(fit))


@functools.lru_cache(maxsize=64)
def _single(fit):
    return jax.jit(fit)


@functools.lru_cache(maxsize=64)
def _mapped(fit):
    return jax.jit(lambda configs, keys: jax.lax.map(lambda ck: fit(*ck), (configs, keys)))
