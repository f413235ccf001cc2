"""Training over several processes (several machines) with `jax.distributed`."""

import os

import jax
import numpy as np
from jax.experimental import multihost_utils


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(
            f"The environment variable {name}={value!r} must be an integer."
        ) from None


def _launched_by_a_cluster() -> bool:
    """Whether a launcher that `jax.distributed` can read started several processes
    (Slurm's `srun`, Open MPI's `mpirun`). A single-task job is left alone, so that an
    ordinary run under Slurm does not start a coordinator it does not need."""
    for name in ("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
        count = _env_int(name)
        if count is not None:
            return count > 1
    return False


def init_distributed(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
    """Join a multi-process run, so that [`sdekit.train.fit`][] trains data-parallel
    over the devices of every process.

    Call it once per process, before anything else uses JAX (the `sdekit` command calls
    it before a job runs). The settings come from, in order:

    1. the arguments (`--coordinator HOST:PORT --num-processes N --process-id I`);
    2. the environment variables `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES` and
        `JAX_PROCESS_ID`;
    3. a cluster launcher that JAX recognises, when it started more than one process:
        Slurm (`srun`) or Open MPI (`mpirun`); JAX reads their variables itself.

    With none of these, nothing happens and the run uses this process's devices alone.

    **Arguments:**

    - `coordinator`: `HOST:PORT` of process 0, reachable from every process.
    - `num_processes`: the number of processes.
    - `process_id`: this process's index, `0 <= process_id < num_processes`.

    **Returns:**

    `True` if this process joined a multi-process run, `False` if it runs alone.
    Raises a `ValueError` when the settings are incomplete or inconsistent.
    """
    coordinator = coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
    if num_processes is None:
        num_processes = _env_int("JAX_NUM_PROCESSES")
    if process_id is None:
        process_id = _env_int("JAX_PROCESS_ID")
    given = {
        "--coordinator": coordinator,
        "--num-processes": num_processes,
        "--process-id": process_id,
    }
    if all(value is None for value in given.values()):
        if not _launched_by_a_cluster():
            return False
        jax.distributed.initialize()
        return True
    missing = [name for name, value in given.items() if value is None]
    if missing:
        raise ValueError(
            f"A multi-process run needs {', '.join(given)}; {', '.join(missing)} "
            "missing (or set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and "
            "JAX_PROCESS_ID)."
        )
    assert num_processes is not None and process_id is not None
    if ":" not in str(coordinator):
        raise ValueError(
            f"--coordinator must be HOST:PORT (process 0's address), got {coordinator!r}."
        )
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise ValueError(
            f"--process-id must be in 0..{num_processes - 1} with --num-processes "
            f"{num_processes} >= 1, got --process-id {process_id}."
        )
    if num_processes == 1:
        return False
    jax.distributed.initialize(
        coordinator_address=coordinator,
        num_processes=num_processes,
        process_id=process_id,
    )
    return True


def is_main_process() -> bool:
    """Whether this process writes checkpoints and progress (process 0)."""
    return jax.process_index() == 0


def wait_for_everyone(name: str) -> None:
    """Block until every process reaches the same point (no-op for one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def check_same_everywhere(values: list[int], message: str) -> None:
    """Raise `ValueError(message)` on every process unless all processes passed the
    same `values` (no-op for one process)."""
    if jax.process_count() == 1:
        return
    gathered = multihost_utils.process_allgather(np.asarray(values, np.int64))
    if not np.all(gathered == gathered[0]):
        raise ValueError(f"{message} (per process: {gathered.tolist()})")
