r"""Markov-approximate fractional Brownian motion (MA-fBM): speeds, optimal weights and
covariances.

Daems, Opper, Crevecoeur, Birdal, *Variational Inference for SDEs Driven by Fractional
Noise*, ICLR 2024 (arXiv:2310.12975), section 3 and appendix B. fBM of Hurst index $H$
is approximated by a weighted sum of $K$ Ornstein-Uhlenbeck processes driven by one
Brownian motion $W$,

$$\mathrm{d}Y_k = -\gamma_k Y_k\,\mathrm{d}t + \mathrm{d}W, \qquad
\hat B(t) = \sum_k \omega_k \big(Y_k(t) - Y_k(0)\big) \text{ (type I) or }
\sum_k \omega_k Y_k(t) \text{ (type II)},$$

with the weights $\omega(H)$ that minimise $\int_0^T \mathbb{E}[(B - \hat B)^2]\,
\mathrm{d}t$: the solution of a $K \times K$ linear system $A \omega = b$ in closed form.
"""

import functools as ft
import math
import warnings

import jax
import jax.core
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln
from jaxtyping import Array, ArrayLike, Float

from .._custom_types import MAfBMKind, MAfBMWeights


_KINDS = ("I", "II")
# The incomplete gamma functions are evaluated here rather than by jax.scipy: its
# e^z Q(a, z) overflows for large z, its derivative in `a` has no derivative of its
# own (no Hessian in H), and differentiating it compiles for tens of seconds. Below
# _SWITCH the power series of P, above it the continued fraction of Q; with these
# term counts both are accurate to ~1e-15 for a in [0.5, 2.5] (checked against SciPy).
_SWITCH = 3.0
_SERIES_TERMS = 32
_CF_TERMS = 40


def check_hurst(hurst) -> None:
    """Raise a `ValueError` unless a concrete `hurst` lies in the open interval (0, 1).
    Traced values (learnable $H$) are not checked."""
    if isinstance(hurst, jax.core.Tracer):
        return
    h = np.asarray(hurst)
    if h.size == 0 or not np.all(np.isfinite(h)) or np.any((h <= 0) | (h >= 1)):
        raise ValueError(
            f"The Hurst index must lie in the open interval (0, 1), got {hurst!r}. "
            "H = 0.5 is Brownian motion; learn H through a sigmoid to keep it inside."
        )


def check_kind(kind) -> None:
    if kind not in _KINDS:
        raise ValueError(
            f"`kind` must be 'I' (Mandelbrot-van Ness, stationary increments) or 'II' "
            f"(Riemann-Liouville, starts at rest), got {kind!r}."
        )


def mafbm_speeds(num_components: int, gamma_max: float) -> np.ndarray:
    r"""The speeds $\gamma_k = r^{k - (K+1)/2}$, $k = 1, \dots, K$, with
    $r = \gamma_{\max}^{2/(K-1)}$: a geometric grid from $1/\gamma_{\max}$ to
    $\gamma_{\max}$, centred on 1 (Daems et al. 2024, section 3.2).

    **Arguments:**

    - `num_components`: $K \ge 2$.
    - `gamma_max`: the largest speed, $> 1$.

    **Returns:** a float64 NumPy array of shape `(K,)`, increasing. ($K = 5$,
    $\gamma_{\max} = 20$ gives `[0.05, 0.2236, 1, 4.472, 20]`.)
    """
    if isinstance(num_components, bool) or not isinstance(
        num_components, (int, np.integer)
    ):
        raise ValueError(
            f"`num_components` (K) must be an int >= 2, got {num_components!r}."
        )
    if num_components < 2:
        raise ValueError(
            f"MA-fBM needs at least K = 2 Ornstein-Uhlenbeck components, got "
            f"K = {num_components}. K = 5 is a common choice; more gives a better "
            "approximation over a wider range of time scales."
        )
    gamma_max = float(gamma_max)
    if not (math.isfinite(gamma_max) and gamma_max > 1):
        raise ValueError(
            f"`gamma_max` must be a finite number > 1 (the speeds run from "
            f"1/gamma_max to gamma_max), got {gamma_max!r}."
        )
    k = np.arange(1, num_components + 1, dtype=np.float64)
    r = gamma_max ** (2.0 / (num_components - 1))
    return r ** (k - (num_components + 1) / 2)


