"""Densities with a known log-density, for generative models: 2-D toy sets (Gaussian
mixtures, 8 Gaussians, rings, moons, the checkerboard) and scikit-learn's digits.

Every density can be sampled (`sample(key, n)`) and evaluated (`log_prob(x)`), so a
model's held-out log-likelihood can be set against the truth."""

import abc
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray


class AbstractDensity(eqx.Module):
    """A probability density on $\\mathbb{R}^d$ that can be sampled and evaluated."""

    dim: eqx.AbstractVar[int]

    @abc.abstractmethod
    def sample(self, key: PRNGKeyArray, n: int) -> Float[Array, "n d"]:
        """`n` independent samples, shape `(n, dim)`."""

    @abc.abstractmethod
    def log_prob(self, x: Float[ArrayLike, "*batch d"]) -> Float[Array, "*batch"]:
        """The log-density at `x` (`-inf` outside the support)."""


def _normal_log_prob(x, mean, std):
    # Independent normals over the last axis, with scalar `std`.
    d = x.shape[-1]
    sq = jnp.sum((x - jnp.broadcast_to(mean, x.shape)) ** 2, axis=-1) / std**2
    return -0.5 * sq - d * jnp.log(std) - 0.5 * d * math.log(2 * math.pi)


class StandardGaussian(AbstractDensity):
    """The standard normal $\\mathcal{N}(0, I_d)$: the usual base density of a
    generative interpolant.

    **Arguments:**

    - `dim`: the dimension $d$.
    """

    dim: int = eqx.field(static=True)

    def sample(self, key, n):
        return jr.normal(key, (n, self.dim))

    def log_prob(self, x):
        x = jnp.asarray(x)
        return _normal_log_prob(x, jnp.zeros(x.shape[-1], x.dtype), 1.0)


class GaussianMixture(AbstractDensity):
    """A mixture of isotropic Gaussians $\\sum_k w_k \\mathcal{N}(\\mu_k, \\sigma_k^2 I)$.

    **Arguments:**

    - `means`: component means, shape `(k, d)`.
    - `stds`: component standard deviations, shape `(k,)` (or a scalar for all).
    - `weights`: mixture weights, shape `(k,)`, normalised here (default: equal).
    """

    means: Float[Array, "k d"]
    stds: Float[Array, " k"]
    log_weights: Float[Array, " k"]
    dim: int = eqx.field(static=True)

    def __init__(self, means, stds, weights=None):
        means = jnp.asarray(means, jnp.float32)
        if means.ndim != 2:
            raise ValueError(f"`means` must have shape (k, d), got {means.shape}.")
        k, self.dim = means.shape
        stds = jnp.broadcast_to(jnp.asarray(stds, jnp.float32), (k,))
        if weights is None:
            weights = jnp.ones(k)
        weights = jnp.asarray(weights, jnp.float32)
        if weights.shape != (k,) or bool(jnp.any(weights < 0)):
            raise ValueError(f"`weights` must be {k} non-negative numbers.")
        self.means = means
        self.stds = stds
        self.log_weights = jnp.log(weights / jnp.sum(weights))

    def sample(self, key, n):
        kc, kz = jr.split(key)
        component = jr.categorical(kc, self.log_weights, shape=(n,))
        z = jr.normal(kz, (n, self.dim))
        return self.means[component] + self.stds[component, None] * z

    def log_prob(self, x):
        x = jnp.asarray(x)
        per_component = jax.vmap(lambda m, s: _normal_log_prob(x, m, s), out_axes=-1)(
            self.means, self.stds
        )
        return jax.nn.logsumexp(
            per_component + self.log_weights.reshape((1,) * (x.ndim - 1) + (-1,)),
            axis=-1,
        )


def eight_gaussians(radius: float = 2.0, std: float = 0.1) -> GaussianMixture:
    """Eight equally weighted Gaussians on a circle of radius `radius` (the usual
    source of the "8 Gaussians -> moons" transport benchmark)."""
    angles = np.arange(8) * np.pi / 4
    means = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return GaussianMixture(means, std)


