"""What `fit` says while it runs (issue 10, "runs that talk"): a compiling phase, then
rates and estimates that leave compilation out; plain lines when stderr is not a
terminal; a line on resume and on early stopping; nothing with `progress=False`."""

import io
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import jax.random as jr
import optax
from _train_script import mse_loss, shift_problem

from sdekit.train import fit
from sdekit.train._progress import EpochProgress


ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = pathlib.Path(__file__).with_name("_train_script.py")


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _early_stopping_run(**kwargs):
    # Trained towards 2u, validated against u: the validation loss turns up and early
    # stopping ends the run (tests/_train_script.py:shift_problem).
    model, train, valid = shift_problem(0)
    return fit(
        model,
        mse_loss,
        train,
        key=jr.key(0),
        optimizer=optax.adam(0.05),
        epochs=40,
        batch_size=16,
        valid_data=valid,
        patience=3,
        **kwargs,
    )


def test_plain_lines_when_stderr_is_not_a_terminal(capsys):
    result = _early_stopping_run()
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert lines[0] == "epoch 1 of 40: compiling the training step"
    assert re.fullmatch(r"compiled in \d+\.\d s; training", lines[1])
    epochs = [int(m.group(1)) for m in map(re.compile(r"epoch (\d+)/40 ").match, lines) if m]
    stop = result.epochs_run
    assert result.stopped_early and 4 < stop < 40
    # The first epoch, then one line a tenth of the run (every 4 epochs).
    assert epochs == [1] + list(range(4, stop + 1, 4))
    assert re.match(r"epoch 1/40 \(2%\): loss \S+, valid_loss \S+, valid_mae \S+; ", lines[2])
    assert re.search(r"; \S+ s/epoch, \S+ left$", lines[3])
    assert lines[-1] == (
        f"stopped early after epoch {stop} of 40: validation loss has not improved for "
        f"3 epochs; the best was epoch {result.best_epoch + 1} "
        f"(loss {result.best_metric:.4g})"
    )
    assert len(lines) == 2 + len(epochs) + 1


def test_progress_false_prints_nothing(capsys, tmp_path):
    _early_stopping_run(progress=False, checkpoint_dir=tmp_path / "run")
    _early_stopping_run(progress=False, checkpoint_dir=tmp_path / "run", resume=True)
    assert capsys.readouterr() == ("", "")


def test_a_line_on_resume(capsys, tmp_path):
    model, train, _ = shift_problem(1)
    kwargs = dict(key=jr.key(1), batch_size=16, checkpoint_dir=tmp_path / "run")
    fit(model, mse_loss, train, epochs=2, progress=False, **kwargs)
    fit(model, mse_loss, train, epochs=3, **kwargs)
    err = capsys.readouterr().err
    assert err.startswith(f"resumed from epoch 2 of 3 in {tmp_path / 'run'}\n")
    fit(model, mse_loss, train, epochs=3, **kwargs)
    err = capsys.readouterr().err
    assert err == (
        f"{tmp_path / 'run'}: this run has already finished (epoch 3 of 3, finished); "
        "nothing to train\n"
    )


def test_a_bar_on_a_terminal(monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    result = _early_stopping_run()
    text = terminal.getvalue()
    # tqdm's bar (carriage returns), compiling first and training after.
    assert "\r" in text and "compiling" in text
    assert text.index("compiling") < text.index("training")
    assert f"{result.epochs_run}/40" in text and "valid_loss=" in text
    assert "stopped early after epoch" in text
    assert "compiled in" not in text  # the log lines are for logs


def test_estimates_leave_compilation_out():
    # The first epoch takes 0.6 s (compilation), the others about 0.02 s.
    log = io.StringIO()
    lines = EpochProgress(total=10, initial=0, enabled=True, file=log)
    bar = EpochProgress(total=10, initial=0, enabled=True, file=_Terminal())
    for progress in (lines, bar):
        progress.compiling()
    time.sleep(0.6)
    for progress in (lines, bar):
        progress.compiled()
        progress.epoch_done(1, {"loss": "1"})
    for epoch in range(2, 11):
        time.sleep(0.02)
        for progress in (lines, bar):
            progress.epoch_done(epoch, {"loss": "1"})
    # Measured from the end of the first epoch: 0.02 s an epoch, not (0.6 + 0.02k) / k.
    seconds = [float(s) for s in re.findall(r"; (\S+) s/epoch", log.getvalue())]
    assert len(seconds) == 9 and max(seconds) < 0.2, log.getvalue()
    assert "with compilation" in log.getvalue().splitlines()[2]
    # tqdm's clock restarted after the first epoch: its elapsed time leaves out 0.6 s.
    assert bar.bar.initial == 1 and bar.bar.n == 10
    assert bar.bar.format_dict["elapsed"] < 0.5
    for progress in (lines, bar):
        progress.close()


def test_sigint_saves_and_says_so_with_output_redirected(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join(p for p in [env.get("PYTHONPATH"), str(ROOT)] if p)
    out = tmp_path / "interrupted.json"
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "interrupt", "--ckpt", str(tmp_path / "run"),
         "--out", str(out)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = []
    try:
        # stderr is a pipe, not a terminal: plain lines, the first epoch's among them.
        for line in proc.stderr:
            seen.append(line)
            if line.startswith("epoch 1/100000 "):
                break
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=120)[1]
    finally:
        proc.kill()
    assert proc.returncode == 0, "".join(seen) + rest
    assert seen[0] == "epoch 1 of 100000: compiling the training step\n"
    assert seen[1].startswith("compiled in ")
    data = json.loads(out.read_text())
    saved = json.loads((tmp_path / "run" / "state.json").read_text())["state"]
    assert data["checkpoint_dir"] == str(tmp_path / "run") and data["epochs"] == 100000
    assert data["epochs_completed"] == saved["epochs_completed"] >= 1
    assert f"after epoch {data['epochs_completed']} of 100000" in data["message"]