def _kummer_series(a, z, terms):
    # sum_{n=0}^{terms-1} z^n / ((a+1)(a+2)...(a+n)) = M(1, a + 1, z), Kummer's function.
    # A `fori_loop`, not a Python loop: unrolled, reverse-mode through it takes XLA
    # tens of seconds to compile.
    def body(n, carry):
        term, total = carry
        term = term * z / (a + n)
        return term, total + term

    one = jnp.ones(jnp.broadcast_shapes(jnp.shape(a), jnp.shape(z)), z.dtype)
    return jax.lax.fori_loop(1, terms, body, (one, one))[1]


def _lower_series(a, z):
    # P(a, z) = z^a e^{-z} / Gamma(a + 1) M(1, a + 1, z).
    series = _kummer_series(a, z, _SERIES_TERMS)
    return jnp.exp(a * jnp.log(z) - z - gammaln(a + 1)) * series


def _exp_upper_cf(a, z):
    # e^z Q(a, z) = z^a / Gamma(a) * h, with h the continued fraction
    # 1/(z+1-a- 1(1-a)/(z+3-a- 2(2-a)/(z+5-a- ...))) (Abramowitz and Stegun 6.5.31),
    # by the modified Lentz method with a fixed number of terms.
    tiny = jnp.asarray(1e-300 if z.dtype == jnp.float64 else 1e-30, z.dtype)

    def guard(x):
        return jnp.where(jnp.abs(x) < tiny, tiny, x)

    def body(i, carry):
        b, c, d, h = carry
        an = -i * (i - a)
        b = b + 2
        d = 1 / guard(an * d + b)
        c = guard(b + an / c)
        return b, c, d, h * d * c

    b = z + 1 - a
    d = 1 / guard(b)
    c = jnp.full_like(d, 1 / tiny)
    h = jax.lax.fori_loop(1, _CF_TERMS, body, (b, c, d, d))[3]
    return jnp.exp(a * jnp.log(z) - gammaln(a)) * h


def _split(z):
    # Each branch sees only arguments in its range, so that neither produces a NaN
    # (whose gradient would leak through the `where`).
    large = z >= _SWITCH
    return large, jnp.where(large, 1.0, z), jnp.where(large, z, 2 * _SWITCH)


def regularized_gammainc(a: ArrayLike, z: ArrayLike) -> Array:
    r"""$P(a, z)$, the regularised lower incomplete gamma function, for $z > 0$:
    differentiable in $a$ and $z$ to any order (use $a \in [0.5, 2.5]$, where its
    accuracy is checked)."""
    a, z = jnp.asarray(a), jnp.asarray(z)
    large, z_s, z_l = _split(z)
    return jnp.where(
        large, 1 - jnp.exp(-z_l) * _exp_upper_cf(a, z_l), _lower_series(a, z_s)
    )


def exp_gammaincc(a: ArrayLike, z: ArrayLike) -> Array:
    r"""$e^{z} Q(a, z)$, with $Q$ the regularised upper incomplete gamma function,
    for $z > 0$, without overflow for large $z$ (where $e^z Q(a, z) \approx
    z^{a-1}/\Gamma(a)$; `exp(z) * gammaincc(a, z)` is `inf * 0` beyond $z \approx
    700$). The continued fraction of $\Gamma(a, z)$ above $z = 3$, the series of
    $P$ below; differentiable in $a$ and $z$ to any order.
    """
    a, z = jnp.asarray(a), jnp.asarray(z)
    large, z_s, z_l = _split(z)
    return jnp.where(
        large, _exp_upper_cf(a, z_l), jnp.exp(z_s) * (1 - _lower_series(a, z_s))
    )


