"""A small, real end-to-end job: recover an Ornstein-Uhlenbeck process's parameters
from irregularly observed paths, by gradient descent through the solver.

This is what `sdekit demo` runs. It exercises the whole core: per-path save times,
the grid Brownian path, backpropagation through diffrax, and the shared trainer with
checkpoints and early stopping.
"""

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from ._sde import SDE
from ._solve import solve
from .train import check_checkpoint_dir, fit, save_report


TRUE_PARAMETERS = dict(theta=1.5, mu=0.5, sigma=0.6)


class OrnsteinUhlenbeck(eqx.Module):
    r"""$\mathrm{d}y = \theta(\mu - y)\,\mathrm{d}t + \sigma\,\mathrm{d}W$ with
    $\theta, \sigma > 0$ kept positive through their logarithms."""

    log_theta: Float[Array, ""]
    mu: Float[Array, ""]
    log_sigma: Float[Array, ""]

    def __init__(self, theta: float, mu: float, sigma: float):
        self.log_theta = jnp.log(jnp.asarray(theta, float))
        self.mu = jnp.asarray(mu, float)
        self.log_sigma = jnp.log(jnp.asarray(sigma, float))

    @property
    def parameters(self) -> dict[str, float]:
        return dict(
            theta=float(jnp.exp(self.log_theta)),
            mu=float(self.mu),
            sigma=float(jnp.exp(self.log_sigma)),
        )

    def sde(self) -> SDE:
        theta, sigma = jnp.exp(self.log_theta), jnp.exp(self.log_sigma)
        return SDE(
            lambda t, y, args: theta * (self.mu - y),
            lambda t, y, args: sigma * jnp.ones_like(y),
            additive=True,
        )


def simulate_observations(
    key: PRNGKeyArray,
    num_paths: int,
    num_obs: int = 16,
    horizon: float = 3.0,
    dt0: float = 0.01,
) -> dict[str, np.ndarray]:
    """Paths of the true process, each observed at its own sorted uniform times."""
    k_times, k_y0, k_path = jr.split(key, 3)
    ts = np.sort(
        np.asarray(
            jr.uniform(k_times, (num_paths, num_obs), minval=0.05, maxval=horizon)
        ),
        axis=1,
    )
    y0 = 2.0 + 0.1 * np.asarray(jr.normal(k_y0, (num_paths, 1)))
    truth = OrnsteinUhlenbeck(**TRUE_PARAMETERS)
    sol = solve(truth.sde(), y0, ts, key=k_path, dt0=dt0, t0=0.0, t1=horizon)
    return dict(ts=ts, ys=np.asarray(sol.ys[..., 0]), y0=y0)


def crps_loss(
    model: OrnsteinUhlenbeck, batch, key, *, horizon: float = 3.0, dt0: float = 0.05
):
    r"""The continuous ranked probability score of the model's conditional law at every
    observation, estimated without bias from two simulated paths per data path:
    $\tfrac12(|x_1 - y| + |x_2 - y|) - \tfrac12|x_1 - x_2|$. A strictly proper
    scoring rule, so its expectation is minimised by the true parameters."""
    ts, ys, y0 = batch["ts"], batch["ys"], batch["y0"]
    sol = solve(
        model.sde(),
        jnp.concatenate([y0, y0]),
        jnp.concatenate([ts, ts]),
        key=key,
        dt0=dt0,
        t0=0.0,
        t1=horizon,
    )
    x1, x2 = jnp.split(sol.ys[..., 0], 2)
    score = 0.5 * (jnp.abs(x1 - ys) + jnp.abs(x2 - ys)) - 0.5 * jnp.abs(x1 - x2)
    loss = jnp.mean(score)
    return loss, dict(crps=loss)


def ou_demo(
    *,
    seed: int = 0,
    num_paths: int = 512,
    epochs: int = 60,
    batch_size: int = 64,
    lr: float = 0.05,
    checkpoint_dir=None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Fit `OrnsteinUhlenbeck` to simulated data from a deliberately wrong start.

    The checkpoint directory follows the rule of every `sdekit` command
    ([`sdekit.train.check_checkpoint_dir`][]): a checkpoint already in `checkpoint_dir`
    is continued only with `resume=True` (the same seed, paths and learning rate) and
    replaced only with `overwrite=True`. The finished run's report is saved beside
    its checkpoint as `report.json`.

    **Returns:** a dict with the true and fitted parameters, the validation CRPS of
    both, the relative errors, epochs run and wall time.
    """
    if num_paths < 8:
        raise ValueError(f"`num_paths` must be at least 8, got {num_paths}.")
    # The keys are the command's flags (`--paths`), so that a resume with other
    # settings is refused naming them.
    config = dict(job="ou_demo", seed=seed, paths=num_paths, lr=lr)
    if checkpoint_dir is not None:
        check_checkpoint_dir(
            checkpoint_dir,
            resume=resume,
            overwrite=overwrite,
            config=config,
            quiet=not progress,
        )
    start = time.perf_counter()
    key_data, key_fit, key_eval = jr.split(jr.key(seed), 3)
    data = simulate_observations(key_data, num_paths)
    n_valid = max(num_paths // 5, 4)
    valid = {k: v[:n_valid] for k, v in data.items()}
    train = {k: v[n_valid:] for k, v in data.items()}
    model = OrnsteinUhlenbeck(theta=0.5, mu=0.0, sigma=1.5)
    result = fit(
        model,
        crps_loss,
        train,
        key=key_fit,
        optimizer=optax.adam(lr),
        epochs=epochs,
        batch_size=min(batch_size, len(train["ts"])),
        valid_data=valid,
        monitor="crps",
        patience=15,
        checkpoint_dir=checkpoint_dir,
        config=config,
        resume=resume,
        overwrite=overwrite,
        progress=progress,
    )
    fitted = result.model.parameters
    crps = jax.jit(
        lambda m: crps_loss(m, {k: jnp.asarray(v) for k, v in valid.items()}, key_eval)[
            0
        ]
    )
    report = dict(
        job="ou_demo",
        seed=seed,
        true=TRUE_PARAMETERS,
        fitted=fitted,
        relative_error={
            k: abs(fitted[k] - v) / abs(v) for k, v in TRUE_PARAMETERS.items()
        },
        valid_crps_fitted=float(crps(result.model)),
        valid_crps_true=float(crps(OrnsteinUhlenbeck(**TRUE_PARAMETERS))),
        epochs=result.epochs_run,
        seconds=time.perf_counter() - start,
    )
    if checkpoint_dir is not None:
        save_report(checkpoint_dir, report)
    return report
