"""The Markov approximation's error: relative Frobenius error of the MA-fBM covariance
against the exact fBM covariance on a 20 x 20 grid on [0.05, 1] (horizon T = 1), for
H = 0.1, 0.3, 0.5, 0.7, 0.9, per configuration (weights, type, K, gamma_max).

    python benchmarks/mafbm_covariance_error.py [--json]

The first four configurations are those of Daems et al.'s reference table
(../shared/REFERENCES.md), which tests/test_mafbm.py holds sdekit to; the last two are
the band sdekit's Hurst estimation works with. The table is in docs/fractional.md.
"""

import argparse
import json

import jax
import jax.numpy as jnp


HURSTS = (0.1, 0.3, 0.5, 0.7, 0.9)
CONFIGS = (
    ("optimal", "I", 5, 20.0),
    ("optimal", "I", 20, 1000.0),
    ("optimal", "II", 5, 20.0),
    ("optimal", "II", 20, 1000.0),
    ("optimal", "I", 12, 300.0),
    ("spectral", "I", 12, 300.0),
)


def relative_error(
    weights: str, kind: str, components: int, gamma_max: float, hurst: float
):
    from sdekit.noise import FractionalNoise

    ts = jnp.linspace(0.05, 1.0, 20)
    noise = FractionalNoise(hurst, components, gamma_max, 1.0, kind, weights)
    exact = noise.exact_covariance(ts)
    return float(jnp.linalg.norm(noise.covariance(ts) - exact) / jnp.linalg.norm(exact))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--json", action="store_true", help="print the rows as JSON, last line"
    )
    args = parser.parse_args()
    rows = []
    with jax.enable_x64(True):
        for weights, kind, components, gamma_max in CONFIGS:
            errors = [
                relative_error(weights, kind, components, gamma_max, h) for h in HURSTS
            ]
            rows.append(
                dict(
                    weights=weights,
                    kind=kind,
                    components=components,
                    gamma_max=gamma_max,
                    errors=dict(zip(map(str, HURSTS), errors)),
                )
            )
    print(
        "| weights, type, K, gamma_max | "
        + " | ".join(f"H = {h}" for h in HURSTS)
        + " |"
    )
    print("|---" * (len(HURSTS) + 1) + "|")
    for row in rows:
        label = f"{row['weights']}, {row['kind']}, {row['components']}, {row['gamma_max']:g}"
        print(
            f"| {label} | "
            + " | ".join(f"{e:.3g}" for e in row["errors"].values())
            + " |"
        )
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