def _psi(x, T):
    # T - (1 - e^{-x T}) / x = T (u - 1 + e^{-u}) / u with u = x T, which cancels
    # catastrophically for small u: there, its Taylor series.
    u = x * T
    small = u < 0.5
    u_s = jnp.where(small, u, 0.25)
    u_l = jnp.where(small, 1.0, u)
    # u/2! - u^2/3! + u^3/4! - ..., by Horner's rule.
    coefficients = [(-1) ** n / math.factorial(n) for n in range(15, 1, -1)]
    series = u_s * jnp.polyval(jnp.asarray(coefficients, u.dtype), u_s)
    direct = (u_l - 1 + jnp.exp(-u_l)) / u_l
    return T * jnp.where(small, series, direct)


def _type_one_b_scaled(alpha, u):
    # f(u) = 2u + e^{-u} - e^u Q(alpha, u) - u^alpha / Gamma(alpha + 1), so that
    # b_k = gamma_k^(-alpha-1) f(gamma_k T). Its terms are of order 1 while f is of order
    # u^(alpha+1) for small u; there use e^u P(alpha, u) = u^alpha / Gamma(alpha + 1)
    # M(1, alpha + 1, u) (Kummer's function), which gives the cancellation-free
    # f(u) = u^alpha / Gamma(alpha + 1) sum_{n>=1} u^n / (alpha+1)_n - 2 (sinh u - u).
    small = u < 1.0
    u_s = jnp.where(small, u, 0.5)
    u_l = jnp.where(small, 2.0, u)
    kummer = _kummer_series(alpha, u_s, 24) - 1
    # sinh u - u = u^3/3! + u^5/5! + ..., by Horner's rule in u^2.
    coefficients = [1 / math.factorial(2 * k + 1) for k in range(9, 0, -1)]
    sinh_minus = u_s**3 * jnp.polyval(jnp.asarray(coefficients, u.dtype), u_s**2)
    series = (
        jnp.exp(alpha * jnp.log(u_s) - gammaln(alpha + 1)) * kummer - 2 * sinh_minus
    )
    direct = (
        2 * u_l
        + jnp.exp(-u_l)
        - exp_gammaincc(alpha, u_l)
        - jnp.exp(alpha * jnp.log(u_l) - gammaln(alpha + 1))
    )
    return jnp.where(small, series, direct)


def omega_system(
    hurst: ArrayLike, gammas: ArrayLike, horizon: float, kind: MAfBMKind = "I"
) -> tuple[Array, Array, Array]:
    r"""The linear system of the optimal MA-fBM weights: $\int_0^T \mathbb{E}[(B(t) -
    \hat B(t))^2]\,\mathrm{d}t = \omega^\top A \omega - 2 b^\top \omega + c$
    (Daems et al. 2024, appendix B, propositions B.1 and B.2), with
    $\alpha = H + 1/2$ and $P$, $Q$ the regularised incomplete gamma functions:

    - type I: $A_{ij} = [2T + (e^{-\gamma_i T} - 1)/\gamma_i + (e^{-\gamma_j T} -
      1)/\gamma_j] / (\gamma_i + \gamma_j)$, $b_k = 2T\gamma_k^{-\alpha} -
      T^\alpha / (\gamma_k \Gamma(\alpha + 1)) + (e^{-\gamma_k T} - e^{\gamma_k T}
      Q(\alpha, \gamma_k T)) \gamma_k^{-\alpha - 1}$, $c = V_H T^{2H+1} / (2H + 1)$;
    - type II: $A_{ij} = [T + (e^{-(\gamma_i + \gamma_j) T} - 1)/(\gamma_i +
      \gamma_j)] / (\gamma_i + \gamma_j)$, $b_k = T \gamma_k^{-\alpha}
      P(\alpha, \gamma_k T) - \alpha \gamma_k^{-\alpha - 1} P(\alpha + 1, \gamma_k T)$,
      $c = T^{2H+1} / (2H (2H+1) \Gamma(\alpha)^2)$.

    The terms that cancel for small $\gamma_k T$ are evaluated by their series, and
    $e^z Q(\alpha, z)$ by [`sdekit.noise.exp_gammaincc`][]. Evaluated in the dtype of
    the inputs: use float64 (type-II $A$ has a condition number of about $10^7$ at
    $K = 5$ and $10^{16}$ at $K = 10$).

    **Returns:** `(A, b, c)` of shapes `(K, K)`, `(K,)`, `()`.
    """
    check_kind(kind)
    h = jnp.asarray(hurst)
    g = jnp.asarray(gammas, h.dtype)
    T = jnp.asarray(horizon, h.dtype)
    alpha = h + 0.5
    gsum = g[:, None] + g[None, :]
    if kind == "I":
        psi = _psi(g, T)
        A = (psi[:, None] + psi[None, :]) / gsum
        b = g ** (-alpha - 1) * _type_one_b_scaled(alpha, g * T)
        log_vh = -gammaln(2 * h + 1) - jnp.log(jnp.sin(jnp.pi * h))
        c = jnp.exp(log_vh) * T ** (2 * h + 1) / (2 * h + 1)
    else:
        A = _psi(gsum, T) / gsum
        b = T * g**-alpha * regularized_gammainc(alpha, g * T) - alpha * g ** (
            -alpha - 1
        ) * regularized_gammainc(alpha + 1, g * T)
        c = T ** (2 * h + 1) / (2 * h * (2 * h + 1) * jnp.exp(2 * gammaln(alpha)))
    return A, b, c


