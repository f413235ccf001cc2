"""The benchmarks' building blocks (the scripts in `benchmarks/`, outside the package): the
memory analysis, that every variant of the speed benchmark solves the same SDE (so that their
timings compare like with like), and both scripts end to end at tiny sizes."""

import json
import math
import subprocess
import sys
from pathlib import Path

import diffrax as dfx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest


_BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
# The scripts import each other by name, as `python benchmarks/<name>.py` does.
sys.path.insert(0, str(_BENCHMARKS))

from adjoint_memory import adjoint_memory, compiled_memory  # noqa: E402
from solver_speed import (  # noqa: E402
    _diffrax_vbt_loss,
    _torch_mlp,
    euler_maruyama_scan,
    reference_problem,
    shared_increments_check,
    solver_speed,
    terminal_loss,
)


def test_compiled_memory_counts_arguments_outputs_and_temporaries():
    n = 1000

    def f(x):
        # The sorted copy must exist next to `x` while the cumulative sum is formed.
        return jnp.cumsum(jnp.sort(x)) + x

    fields = compiled_memory(f, jnp.ones(n, jnp.float32))
    assert fields["argument_bytes"] == 4 * n
    assert fields["output_bytes"] == 4 * n
    assert fields["temp_bytes"] >= 0
    assert fields["peak_bytes"] == (
        fields["argument_bytes"]
        + fields["output_bytes"]
        - fields["alias_bytes"]
        + fields["temp_bytes"]
    )
    bigger = compiled_memory(f, jnp.ones(10 * n, jnp.float32))
    assert bigger["peak_bytes"] >= 10 * fields["argument_bytes"]


def test_sdekit_matches_lax_scan_on_shared_increments(getkey):
    model, y0 = reference_problem(batch=5, dim=3, width=8, key=getkey())
    check = shared_increments_check(model, y0, steps=9, key=getkey())
    # Same grid, same increments, same arithmetic: equal up to float32 round-off.
    assert math.isclose(check["sdekit_loss"], check["lax_scan_loss"], rel_tol=1e-5)
    assert check["max_abs_diff_y1"] <= 1e-5 * max(1.0, check["max_abs_y1"])


def test_diffrax_vbt_variant_solves_the_same_sde(getkey):
    # The VirtualBrownianTree variant, fed to the scan through its own increments, gives the
    # same terminal states: the speed benchmark compares like with like.
    model, y0 = reference_problem(batch=3, dim=4, width=8, key=getkey())
    key = getkey()
    steps = 4  # dt = 0.25: diffrax's step times are exact in float32
    loss = _diffrax_vbt_loss(model, y0, key, steps=steps, t0=0.0, t1=1.0)
    grid = jnp.linspace(0.0, 1.0, steps + 1)

    def increments(key_i):
        bm = dfx.VirtualBrownianTree(0.0, 1.0, tol=0.5 / steps, shape=(4,), key=key_i)
        return jax.vmap(bm.evaluate)(grid[:-1], grid[1:])

    dw = jnp.swapaxes(jax.vmap(increments)(jr.split(key, 3)), 0, 1)
    expected = terminal_loss(euler_maruyama_scan(model, y0, grid, dw))
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_torch_networks_are_the_jax_networks(getkey):
    torch = pytest.importorskip("torch")
    model, y0 = reference_problem(batch=6, dim=4, width=8, key=getkey())
    for net, sigmoid in (("drift", False), ("diffusion", True)):
        mlp = getattr(model, net).mlp
        layers = [(np.asarray(linear.weight), np.asarray(linear.bias)) for linear in mlp.layers]
        torch_net = _torch_mlp(layers, sigmoid)
        with torch.no_grad():
            out = torch_net(torch.from_numpy(np.asarray(y0))).numpy()
        np.testing.assert_allclose(out, jax.vmap(mlp)(y0), rtol=1e-5, atol=1e-6)


def test_solver_speed_tiny():
    result = solver_speed(
        repeats=2, batch=3, steps=4, dim=2, width=4, variants="lax_scan,lax_scan_remat", number=1
    )
    assert result["variants"] == ["lax_scan", "lax_scan_remat"]
    assert len(result["raw_ms"]["lax_scan"]) == 2
    assert result["lax_scan_ms"] > 0 and result["lax_scan_remat_ms"] > 0
    assert result["sdekit_ms"] is None and result["sdekit_vs_lax_scan"] is None
    assert result["targets"]["sdekit_vs_best_scan"]["met"] is None
    assert result["sdekit_vs_best_scan"] is None
    # The same networks and increments, with and without rematerialisation.
    assert result["losses"]["lax_scan"] == pytest.approx(result["losses"]["lax_scan_remat"])


