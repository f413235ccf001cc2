r"""Stochastic interpolants $x_t = \alpha(t) x_0 + \beta(t) x_1 + \gamma(t) z$.

[Albergo, Boffi and Vanden-Eijnden, "Stochastic Interpolants: A Unifying Framework for
Flows and Diffusions"](https://arxiv.org/abs/2303.08797), section 3 and table 1.
"""

import abc
import math
from typing import ClassVar, TYPE_CHECKING

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float


if TYPE_CHECKING:
    # A type checker reads `Float[ArrayLike, ""]` as all of ArrayLike, complex
    # included, and refuses `t < 0.5` on it.
    Time = float | Array | np.ndarray
else:
    Time = Float[ArrayLike, ""]


class AbstractGamma(eqx.Module):
    r"""The scale $\gamma(t)$ of the latent noise $z$, with $\gamma(0) = \gamma(1) = 0$.

    Besides $\gamma$ and $\dot\gamma$, a gamma gives $\gamma\dot\gamma$ in closed
    form: for $\gamma = \sqrt{a t (1 - t)}$ the derivative is infinite at the ends
    but the product is not.
    """

    # Whether $\dot\gamma$ is unbounded at an end: the losses then pair $z$ with $-z$
    # (antithetic sampling) so that the $\dot\gamma z$ term cancels to leading order.
    singular: eqx.AbstractClassVar[bool]

    @abc.abstractmethod
    def __call__(self, t: Time) -> Array:
        r"""$\gamma(t)$."""

    @abc.abstractmethod
    def derivative(self, t: Time) -> Array:
        r"""$\dot\gamma(t)$."""

    @abc.abstractmethod
    def gamma_gamma_dot(self, t: Time) -> Array:
        r"""$\gamma(t)\dot\gamma(t)$, finite at the ends."""


class SqrtGamma(AbstractGamma):
    r"""$\gamma(t) = \sqrt{a t (1 - t)}$, so $\gamma\dot\gamma = a (1 - 2t) / 2$.

    **Arguments:**

    - `a`: the noise level $a > 0$ (default 1).
    """

    a: float = 1.0
    singular: ClassVar[bool] = True

    def __call__(self, t):
        return jnp.sqrt(self.a * t * (1 - t))

    def derivative(self, t):
        return self.gamma_gamma_dot(t) / self(t)

    def gamma_gamma_dot(self, t):
        return self.a * (1 - 2 * t) / 2


class SinSquaredGamma(AbstractGamma):
    r"""$\gamma(t) = \sqrt{a} \sin^2(\pi t)$ (the encoder-decoder's).

    **Arguments:**

    - `a`: the noise level $a > 0$ (default 1).
    """

    a: float = 1.0
    singular: ClassVar[bool] = False

    def __call__(self, t):
        return math.sqrt(self.a) * jnp.sin(jnp.pi * t) ** 2

    def derivative(self, t):
        return math.sqrt(self.a) * jnp.pi * jnp.sin(2 * jnp.pi * t)

    def gamma_gamma_dot(self, t):
        return self(t) * self.derivative(t)


class ZeroGamma(AbstractGamma):
    r"""$\gamma = 0$: a deterministic interpolant (flow matching, rectified flow)."""

    singular: ClassVar[bool] = False

    def __call__(self, t):
        return jnp.zeros_like(jnp.asarray(t, float))

    def derivative(self, t):
        return jnp.zeros_like(jnp.asarray(t, float))

    def gamma_gamma_dot(self, t):
        return jnp.zeros_like(jnp.asarray(t, float))


class AbstractInterpolant(eqx.Module):
    r"""$x_t = \alpha(t) x_0 + \beta(t) x_1 + \gamma(t) z$ with $z \sim \mathcal{N}(0, I)$
    independent of the pair $(x_0, x_1)$, and $\alpha(0) = \beta(1) = 1$,
    $\alpha(1) = \beta(0) = 0$, $\gamma(0) = \gamma(1) = 0$.

    A new interpolant implements $\alpha$, $\beta$ and their derivatives (`jax.grad`
    of a scalar function will do) and has a `gamma` field.
    """

    gamma: eqx.AbstractVar[AbstractGamma]

    @abc.abstractmethod
    def alpha(self, t: Time) -> Array:
        r"""$\alpha(t)$, the weight of $x_0$."""

    @abc.abstractmethod
    def beta(self, t: Time) -> Array:
        r"""$\beta(t)$, the weight of $x_1$."""

    @abc.abstractmethod
    def alpha_dot(self, t: Time) -> Array:
        r"""$\dot\alpha(t)$."""

    @abc.abstractmethod
    def beta_dot(self, t: Time) -> Array:
        r"""$\dot\beta(t)$."""

    def __call__(self, t: Time, x0: Array, x1: Array, z: Array) -> Array:
        r"""$x_t = \alpha(t) x_0 + \beta(t) x_1 + \gamma(t) z$."""
        return self.alpha(t) * x0 + self.beta(t) * x1 + self.gamma(t) * z

    def time_derivative(self, t: Time, x0: Array, x1: Array, z: Array) -> Array:
        r"""$\partial_t I_t(x_0, x_1) + \dot\gamma(t) z$, the velocity's regression
        target."""
        return (
            self.alpha_dot(t) * x0
            + self.beta_dot(t) * x1
            + self.gamma.derivative(t) * z
        )


