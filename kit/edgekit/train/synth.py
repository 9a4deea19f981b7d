"""A small speech-like corpus for trying the training commands on a fresh machine.

With espeak-ng installed, each utterance is a random pseudo-sentence spoken by espeak-ng
(`espeak-ng -w FILE`), resampled to 16 kHz. Without it, a documented synthetic signal stands in
for speech; it is not speech, but it has the structure the encoders are built for:

- syllables of 80-300 ms, each a vowel-like voiced segment optionally preceded by a
  fricative-like noise burst (a consonant) of 30-90 ms;
- the voiced source is a glottal-like pulse train (harmonics 1..40 with a -12 dB/octave
  roll-off) at a fundamental that drifts smoothly between 90 and 250 Hz per utterance;
- the source is shaped by three formant resonances (F1 300-850 Hz, F2 850-2400 Hz,
  F3 2400-3200 Hz; bandwidths 80/120/160 Hz), and each syllable cross-fades over 50 ms from
  the previous syllable's formants to its own, as in a vowel transition;
- raised-cosine amplitude envelopes per syllable, 50-250 ms pauses between words, and a
  -45 dB noise floor so no sample is exactly silent.

Files are written atomically (temporary file, then os.replace) so an interrupted run never
leaves a truncated wav behind.
"""
from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError, require_module

SAMPLE_RATE = 16_000
_SYLLABLES = ("ba", "ko", "mi", "ta", "ne", "su", "ri", "po", "la", "de", "gu", "fi", "sha", "vo", "zen")


@dataclass(frozen=True)
class SynthResult:
    out_dir: str
    files: tuple[str, ...]
    seconds: float
    method: str  # "espeak-ng" or "synthetic"


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def _formant_filter(x: np.ndarray, formants: np.ndarray, bandwidths: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """Filter x by a sum of two-pole resonances (one per formant), applied in the frequency
    domain: vectorised, so a corpus of hundreds of files takes seconds, not minutes."""
    n = len(x)
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    resp = np.zeros_like(f)
    for fc, bw, g in zip(formants, bandwidths, gains):
        resp += g / np.sqrt(1.0 + ((f - fc) / (bw / 2.0)) ** 2)
    return np.fft.irfft(spec * resp, n)


def synthetic_utterance(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """One speech-like utterance of about `seconds` (see the module docstring), float32 in [-1, 1]."""
    total = int(seconds * SAMPLE_RATE)
    pieces: list[np.ndarray] = []
    f0_base = rng.uniform(90, 250)
    formant_prev = np.array([rng.uniform(300, 850), rng.uniform(850, 2400), rng.uniform(2400, 3200)])
    n = 0
    while n < total:
        for _ in range(int(rng.integers(1, 4))):  # syllables in a word
            if rng.random() < 0.6:  # consonant: band-passed noise burst
                m = int(rng.uniform(0.03, 0.09) * SAMPLE_RATE)
                noise = rng.standard_normal(m)
                burst = _formant_filter(noise, np.array([rng.uniform(2500, 6000)]), np.array([800.0]),
                                        np.array([1.0]))
                pieces.append(0.3 * burst * np.hanning(m))
            m = int(rng.uniform(0.08, 0.3) * SAMPLE_RATE)
            t = np.arange(m) / SAMPLE_RATE
            f0 = f0_base * (1.0 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 3.0) * t + rng.uniform(0, 6.3)))
            phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
            k = np.arange(1, 41)[:, None]
            audible = (k * f0[None, :]) < SAMPLE_RATE / 2
            source = (np.sin(k * phase[None, :]) / (k ** 2) * audible).sum(axis=0)
            target = np.array([rng.uniform(300, 850), rng.uniform(850, 2400), rng.uniform(2400, 3200)])
            bws, gains = np.array([80.0, 120.0, 160.0]), np.array([1.0, 0.6, 0.3])
            ramp = np.minimum(1.0, t / 0.05)  # 50 ms transition from the previous vowel
            voiced = (_formant_filter(source, formant_prev, bws, gains) * (1 - ramp)
                      + _formant_filter(source, target, bws, gains) * ramp)
            env = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(m) / max(m - 1, 1))
            pieces.append(voiced * env)
            formant_prev = target
        pieces.append(np.zeros(int(rng.uniform(0.05, 0.25) * SAMPLE_RATE)))
        n = sum(len(p) for p in pieces)
    wave = np.concatenate(pieces)[:total]
    wave = wave / (np.abs(wave).max() + 1e-9) * 0.7
    wave = wave + rng.standard_normal(total) * 10 ** (-45 / 20) * 0.7
    return wave.astype(np.float32)


def _espeak_utterance(rng: random.Random, seconds: float, tmp_dir: str) -> np.ndarray:
    sf = require_module("soundfile", "audio")
    from .data import resample

    words = " ".join("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 3)))
                     for _ in range(max(2, int(seconds * 2.5))))
    path = os.path.join(tmp_dir, "espeak.wav")
    speed = str(rng.randint(140, 190))
    pitch = str(rng.randint(20, 80))
    subprocess.run(["espeak-ng", "-w", path, "-s", speed, "-p", pitch, words], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wave, sr = sf.read(path, dtype="float32", always_2d=True)
    return resample(wave.mean(axis=1), sr, SAMPLE_RATE)


def write_wav(path: str | Path, wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write a 16-bit PCM wav atomically."""
    sf = require_module("soundfile", "audio")
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".wav.tmp")
    os.close(fd)
    try:
        sf.write(tmp, wave, sample_rate, subtype="PCM_16", format="WAV")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def synth_corpus(out_dir: str | Path, n: int, seconds: tuple[float, float] = (2.0, 5.0), seed: int = 0,
                 method: str = "auto") -> SynthResult:
    """Write n utterances of seconds[0]..seconds[1] to out_dir/utt_XXXXX.wav.

    method: "auto" (espeak-ng when installed, else synthetic), "espeak-ng" or "synthetic".
    """
    if n <= 0:
        raise UserError(f"--n {n} is not a positive number of files; give e.g. --n 100")
    lo, hi = seconds
    if not (0 < lo <= hi):
        raise UserError(f"utterance length range {seconds} is invalid; expected 0 < min <= max seconds")
    if method not in ("auto", "espeak-ng", "synthetic"):
        raise UserError(f"synthesis method {method!r} is unknown; expected auto, espeak-ng or synthetic")
    if method == "auto":
        method = "espeak-ng" if espeak_available() else "synthetic"
    if method == "espeak-ng" and not espeak_available():
        raise UserError("espeak-ng was asked for but is not on PATH; install it (apt-get install espeak-ng) "
                        "or use the synthetic signal")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng_np = np.random.default_rng(seed)
    rng_py = random.Random(seed)
    files, total = [], 0.0
    with tempfile.TemporaryDirectory() as tmp_dir:
        for i in range(n):
            length = float(rng_np.uniform(lo, hi))
            if method == "espeak-ng":
                wave = _espeak_utterance(rng_py, length, tmp_dir)
            else:
                wave = synthetic_utterance(rng_np, length)
            path = out / f"utt_{i:05d}.wav"
            write_wav(path, wave)
            files.append(str(path))
            total += len(wave) / SAMPLE_RATE
    return SynthResult(str(out), tuple(files), total, method)
