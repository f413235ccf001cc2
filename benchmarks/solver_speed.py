r"""How fast one forward-and-backward pass through a neural SDE runs, sdekit against its alternatives.

The reference problem is a small neural SDE of the kind users train (diffrax#517, #489):
$\mathrm{d}y = f_\theta(y)\,\mathrm{d}t + g_\theta(y) \odot \mathrm{d}W$ in $d = 16$ dimensions, with $f_\theta$
an MLP $16 \to 64 \to 64 \to 16$ with tanh activations and $g_\theta$ the same shape with a sigmoid output
(diagonal noise), a batch of 128 paths, 200 Euler-Maruyama steps on $[0, 1]$ and the loss
$\mathrm{mean}(y_1^2)$. Each variant computes the loss and its gradient with respect to both networks'
parameters:

- `sdekit`: `sdekit.solve` with its defaults (Euler-Maruyama on the grid Brownian path, the
  steps as one scan of diffrax's `Euler.step`, each step rematerialised: `sdekit.ScanAdjoint`);
- `lax_scan`: a hand-written `jax.lax.scan` whose autodiff stores every step's intermediates, what
  users write when they leave diffrax (diffrax#517, #489);
- `lax_scan_remat`: the same with `jax.checkpoint` on the step, so that the backward pass recomputes
  each step from its input (on a CPU this is the faster of the two: see docs/benchmarks.md);
- `diffrax_vbt`: diffrax as its documentation shows it, one `VirtualBrownianTree` per path and `vmap`;
- `torchsde`: `torchsde.sdeint(method="euler")` and `loss.backward()`, with the same weights.

    python benchmarks/solver_speed.py --repeats 15 --json

prints a table and, with `--json`, the full result as JSON on the last line. The figures on
record: docs/benchmarks.md. `tests/test_bench.py` imports this file's functions (it puts
`benchmarks/` on `sys.path`), so keep them importable without running anything.
"""

import argparse
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np


VARIANTS = ("sdekit", "lax_scan", "lax_scan_remat", "diffrax_vbt", "torchsde")

# Each ratio is the first variant's time over the second's.
RATIOS = {
    "sdekit_vs_lax_scan": ("sdekit", "lax_scan"),
    "sdekit_vs_lax_scan_remat": ("sdekit", "lax_scan_remat"),
    "diffrax_vbt_vs_sdekit": ("diffrax_vbt", "sdekit"),
    "torchsde_vs_sdekit": ("torchsde", "sdekit"),
}

# What sdekit sets out to achieve on the reference problem (docs/benchmarks.md).
# `sdekit_vs_best_scan` is sdekit's time over the faster of the two hand-written loops.
TARGETS = {
    "sdekit_vs_best_scan": ("<=", 1.05),
    "diffrax_vbt_vs_sdekit": (">=", 8.0),
    "torchsde_vs_sdekit": (">=", 3.0),
}


class _Field(eqx.Module):
    """The vector field `(t, y, args) -> mlp(y)`, in the signature diffrax and sdekit call."""

    mlp: eqx.nn.MLP

    def __call__(self, t, y, args):
        return self.mlp(y)


class _NeuralSDE(eqx.Module):
    drift: _Field
    diffusion: _Field


def reference_problem(
    batch: int = 128, dim: int = 16, width: int = 64, *, key: jax.Array
) -> tuple[_NeuralSDE, jax.Array]:
    """The networks and initial states of the benchmarks' neural SDE.

    **Arguments:**

    - `batch`: the number of paths.
    - `dim`: the state dimension $d$.
    - `width`: the width of both MLPs' two hidden layers.
    - `key`: a JAX random key.

    **Returns:**

    A pair `(model, y0)`: `model.drift` and `model.diffusion` are vector fields `(t, y, args) -> array`
    for one path `y` of shape `(dim,)`, and `y0` has shape `(batch, dim)`.
    """
    drift_key, diffusion_key, y0_key = jr.split(key, 3)
    drift = eqx.nn.MLP(dim, dim, width, depth=2, activation=jnp.tanh, key=drift_key)
    diffusion = eqx.nn.MLP(
        dim,
        dim,
        width,
        depth=2,
        activation=jnp.tanh,
        final_activation=jax.nn.sigmoid,
        key=diffusion_key,
    )
    y0 = jr.normal(y0_key, (batch, dim))
    return _NeuralSDE(_Field(drift), _Field(diffusion)), y0