class LinearInterpolant(AbstractInterpolant):
    r"""$\alpha = 1 - t$, $\beta = t$.

    **Arguments:**

    - `gamma`: the latent noise (default [`sdekit.interpolants.ZeroGamma`][]: the
        straight line of flow matching).
    """

    gamma: AbstractGamma = ZeroGamma()

    def alpha(self, t):
        return 1 - jnp.asarray(t, float)

    def beta(self, t):
        return jnp.asarray(t, float)

    def alpha_dot(self, t):
        return -jnp.ones_like(jnp.asarray(t, float))

    def beta_dot(self, t):
        return jnp.ones_like(jnp.asarray(t, float))


class TrigonometricInterpolant(AbstractInterpolant):
    r"""$\alpha = \cos(\pi t / 2)$, $\beta = \sin(\pi t / 2)$: with $\gamma = 0$ and a
    Gaussian $x_0$, the variance-preserving path.

    **Arguments:**

    - `gamma`: the latent noise (default [`sdekit.interpolants.ZeroGamma`][]).
    """

    gamma: AbstractGamma = ZeroGamma()

    def alpha(self, t):
        return jnp.cos(jnp.pi * t / 2)

    def beta(self, t):
        return jnp.sin(jnp.pi * t / 2)

    def alpha_dot(self, t):
        return -jnp.pi / 2 * jnp.sin(jnp.pi * t / 2)

    def beta_dot(self, t):
        return jnp.pi / 2 * jnp.cos(jnp.pi * t / 2)


class EncoderDecoderInterpolant(AbstractInterpolant):
    r"""$\alpha = \cos^2(\pi t) 1_{t < 1/2}$, $\beta = \cos^2(\pi t) 1_{t > 1/2}$: $x_0$
    is encoded into pure noise at $t = 1/2$ and decoded into $x_1$.

    **Arguments:**

    - `gamma`: the latent noise (default [`sdekit.interpolants.SinSquaredGamma`][],
        which is 1 at $t = 1/2$ where $\alpha = \beta = 0$).
    """

    gamma: AbstractGamma = SinSquaredGamma()

    def alpha(self, t):
        return jnp.where(t < 0.5, jnp.cos(jnp.pi * t) ** 2, 0.0)

    def beta(self, t):
        return jnp.where(t > 0.5, jnp.cos(jnp.pi * t) ** 2, 0.0)

    def alpha_dot(self, t):
        return jnp.where(t < 0.5, -jnp.pi * jnp.sin(2 * jnp.pi * t), 0.0)

    def beta_dot(self, t):
        return jnp.where(t > 0.5, -jnp.pi * jnp.sin(2 * jnp.pi * t), 0.0)


class VPInterpolant(AbstractInterpolant):
    r"""The one-sided variance-preserving interpolant $x_t = \sqrt{1 - t^2}\, x_0 + t x_1$
    with $x_0 \sim \mathcal{N}(0, I)$ (the latent noise is $x_0$ itself, so $\gamma = 0$).
    $\dot\alpha$ is infinite at $t = 1$: training clips the times away from the ends.
    """

    gamma: AbstractGamma = ZeroGamma()

    def alpha(self, t):
        return jnp.sqrt(1 - jnp.asarray(t, float) ** 2)

    def beta(self, t):
        return jnp.asarray(t, float)

    def alpha_dot(self, t):
        return -t / self.alpha(t)

    def beta_dot(self, t):
        return jnp.ones_like(jnp.asarray(t, float))


class MirrorInterpolant(AbstractInterpolant):
    r"""$x_t = x_1 + \gamma(t) z$: from the data to itself through noise ($x_0$ is
    ignored; start its samplers at data points). Its velocity is
    $\dot\gamma \gamma\, s$, a denoiser's work.

    **Arguments:**

    - `gamma`: the latent noise (default [`sdekit.interpolants.SqrtGamma`][]).
    """

    gamma: AbstractGamma = SqrtGamma()

    def alpha(self, t):
        return jnp.zeros_like(jnp.asarray(t, float))

    def beta(self, t):
        return jnp.ones_like(jnp.asarray(t, float))

    def alpha_dot(self, t):
        return jnp.zeros_like(jnp.asarray(t, float))

    def beta_dot(self, t):
        return jnp.zeros_like(jnp.asarray(t, float))


INTERPOLANTS = ("linear", "trig", "encdec", "vp", "mirror")


def make_interpolant(name: str, gamma: str | None = None, a: float = 1.0):
    """An interpolant by its command-line name (`"linear"`, `"trig"`, `"encdec"`,
    `"vp"`, `"mirror"`), with `gamma` one of `"sqrt"`, `"sin2"`, `"zero"` (default:
    the interpolant's own) and noise level `a`."""
    classes = {
        "linear": LinearInterpolant,
        "trig": TrigonometricInterpolant,
        "encdec": EncoderDecoderInterpolant,
        "vp": VPInterpolant,
        "mirror": MirrorInterpolant,
    }
    if name not in classes:
        raise ValueError(
            f"Unknown interpolant {name!r}; choose one of {', '.join(INTERPOLANTS)}."
        )
    if gamma is None:
        return classes[name]()
    gammas = {"sqrt": SqrtGamma(a), "sin2": SinSquaredGamma(a), "zero": ZeroGamma()}
    if gamma not in gammas:
        raise ValueError(f"Unknown gamma {gamma!r}; choose one of sqrt, sin2, zero.")
    if not (isinstance(a, (int, float)) and math.isfinite(a) and a > 0):
        raise ValueError(f"The noise level `a` must be a positive number, got {a!r}.")
    if name == "vp" and gamma != "zero":
        raise ValueError(
            "The VP interpolant is one-sided: its noise is x0 itself; use gamma zero."
        )
    if name == "mirror" and gamma == "zero":
        raise ValueError("The mirror interpolant needs noise: use gamma sqrt or sin2.")
    return classes[name](gammas[gamma])
