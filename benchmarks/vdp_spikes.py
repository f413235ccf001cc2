"""A small spiking data set from another dynamical system than Lorenz, for checking
`sdekit fit --model langevin-flow` on settings its defaults were not tuned on: few
trials, short trials, other neuron counts.

    python benchmarks/vdp_spikes.py --trials 150 --out vdp150.npz
    sdekit fit --model langevin-flow --data vdp150.npz --heldout-neurons 5 --json

The latent is a stochastic van der Pol oscillator, dx = y dt, dy = (mu (1 - x^2) y - x)
dt + 0.3 dW with mu = 1.5, from initial states uniform on [-2.5, 2.5]^2, by
Euler-Maruyama with 10 steps per bin of 0.2 time units, divided by 2.5; log-rates
log 0.3 + W x with W ~ N(0, 1) of shape (neurons, 2); Poisson counts. The first 80% of
the trials are the training trials. Writes the NPZ layout of `sdekit.data.load_spikes`
with the true rates and the latent as behaviour, and prints one JSON line.
"""

import argparse
import json

import numpy as np


def van_der_pol_spikes(trials: int, bins: int, neurons: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    mu, bin_time, substeps, noise = 1.5, 0.2, 10, 0.3
    h = bin_time / substeps
    state = rng.uniform(-2.5, 2.5, size=(trials, 2))
    latents = []
    for _ in range(bins):
        for _ in range(substeps):
            x, y = state[:, 0], state[:, 1]
            drift = np.stack([y, mu * (1 - x**2) * y - x], axis=1)
            state = (
                state
                + h * drift
                + np.sqrt(h) * noise * rng.standard_normal(state.shape)
            )
        latents.append(state.copy())
    latent = np.stack(latents, axis=1) / 2.5
    readout = rng.normal(0.0, 1.0, size=(neurons, 2))
    rates = np.exp(np.log(0.3) + latent @ readout.T)
    spikes = rng.poisson(rates)
    k = int(0.8 * trials)
    return {
        "train_spikes": spikes[:k],
        "test_spikes": spikes[k:],
        "train_rates": rates[:k],
        "test_rates": rates[k:],
        "train_behavior": latent[:k],
        "test_behavior": latent[k:],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=150)
    parser.add_argument("--bins", type=int, default=30)
    parser.add_argument("--neurons", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="the .npz file to write")
    args = parser.parse_args()
    if not args.out.endswith(".npz"):
        parser.error(f"--out must name a .npz file, got {args.out!r}.")
    arrays = van_der_pol_spikes(args.trials, args.bins, args.neurons, args.seed)
    np.savez(args.out, **arrays)
    spikes = arrays["train_spikes"]
    print(
        json.dumps(
            {
                "out": args.out,
                "train_trials": int(spikes.shape[0]),
                "test_trials": int(arrays["test_spikes"].shape[0]),
                "bins": args.bins,
                "neurons": args.neurons,
                "mean_count": float(spikes.mean()),
            }
        )
    )


if __name__ == "__main__":
    main()
