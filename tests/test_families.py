"""The family registry and the command line's routing: `sdekit fit --model NAME` finds
the family by the model name, `--checkpoint DIR` by the family the checkpoint records,
and a new family plugs in with one registration."""

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from sdekit import _families
from sdekit.cli import _jobs, _main


_ROOT = Path(__file__).resolve().parents[1]


def _toy_jobs_module(calls: list) -> types.ModuleType:
    """A family of one model whose fit writes a checkpoint-like directory: what a new
    family provides, and nothing else."""

    def add_fit_arguments(parser):
        parser.add_argument("--width", type=int, default=3, help="the toy's width")

    def fit(args):
        calls.append(("fit", args.model, args.width, args.seed, args.out))
        os.makedirs(args.out)
        with open(os.path.join(args.out, "config.json"), "w") as f:
            json.dump({"family": "toy", "width": args.width}, f)
        return {"model": args.model, "width": args.width, "seed": args.seed}

    def evaluate(args):
        calls.append(("evaluate", args.checkpoint))
        with open(os.path.join(args.checkpoint, "config.json")) as f:
            return {"width": json.load(f)["width"]}

    def describe(report):
        return f"toy report {sorted(report)}"

    module = types.ModuleType("toy_family_jobs")
    module.JOBS = {
        "fit": _families.Job(add_fit_arguments, fit, describe, help="fit the toy"),
        "evaluate": _families.Job(lambda parser: None, evaluate, describe),
    }
    return module


@pytest.fixture
def toy_family(monkeypatch):
    calls: list = []
    monkeypatch.setitem(sys.modules, "toy_family_jobs", _toy_jobs_module(calls))
    # The one registration line a new family adds.
    toy = _families.Family("toy", models=("toy-model",), jobs="toy_family_jobs")
    monkeypatch.setattr(_families, "FAMILIES", (*_families.FAMILIES, toy))
    monkeypatch.setattr("sdekit.train.enable_compilation_cache", lambda: None)
    monkeypatch.delenv("SDEKIT_DEBUG", raising=False)
    return calls


def test_a_family_plugs_in_with_one_registration(toy_family, tmp_path, capsys):
    out = str(tmp_path / "run")
    argv = ["fit", "--model", "toy-model", "--width", "7", "--out", out, "--json"]
    assert _main.main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert json.loads(lines[-1]) == {"model": "toy-model", "width": 7, "seed": 0}
    assert lines[0].startswith("toy report")
    assert toy_family == [("fit", "toy-model", 7, 0, out)]

    # The checkpoint names its family: no --model needed.
    assert _main.main(["evaluate", "--checkpoint", out, "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"width": 7}

    # A job the family does not offer is one clear line, not a traceback.
    assert _main.main(["sample", "--checkpoint", out, "-n", "3", "--out", "x.npy"]) == 1
    err = capsys.readouterr().err
    assert "toy family has no `sdekit sample` job" in err


def test_family_options_in_family_help(toy_family, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _main.main(["fit", "--model", "toy-model", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--width" in text and "--resume" in text and "--overwrite" in text


def test_fit_help_lists_every_family(toy_family, capsys):
    assert _main.main(["fit", "--help"]) == 0
    text = capsys.readouterr().out
    for family in _families.FAMILIES:
        assert family.name in text
        for model in family.models:
            assert model in text


def test_job_help_lists_the_families_that_offer_it(toy_family, capsys):
    # The toy family has fit and evaluate only: it is listed under evaluate, not sample.
    assert _main.main(["evaluate", "--help"]) == 0
    assert "toy: models toy-model" in capsys.readouterr().out
    assert _main.main(["sample", "--help"]) == 0
    text = capsys.readouterr().out
    assert "toy" not in text
    for family in _families.FAMILIES:
        offered = "sample" in family.load_jobs()
        assert (f"  {family.name}: models" in text) == offered, family.name


def test_routing_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SDEKIT_DEBUG", raising=False)
    assert _main.main(["fit", "--model", "transformer"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("sdekit: error: Unknown model 'transformer'")
    assert "lnsde" in err

    assert _main.main(["evaluate", "--checkpoint", str(tmp_path / "none")]) == 1
    assert "does not exist" in capsys.readouterr().err

    assert _main.main(["evaluate", "--checkpoint", str(tmp_path)]) == 1
    assert "not an sdekit checkpoint" in capsys.readouterr().err

    (tmp_path / "config.json").write_text(json.dumps({"family": "nope"}))
    assert _main.main(["predict", "--checkpoint", str(tmp_path), "--data", "x",
                       "--out", "y.npy"]) == 1  # fmt: skip
    assert "Unknown model family 'nope'" in capsys.readouterr().err

    with pytest.raises(SystemExit) as exit_info:
        _main.main(["evaluate"])
    assert exit_info.value.code == 2
    assert "--checkpoint" in capsys.readouterr().err


def test_every_registered_family_loads():
    seen = set()
    for family in _families.FAMILIES:
        jobs = family.load_jobs()
        assert {"fit", "evaluate"} <= set(jobs)
        assert not seen & set(family.models), "two families claim one model name"
        seen |= set(family.models)


def test_old_checkpoints_are_the_stable_familys(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model": "lsde"}))
    assert _families.family_of_checkpoint(tmp_path).name == "stable"


def test_resume_command_names_the_run():
    command = _jobs._resume_command(["--model", "lsde", "--overwrite", "--out", "r"])
    assert command == "sdekit fit --model lsde --out r --resume"


def test_help_and_version_import_nothing_heavy():
    # Not a timing test: what makes them slow is importing JAX, so check that nothing
    # imports it before argparse answers.
    code = (
        "import sys; from sdekit.cli import main\n"
        "for argv in (['--help'], ['--version'], ['fit', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = [m for m in ('jax', 'numpy', 'equinox') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(_ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout
