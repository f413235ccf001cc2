"""Peak memory of a gradient against the number of solver steps: checkpointed against reversible.

Backpropagating through a solve stores something per step; [`sdekit.ReversibleAdjoint`][] claims
$O(1)$ memory in the number of steps by rebuilding each step's input from its output (Kidger et al.
2021, arXiv 2105.13493). This benchmark measures it on the reference neural SDE of
`benchmarks/solver_speed.py`, for the default (Euler-Maruyama, backpropagation through a scan of the
steps with each step rematerialised, `sdekit.ScanAdjoint`) and for the reversible adjoint
(reversible Heun).

Memory is read from XLA's compile-time buffer assignment (`compiled.memory_analysis()`), which is
exact for the compiled program and does not depend on the allocator or on other processes; a
runtime peak resident set size of a fresh process per configuration is an optional cross-check.

    python benchmarks/adjoint_memory.py --rss --json
    python benchmarks/adjoint_memory.py --calculus stratonovich --json

prints a table and, with `--json`, the full result as JSON on the last line; `--rss` adds the
peak resident memory of a fresh process per configuration. The figures on record:
docs/benchmarks.md.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
from solver_speed import (
    _check_positive_int,
    compile_value_and_grad,
    environment,
    reference_problem,
    terminal_loss,
)


ADJOINTS = ("checkpointed", "reversible")

# Target: the reversible adjoint's peak at the largest step count over its peak at the smallest.
TARGET_GROWTH = 1.5


def memory_fields(compiled: Any) -> dict[str, int]:
    """The buffer sizes XLA assigned to a compiled function, in bytes.

    **Arguments:**

    - `compiled`: a `jax.stages.Compiled`, e.g. `jax.jit(f).lower(*args).compile()`.

    **Returns:**

    A dict with `argument_bytes`, `output_bytes`, `alias_bytes` (outputs that reuse argument
    buffers), `temp_bytes` (everything live only during the call), `generated_code_bytes`, and
    `peak_bytes = argument_bytes + output_bytes - alias_bytes + temp_bytes`, the most memory the
    call can hold at once.
    """
    stats = compiled.memory_analysis()
    if stats is None:
        raise RuntimeError(
            "This backend does not report XLA's memory analysis; use the runtime figure "
            "(`adjoint_memory(..., rss=True)`) instead."
        )
    fields = {
        "argument_bytes": int(stats.argument_size_in_bytes),
        "output_bytes": int(stats.output_size_in_bytes),
        "alias_bytes": int(stats.alias_size_in_bytes),
        "temp_bytes": int(stats.temp_size_in_bytes),
        "generated_code_bytes": int(stats.generated_code_size_in_bytes),
    }
    fields["peak_bytes"] = (
        fields["argument_bytes"]
        + fields["output_bytes"]
        - fields["alias_bytes"]
        + fields["temp_bytes"]
    )
    return fields


def compiled_memory(fn: Callable[..., Any], *args: Any) -> dict[str, int]:
    """[`memory_fields`][] of `jax.jit(fn)` compiled for `args` (arrays or pytrees of arrays)."""
    return memory_fields(jax.jit(fn).lower(*args).compile())


def _gradient_loss(
    adjoint: str, *, steps: int, t0: float, t1: float, calculus: str = "ito"
):
    import diffrax as dfx

    import sdekit

    if adjoint == "checkpointed":
        options = {}
    elif adjoint == "reversible":
        options = {"adjoint": sdekit.ReversibleAdjoint()}
    elif adjoint == "reversible_heun_checkpointed":
        # The reversible adjoint's discretisation, differentiated by ordinary backpropagation:
        # the reference its gradients must match.
        options = {"solver": dfx.ReversibleHeun()}
    else:
        raise ValueError(f"Unknown adjoint {adjoint!r}; choose from {list(ADJOINTS)}.")

    def loss(model, y0, key):
        sde = sdekit.SDE(
            model.drift, model.diffusion, noise_structure="diagonal", calculus=calculus
        )
        ts = jnp.array([t1], dtype=y0.dtype)
        sol = sdekit.solve(
            sde, y0, ts, key=key, dt0=(t1 - t0) / steps, t0=t0, t1=t1, **options
        )
        return terminal_loss(sol.ys[:, -1])

    return loss


def _max_relative_difference(grads: Any, reference: Any) -> float:
    """The largest over parameter arrays of $\\max|g - g_\\mathrm{ref}| / \\max|g_\\mathrm{ref}|$."""
    ratios = jtu.tree_leaves(
        jtu.tree_map(
            lambda g, r: (
                jnp.max(jnp.abs(g - r)) / jnp.maximum(jnp.max(jnp.abs(r)), 1e-30)
            ),
            grads,
            reference,
        )
    )
    return float(max(ratios))


def _time_per_step(
    run: Callable[[], Any], repeats: int, steps: int
) -> tuple[list[float], Any]:
    """ms per step of `repeats` calls after a warm-up call, and the last call's output."""
    out = run()
    raw = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = run()
        raw.append(1e3 * (time.perf_counter() - start) / steps)
    return raw, out


