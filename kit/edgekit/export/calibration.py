"""Calibration and parity inputs: windows of real audio from a directory, or a built-in
synthetic speech-like set.

The synthetic set (used when no --calibration directory is given, with a warning) is voiced
segments (a glottal-pulse-like harmonic series at 90-260 Hz with a drifting pitch, shaped by
three moving formant resonances), unvoiced noise bursts (fricatives) and near-silence, at
speech-like loudness (RMS 0.02-0.15). It spans the amplitude and spectral ranges an encoder sees,
but real speech from the deployment domain calibrates better.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError, require_module

SAMPLE_RATE = 16_000
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
SYNTHETIC_WARNING = ("no --calibration directory given: calibrating int8 on edgekit's built-in synthetic "
                     "speech-like set; real speech from your domain calibrates better")


def resample(x: np.ndarray, sr_in: int, sr_out: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling by FFT (exact for periodic signals, fine for calibration)."""
    if sr_in == sr_out:
        return x.astype(np.float32)
    n_out = int(round(len(x) * sr_out / sr_in))
    spec = np.fft.rfft(x.astype(np.float64))
    n_keep = min(len(spec), n_out // 2 + 1)
    out_spec = np.zeros(n_out // 2 + 1, dtype=np.complex128)
    out_spec[:n_keep] = spec[:n_keep]
    return (np.fft.irfft(out_spec, n=n_out) * (n_out / len(x))).astype(np.float32)


def read_audio(path: str | os.PathLike) -> np.ndarray:
    """One file -> mono float32 at 16 kHz."""
    sf = require_module("soundfile", "audio")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except RuntimeError as e:
        raise UserError(f"{path}: not readable audio ({' '.join(str(e).split())}); "
                        f"expected wav/flac/ogg") from None
    return resample(data.mean(axis=1), sr)


def windows(wave: np.ndarray, samples: int) -> list[np.ndarray]:
    """Non-overlapping windows of `samples`; a tail longer than half a window is zero-padded."""
    out = [wave[i:i + samples] for i in range(0, len(wave) - samples + 1, samples)]
    tail = len(wave) % samples
    if tail > samples // 2 or (not out and tail > 0):
        out.append(np.pad(wave[len(wave) - tail:], (0, samples - tail)))
    return out


def audio_windows(directory: str | os.PathLike, samples: int, limit: int = 64) -> list[np.ndarray]:
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"--calibration {directory}: not a directory; give a folder of wav/flac/ogg files")
    files = sorted(p for p in directory.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise UserError(f"--calibration {directory}: no .wav/.flac/.ogg files found; add speech recordings")
    out: list[np.ndarray] = []
    for f in files:
        out.extend(windows(read_audio(f), samples))
        if len(out) >= limit:
            break
    return out[:limit]


def synthetic_speech(samples: int, count: int, seed: int = 0) -> list[np.ndarray]:
    """The built-in calibration set described in the module docstring (deterministic per seed)."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / SAMPLE_RATE
    out = []
    for _ in range(count):
        f0 = rng.uniform(90, 260) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * t))
        phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
        voiced = np.zeros(samples)
        for h in range(1, 40):
            freq = h * f0
            gain = sum(np.exp(-((freq - fc) / bw) ** 2) for fc, bw in
                       ((rng.uniform(300, 900), 120), (rng.uniform(900, 2500), 200), (rng.uniform(2300, 3500), 300)))
            voiced += (gain + 0.02) / h * np.sin(h * phase) * (freq < SAMPLE_RATE / 2)
        noise = rng.standard_normal(samples)
        # syllable-rate envelope: voiced, unvoiced and silent stretches of 50-300 ms
        env_v, env_u = np.zeros(samples), np.zeros(samples)
        i = 0
        while i < samples:
            n = int(rng.uniform(0.05, 0.3) * SAMPLE_RATE)
            kind = rng.choice(3, p=(0.6, 0.25, 0.15))
            ramp = np.hanning(min(n, samples - i))
            (env_v if kind == 0 else env_u if kind == 1 else np.zeros(samples))[i:i + n] = ramp
            i += n
        x = voiced / (np.abs(voiced).max() + 1e-9) * env_v + 0.3 * noise * env_u + 1e-3 * noise
        x *= rng.uniform(0.02, 0.15) / (np.sqrt(np.mean(x ** 2)) + 1e-9)
        out.append(x.astype(np.float32))
    return out


def as_tensors(wins: list[np.ndarray]) -> list[torch.Tensor]:
    return [torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32)).view(1, -1) for w in wins]


def calibration_inputs(samples: int, directory: str | os.PathLike | None = None, count: int = 16,
                       seed: int = 0) -> tuple[list[torch.Tensor], str, list[str]]:
    """-> (inputs [1, samples] each, description for the manifest, warnings to show)."""
    if directory is None:
        return as_tensors(synthetic_speech(samples, count, seed)), f"built-in synthetic speech-like x{count}", \
            [SYNTHETIC_WARNING]
    wins = audio_windows(directory, samples, limit=count)
    return as_tensors(wins), f"{len(wins)} windows from {directory}", []


def parity_inputs(samples: int, count: int = 3, seed: int = 10_007) -> list[torch.Tensor]:
    """Held-out inputs for the parity gate: synthetic speech with a seed calibration never uses,
    plus one white-noise window (a wider input distribution than any calibration set)."""
    wins = synthetic_speech(samples, max(count - 1, 1), seed)
    wins.append((np.random.default_rng(seed).standard_normal(samples) * 0.05).astype(np.float32))
    return as_tensors(wins[:count])