_WEIGHTS = ("optimal", "spectral")
# Relative ridge on the unit-diagonal (Jacobi-scaled) systems. Where A is well
# conditioned (type I; type II up to K = 5) it changes omega by about cond(A) * 1e-13;
# where A is numerically singular (type II, K >= 10) it picks, among the weights of
# (numerically) the same error, ones tens of times smaller, which keeps
# sum_k omega_k Y_k free of cancellation, and keeps omega smooth in H.
_RIDGE = 1e-13
_NUM_FREQUENCIES = 256


def check_weights(weights) -> None:
    if weights not in _WEIGHTS:
        raise ValueError(
            f"`weights` must be 'optimal' (Daems et al.: least squares error of the path "
            f"on [0, T]) or 'spectral' (least squares error of the transfer function "
            f"over the speeds' band), got {weights!r}."
        )


def spectral_system(hurst: ArrayLike, gammas: ArrayLike) -> tuple[Array, Array]:
    r"""The least-squares system of the spectral MA-fBM weights (sdekit's own, not
    Daems et al.'s).

    The fBM kernel $u^{H - 1/2}/\Gamma(H + 1/2)$ of both types has transfer function
    $(i\lambda)^{-\alpha}$, $\alpha = H + 1/2$; MA-fBM's kernel $\sum_k \omega_k
    e^{-\gamma_k u}$ has $\sum_k \omega_k / (\gamma_k + i\lambda)$. The spectral
    weights minimise the relative error $\sum_l |(i\lambda_l)^{\alpha} \sum_k
    \omega_k / (\gamma_k + i\lambda_l) - 1|^2$ over 256 frequencies spaced
    geometrically over the speeds' band $[\gamma_{\min}, \gamma_{\max}]$: the same
    relative accuracy at every time scale in the band, which is what a likelihood
    sees (the optimal weights of Daems et al. weight the error by the size of the
    path, so long time scales dominate them).

    **Returns:** `(M, rhs)`: the real form of the complex system, shapes
    `(512, K)` and `(512,)`.
    """
    h = jnp.asarray(hurst)
    g = jnp.asarray(gammas, h.dtype)
    lam = jnp.geomspace(g[0], g[-1], _NUM_FREQUENCIES)
    alpha = h + 0.5
    # (i lam)^alpha / (gamma + i lam), in real arithmetic.
    modulus = lam**alpha
    phase = jnp.pi * alpha / 2
    num_re, num_im = modulus * jnp.cos(phase), modulus * jnp.sin(phase)
    den = g[None, :] ** 2 + lam[:, None] ** 2
    re = (num_re[:, None] * g[None, :] + num_im[:, None] * lam[:, None]) / den
    im = (num_im[:, None] * g[None, :] - num_re[:, None] * lam[:, None]) / den
    M = jnp.concatenate([re, im])
    rhs = jnp.concatenate([jnp.ones_like(lam), jnp.zeros_like(lam)])
    return M, rhs


