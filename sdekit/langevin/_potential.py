"""The potential of locally coupled oscillators that shapes the latent Langevin flow."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree, Scalar


class CoupledOscillatorPotential(eqx.Module):
    r"""The potential energy of a ring-less chain of coupled oscillators,

    $$U(z) = \frac{\kappa}{2} \lVert z \rVert^2 + \sum_{g, s} z_{g s}\,
    (\hat W \star z)_{g s}, \qquad
    (\hat W \star z)_{g s} = \sum_{h} \sum_{k=-1}^{1} \hat W_{g h k}\, z_{h, s + k},$$

    where the latent $z \in \mathbb{R}^{G S}$ is laid out as `groups` $G$ x `sites`
    $S$ and the width-3 kernel $\hat W \in \mathbb{R}^{G \times G \times 3}$ couples
    each site to itself and its two neighbours, across groups (a 1-D convolution over
    sites with zero padding at the chain's ends, as in the official LangevinFlow
    code). $U$ is quadratic, so $\nabla U(z) = \kappa z + (K + K^\top) z$ with $K$ the
    convolution's matrix: linear forces, and oscillation modes set by the spectrum of
    $\kappa I + K + K^\top$.

    Two choices differ from the official code, for the reasons given:

    - **The on-site term** $\tfrac{\kappa}{2} \lVert z \rVert^2$, $\kappa > 0$
        learnt (initially 1). The official potential is the coupling alone, which
        is zero at initialisation (free particles, no oscillators at all) and
        unbounded below once learnt (a mode with a negative eigenvalue grows
        exponentially). The on-site stiffness makes every site an oscillator and
        lets the model keep the potential confining.
    - **A smooth, NaN-safe normalisation of the kernel.** The official code
        initialises $W = 0$ and L2-normalises it along the kernel axis; $W / \lVert
        W \rVert$ at $W = 0$ is $0 / 0$, whose JAX gradient is NaN (PyTorch's
        `F.normalize` divides by `max(norm, 1e-12)` instead, which at zero has a
        gradient of $10^{12}$: Adam's second moment then remembers it and freezes
        the kernel for thousands of steps). Here $\hat W_{g h} = W_{g h} /
        \sqrt{\lVert W_{g h} \rVert^2 + \epsilon^2}$ with $\epsilon = 1$: zero at
        initialisation with an identity Jacobian, and a norm that grows towards
        (never past) 1 as $\lVert W_{g h} \rVert$ grows, as normalisation intends.

    **Arguments:**

    - `groups`, `sites`: the layout of the latent; its size is `groups * sites`.
    - `stiffness`: the initial on-site stiffness $\kappa$.
    """

    weight: Float[Array, "groups groups 3"]
    log_stiffness: Float[Array, ""]
    groups: int = eqx.field(static=True)
    sites: int = eqx.field(static=True)

    def __init__(self, groups: int, sites: int, stiffness: float = 1.0):
        if (
            not (isinstance(groups, int) and isinstance(sites, int))
            or min(groups, sites) < 1
        ):
            raise ValueError(
                f"`groups` and `sites` must be positive integers, got {groups!r} and "
                f"{sites!r}."
            )
        if not stiffness > 0:
            raise ValueError(f"`stiffness` must be > 0, got {stiffness!r}.")
        self.groups = groups
        self.sites = sites
        self.weight = jnp.zeros((groups, groups, 3))
        self.log_stiffness = jnp.log(jnp.asarray(stiffness, jnp.float32))

    @property
    def size(self) -> int:
        """The latent dimension `groups * sites`."""
        return self.groups * self.sites

    @property
    def stiffness(self) -> Scalar:
        return jnp.exp(self.log_stiffness)

    def normalised_weight(self) -> Float[Array, "groups groups 3"]:
        r"""$\hat W$: each `(g, h)` kernel divided by $\sqrt{\lVert W_{gh} \rVert^2 +
        1}$ (finite, with finite gradients, at $W = 0$)."""
        norm2 = jnp.sum(self.weight**2, axis=-1, keepdims=True)
        return self.weight * jax.lax.rsqrt(norm2 + 1.0)

    def coupling(self, z: Float[Array, " size"]) -> Float[Array, "groups sites"]:
        r"""$\hat W \star z$ on the `(groups, sites)` layout."""
        w = self.normalised_weight()
        grid = z.reshape(self.groups, self.sites)
        padded = jnp.pad(grid, ((0, 0), (1, 1)))
        return sum(w[:, :, k] @ padded[:, k : k + self.sites] for k in range(3))  # pyright: ignore

    def __call__(self, z: Float[Array, " size"], args: PyTree = None) -> Scalar:
        """The energy $U(z)$ of one latent state."""
        del args
        grid = z.reshape(self.groups, self.sites)
        return 0.5 * self.stiffness * jnp.sum(z**2) + jnp.sum(grid * self.coupling(z))

    def gradient(
        self, z: Float[Array, " size"], args: PyTree = None
    ) -> Float[Array, " size"]:
        r"""$\nabla U(z)$, in the signature diffrax's Langevin terms take
        (`grad_f(x, args)`)."""
        return jax.grad(self.__call__)(z, args)
