"""Training and likelihood speed of sdekit's stochastic interpolants against torchcfm and
a diffrax CNF, in one run (same MLP, batch, coupling and thread count); prints a table
and one JSON object on the last line.

    python benchmarks/interpolant_speed.py [--threads 2] [--steps 300] [--batch 256]
        [--repeats 3]
    python benchmarks/interpolant_speed.py --couplings   # the OT solvers by batch size

Training: the 3x64 SELU MLP of torchcfm's tutorials at batch 256, N(0, I) -> 8
Gaussians, Adam; torchcfm's `ConditionalFlowMatcher(sigma=0)` and
`ExactOptimalTransportConditionalFlowMatcher(sigma=0)` (POT's exact OT) against
sdekit's linear interpolant with independent and exact-OT coupling (torchcfm at the
faster of 1 and `--threads` threads), trained by `sdekit.train.fit` with
`steps_per_call` = `--steps` (an epoch of `--steps` minibatches in one compiled call;
the second epoch is timed, host permutation and gathering included), beside the same
trainer at one step per call and the compiled loop alone (the same `lax.scan` of
steps on minibatches already on the device: no trainer); the training timings are
medians of `--repeats` runs. Likelihood:
points per second of the exact-divergence log-likelihood by
`sdekit.interpolants.log_likelihood` (the batch as one state) against a CNF written
as diffrax's documentation writes one (per-point `diffeqsolve` under `vmap`, trace
from `d` vector-Jacobian products), same network, tolerances and solver.
"""

import argparse
import json
import os
import sys
import time


def _threads(n: int) -> None:
    # torch's pool (set again in the loop) and OpenMP; XLA's CPU pool uses the cores
    # of the machine, 2 here.
    os.environ["OMP_NUM_THREADS"] = str(n)


def _eight_gaussians_np(rng, n):
    import numpy as np

    angles = rng.integers(0, 8, n) * np.pi / 4
    centres = 2.0 * np.stack([np.cos(angles), np.sin(angles)], 1)
    return (centres + 0.1 * rng.normal(size=(n, 2))).astype(np.float32)


def torchcfm_ms_per_step(ot: bool, steps: int, batch: int, threads: int) -> float:
    import numpy as np
    import torch
    from torchcfm.conditional_flow_matching import (
        ConditionalFlowMatcher,
        ExactOptimalTransportConditionalFlowMatcher,
    )
    from torchcfm.models.models import MLP

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = MLP(dim=2, w=64, time_varying=True)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    matcher = (
        ExactOptimalTransportConditionalFlowMatcher(sigma=0.0)
        if ot
        else ConditionalFlowMatcher(sigma=0.0)
    )

    def step():
        optimizer.zero_grad()
        x0 = torch.randn(batch, 2)
        x1 = torch.from_numpy(_eight_gaussians_np(rng, batch))
        t, xt, ut = matcher.sample_location_and_conditional_flow(x0, x1)
        vt = model(torch.cat([xt, t[:, None]], dim=-1))
        loss = torch.mean((vt - ut) ** 2)
        loss.backward()
        optimizer.step()

    for _ in range(20):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps * 1e3


def _model_and_loss(ot: bool, method: str = "exact"):
    import jax.random as jr

    import sdekit.interpolants as si

    coupling = si.OTCoupling(method) if ot else si.IndependentCoupling()
    model = si.InterpolantModel(
        si.LinearInterpolant(),
        2,
        key=jr.key(0),
        independent=not ot,
        width=64,
        depth=3,
        activation="selu",
    )
    loss = lambda m, b, k: si.interpolant_loss(m, b, k, coupling=coupling)  # noqa: E731
    # As `sdekit fit --model interpolant` trains: an OT coupling's assignments for a
    # whole compiled call solved together on the host, one thread per core.
    prepare = (
        None
        if not ot
        else (lambda m, b, k: si.pair_minibatch(m, b, k, coupling=coupling))
    )
    return model, loss, prepare