def _omega_direct(hurst, gammas, horizon, kind, weights):
    if weights == "optimal":
        A, b, _ = omega_system(hurst, gammas, horizon, kind)
    else:
        M, rhs = spectral_system(hurst, gammas)
        A, b = M.T @ M, M.T @ rhs
    scale = 1 / jnp.sqrt(jnp.diagonal(A))
    scaled = A * scale[:, None] * scale[None, :]
    scaled = scaled + _RIDGE * jnp.eye(A.shape[0], dtype=A.dtype)
    return scale * jnp.linalg.solve(scaled, scale * b)


@ft.cache
def _host_omega_fn(gammas: tuple[float, ...], horizon: float, kind: str, weights: str):
    # One compiled float64 function per configuration: the weights and their
    # derivative in H, by one forward-mode pass.
    def value_and_tangent(h):
        g = np.asarray(gammas, np.float64)
        return jax.jvp(
            lambda h_: _omega_direct(h_, g, horizon, kind, weights),
            (h,),
            (jnp.ones_like(h),),
        )

    return jax.jit(value_and_tangent)


def _host_omega(hurst, config, dtype):
    # Runs on the host in float64, whatever the caller's precision. (In XLA's callback
    # thread denormals are flushed to zero, which NumPy reports on its first float64
    # query: harmless here.)
    fn = _host_omega_fn(*config)
    with jax.enable_x64(True), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The value of the smallest subnormal")
        value, tangent = fn(jnp.asarray(np.asarray(hurst, np.float64)))
        return np.asarray(value, dtype), np.asarray(tangent, dtype)


def _callback_omega(hurst, config):
    dtype = jnp.asarray(hurst).dtype
    out = jax.ShapeDtypeStruct((len(config[0]),), dtype)
    return jax.pure_callback(
        ft.partial(_host_omega, config=config, dtype=dtype),
        (out, out),
        hurst,
        vmap_method="sequential",
    )


@ft.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _omega_float64_on_host(hurst, config):
    return _callback_omega(hurst, config)[0]


@_omega_float64_on_host.defjvp
def _omega_float64_on_host_jvp(config, primals, tangents):
    (hurst,), (dhurst,) = primals, tangents
    value, tangent = _callback_omega(hurst, config)
    return value, tangent * dhurst


def mafbm_omega(
    hurst: Float[ArrayLike, ""],
    gammas: Float[ArrayLike, " K"],
    horizon: float,
    kind: MAfBMKind = "I",
    weights: MAfBMWeights = "optimal",
) -> Float[Array, " K"]:
    r"""The MA-fBM weights $\omega(H)$, computed in float64 and differentiable in
    $H$: by default the optimal weights of Daems et al., $\omega = A^{-1} b$ (see
    [`sdekit.noise.omega_system`][]); with `weights="spectral"` the least-squares
    fit of the transfer function over the speeds' band (see
    [`sdekit.noise.spectral_system`][]).

    With `jax_enable_x64` on, this is plain JAX in float64: `jit`, `vmap` and
    derivatives of any order. With it off (float32 models), the weights and their
    first derivative in $H$ are still computed in float64, on the host (a
    `jax.pure_callback` around a float64 computation, with a custom JVP), then cast
    to `hurst`'s dtype: `jit`, `vmap`, `grad`, `jacfwd` and `jacrev` work, but only
    first derivatives in $H$ (no Hessians), and the host round trip costs about
    0.1 ms per call. Computing the weights in float32 instead would be wrong, not
    just imprecise: type-II $A$ is too ill-conditioned (Daems et al. report
    $\mathrm{d}\omega/\mathrm{d}H$ off by up to 50%).

    **Arguments:**

    - `hurst`: $H \in (0, 1)$, a scalar (may be traced).
    - `gammas`: the speeds, a concrete increasing array (see
        [`sdekit.noise.mafbm_speeds`][]).
    - `horizon`: $T > 0$, the interval $[0, T]$ on which the optimal weights
        minimise the error (unused by the spectral weights).
    - `kind`: `"I"` or `"II"` (the spectral weights are the same for both).
    - `weights`: `"optimal"` (default) or `"spectral"`.

    **Returns:** $\omega$, shape `(K,)`, in `hurst`'s floating dtype.
    """
    check_kind(kind)
    check_weights(weights)
    check_hurst(hurst)
    horizon = float(horizon)
    if not (math.isfinite(horizon) and horizon > 0):
        raise ValueError(f"`horizon` must be a positive number, got {horizon!r}.")
    hurst = jnp.asarray(hurst)
    if hurst.shape != ():
        raise ValueError(
            f"`hurst` must be a scalar, got shape {hurst.shape}; use jax.vmap for many."
        )
    if not jnp.issubdtype(hurst.dtype, jnp.floating):
        hurst = hurst.astype(jnp.result_type(float))
    gammas_np = np.asarray(gammas, np.float64)
    # Read as an attribute, which follows `jax.enable_x64(...)` contexts (jax's Config
    # declares its options at run time, unknown to a type checker).
    if jax.config.jax_enable_x64:  # pyright: ignore[reportAttributeAccessIssue]
        return _omega_direct(
            hurst.astype(jnp.float64), gammas_np, horizon, kind, weights
        ).astype(hurst.dtype)
    config = (tuple(float(g) for g in gammas_np), horizon, kind, weights)
    return _omega_float64_on_host(hurst, config)


