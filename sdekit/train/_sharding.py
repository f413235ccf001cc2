"""Data parallelism for `fit`: a one-axis device mesh with each minibatch split along it.

The model and optimiser state are replicated on every device and each minibatch is split
along its leading axis; the jitted training step is then left to XLA's SPMD partitioner,
which inserts the all-reduce of the gradients. No `pmap`, no hand-written collectives.

The same code runs on several processes (`jax.distributed`): the mesh then spans every
process's devices, each process builds only the shards of its own devices (from the same
host data, which every process holds), and the compiled step is the same program on all
of them.
"""

from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.tree_util as jtu
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


BATCH_AXIS = "batch"


def make_mesh(
    devices: Sequence[jax.Device] | None = None,  # pyright: ignore[reportInvalidTypeForm]
) -> Mesh:
    """Build the one-dimensional data-parallel mesh, with axis name `"batch"`.

    **Arguments:**

    - `devices`: the devices to train on. Defaults to `jax.devices()`: every device of
        every process (those of this process when it runs alone).

    **Returns:**

    A `jax.sharding.Mesh` over `devices`.
    """
    if devices is None:
        devices = jax.devices()
    devices = list(devices)
    if len(devices) == 0:
        raise ValueError(
            "`devices` is empty. Pass at least one device, or `devices=None` to train "
            "on all of `jax.local_devices()`."
        )
    if len(set(devices)) != len(devices):
        raise ValueError(
            f"`devices` lists a device more than once: {devices}. Pass each device once."
        )
    return Mesh(np.asarray(devices), (BATCH_AXIS,))


def num_devices(mesh: Mesh) -> int:
    return mesh.devices.size


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    """Raise a `ValueError` unless `batch_size` splits evenly over the mesh."""
    count = num_devices(mesh)
    if batch_size % count != 0:
        lower = (batch_size // count) * count
        suggestion = f"{lower} or {lower + count}" if lower > 0 else f"{count}"
        raise ValueError(
            f"The batch size {batch_size} is not divisible by the number of devices "
            f"({count}), so minibatches cannot be split evenly across them. Use a batch "
            f"size that is a multiple of {count} (e.g. {suggestion}), or pass "
            "`devices=` with fewer devices."
        )


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(BATCH_AXIS))


def _spans_processes(mesh: Mesh) -> bool:
    return any(d.process_index != jax.process_index() for d in mesh.devices.flat)


def _put(x: Any, mesh: Mesh, sharding: NamedSharding) -> jax.Array:
    """`x` (the same host value on every process) placed with `sharding` on `mesh`."""
    if not _spans_processes(mesh):
        return jax.device_put(x, sharding)
    # `device_put` cannot reach other processes' devices; each process builds the
    # shards of its own devices from its copy of the value.
    host = np.asarray(host_local(x))
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def host_local(x: Any) -> Any:
    """A replicated array as a value this process can read (a NumPy array when the
    array spans several processes); anything else unchanged."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.asarray(x.addressable_data(0))
    return x


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place a copy of every array leaf of `tree` on every device of `mesh`.

    Non-array leaves (activation functions, Python flags) are returned unchanged.
    """
    sharding = replicated(mesh)
    return jtu.tree_map(
        lambda x: _put(x, mesh, sharding) if eqx.is_array(x) else x, tree
    )


def replicate_batch(batch: Any, mesh: Mesh) -> Any:
    """Place a whole (e.g. trailing, indivisible) batch on every device of `mesh`."""
    sharding = replicated(mesh)
    return jtu.tree_map(lambda x: _put(x, mesh, sharding), batch)


def shard_batch(batch: Any, mesh: Mesh) -> Any:
    """Place a minibatch with its leading (example) axis split across `mesh`."""
    sharding = batch_sharded(mesh)
    return jtu.tree_map(lambda x: _put(x, mesh, sharding), batch)


def constrain_replicated(tree: Any, mesh: Mesh) -> Any:
    """Inside `jit`: ask the partitioner to keep every array leaf of `tree` replicated.

    Without this, XLA is free to leave updated parameters sharded, and the next step
    would then see inputs with a different sharding and recompile.
    """
    sharding = replicated(mesh)
    return jtu.tree_map(
        lambda x: (
            jax.lax.with_sharding_constraint(x, sharding) if eqx.is_array(x) else x
        ),
        tree,
    )