def terminal_loss(y1: jax.Array) -> jax.Array:
    """The benchmarks' loss $\\mathrm{mean}(y_1^2)$ over paths and components."""
    return jnp.mean(y1**2)


def euler_maruyama_scan(
    model: _NeuralSDE,
    y0: jax.Array,
    grid: jax.Array,
    dw: jax.Array,
    *,
    remat: bool = False,
) -> jax.Array:
    """Euler-Maruyama for diagonal noise as a plain `jax.lax.scan`: the hand-written baseline.

    **Arguments:**

    - `model`: the drift and diffusion, each `(t, y, args) -> array` for one path.
    - `y0`: initial states, shape `(batch, dim)`.
    - `grid`: the step times shared by all paths, shape `(steps + 1,)`.
    - `dw`: the Brownian increments over the grid's steps, shape `(steps, batch, dim)`.
    - `remat`: whether to wrap the step in `jax.checkpoint` (recompute it on the backward pass
        instead of storing its intermediates).

    **Returns:**

    The states at `grid[-1]`, shape `(batch, dim)`.
    """
    drift = jax.vmap(model.drift, in_axes=(None, 0, None))
    diffusion = jax.vmap(model.diffusion, in_axes=(None, 0, None))

    def step(y, inputs):
        t, dt, dw_n = inputs
        return y + drift(t, y, None) * dt + diffusion(t, y, None) * dw_n, None

    if remat:
        step = jax.checkpoint(step)
    dts = jnp.diff(grid).astype(y0.dtype)
    y1, _ = jax.lax.scan(step, y0, (grid[:-1], dts, dw))
    return y1


def compile_value_and_grad(
    loss: Callable[..., jax.Array], model: eqx.Module, *args: Any
) -> tuple[Callable[..., tuple[jax.Array, Any]], Any, float]:
    """Ahead-of-time compile `loss` and its gradient with respect to `model`'s floating-point arrays.

    **Arguments:**

    - `loss`: a function `loss(model, *args) -> scalar`.
    - `model`: the module whose inexact arrays are differentiated.
    - `*args`: example arguments (their shapes and dtypes fix the compiled function).

    **Returns:**

    A triple `(compiled, params, seconds)`: `compiled(params, *args)` returns `(loss, grads)`, `params`
    are `model`'s arrays, and `seconds` is the time spent tracing and compiling.
    """
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def value_and_grad(params, *args):
        return jax.value_and_grad(lambda p: loss(eqx.combine(p, static), *args))(params)

    start = time.perf_counter()
    compiled = jax.jit(value_and_grad).lower(params, *args).compile()
    return compiled, params, time.perf_counter() - start


def _sdekit_loss(model, y0, key, *, steps, t0, t1):
    import sdekit

    sde = sdekit.SDE(
        model.drift, model.diffusion, noise_structure="diagonal", calculus="ito"
    )
    ts = jnp.array([t1], dtype=y0.dtype)
    sol = sdekit.solve(sde, y0, ts, key=key, dt0=(t1 - t0) / steps, t0=t0, t1=t1)
    return terminal_loss(sol.ys[:, -1])


def _lax_scan_loss(model, y0, key, *, steps, t0, t1, remat=False):
    grid = jnp.linspace(t0, t1, steps + 1, dtype=y0.dtype)
    # Sampled up front inside the compiled function, as a training step would.
    dw = jr.normal(key, (steps, *y0.shape), y0.dtype) * math.sqrt((t1 - t0) / steps)
    return terminal_loss(euler_maruyama_scan(model, y0, grid, dw, remat=remat))