def random_mixture(
    key: PRNGKeyArray, k: int = 14, dim: int = 2, spread: float = 4.0
) -> GaussianMixture:
    """A Gaussian mixture drawn at random: `k` means uniform in
    $[-\\text{spread}, \\text{spread}]^d$, standard deviations in $[0.2, 0.8]$,
    Dirichlet(2) weights. Different keys give densities that no one tuned for."""
    km, ks, kw = jr.split(key, 3)
    means = jr.uniform(km, (k, dim), minval=-spread, maxval=spread)
    stds = jr.uniform(ks, (k,), minval=0.2, maxval=0.8)
    weights = jr.dirichlet(kw, 2.0 * jnp.ones(k))
    return GaussianMixture(means, stds, weights)


class Rings(AbstractDensity):
    """Concentric rings in 2-D: the radius is $|R_k + \\sigma \\xi|$ with ring $k$
    chosen with probability proportional to $R_k$, and the angle uniform. The density
    is $p(x) = \\sum_k w_k [\\phi_\\sigma(r - R_k) + \\phi_\\sigma(r + R_k)] / (2\\pi r)$
    with $r = |x|$ (exact, the fold at zero included).

    **Arguments:**

    - `radii`: the ring radii $R_k$ (default 1, 2, 3, 4).
    - `std`: the radial standard deviation $\\sigma$.
    """

    radii: Float[Array, " k"]
    std: float = eqx.field(static=True)
    dim: int = eqx.field(static=True, default=2)

    def __init__(self, radii=(1.0, 2.0, 3.0, 4.0), std: float = 0.1):
        self.radii = jnp.asarray(radii, jnp.float32)
        self.std = float(std)
        self.dim = 2

    def sample(self, key, n):
        kc, kr, ka = jr.split(key, 3)
        ring = jr.categorical(kc, jnp.log(self.radii), shape=(n,))
        r = jnp.abs(self.radii[ring] + self.std * jr.normal(kr, (n,)))
        angle = jr.uniform(ka, (n,), maxval=2 * jnp.pi)
        return r[:, None] * jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=1)

    def log_prob(self, x):
        x = jnp.asarray(x)
        r = jnp.sqrt(jnp.sum(x**2, axis=-1))[..., None]
        shape = (1,) * (x.ndim - 1) + self.radii.shape
        radii = self.radii.reshape(shape)
        log_w = jnp.log(radii / jnp.sum(self.radii))
        log_phi = lambda u: (  # noqa: E731
            -0.5 * (u / self.std) ** 2 - jnp.log(self.std * math.sqrt(2 * math.pi))
        )
        radial = jnp.logaddexp(log_phi(r - radii), log_phi(r + radii))
        return jax.nn.logsumexp(log_w + radial, axis=-1) - jnp.log(
            2 * jnp.pi * r[..., 0]
        )


class Moons(AbstractDensity):
    """scikit-learn's two interleaving half circles with isotropic Gaussian noise of
    standard deviation `std`, scaled by `scale`. The log-density is the noise kernel
    averaged over the arcs by the midpoint rule on `nodes` points per arc, whose
    spacing ($\\pi/\\text{nodes}$) is far below `std`, so it is exact to float
    precision.
    """

    std: float = eqx.field(static=True)
    scale: float = eqx.field(static=True)
    nodes: int = eqx.field(static=True)
    dim: int = eqx.field(static=True)

    def __init__(self, std: float = 0.1, scale: float = 2.0, nodes: int = 2048):
        self.std = float(std)
        self.scale = float(scale)
        self.nodes = int(nodes)
        self.dim = 2

    def _arc(self, u, upper):
        # u in [0, pi]: the upper arc (cos u, sin u), the lower (1 - cos u, 0.5 - sin u);
        # centred on the origin as the 8-Gaussians source is.
        upper_pt = jnp.stack([jnp.cos(u), jnp.sin(u)], -1)
        lower_pt = jnp.stack([1 - jnp.cos(u), 0.5 - jnp.sin(u)], -1)
        pt = jnp.where(upper[..., None], upper_pt, lower_pt)
        return self.scale * (pt - jnp.broadcast_to(jnp.array([0.5, 0.25]), pt.shape))

    def sample(self, key, n):
        ku, ka, kz = jr.split(key, 3)
        u = jr.uniform(ku, (n,), maxval=jnp.pi)
        upper = jr.bernoulli(ka, 0.5, (n,))
        return self._arc(u, upper) + self.scale * self.std * jr.normal(kz, (n, 2))

    def log_prob(self, x):
        x = jnp.asarray(x)
        u = (jnp.arange(self.nodes) + 0.5) * jnp.pi / self.nodes
        points = jnp.concatenate(
            [
                self._arc(u, jnp.ones_like(u, bool)),
                self._arc(u, jnp.zeros_like(u, bool)),
            ]
        )
        per_node = jax.vmap(
            lambda c: _normal_log_prob(x, c, self.scale * self.std), out_axes=-1
        )(points)
        return jax.nn.logsumexp(per_node, axis=-1) - jnp.log(2.0 * self.nodes)


