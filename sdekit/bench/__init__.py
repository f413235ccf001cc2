"""Benchmarks of sdekit against its alternatives, as functions returning JSON-serialisable dicts.

The scripts in `benchmarks/` and `sdekit bench` call these and print their results; the figures
measured so far are on the documentation's benchmarks page.
"""

from ._adjoint_memory import (
    adjoint_memory as adjoint_memory,
    compiled_memory as compiled_memory,
    format_adjoint_memory as format_adjoint_memory,
    memory_fields as memory_fields,
)
from ._solver_speed import (
    format_solver_speed as format_solver_speed,
    reference_problem as reference_problem,
    shared_increments_check as shared_increments_check,
    solver_speed as solver_speed,
    VARIANTS as VARIANTS,
)