def _lax_scan_remat_loss(model, y0, key, *, steps, t0, t1):
    return _lax_scan_loss(model, y0, key, steps=steps, t0=t0, t1=t1, remat=True)


class _DiagonalDiffusion(eqx.Module):
    """Wraps a diagonal diffusion as the `lx.DiagonalLinearOperator` that `dfx.ControlTerm` multiplies."""

    field: _Field

    def __call__(self, t, y, args):
        import lineax as lx

        return lx.DiagonalLinearOperator(self.field(t, y, args))


def _diffrax_vbt_loss(model, y0, key, *, steps, t0, t1):
    import diffrax as dfx

    dt = (t1 - t0) / steps

    def solve_one(y0_i, key_i):
        bm = dfx.VirtualBrownianTree(t0, t1, tol=dt / 2, shape=y0_i.shape, key=key_i)
        terms = dfx.MultiTerm(
            dfx.ODETerm(model.drift),
            dfx.ControlTerm(_DiagonalDiffusion(model.diffusion), bm),
        )
        sol = dfx.diffeqsolve(
            terms, dfx.Euler(), t0, t1, dt0=dt, y0=y0_i, saveat=dfx.SaveAt(t1=True)
        )
        return sol.ys[-1]

    y1 = jax.vmap(solve_one)(y0, jr.split(key, y0.shape[0]))
    return terminal_loss(y1)


_JAX_LOSSES = {
    "sdekit": _sdekit_loss,
    "lax_scan": _lax_scan_loss,
    "lax_scan_remat": _lax_scan_remat_loss,
    "diffrax_vbt": _diffrax_vbt_loss,
}


def _jax_runner(name, model, y0, key, *, steps, t0, t1):
    loss = _JAX_LOSSES[name]

    def bound(model, y0, key):
        return loss(model, y0, key, steps=steps, t0=t0, t1=t1)

    compiled, params, compile_s = compile_value_and_grad(bound, model, y0, key)

    def run():
        value, grads = jax.block_until_ready(compiled(params, y0, key))
        return value

    return run, compile_s


def _torch_mlp(layers: list[tuple[np.ndarray, np.ndarray]], sigmoid_output: bool):
    """`nn.Sequential(Linear, Tanh, ..., Linear[, Sigmoid])` with the given weights and biases."""
    import torch

    modules = []
    for i, (weight, bias) in enumerate(layers):
        linear = torch.nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            linear.weight.copy_(torch.tensor(weight))
            linear.bias.copy_(torch.tensor(bias))
        modules.append(linear)
        if i < len(layers) - 1:
            modules.append(torch.nn.Tanh())
    if sigmoid_output:
        modules.append(torch.nn.Sigmoid())
    return torch.nn.Sequential(*modules)


