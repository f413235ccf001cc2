r"""The controlled path $X(t)$ through the observations: Hermite cubic splines with
backward differences over [time, values, optional intensity] channels.

Everything here is JAX, so that a model can build its paths inside a jitted step
(e.g. after dropping extra observations as augmentation), and works on NumPy input
too.
"""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float


def fill_missing(
    times: Float[ArrayLike, " length"], values: Float[ArrayLike, "n length channels"]
) -> Float[Array, "n length channels"]:
    """Fill NaNs by linear interpolation in time, channel by channel.

    Before a channel's first observation (after its last) the first (last) observed
    value is used; a channel with no observation at all becomes 0, the training mean
    after normalisation.

    **Arguments:**

    - `times`: `(length,)` observation times.
    - `values`: `(n, length, channels)`, NaN where missing.

    **Returns:** a NaN-free array of the same shape; observed values are unchanged.
    """
    values = jnp.asarray(values)
    times = jnp.asarray(times, values.dtype)
    observed = ~jnp.isnan(values)
    clean = jnp.where(observed, values, 0.0)
    length = values.shape[1]
    index = jnp.broadcast_to(jnp.arange(length)[None, :, None], values.shape)
    # The nearest observation at or before / at or after each point.
    before = jax.lax.cummax(jnp.where(observed, index, -1), axis=1)
    after = jax.lax.cummin(jnp.where(observed, index, length), axis=1, reverse=True)
    has_before, has_after = before >= 0, after < length
    before, after = jnp.clip(before, 0, length - 1), jnp.clip(after, 0, length - 1)
    v0 = jnp.take_along_axis(clean, before, axis=1)
    v1 = jnp.take_along_axis(clean, after, axis=1)
    t, t0, t1 = times[index], times[before], times[after]
    weight = jnp.where(t1 > t0, (t - t0) / jnp.where(t1 > t0, t1 - t0, 1.0), 0.0)
    between = v0 + weight * (v1 - v0)
    filled = jnp.where(
        has_before & has_after,
        between,
        jnp.where(has_before, v0, jnp.where(has_after, v1, 0.0)),
    )
    return jnp.where(observed, values, filled)


def path_channels(
    times: Float[ArrayLike, " length"],
    values: Float[ArrayLike, "n length channels"],
    intensity: bool = False,
) -> Float[Array, "n length path_channels"]:
    """The channels the control path interpolates, `(n, length, 1 + C [+ C])`:
    the time rescaled to $[0, 1]$, the NaN-filled values, and with `intensity` the
    cumulative count of observations of each channel divided by the length (the
    official code's "observation intensity")."""
    values = jnp.asarray(values)
    times = jnp.asarray(times, values.dtype)
    n, length, _ = values.shape
    scaled = (times - times[0]) / (times[-1] - times[0])
    parts = [
        jnp.broadcast_to(scaled[None, :, None], (n, length, 1)),
        fill_missing(times, values),
    ]
    if intensity:
        observed = (~jnp.isnan(values)).astype(values.dtype)
        parts.append(jnp.cumsum(observed, axis=1) / length)
    return jnp.concatenate(parts, axis=-1)


class ControlPath(eqx.Module):
    """A batch of control paths through observations on shared times, evaluated
    together: `diffrax.CubicInterpolation` over the coefficients of
    `diffrax.backward_hermite_coefficients` for [`path_channels`][sdekit.data.path_channels].

    The path passes through every observation at its time (and through the linear
    fill of the missing ones). Outside the knots it is held at its end values
    (derivative zero), so a forecast may run past the input window.

    **Arguments:**

    - `times`: `(length,)` strictly increasing knots, `length >= 2`.
    - `values`: `(batch, length, channels)` observations, NaN where missing.
    - `intensity`: add the observation-intensity channels.
    """

    interpolation: dfx.CubicInterpolation

    def __init__(self, times, values, intensity: bool = False):
        values = jnp.asarray(values)
        times = jnp.asarray(times, values.dtype)
        if times.ndim != 1 or times.shape[0] < 2 or values.shape[1:2] != times.shape:
            raise ValueError(
                "A control path needs at least two times and values of shape "
                f"(batch, {times.shape[0]}, channels), got {values.shape}."
            )
        ys = jnp.moveaxis(path_channels(times, values, intensity), 1, 0)
        # diffrax wants time first; the batch and channel axes ride along as shape.
        coeffs = dfx.backward_hermite_coefficients(times, ys)
        self.interpolation = dfx.CubicInterpolation(times, coeffs)

    @property
    def channels(self) -> int:
        return self.interpolation.coeffs[0].shape[-1]

    def _clamp(self, t):
        ts = self.interpolation.ts
        return jnp.clip(t, ts[0], ts[-1])

    def evaluate(self, t) -> Float[Array, "batch channels"]:
        """$X(t)$ for every path in the batch."""
        return self.interpolation.evaluate(self._clamp(t))

    def derivative(self, t) -> Float[Array, "batch channels"]:
        """$\\dot X(t)$ for every path in the batch (zero outside the knots)."""
        ts = self.interpolation.ts
        inside = (t >= ts[0]) & (t <= ts[-1])
        return jnp.where(inside, self.interpolation.derivative(self._clamp(t)), 0.0)