class Checkerboard(AbstractDensity):
    """The checkerboard of the stochastic-interpolants paper: uniform on the black
    squares of a board of `4 x 4` squares of side `side`, centred on the origin (8
    squares, density $1 / (8\\,\\text{side}^2)$ there and 0 elsewhere)."""

    side: float = eqx.field(static=True)
    dim: int = eqx.field(static=True)

    def __init__(self, side: float = 1.0):
        self.side = float(side)
        self.dim = 2

    def sample(self, key, n):
        kx, ky, kc = jr.split(key, 3)
        col = jr.randint(kx, (n,), 0, 4)
        row = 2 * jr.randint(ky, (n,), 0, 2) + (col % 2)
        offset = jr.uniform(kc, (n, 2))
        cell = jnp.stack([col, row], axis=1).astype(jnp.float32)
        return self.side * (cell + offset - 2.0)

    def log_prob(self, x):
        x = jnp.asarray(x)
        cell = jnp.floor(x / self.side + 2.0)
        inside = jnp.all((cell >= 0) & (cell <= 3), axis=-1)
        black = (cell[..., 0] + cell[..., 1]) % 2 == 0
        density = -jnp.log(8.0 * self.side**2)
        return jnp.where(inside & black, density, -jnp.inf)


TOY_DENSITIES = ("gaussian-mixture", "8gaussians", "rings", "moons", "checkerboard")


def toy_density(name: str, seed: int = 0) -> AbstractDensity:
    """A 2-D density by name: `"gaussian-mixture"` (a 14-component
    [`sdekit.data.random_mixture`][] drawn from `seed`), `"8gaussians"`, `"rings"`,
    `"moons"` or `"checkerboard"`."""
    if name == "gaussian-mixture":
        return random_mixture(jr.key(seed))
    if name == "8gaussians":
        return eight_gaussians()
    if name == "rings":
        return Rings()
    if name == "moons":
        return Moons()
    if name == "checkerboard":
        return Checkerboard()
    raise ValueError(
        f"Unknown density {name!r}; choose one of {', '.join(TOY_DENSITIES)}."
    )


def load_digits(
    test_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's 1797 handwritten digits (8x8 images, bundled, no download) as
    flat vectors in $[0, 1]$ (pixel values / 16), split at random into train and test.

    **Returns:** `(x_train, y_train, x_test, y_test)`, images of shape `(n, 64)`
    (float32) and labels (int32).
    """
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:
        raise ImportError(
            "The digits need scikit-learn: pip install 'sdekit[data]'."
        ) from None
    if not 0 < test_fraction < 1:
        raise ValueError(f"`test_fraction` must be in (0, 1), got {test_fraction}.")
    data, target = sklearn_digits(return_X_y=True)
    # np.asarray for the checker: sklearn types its loaders as maybe returning pandas
    # objects (as_frame=True).
    x = (np.asarray(data) / 16.0).astype(np.float32)
    y = np.asarray(target).astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(test_fraction * len(x)))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]
