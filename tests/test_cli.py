"""The `sdekit` command line: `--version`, and errors as one line on stderr."""

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

import sdekit
from sdekit.cli import _main, main


_ROOT = Path(sdekit.__file__).resolve().parents[1]


def _run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`sdekit ARGS` in a fresh interpreter, as the console script runs it."""
    environment = {**os.environ, **(env or {})}
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(_ROOT), environment.get("PYTHONPATH")])
    )
    environment.pop("SDEKIT_DEBUG", None)
    code = "from sdekit.cli import console; console()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=600,
    )


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"sdekit {sdekit.__version__}\n"


def test_library_error_is_one_line_subprocess():
    out = _run_cli("hurst", "--input", "x.npy", "--dt", "0.1", "--components", "1")
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        "sdekit: error: --components must be at least 2, got 1"
    ]


def test_an_answer_survives_the_prompt_exit(tmp_path):
    # `hurst` ends by os._exit after flushing: its output, piped, must be whole.
    import json

    import numpy as np

    series = np.cumsum(np.random.default_rng(0).standard_normal(64))
    np.save(tmp_path / "s.npy", series)
    out = _run_cli("hurst", "--input", str(tmp_path / "s.npy"), "--dt", "1", "--json")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("Hurst index H = ")
    assert 0 < json.loads(lines[-1])["hurst"] < 1


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["hurst", "--input", "x.npy", "--dt", "-1"], "--dt must be a positive number"),
        (["hurst", "--input", "missing.npy", "--dt", "1"], "missing.npy not found"),
    ],
)
def test_library_error_is_one_line(capsys, argv, fragment):
    assert main(argv) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sdekit: error: "), captured.err
    assert fragment in lines[0]
    assert captured.out == ""


@pytest.mark.parametrize("argv", [[], ["hurst", "--components", "many"], ["no-such-command"]])
def test_usage_errors_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_debug_reraises(monkeypatch):
    monkeypatch.setenv("SDEKIT_DEBUG", "1")
    with pytest.raises(ValueError, match="--components must be at least 2"):
        main(["hurst", "--input", "x.npy", "--dt", "1", "--components", "1"])


def test_registering_a_subcommand(monkeypatch, capsys):
    # A model family adds a module with `add_parser` and `run`, and one line in SUBCOMMANDS.
    family = types.ModuleType("fake_family_cli")

    def add_parser(subparsers):
        parser = subparsers.add_parser("fake", help="a fake family")
        parser.add_argument("path")
        return parser

    def run(args):
        if args.path == "missing.csv":
            raise FileNotFoundError(2, "No such file or directory", args.path)
        print(f"read {args.path}")
        return 0

    family.add_parser, family.run = add_parser, run
    monkeypatch.setitem(sys.modules, "fake_family_cli", family)
    monkeypatch.setattr(_main, "SUBCOMMANDS", (*_main.SUBCOMMANDS, "fake_family_cli"))

    assert main(["fake", "data.csv"]) == 0
    assert capsys.readouterr().out == "read data.csv\n"
    assert main(["fake", "missing.csv"]) == 1
    assert capsys.readouterr().err == "sdekit: error: No such file or directory: missing.csv\n"


def test_every_subcommand_module_is_complete():
    import importlib

    for name in _main.SUBCOMMANDS:
        module = importlib.import_module(name)
        assert callable(module.add_parser) and callable(module.run), name
    assert "hurst" in _main.build_parser().format_help()
    # The benchmarks are scripts in benchmarks/, outside the package (docs/benchmarks.md).
    assert "bench" not in _main.build_parser().format_help().split()
