"""SDESolution: what solve() returns."""

import diffrax as dfx
import equinox as eqx
from jaxtyping import Array, Bool, Float, PyTree


class SDESolution(eqx.Module):
    """The output of [`sdekit.solve`][].

    **Attributes:**

    - `ts`: save times, shape `(batch, n)`; padded entries repeat a path's last time.
    - `ys`: the paths at `ts`, shape `(batch, n, *state)` (for a tuple state such as
        the underdamped Langevin `(x, v)`, a tuple of such arrays).
    - `mask`: `(batch, n)` booleans, `False` on padding (paths with fewer times).
    - `stats`: diffrax's solver statistics per path (`num_steps`,
        `num_accepted_steps`, `num_rejected_steps`, `max_steps`), each `(batch,)`.
    - `result`: diffrax's `RESULTS` per path.
    """

    ts: Float[Array, "batch n"]
    ys: PyTree[Float[Array, "batch n ?*state"]]
    mask: Bool[Array, "batch n"]
    stats: dict[str, Array]
    result: dfx.RESULTS