def tail_variance(
    hurst: Float[ArrayLike, ""], omega: Float[ArrayLike, " K"], gammas: ArrayLike
) -> Float[Array, ""]:
    r"""The variance of the fine-scale part of fBM that MA-fBM leaves out: the
    spectral density of fBM above $\gamma_{\max}$ minus that of the approximation,

    $$v = \frac{1}{\pi}\Big[\frac{\gamma_{\max}^{-2H}}{2H} - \sum_{ij}
    \omega_i \omega_j \frac{\arctan(\gamma_i/\gamma_{\max}) +
    \arctan(\gamma_j/\gamma_{\max})}{\gamma_i + \gamma_j}\Big]_+ .$$

    Seen at time steps much longer than $1/\gamma_{\max}$ this part is white noise
    on the path's values, so adding independent $\mathcal{N}(0, \sigma^2 v)$ noise to
    each observation restores it: what sdekit's Hurst estimation does. It matters
    for small $H$ (its share of the variance of an increment over $\Delta$ falls only
    like $(\gamma_{\max}\Delta)^{-2H}$); for $H > 1/2$ it is negligible (and 0
    where the approximation has more fine-scale power than fBM).
    """
    h = jnp.asarray(hurst)
    omega = jnp.asarray(omega, h.dtype)
    g = jnp.asarray(gammas, h.dtype)
    top = g[-1]
    fbm_tail = top ** (-2 * h) / (2 * h)
    angle = jnp.arctan(g / top)
    approx_tail = jnp.sum(
        omega[:, None]
        * omega[None, :]
        * (angle[:, None] + angle[None, :])
        / (g[:, None] + g[None, :])
    )
    return jnp.maximum(fbm_tail - approx_tail, 0.0) / jnp.pi


def exact_covariance(
    hurst: Float[ArrayLike, ""],
    ts: Float[ArrayLike, " n"],
    ss: Float[ArrayLike, " m"] | None = None,
    kind: MAfBMKind = "I",
) -> Float[Array, "n m"]:
    r"""The covariance $\mathbb{E}[B(t) B(s)]$ of the fBM that MA-fBM approximates, in
    Daems et al.'s normalisation.

    - Type I (Mandelbrot-van Ness): $\tfrac{V_H}{2}(t^{2H} + s^{2H} - |t - s|^{2H})$
      with $V_H = 1 / (\Gamma(2H + 1) \sin \pi H)$. (The usual fBM, with
      $\mathrm{Var}\, B(1) = 1$, is this divided by $V_H$.)
    - Type II (Riemann-Liouville), $s \le t$:
      $\Gamma(\alpha)^{-2} \int_0^s (t-u)^{H-1/2}(s-u)^{H-1/2}\,\mathrm{d}u =
      \frac{s^{\alpha} t^{\alpha - 1}}{\alpha\, \Gamma(\alpha)^2}\,
      {}_2F_1(1 - \alpha, 1; 1 + \alpha; s/t)$, $\alpha = H + 1/2$, evaluated by
      SciPy (JAX's ${}_2F_1$ loses four digits as $s/t \to 1$), so $H$ and the times
      must be concrete.

    Times must be $\ge 0$. Use float64.
    """
    check_kind(kind)
    if kind == "II":
        return _exact_type_two_covariance(hurst, ts, ss)
    h = jnp.asarray(hurst)
    ts = jnp.asarray(ts, h.dtype if jnp.issubdtype(h.dtype, jnp.floating) else None)
    ss = ts if ss is None else jnp.asarray(ss, ts.dtype)
    t, s = ts[:, None], ss[None, :]
    vh = jnp.exp(-gammaln(2 * h + 1)) / jnp.sin(jnp.pi * h)
    return 0.5 * vh * (t ** (2 * h) + s ** (2 * h) - jnp.abs(t - s) ** (2 * h))


