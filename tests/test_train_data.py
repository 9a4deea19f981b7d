"""Audio folder data: resampling, crops and masks, deterministic split, unreadable files."""
import numpy as np
import pytest
import soundfile as sf
import torch

from edgekit.errors import UserError
from edgekit.train.data import AudioFolder, resample
from edgekit.train.synth import synth_corpus


def test_synth_writes_16k_mono_speech_like_files(tmp_path):
    r = synth_corpus(tmp_path, 3, seconds=(0.5, 0.8), method="synthetic")
    assert len(r.files) == 3 and r.method == "synthetic"
    wave, sr = sf.read(r.files[0])
    assert sr == 16000 and wave.ndim == 1 and 0.5 * 16000 - 1 <= len(wave) <= 0.8 * 16000 + 1
    assert np.abs(wave).max() > 0.1
    with pytest.raises(UserError):
        synth_corpus(tmp_path, 0)


def test_resample_keeps_a_tone():
    t = np.arange(44100) / 44100
    out = resample(np.sin(2 * np.pi * 440 * t).astype(np.float32), 44100, 16000)
    assert len(out) == 16000
    peak = np.argmax(np.abs(np.fft.rfft(out)))
    assert peak == 440  # 1 s: bin k is k Hz


def test_stereo_48k_file_is_mixed_and_resampled(tmp_path):
    sf.write(tmp_path / "a.flac", np.stack([np.full(48000, 0.2), np.full(48000, 0.4)], 1), 48000)
    data = AudioFolder(tmp_path, "all", crop_seconds=2.0)
    wave = data.read(0)
    assert wave.shape == (16000,) and abs(float(wave[8000]) - 0.3) < 1e-3
    b = data.batch([0], None)
    assert b.wave.shape == (1, 32000) and b.lengths.tolist() == [16000]
    assert b.padding_mask[0, 16000:].all() and not b.padding_mask[0, :16000].any()


def test_split_is_deterministic_and_disjoint(tmp_path):
    synth_corpus(tmp_path, 20, seconds=(0.3, 0.4), method="synthetic")
    a = AudioFolder(tmp_path, "train", valid_fraction=0.2)
    v = AudioFolder(tmp_path, "valid", valid_fraction=0.2)
    assert not set(a.files) & set(v.files) and len(a) + len(v) == 20
    assert AudioFolder(tmp_path, "valid", valid_fraction=0.2).files == v.files


def test_step_batches_do_not_depend_on_process_count(tmp_path):
    synth_corpus(tmp_path, 5, seconds=(0.5, 1.0), method="synthetic")
    data = AudioFolder(tmp_path, "all", crop_seconds=0.25)
    whole = data.step_batch(0, 3, 0, 4)
    parts = [data.step_batch(0, 3, 0, 4, rank=r, world_size=2) for r in range(2)]
    assert torch.equal(whole.wave, torch.cat([p.wave for p in parts]))
    assert not torch.equal(whole.wave, data.step_batch(0, 4, 0, 4).wave)


def test_unreadable_file_is_skipped_and_counted(tmp_path):
    synth_corpus(tmp_path, 3, seconds=(0.5, 0.6), method="synthetic")
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00not audio at all")
    data = AudioFolder(tmp_path, "all", crop_seconds=0.25)
    idx = data.files.index("broken.wav")
    with pytest.warns(UserWarning, match="skipping unreadable audio"):
        b = data.batch([idx, idx], np.random.default_rng(0))
    assert b.wave.shape == (2, 4000)
    assert data.skipped == 2  # each read of the broken file is counted
    assert data.read(idx) is None and data.skipped == 3


def test_missing_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        AudioFolder(tmp_path / "nope")
