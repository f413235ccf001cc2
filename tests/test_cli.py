"""The `sdekit` command line: `--version`, `sdekit bench`, and errors as one line on stderr."""

import json
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
    code = "import sys; from sdekit.cli import main; sys.exit(main())"
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


def test_bench_json_last_line():
    out = _run_cli(
        "bench",
        "--repeats", "1",
        "--steps", "5",
        "--batch", "4",
        "--number", "1",
        "--variants", "sdekit,lax_scan,torchsde",
        "--json",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    lines = out.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    # The table comes first, for people.
    assert any(line.startswith("sdekit ") for line in lines[:-1])
    assert result["problem"]["steps"] == 5 and result["problem"]["batch"] == 4
    assert result["repeats"] == 1
    for key in ("sdekit_ms", "lax_scan_ms", "sdekit_vs_lax_scan"):
        assert result[key] > 0, key
    # Variants not asked for are reported as null, not left out.
    assert result["diffrax_vbt_ms"] is None and result["diffrax_vbt_vs_sdekit"] is None
    if result["torchsde_ms"] is None:
        assert any("torchsde skipped" in note for note in result["notes"])
    else:
        assert result["torchsde_ms"] > 0 and result["torch_num_threads"] >= 1
    assert set(result["raw_ms"]["sdekit"]) and len(result["raw_ms"]["sdekit"]) == 1
    assert result["checks"]["losses_finite"]
    assert result["device"]["platform"] and result["versions"]["jax"]


def test_library_error_is_one_line_subprocess():
    out = _run_cli("bench", "--steps", "0")
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        "sdekit: error: `steps` must be a positive integer, got 0."
    ]


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["bench", "--repeats", "-1"], "`repeats` must be a positive integer"),
        (["bench", "--variants", "sdekit,nope"], "Unknown benchmark variant(s) ['nope']"),
    ],
)
def test_library_error_is_one_line(capsys, argv, fragment):
    assert main(argv) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sdekit: error: "), captured.err
    assert fragment in lines[0]
    assert captured.out == ""


@pytest.mark.parametrize("argv", [[], ["bench", "--steps", "many"], ["no-such-command"]])
def test_usage_errors_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_debug_reraises(monkeypatch):
    monkeypatch.setenv("SDEKIT_DEBUG", "1")
    with pytest.raises(ValueError, match="`steps` must be a positive integer"):
        main(["bench", "--steps", "0"])


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
    assert "bench" in _main.build_parser().format_help()