def _exact_type_two_covariance(hurst, ts, ss):
    if any(isinstance(x, jax.core.Tracer) for x in (hurst, ts, ss)):
        raise ValueError(
            "The exact type-II covariance is evaluated by SciPy: pass a concrete "
            "Hurst index and times (not traced under jit or grad)."
        )
    import scipy.special

    h = float(hurst)
    ts = np.asarray(ts, np.float64)
    ss = ts if ss is None else np.asarray(ss, np.float64)
    alpha = h + 0.5
    lo = np.minimum(ts[:, None], ss[None, :])
    hi = np.maximum(ts[:, None], ss[None, :])
    safe_hi = np.where(hi > 0, hi, 1.0)
    value = (
        lo**alpha
        * safe_hi ** (alpha - 1)
        / (alpha * scipy.special.gamma(alpha) ** 2)
        * scipy.special.hyp2f1(1 - alpha, 1.0, 1 + alpha, lo / safe_hi)
    )
    return jnp.asarray(np.where(lo > 0, value, 0.0))


def _component_covariance(gammas, ts, ss, kind):
    # Cov(Y_i(t), Y_j(s)) (type II, from rest at 0) or Cov(Y_i(t) - Y_i(0),
    # Y_j(s) - Y_j(0)) (type I, stationary start), shape (n, m, K, K).
    gi = gammas[None, None, :, None]
    gj = gammas[None, None, None, :]
    gsum = gi + gj
    t = ts[:, None, None, None]
    s = ss[None, :, None, None]

    def stationary(t, s):
        # Cov(Y_i(t), Y_j(s)) for stationary Y, any order of t and s.
        lag = t - s
        return (
            jnp.where(
                lag >= 0, jnp.exp(-gi * jnp.abs(lag)), jnp.exp(-gj * jnp.abs(lag))
            )
            / gsum
        )

    if kind == "I":
        zero = jnp.zeros_like
        return (
            stationary(t, s)
            - stationary(t, zero(s))
            - stationary(zero(t), s)
            + stationary(zero(t), zero(s))
        )
    lo = jnp.minimum(t, s)
    return stationary(t, s) * (-jnp.expm1(-gsum * lo))


def mafbm_covariance(
    omega: Float[ArrayLike, " K"],
    gammas: Float[ArrayLike, " K"],
    ts: Float[ArrayLike, " n"],
    ss: Float[ArrayLike, " m"] | None = None,
    kind: MAfBMKind = "I",
) -> Float[Array, "n m"]:
    r"""The covariance $\mathbb{E}[\hat B(t) \hat B(s)]$ of MA-fBM with weights
    `omega`, in closed form. Type II, $t \ge s$:
    $\sum_{ij} \omega_i \omega_j e^{-\gamma_i (t - s)}
    (1 - e^{-(\gamma_i + \gamma_j) s}) / (\gamma_i + \gamma_j)$; type I the same
    sums for the increments of stationary components.

    Times must be $\ge 0$.
    """
    check_kind(kind)
    omega = jnp.asarray(omega)
    gammas = jnp.asarray(gammas, omega.dtype)
    ts = jnp.asarray(ts, omega.dtype)
    ss = ts if ss is None else jnp.asarray(ss, omega.dtype)
    cov = _component_covariance(gammas, ts, ss, kind)
    return jnp.einsum("i,nmij,j->nm", omega, cov, omega)