def _rss_worker(
    adjoint: str, steps: int, batch: int, dim: int, width: int, calculus: str, seed: int
) -> None:
    """Run in a fresh process: one gradient evaluation; print its peak resident memory as JSON."""
    import resource

    model_key, key = jr.split(jr.key(seed))
    model, y0 = reference_problem(batch, dim, width, key=model_key)
    loss = _gradient_loss(adjoint, steps=steps, t0=0.0, t1=1.0, calculus=calculus)
    compiled, params, _ = compile_value_and_grad(loss, model, y0, key)
    jax.block_until_ready((params, y0))

    def resident_kib(field: str) -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
        raise RuntimeError(f"{field} not in /proc/self/status")

    before = resident_kib("VmRSS:")
    # Reset the high-water mark so that it does not remember compilation (Linux >= 4.0).
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    jax.block_until_ready(compiled(params, y0, key))
    peak = max(resident_kib("VmHWM:"), 0)
    print(
        json.dumps(
            {
                "rss_before_run_mib": before / 1024,
                "rss_peak_mib": peak / 1024,
                "rss_run_increase_mib": (peak - before) / 1024,
                "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                / 1024,
            }
        )
    )


def _runtime_rss(
    adjoint: str, steps: int, batch: int, dim: int, width: int, calculus: str, seed: int
) -> dict[str, Any]:
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); "
        "from adjoint_memory import _rss_worker; "
        f"_rss_worker({adjoint!r}, {steps}, {batch}, {dim}, {width}, {calculus!r}, {seed})"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        tail = out.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"error": f"worker exited with {out.returncode}: {tail[0]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def adjoint_memory(
    steps: Sequence[int] = (100, 300, 1000, 3000, 10000),
    batch: int = 128,
    dim: int = 16,
    width: int = 64,
    *,
    adjoints: Sequence[str] = ADJOINTS,
    calculus: str = "ito",
    repeats: int = 3,
    rss: bool = False,
    check_steps: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Peak memory and time of one gradient evaluation against the number of solver steps.

    **Arguments:**

    - `steps`: the numbers of solver steps on $[0, 1]$ ($\\Delta t = 1 / \\text{steps}$).
    - `batch`, `dim`, `width`: the reference neural SDE (see `benchmarks/solver_speed.py`).
    - `adjoints`: any of `"checkpointed"` (the default of `sdekit.solve`) and `"reversible"`
        (`sdekit.ReversibleAdjoint()`).
    - `calculus`: the calculus the SDE is written in, `"ito"` (as the speed benchmark) or
        `"stratonovich"`. Reversible Heun converges to the Stratonovich solution, so for an Itô
        SDE sdekit adds the Itô-to-Stratonovich drift correction, which costs $d$ forward-mode
        passes through the diffusion per evaluation for diagonal noise.
    - `repeats`: timed gradient evaluations per configuration (after one warm-up call).
    - `rss`: also measure the peak resident memory of a fresh process per configuration.
    - `check_steps`: the step count at which the reversible adjoint's gradient is compared with
        backpropagation through the same reversible Heun solve (default: the smallest of `steps`).
    - `seed`: seeds the networks, initial states and Brownian motion.

    **Returns:**

    A JSON-serialisable dict: `results[adjoint][i]` holds, for `steps[i]`, XLA's memory fields
    (see [`memory_fields`][]), `peak_mib`, `ms_per_step` (median) with the raw timings, the loss and
    optionally the runtime figures; `growth[adjoint]` is the peak at the most steps over the peak
    at the fewest; `gradient_check` the comparison; `target` whether the reversible adjoint's growth
    is at most 1.5.
    """
    if isinstance(steps, int):
        steps = (steps,)
    steps = tuple(steps)
    if not steps:
        raise ValueError("`steps` must hold at least one number of steps.")
    for value in steps:
        _check_positive_int("steps", value)
    for name, value in (
        ("batch", batch),
        ("dim", dim),
        ("width", width),
        ("repeats", repeats),
    ):
        _check_positive_int(name, value)
    unknown = [a for a in adjoints if a not in ADJOINTS]
    if unknown or not adjoints:
        raise ValueError(f"Unknown adjoint(s) {unknown}; choose from {list(ADJOINTS)}.")
    if calculus not in ("ito", "stratonovich"):
        raise ValueError(
            f"`calculus` must be 'ito' or 'stratonovich', got {calculus!r}."
        )
    check_steps = min(steps) if check_steps is None else check_steps
    _check_positive_int("check_steps", check_steps)

    model_key, key = jr.split(jr.key(seed))
    model, y0 = reference_problem(batch, dim, width, key=model_key)
    load_start = os.getloadavg()
    results: dict[str, list[dict[str, Any]]] = {}
    for adjoint in adjoints:
        rows = []
        for n in steps:
            loss = _gradient_loss(adjoint, steps=n, t0=0.0, t1=1.0, calculus=calculus)
            compiled, params, compile_s = compile_value_and_grad(loss, model, y0, key)
            fields = memory_fields(compiled)

            def run(compiled=compiled, params=params):
                return jax.block_until_ready(compiled(params, y0, key))

            raw, (value, _) = _time_per_step(run, repeats, n)
            row = {
                "steps": n,
                **fields,
                "peak_mib": fields["peak_bytes"] / 2**20,
                "ms_per_step": statistics.median(raw),
                "raw_ms_per_step": raw,
                "compile_s": compile_s,
                "loss": float(value),
            }
            if rss:
                row["runtime"] = _runtime_rss(
                    adjoint, n, batch, dim, width, calculus, seed
                )
            rows.append(row)
        results[adjoint] = rows

    growth = {
        adjoint: rows[-1]["peak_bytes"] / rows[0]["peak_bytes"]
        for adjoint, rows in results.items()
        if rows[0]["steps"] == min(steps) and rows[-1]["steps"] == max(steps)
    }

    gradient_check = None
    if "reversible" in adjoints:
        grads = {}
        losses = {}
        for adjoint in ("reversible", "reversible_heun_checkpointed"):
            loss = _gradient_loss(
                adjoint, steps=check_steps, t0=0.0, t1=1.0, calculus=calculus
            )
            compiled, params, _ = compile_value_and_grad(loss, model, y0, key)
            losses[adjoint], grads[adjoint] = compiled(params, y0, key)
        gradient_check = {
            "steps": check_steps,
            "against": "backpropagation through diffrax's ReversibleHeun (same discretisation)",
            "max_relative_difference": _max_relative_difference(
                grads["reversible"], grads["reversible_heun_checkpointed"]
            ),
            "loss_difference": float(
                abs(losses["reversible"] - losses["reversible_heun_checkpointed"])
            ),
        }

    load_end = os.getloadavg()
    reversible_growth = growth.get("reversible")
    return {
        "benchmark": "adjoint_memory",
        "problem": {
            "batch": batch,
            "dim": dim,
            "width": width,
            "depth": 2,
            "t0": 0.0,
            "t1": 1.0,
            "loss": "mean(y_T^2)",
            "measured": "value and gradient w.r.t. both networks' parameters",
            "dtype": str(y0.dtype),
            "calculus": calculus,
        },
        "adjoints": {
            "checkpointed": "sdekit.solve default: Euler-Maruyama, sdekit.ScanAdjoint "
            "(backpropagation through the scan of steps, each step rematerialised)",
            "reversible": "sdekit.ReversibleAdjoint(): reversible Heun, O(1)-memory backward pass",
        },
        "memory_source": "XLA compile-time buffer assignment (compiled.memory_analysis())",
        "steps": list(steps),
        "repeats": repeats,
        "results": results,
        "growth": growth,
        # Memory figures are exact; timings suffer from other work on the machine.
        "load_average": {"start": list(load_start), "end": list(load_end)},
        "gradient_check": gradient_check,
        "target": {
            "target": f"reversible peak at {max(steps)} steps <= {TARGET_GROWTH} x peak at "
            f"{min(steps)} steps",
            "measured": reversible_growth,
            "met": None
            if reversible_growth is None
            else reversible_growth <= TARGET_GROWTH,
        },
        **environment(),
    }


def format_adjoint_memory(result: dict[str, Any]) -> str:
    """A human-readable table of an [`adjoint_memory`][] result."""
    problem = result["problem"]
    lines = [
        f"adjoint memory: neural SDE, d={problem['dim']}, MLP width {problem['width']}, "
        f"batch {problem['batch']}, {problem['calculus']} SDE, value and gradient",
        f"peak = XLA arguments + outputs - aliases + temporaries; time: median of "
        f"{result['repeats']} calls",
        "",
    ]
    has_rss = any(
        "runtime" in row for rows in result["results"].values() for row in rows
    )
    header = (
        f"{'adjoint':<14}{'steps':>7}{'peak MiB':>11}{'temp MiB':>11}{'ms/step':>10}"
    )
    lines.append(header + (f"{'RSS +MiB':>10}" if has_rss else ""))
    for adjoint, rows in result["results"].items():
        for row in rows:
            line = (
                f"{adjoint:<14}{row['steps']:>7}{row['peak_mib']:>11.2f}"
                f"{row['temp_bytes'] / 2**20:>11.2f}{row['ms_per_step']:>10.4f}"
            )
            runtime = row.get("runtime")
            if runtime is not None:
                increase = runtime.get("rss_run_increase_mib")
                line += (
                    f"{increase:>10.1f}" if increase is not None else f"{'error':>10}"
                )
            lines.append(line)
    lines.append("")
    for adjoint, growth in result["growth"].items():
        lines.append(
            f"{adjoint}: peak at {max(result['steps'])} / at {min(result['steps'])} steps = {growth:.2f}"
        )
    target = result["target"]
    if target["measured"] is not None:
        verdict = "met" if target["met"] else "NOT met"
        lines.append(f"target: {target['target']}: {verdict}")
    check = result["gradient_check"]
    if check is not None:
        lines.append(
            f"gradients, reversible vs backprop through ReversibleHeun at {check['steps']} steps: "
            f"max relative difference {check['max_relative_difference']:.2e}"
        )
    device = result["device"]
    lines.append(
        f"device: {device['platform']} ({device['cpu']}, {device['cpu_count']} cores); "
        f"jax {result['versions']['jax']}, diffrax {result['versions']['diffrax']}"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--json", action="store_true", help="print the result as JSON, last line"
    )
    parser.add_argument(
        "--steps",
        type=int,
        nargs="+",
        default=[100, 300, 1000, 3000, 10000],
        help="numbers of solver steps on [0, 1]",
    )
    parser.add_argument("--batch", type=int, default=128, help="number of paths")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed gradient calls (median)"
    )
    parser.add_argument(
        "--calculus",
        choices=("ito", "stratonovich"),
        default="ito",
        help="the calculus the SDE is written in",
    )
    parser.add_argument(
        "--rss", action="store_true", help="also measure peak RSS per config"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    result = adjoint_memory(
        steps=args.steps,
        batch=args.batch,
        calculus=args.calculus,
        repeats=args.repeats,
        rss=args.rss,
        seed=args.seed,
    )
    print(format_adjoint_memory(result))
    if args.json:
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
