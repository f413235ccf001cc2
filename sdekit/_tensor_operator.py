"""A lineax operator held as one array: the diffusion of scalar noise, and of general noise
on a state of any shape."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array, Float


class TensorOperator(lx.AbstractLinearOperator):
    r"""The linear map $w \mapsto \sum_k T_{\dots k} w_k$ held as the array $T$ of shape
    `(*out_shape, *in_shape)`: for scalar noise ($T = g$ shaped like the state, $w$ a
    scalar) and for general noise on a state of any shape ($T$ of shape
    `(*state, noise_dim)`).

    lineax's `PyTreeLinearOperator` holds the same array, but treats a $1 \times 1$
    operator as diagonal and then gives its output the input's shape (`()` for scalar
    noise on a one-component state); a `FunctionLinearOperator` holds a jaxpr, which
    diffrax's solvers cannot keep in their state or differentiate. This one is only
    the array, so solvers may store it (reversible Heun), differentiate it (Milstein) and
    batch it.
    """

    tensor: Float[Array, "*out_in"]
    out_ndim: int = eqx.field(static=True)

    def mv(self, vector):
        return jnp.tensordot(self.tensor, vector, axes=jnp.ndim(vector))

    def as_matrix(self):
        out_size = math.prod(self.tensor.shape[: self.out_ndim])
        return self.tensor.reshape(out_size, -1)

    def transpose(self):
        in_ndim = self.tensor.ndim - self.out_ndim
        axes = (*range(self.out_ndim, self.tensor.ndim), *range(self.out_ndim))
        return TensorOperator(jnp.transpose(self.tensor, axes), in_ndim)

    def in_structure(self):
        shape = self.tensor.shape[self.out_ndim :]
        return jax.ShapeDtypeStruct(shape, self.tensor.dtype)

    def out_structure(self):
        shape = self.tensor.shape[: self.out_ndim]
        return jax.ShapeDtypeStruct(shape, self.tensor.dtype)


# lineax asks every operator these questions through `functools.singledispatch`; the
# answers hold for any tensor (no structure is promised).
@lx.linearise.register(TensorOperator)
@lx.materialise.register(TensorOperator)
def _(operator):
    return operator


@lx.diagonal.register(TensorOperator)
def _(operator):
    return jnp.diagonal(operator.as_matrix())


@lx.tridiagonal.register(TensorOperator)
def _(operator):
    matrix = operator.as_matrix()
    return jnp.diagonal(matrix), jnp.diagonal(matrix, -1), jnp.diagonal(matrix, 1)


@lx.is_symmetric.register(TensorOperator)
@lx.is_diagonal.register(TensorOperator)
@lx.is_tridiagonal.register(TensorOperator)
@lx.has_unit_diagonal.register(TensorOperator)
@lx.is_lower_triangular.register(TensorOperator)
@lx.is_upper_triangular.register(TensorOperator)
@lx.is_positive_semidefinite.register(TensorOperator)
@lx.is_negative_semidefinite.register(TensorOperator)
def _(operator):
    return False


@lx.conj.register(TensorOperator)
def _(operator):
    return TensorOperator(jnp.conj(operator.tensor), operator.out_ndim)