def _torchsde_worker(weights_file: str, steps: int, number: int, seed: int) -> None:
    """Serve torchsde timings from this (fresh, JAX-free) process, one repeat per request.

    Reads the networks and initial states from `weights_file` (written by `_TorchsdeProcess`),
    runs one warm-up gradient and prints one JSON line about it; then, for every line `run` on
    stdin, times `number` gradients and prints `{"ms": ...}` (ms per step), until `stop` or the
    end of stdin. No JAX array is created here, so XLA's threads never start in this process.
    """
    import torch
    import torchsde

    class _TorchSDE(torch.nn.Module):
        noise_type = "diagonal"
        sde_type = "ito"

        def __init__(self, drift, diffusion):
            super().__init__()
            self.drift = drift
            self.diffusion = diffusion

        def f(self, t, y):
            return self.drift(y)

        def g(self, t, y):
            return self.diffusion(y)

    data = np.load(weights_file)

    def layers(net):
        count = sum(1 for key in data.files if key.startswith(f"{net}_weight_"))
        return [
            (data[f"{net}_weight_{i}"], data[f"{net}_bias_{i}"]) for i in range(count)
        ]

    torch.manual_seed(seed)
    sde = _TorchSDE(
        _torch_mlp(layers("drift"), False), _torch_mlp(layers("diffusion"), True)
    )
    y0 = torch.from_numpy(data["y0"])
    t0, t1 = float(data["t0"]), float(data["t1"])
    ts = torch.tensor([t0, t1], dtype=y0.dtype)
    dt = (t1 - t0) / steps

    def run():
        sde.zero_grad(set_to_none=True)
        ys = torchsde.sdeint(sde, y0, ts, method="euler", dt=dt)
        loss = ys[-1].pow(2).mean()
        loss.backward()
        return loss.item()

    start = time.perf_counter()
    loss = run()
    warmup_s = time.perf_counter() - start
    ready = {"loss": loss, "warmup_s": warmup_s, "num_threads": torch.get_num_threads()}
    print(json.dumps(ready), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        start = time.perf_counter()
        for _ in range(number):
            run()
        elapsed = time.perf_counter() - start
        print(json.dumps({"ms": 1e3 * elapsed / (number * steps)}), flush=True)


class _TorchsdeProcess:
    """torchsde timed in a child process, one repeat at a time, so that its repeats interleave
    with the JAX variants' (the machine's speed drifts) while its threads stay apart from XLA's:
    torch's OpenMP threads and XLA's thread pool stall each other when they alternate in one
    process on two cores."""

    def __init__(
        self, model: _NeuralSDE, y0: jax.Array, *, steps, t0, t1, number, seed
    ):
        arrays = {"y0": np.asarray(y0), "t0": np.asarray(t0), "t1": np.asarray(t1)}
        for net in ("drift", "diffusion"):
            for i, linear in enumerate(getattr(model, net).mlp.layers):
                arrays[f"{net}_weight_{i}"] = np.asarray(linear.weight)
                arrays[f"{net}_bias_{i}"] = np.asarray(linear.bias)
        self._directory = tempfile.TemporaryDirectory()
        weights_file = os.path.join(self._directory.name, "weights.npz")
        np.savez(weights_file, **arrays)
        # This file's own directory on the child's path (as a script, not by PYTHONPATH):
        # the worker is a function of this file.
        code = (
            f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); "
            "from solver_speed import _torchsde_worker; "
            f"_torchsde_worker({weights_file!r}, {steps}, {number}, {seed})"
        )
        self._stderr = open(os.path.join(self._directory.name, "stderr.txt"), "w+")
        self._process = subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self.ready = self._receive()

    def _receive(self) -> dict[str, Any]:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            self._process.wait()
            self._stderr.seek(0)
            last = (self._stderr.read().strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(
                f"the torchsde process exited ({self._process.returncode}): {last}"
            )
        return json.loads(line)

    def time_repeat(self) -> float:
        """ms per step of `number` gradient evaluations."""
        assert self._process.stdin is not None
        self._process.stdin.write("run\n")
        self._process.stdin.flush()
        return self._receive()["ms"]

    def close(self) -> None:
        if self._process.poll() is None:
            assert self._process.stdin is not None
            self._process.stdin.close()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._stderr.close()
        self._directory.cleanup()


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")


def _resolve_variants(variants: Sequence[str] | None) -> tuple[str, ...]:
    if variants is None:
        return VARIANTS
    if isinstance(variants, str):
        variants = [v for v in variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise ValueError(
            f"Unknown benchmark variant(s) {unknown or list(variants)}; choose from {list(VARIANTS)}."
        )
    return tuple(v for v in VARIANTS if v in variants)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """The device and library versions that a benchmark ran with."""
    device = jax.devices()[0]
    return {
        "device": {
            "platform": device.platform,
            "device_kind": device.device_kind,
            "device_count": jax.device_count(),
            "cpu": _cpu_name(),
            "cpu_count": os.cpu_count(),
        },
        "versions": {
            "python": platform.python_version(),
            **{
                name: _version(name)
                for name in ("sdekit", "jax", "jaxlib", "equinox", "diffrax", "lineax")
            },
            "torch": _version("torch"),
            "torchsde": _version("torchsde"),
        },
    }


def shared_increments_check(
    model: _NeuralSDE,
    y0: jax.Array,
    *,
    steps: int,
    t0: float = 0.0,
    t1: float = 1.0,
    key: jax.Array,
) -> dict[str, float]:
    """Solve with sdekit and with the `lax.scan` baseline on the same grid and Brownian increments.

    sdekit's paths are rebuilt from the same per-path keys through the public
    `sdekit.step_grid` and `sdekit.GridBrownianPath`, and their increments fed to the scan.

    **Returns:**

    A dict with both losses, the largest absolute difference of the terminal states, and the
    number of steps sdekit took.
    """
    import sdekit

    batch, dim = y0.shape
    keys = jr.split(key, batch)
    ts = jnp.array([t1], dtype=y0.dtype)
    sde = sdekit.SDE(
        model.drift, model.diffusion, noise_structure="diagonal", calculus="ito"
    )
    sol = sdekit.solve(sde, y0, ts, key=keys, dt0=(t1 - t0) / steps, t0=t0, t1=t1)
    y1_sdekit = sol.ys[:, -1]

    # sdekit merges the save times into the uniform grid, so its grid has one point per save
    # time more than `steps + 1`; the scan follows the same grid.
    grid = sdekit.step_grid(t0, t1, steps, ts)

    def increments(key_i):
        path = sdekit.GridBrownianPath(grid, (dim,), key_i, dtype=y0.dtype)
        return jax.vmap(path.evaluate)(grid[:-1], grid[1:])

    dw = jnp.swapaxes(jax.vmap(increments)(keys), 0, 1)
    y1_scan = euler_maruyama_scan(model, y0, grid, dw)
    return {
        "sdekit_loss": float(terminal_loss(y1_sdekit)),
        "lax_scan_loss": float(terminal_loss(y1_scan)),
        "max_abs_diff_y1": float(jnp.max(jnp.abs(y1_sdekit - y1_scan))),
        "max_abs_y1": float(jnp.max(jnp.abs(y1_scan))),
        "sdekit_num_steps": int(jnp.max(sol.stats["num_steps"])),
    }


def solver_speed(
    repeats: int = 5,
    batch: int = 128,
    steps: int = 200,
    dim: int = 16,
    width: int = 64,
    variants: Sequence[str] | None = None,
    *,
    number: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """Time one forward-and-backward pass through the reference neural SDE for each variant.

    Every variant is compiled (JAX) or run once (torchsde) first; then each repeat times `number`
    consecutive gradient evaluations of every variant in turn, so that the variants share the
    machine's state. torchsde runs in a child process with the same weights and initial states
    (torch's threads and XLA's stall each other when they alternate in one process on two cores).
    Times are in milliseconds per solver step (wall time / `number` / `steps`).

    **Arguments:**

    - `repeats`: timed repeats per variant; the figures are their medians.
    - `batch`, `steps`, `dim`, `width`: the problem (see the module docstring).
    - `variants`: any of `"sdekit"`, `"lax_scan"`, `"lax_scan_remat"`, `"diffrax_vbt"`,
        `"torchsde"` (a sequence or a comma-separated string); `None` for all. torchsde is skipped,
        with a note, if torch or torchsde cannot be imported.
    - `number`: gradient evaluations per repeat.
    - `seed`: seeds the networks, the initial states and the Brownian motion.

    **Returns:**

    A JSON-serialisable dict: `<variant>_ms` (median ms per step, `None` if not run); the ratios of
    medians `sdekit_vs_lax_scan`, `sdekit_vs_lax_scan_remat`, `diffrax_vbt_vs_sdekit`,
    `torchsde_vs_sdekit` (`None` where a variant did not run) and `paired_ratios` (medians of the
    per-repeat ratios); `raw_ms` (per-repeat figures), `losses`, `checks`, `targets`, `compile_s`,
    `torch_num_threads`, the problem, the device and the library versions.
    """
    for name, value in (
        ("repeats", repeats),
        ("batch", batch),
        ("steps", steps),
        ("dim", dim),
        ("width", width),
        ("number", number),
    ):
        _check_positive_int(name, value)
    names = _resolve_variants(variants)
    t0, t1 = 0.0, 1.0
    model_key, brownian_key, check_key = jr.split(jr.key(seed), 3)
    model, y0 = reference_problem(batch, dim, width, key=model_key)
    notes = []

    runners: dict[str, Callable[[], float]] = {}
    compile_s: dict[str, float] = {}
    for name in names:
        if name != "torchsde":
            runners[name], compile_s[name] = _jax_runner(
                name, model, y0, brownian_key, steps=steps, t0=t0, t1=t1
            )
    # One untimed call each, after compilation, so that the first repeat is not a warm-up.
    losses = {name: float(run()) for name, run in runners.items()}

    torch_process = None
    torch_threads = None
    if "torchsde" in names:
        missing = [
            m for m in ("torch", "torchsde") if importlib.util.find_spec(m) is None
        ]
        if missing:
            notes.append(f"torchsde skipped: {', '.join(missing)} not importable")
        else:
            try:
                torch_process = _TorchsdeProcess(
                    model, y0, steps=steps, t0=t0, t1=t1, number=number, seed=seed
                )
            except RuntimeError as e:
                notes.append(f"torchsde skipped: {e}")
            else:
                losses["torchsde"] = torch_process.ready["loss"]
                compile_s["torchsde"] = torch_process.ready["warmup_s"]
                torch_threads = torch_process.ready["num_threads"]

    raw_ms: dict[str, list[float]] = {name: [] for name in losses}
    load_start = os.getloadavg()
    try:
        for _ in range(repeats):
            for name, run in runners.items():
                start = time.perf_counter()
                for _ in range(number):
                    run()
                raw_ms[name].append(
                    1e3 * (time.perf_counter() - start) / (number * steps)
                )
            if torch_process is not None:
                raw_ms["torchsde"].append(torch_process.time_repeat())
    finally:
        if torch_process is not None:
            torch_process.close()
    load_end = os.getloadavg()

    medians = {
        name: statistics.median(raw_ms[name]) if name in raw_ms else None
        for name in VARIANTS
    }

    checks: dict[str, Any] = {
        "losses_finite": all(math.isfinite(v) for v in losses.values()),
        # Different Brownian samples, same networks: the losses agree up to Monte Carlo error.
        "losses_max_over_min": (max(losses.values()) / min(losses.values()))
        if losses
        else None,
    }
    if "sdekit" in runners and "lax_scan" in runners:
        checks["shared_increments"] = shared_increments_check(
            model, y0, steps=steps, t0=t0, t1=t1, key=check_key
        )
    ratios = {
        key: None
        if medians[a] is None or medians[b] is None
        else medians[a] / medians[b]
        for key, (a, b) in RATIOS.items()
    }
    # The machine's speed drifts over seconds (by up to a factor of two on this virtual machine);
    # the ratio within each repeat cancels most of that.
    paired_ratios = {
        key: statistics.median(x / y for x, y in zip(raw_ms[a], raw_ms[b]))
        for key, (a, b) in RATIOS.items()
        if a in raw_ms and b in raw_ms
    }

    result: dict[str, Any] = {
        "benchmark": "solver_speed",
        "problem": {
            "batch": batch,
            "steps": steps,
            "dim": dim,
            "width": width,
            "depth": 2,
            "t0": t0,
            "t1": t1,
            "dt": (t1 - t0) / steps,
            "loss": "mean(y_T^2)",
            "timed": "value and gradient w.r.t. both networks' parameters",
            "dtype": str(y0.dtype),
        },
        "unit": "ms per solver step (forward + backward), median over repeats",
        "repeats": repeats,
        "number": number,
        "variants": list(raw_ms),
        **{f"{name}_ms": medians[name] for name in VARIANTS},
        **ratios,
        "sdekit_vs_best_scan": _best_scan_ratio(medians),
        "paired_ratios": paired_ratios,
        "min_ms": {name: min(values) for name, values in raw_ms.items()},
        "raw_ms": raw_ms,
        # Other work on the machine slows every variant; the load says how busy it was.
        "load_average": {"start": list(load_start), "end": list(load_end)},
        "compile_s": compile_s,
        "losses": losses,
        "checks": checks,
        "torch_num_threads": torch_threads,
        **environment(),
        "notes": notes,
    }
    result["targets"] = {
        key: {
            "target": f"{op} {bound}",
            "measured": result[key],
            "met": None
            if result[key] is None
            else (result[key] <= bound if op == "<=" else result[key] >= bound),
        }
        for key, (op, bound) in TARGETS.items()
    }
    return result


def _best_scan_ratio(medians: dict[str, float | None]) -> float | None:
    loops = [medians.get(name) for name in ("lax_scan", "lax_scan_remat")]
    loops = [ms for ms in loops if ms is not None]
    if medians.get("sdekit") is None or not loops:
        return None
    return medians["sdekit"] / min(loops)


def format_solver_speed(result: dict[str, Any]) -> str:
    """A human-readable table of a [`solver_speed`][] result."""
    problem = result["problem"]
    lines = [
        f"solver speed: neural SDE, d={problem['dim']}, MLP width {problem['width']}, "
        f"batch {problem['batch']}, {problem['steps']} Euler-Maruyama steps, forward + backward",
        f"ms per step, median of {result['repeats']} repeats x {result['number']} calls",
        "",
        f"{'variant':<16}{'ms/step':>10}{'x sdekit':>10}{'compile s':>11}{'loss':>10}",
    ]
    sdekit_ms = result["sdekit_ms"]
    for name in VARIANTS:
        ms = result[f"{name}_ms"]
        if ms is None:
            lines.append(f"{name:<16}{'-':>10}")
            continue
        relative = "" if sdekit_ms is None else f"{ms / sdekit_ms:.2f}"
        lines.append(
            f"{name:<16}{ms:>10.4f}{relative:>10}{result['compile_s'][name]:>11.2f}"
            f"{result['losses'][name]:>10.4f}"
        )
    lines.append("")
    for key in RATIOS:
        if result[key] is None:
            continue
        line = f"{key} = {result[key]:.2f}"
        if key in result["paired_ratios"]:
            line += f" (paired {result['paired_ratios'][key]:.2f})"
        target = result["targets"].get(key)
        if target is not None:
            verdict = "met" if target["met"] else "NOT met"
            line += f", target {target['target']}: {verdict}"
        lines.append(line)
    shared = result["checks"].get("shared_increments")
    if shared is not None:
        lines.append(
            f"sdekit vs lax.scan on the same grid and increments: max |y(1) difference| = "
            f"{shared['max_abs_diff_y1']:.1e} (|y(1)| up to {shared['max_abs_y1']:.1f})"
        )
    device = result["device"]
    versions = result["versions"]
    threads = result["torch_num_threads"]
    lines.append(
        f"device: {device['platform']} ({device['cpu']}, {device['cpu_count']} cores); "
        f"jax {versions['jax']}, diffrax {versions['diffrax']}, torch {versions['torch']}"
        + ("" if threads is None else f" ({threads} threads)")
    )
    lines.extend(f"note: {note}" for note in result["notes"])
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--json", action="store_true", help="print the result as JSON, last line"
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed repeats (medians)"
    )
    parser.add_argument("--batch", type=int, default=128, help="number of paths")
    parser.add_argument(
        "--steps", type=int, default=200, help="Euler-Maruyama steps on [0, 1]"
    )
    parser.add_argument(
        "--number", type=int, default=3, help="gradient calls per repeat"
    )
    parser.add_argument(
        "--variants", default=None, help="comma-separated subset (default all)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    result = solver_speed(
        repeats=args.repeats,
        batch=args.batch,
        steps=args.steps,
        variants=args.variants,
        number=args.number,
        seed=args.seed,
    )
    print(format_solver_speed(result))
    if args.json:
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
