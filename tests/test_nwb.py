"""The NWB loader on small files written here in the Neural Latents Benchmark layout."""

import datetime

import numpy as np
import pytest


pynwb = pytest.importorskip("pynwb")

from sdekit.data import load_nwb  # noqa: E402


RATE = 1000.0  # behaviour sampled at 1 kHz, as in the benchmark's files


def _write(path, *, heldout=True, split=True, gap_trial=None, conditions=True):
    """Six units (two held out) and eight 1-s trials with move onset at 0.4 s; spike
    times and hand velocity from a seeded generator. Returns what was written."""
    rng = np.random.default_rng(0)
    nwb = pynwb.NWBFile(
        session_description="test",
        identifier="sdekit-test",
        session_start_time=datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
    )
    starts = np.arange(8) * 1.5
    onsets = starts + 0.4
    if split:
        nwb.add_trial_column("split", "train / val / test")
    nwb.add_trial_column("move_onset_time", "movement onset (s)")
    if conditions:
        nwb.add_trial_column("trial_type", "target")
        nwb.add_trial_column("trial_version", "maze version")
    splits = ["train"] * 5 + ["val"] * 2 + ["test"]
    for i in range(8):
        extra = dict(trial_type=i % 2, trial_version=0) if conditions else {}
        if split:
            extra["split"] = splits[i]
        nwb.add_trial(
            start_time=starts[i],
            stop_time=starts[i] + 1.0,
            move_onset_time=onsets[i],
            **extra,
        )
    if heldout:
        nwb.add_unit_column("heldout", "held-out unit")
    end = starts[-1] + 1.5
    spikes = []
    for unit in range(6):
        times = np.sort(rng.uniform(0.0, end, 400))
        spikes.append(times)
        intervals = [[0.0, end]]
        if gap_trial is not None and unit == 1:
            # This unit was not recorded during one trial's window.
            g = starts[gap_trial]
            intervals = [[0.0, g], [g + 1.2, end]]
        extra = dict(heldout=unit >= 4) if heldout else {}
        nwb.add_unit(spike_times=times, obs_intervals=intervals, **extra)
    samples = int(end * RATE)
    velocity = rng.normal(size=(samples, 2))
    behavior = nwb.create_processing_module("behavior", "behaviour")
    behavior.add(
        pynwb.TimeSeries(
            name="hand_vel",
            data=velocity,
            unit="mm/s",
            rate=RATE,
            starting_time=0.0,
            comments="columns=[x,y]",
        )
    )
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return dict(spikes=spikes, onsets=onsets, velocity=velocity)


def test_bins_spikes_behaviour_and_conditions(tmp_path):
    path = tmp_path / "maze.nwb"
    written = _write(path)
    data = load_nwb(path, bin_ms=20, behavior_lag_ms=40)
    # Window (-250, 450) ms around move onset: 35 bins of 20 ms.
    assert data.num_bins == 35 and data.bin_ms == 20.0
    assert data.train.num_trials == 5 and data.test.num_trials == 2
    assert data.num_neurons == 6 and data.heldout_neurons == 2
    for trials, index in ((data.train, range(5)), (data.test, range(5, 7))):
        for row, trial in enumerate(index):
            edges = written["onsets"][trial] - 0.25 + 0.02 * np.arange(36)
            for unit in range(6):
                own = written["spikes"][unit]
                expected = np.array(
                    [np.sum((own >= a) & (own < b)) for a, b in zip(edges[:-1], edges[1:])]
                )
                # Held-out units (4, 5) come after the held-in ones: same order here.
                assert np.array_equal(trials.spikes[row, :, unit], expected)
            # Behaviour: the mean of the 1 kHz samples in each bin, 40 ms later.
            first = int(round((edges[0] + 0.04) * RATE))
            samples = written["velocity"][first : first + 35 * 20]
            expected_velocity = samples.reshape(35, 20, 2).mean(axis=1)
            np.testing.assert_allclose(trials.behavior[row], expected_velocity, atol=1e-12)
    assert list(data.train.conditions) == ["0/0", "1/0", "0/0", "1/0", "0/0"]


def test_heldout_units_move_last_and_forward_bins_extend_the_window(tmp_path):
    path = tmp_path / "maze.nwb"
    written = _write(path)
    data = load_nwb(path, bin_ms=50, forward_bins=4)
    assert data.num_bins == 14 + 4 and data.observed_bins == 14
    own = written["spikes"][0]
    end = written["onsets"][0] + 0.45
    expected = np.sum((own >= end) & (own < end + 0.05))
    assert data.train.spikes[0, 14, 0] == expected


def test_trials_outside_the_recorded_intervals_are_dropped(tmp_path):
    path = tmp_path / "gap.nwb"
    _write(path, gap_trial=2)
    data = load_nwb(path)
    assert data.train.num_trials == 4 and data.test.num_trials == 2


def test_without_split_or_flags(tmp_path):
    path = tmp_path / "plain.nwb"
    _write(path, heldout=False, split=False, conditions=False)
    data = load_nwb(path, heldout_neurons=3, behavior_field=None)
    assert data.heldout_neurons == 3
    assert data.train.num_trials + data.test.num_trials == 8
    assert data.test.num_trials == 1  # a seeded fifth
    assert data.train.behavior is None and data.train.conditions is None


def test_unreadable_and_incomplete_files(tmp_path):
    bad = tmp_path / "bad.nwb"
    bad.write_text("not an NWB file")
    with pytest.raises(ValueError, match="cannot be read as an NWB file") as info:
        load_nwb(bad)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="no such file"):
        load_nwb(tmp_path / "missing.nwb")
    path = tmp_path / "maze.nwb"
    _write(path)
    with pytest.raises(ValueError, match="trial_kind"):
        load_nwb(path, condition_fields=("trial_kind",))
    with pytest.raises(ValueError, match="--bin-ms"):
        load_nwb(path, bin_ms=0)