@pytest.mark.parametrize(
    "kwargs",
    [{"steps": 0}, {"repeats": 1.5}, {"batch": True}, {"variants": ["sdekit", "julia"]}],
)
def test_solver_speed_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        solver_speed(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [{"steps": ()}, {"steps": (10, -1)}, {"adjoints": ("backsolve",)}, {"calculus": "levy"}],
)
def test_adjoint_memory_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        adjoint_memory(**kwargs)


def test_adjoint_memory_tiny():
    result = adjoint_memory(
        steps=(4, 12), batch=2, dim=3, width=8, adjoints=("reversible",), repeats=1
    )
    rows = result["results"]["reversible"]
    assert [row["steps"] for row in rows] == [4, 12]
    for row in rows:
        assert row["peak_bytes"] > 0 and row["argument_bytes"] > 0 and row["ms_per_step"] > 0
        assert math.isfinite(row["loss"])
    assert result["growth"]["reversible"] == rows[1]["peak_bytes"] / rows[0]["peak_bytes"]
    # The reversible adjoint's gradient is that of backpropagation through the same solve.
    assert result["gradient_check"]["max_relative_difference"] < 1e-4


def test_solver_speed_script_prints_json_last_line():
    out = subprocess.run(
        [
            sys.executable,
            str(_BENCHMARKS / "solver_speed.py"),
            "--repeats", "1",
            "--steps", "5",
            "--batch", "4",
            "--number", "1",
            "--variants", "sdekit,lax_scan,lax_scan_remat,torchsde",
            "--json",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    # The table comes first, for people.
    assert any(line.startswith("sdekit ") for line in lines[:-1])
    assert result["problem"]["steps"] == 5 and result["problem"]["batch"] == 4
    for key in ("sdekit_ms", "lax_scan_ms", "lax_scan_remat_ms", "sdekit_vs_lax_scan"):
        assert result[key] > 0, key
    best = min(result["lax_scan_ms"], result["lax_scan_remat_ms"])
    assert result["sdekit_vs_best_scan"] == pytest.approx(result["sdekit_ms"] / best)
    # Variants not asked for are reported as null, not left out.
    assert result["diffrax_vbt_ms"] is None and result["diffrax_vbt_vs_sdekit"] is None
    if result["torchsde_ms"] is None:
        assert any("torchsde skipped" in note for note in result["notes"])
    else:
        assert result["torchsde_ms"] > 0 and result["torch_num_threads"] >= 1
    assert result["checks"]["losses_finite"]


def test_van_der_pol_spikes_load_and_follow_their_rates(tmp_path):
    # The generator of benchmarks/vdp_spikes.py writes what sdekit's loader reads, and
    # its counts are Poisson draws of its rates: the total count is within 4 standard
    # deviations (the Poisson variance is the mean) of the summed rates.
    from vdp_spikes import van_der_pol_spikes

    from sdekit.data import load_spikes

    arrays = van_der_pol_spikes(trials=50, bins=12, neurons=6, seed=3)
    np.savez(tmp_path / "vdp.npz", **arrays)
    data = load_spikes(tmp_path / "vdp.npz", heldout_neurons=2)
    assert data.train.spikes.shape == (40, 12, 6) and data.test.num_trials == 10
    assert data.num_heldin == 4
    rates = np.concatenate([arrays["train_rates"], arrays["test_rates"]])
    spikes = np.concatenate([arrays["train_spikes"], arrays["test_spikes"]])
    assert abs(spikes.sum() - rates.sum()) < 4 * math.sqrt(rates.sum())
    # The latent (kept as behaviour) sets the log-rates through one linear readout.
    latent = arrays["train_behavior"].reshape(-1, 2)
    log_rates = np.log(arrays["train_rates"]).reshape(-1, 6) - math.log(0.3)
    readout, *_ = np.linalg.lstsq(latent, log_rates, rcond=None)
    np.testing.assert_allclose(latent @ readout, log_rates, atol=1e-9)