def sdekit_ms_per_step(
    ot: bool, steps: int, batch: int, steps_per_call: int, method: str = "exact"
) -> float:
    """Milliseconds per step of `sdekit.train.fit`: two epochs of `steps` minibatches
    each, `steps_per_call` steps per compiled call; the second epoch timed (the first
    compiles)."""
    import jax.random as jr
    import optax

    from sdekit.data import eight_gaussians
    from sdekit.train import fit

    model, loss, prepare = _model_and_loss(ot, method)
    data = {"x": eight_gaussians().sample(jr.key(1), steps * batch)}
    result = fit(
        model,
        loss,
        data,
        key=jr.key(2),
        optimizer=optax.adam(1e-3),
        epochs=2,
        batch_size=batch,
        steps_per_call=steps_per_call,
        prepare_fn=prepare,
        progress=False,
    )
    return result.history[1]["seconds"] / steps * 1e3


def compiled_loop_ms_per_step(steps: int, batch: int) -> float:
    """The trainer's compiled loop alone (independent coupling): `steps` Adam steps in
    one `lax.scan` over minibatches already on the device."""
    import equinox as eqx
    import jax
    import jax.random as jr
    import optax

    from sdekit.data import eight_gaussians

    model, loss, _ = _model_and_loss(False)
    data = eight_gaussians().sample(jr.key(1), steps * batch).reshape(steps, batch, 2)
    optimizer = optax.adam(1e-3)
    params, static = eqx.partition(model, eqx.is_inexact_array)

    @jax.jit
    def run(params, state, data, key):
        def step(carry, inputs):
            params, state = carry
            x, k = inputs
            grads, _ = jax.grad(
                lambda p: loss(eqx.combine(p, static), {"x": x}, k), has_aux=True
            )(params)
            updates, state = optimizer.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), None

        keys = jr.split(key, steps)
        return jax.lax.scan(step, (params, state), (data, keys))[0]

    state = optimizer.init(params)
    jax.block_until_ready(run(params, state, data, jr.key(2)))  # compile
    start = time.perf_counter()
    jax.block_until_ready(run(params, state, data, jr.key(3)))
    return (time.perf_counter() - start) / steps * 1e3


def likelihood_points_per_second(n: int, rtol: float = 1e-5, atol: float = 1e-5):
    import diffrax as dfx
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import jax.random as jr

    import sdekit.interpolants as si

    model = si.InterpolantModel(
        si.LinearInterpolant(), 2, key=jr.key(0), width=64, depth=3, activation="selu"
    )
    x = jr.normal(jr.key(1), (n, 2))
    ours = eqx.filter_jit(si.log_likelihood)

    # diffrax's documented CNF: one point per solve, vmapped; trace by d VJPs.
    def cnf_logp(m, point):
        def field(t, state, args):
            y, _ = state
            f, vjp = jax.vjp(lambda y_: m.velocity(t, y_), y)
            (rows,) = jax.vmap(vjp)(jnp.eye(y.shape[0]))
            return f, jnp.trace(rows)

        sol = dfx.diffeqsolve(
            dfx.ODETerm(field),
            dfx.Tsit5(),
            1.0,
            0.0,
            None,
            (point, jnp.zeros(())),
            stepsize_controller=dfx.PIDController(rtol=rtol, atol=atol),
        )
        y0, delta = sol.ys[0][-1], sol.ys[1][-1]
        return -0.5 * jnp.sum(y0**2) - jnp.log(2 * jnp.pi) + delta

    theirs = eqx.filter_jit(jax.vmap(cnf_logp, in_axes=(None, 0)))
    out = {}
    for name, fn in (
        ("sdekit", lambda: ours(model, x)),
        ("diffrax_cnf", lambda: theirs(model, x)),
    ):
        jax.block_until_ready(fn())
        start = time.perf_counter()
        values = jax.block_until_ready(fn())
        out[name] = n / (time.perf_counter() - start)
        out[name + "_mean_logprob"] = float(jnp.mean(values))
    return out


def coupling_costs(batches, repeats: int = 5):
    """Milliseconds per coupling of one batch, N(0, I) -> moons."""
    import jax
    import jax.random as jr
    import numpy as np
    import ot as pot

    import sdekit.interpolants as si
    from sdekit.data import Moons

    rows = []
    for n in batches:
        x0 = jr.normal(jr.key(n), (n, 2))
        x1 = Moons().sample(jr.key(n + 1), n)
        row = {"batch": n}
        methods = ["exact", "sinkhorn"] + (["hungarian"] if n <= 256 else [])
        for method in methods:
            pairing = jax.jit(si.OTCoupling(method).pairing)
            jax.block_until_ready(pairing(x0, x1, jr.key(0)))
            start = time.perf_counter()
            for r in range(repeats):
                jax.block_until_ready(pairing(x0, x1, jr.key(r)))
            row[method] = (time.perf_counter() - start) / repeats * 1e3
        cost = np.asarray(((x0[:, None] - x1[None]) ** 2).sum(-1), np.float64)
        weights = np.full(n, 1.0 / n)
        start = time.perf_counter()
        for _ in range(repeats):
            pot.emd(weights, weights, cost)
        row["pot_emd"] = (time.perf_counter() - start) / repeats * 1e3
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def _median(measure, repeats: int) -> float:
    import statistics

    return statistics.median(measure() for _ in range(repeats))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--points", type=int, default=2000)
    parser.add_argument("--couplings", action="store_true")
    parser.add_argument(
        "--repeats", type=int, default=3, help="training timings: median of this many"
    )
    args = parser.parse_args(argv)
    _threads(args.threads)
    if args.couplings:
        rows = coupling_costs([64, 128, 256, 512, 1024])
        print(json.dumps({"couplings_ms": rows}))
        return 0
    result = {
        "threads": args.threads,
        "batch": args.batch,
        "steps": args.steps,
        "repeats": args.repeats,
    }
    for ot in (False, True):
        name = "ot" if ot else "independent"
        # torch's pool spins badly when the cores are shared (258 ms/step at 2
        # threads against 10.7 at 1, one run on a loaded machine): compare with the
        # faster of 1 and `--threads` threads.
        by_threads = {
            n: _median(
                lambda: torchcfm_ms_per_step(ot, args.steps, args.batch, n),
                args.repeats,
            )
            for n in sorted({1, args.threads})
        }
        torch_ms = min(by_threads.values())
        ours_ms = _median(
            lambda: sdekit_ms_per_step(ot, args.steps, args.batch, args.steps),
            args.repeats,
        )
        for n, ms in by_threads.items():
            result[f"torchcfm_{name}_ms_{n}threads"] = round(ms, 3)
        result[f"torchcfm_{name}_ms"] = round(torch_ms, 3)
        result[f"sdekit_{name}_ms"] = round(ours_ms, 3)
        result[f"speedup_{name}"] = round(torch_ms / ours_ms, 2)
        print(
            f"{name}: torchcfm {torch_ms:.3f} ms/step, sdekit {ours_ms:.3f} ms/step, "
            f"{torch_ms / ours_ms:.2f}x",
            flush=True,
        )
    per_call = sdekit_ms_per_step(False, args.steps, args.batch, 1)
    result["sdekit_independent_per_call_ms"] = round(per_call, 3)
    loop = compiled_loop_ms_per_step(args.steps, args.batch)
    result["compiled_loop_independent_ms"] = round(loop, 3)
    print(
        f"sdekit one step per call: {per_call:.3f} ms/step; the compiled loop "
        f"alone: {loop:.3f} ms/step",
        flush=True,
    )
    ll = likelihood_points_per_second(args.points)
    result.update({k: round(v, 4) for k, v in ll.items()})
    result["likelihood_speedup"] = round(ll["sdekit"] / ll["diffrax_cnf"], 2)
    print(
        f"likelihood: sdekit {ll['sdekit']:.0f} points/s, diffrax CNF "
        f"{ll['diffrax_cnf']:.0f} points/s",
        flush=True,
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
