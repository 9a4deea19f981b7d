"""Audio folder data: files found under a directory (or listed in a file list), read with
soundfile, mixed to mono, resampled to 16 kHz, cut into random crops with padding masks.

Batches are a pure function of (seed, step, micro-batch): the trainer asks for the global batch of
an optimizer step and each process takes its own slice. That is what makes a 2-process run
equal a 1-process run with the combined batch, and `--resume` continue exactly, without any
sampler state to save.

A file that cannot be read is skipped with a warning and counted (`AudioFolder.skipped`);
a batch is refilled from the next files so a corrupt file never stops an epoch.
"""
from __future__ import annotations

import os
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError, require_module

SAMPLE_RATE = 16_000
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")


def resample(wave: np.ndarray, orig_sr: int, new_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling by FFT (zero-padding or truncating the spectrum)."""
    if orig_sr == new_sr or len(wave) == 0:
        return wave.astype(np.float32)
    n_out = max(1, int(round(len(wave) * new_sr / orig_sr)))
    spec = np.fft.rfft(wave.astype(np.float64))
    n_bins = n_out // 2 + 1
    out = np.zeros(n_bins, dtype=np.complex128)
    keep = min(n_bins, len(spec))
    out[:keep] = spec[:keep]
    return (np.fft.irfft(out, n_out) * (n_out / len(wave))).astype(np.float32)


def _in_validation(rel_path: str, valid_fraction: float) -> bool:
    # crc32 of the relative path: the same split on every machine, run and file order.
    return (zlib.crc32(rel_path.encode("utf-8")) % 10_000) < valid_fraction * 10_000


@dataclass(frozen=True)
class Batch:
    wave: torch.Tensor  # [B, samples] float32, zero-padded
    lengths: torch.Tensor  # [B] int64 valid samples per item

    @property
    def padding_mask(self) -> torch.Tensor:
        """[B, samples] True where the sample is padding."""
        idx = torch.arange(self.wave.shape[1])[None, :]
        return idx >= self.lengths[:, None]

    @property
    def seconds(self) -> float:
        return float(self.lengths.sum()) / SAMPLE_RATE


class AudioFolder:
    """Audio files of one split (`train` or `valid`) of a folder.

    root: the directory; file_list: optional text file of paths (relative to root or absolute),
    one per line, optionally followed by whitespace and anything else (LibriSpeech-style trees
    need no list: every wav/flac/ogg below root is used). crop_seconds: length of each crop;
    shorter files are zero-padded and their length recorded. The validation split takes
    `valid_fraction` of the files, chosen by a hash of their relative path.
    """

    def __init__(self, root: str | Path, split: str = "train", crop_seconds: float = 2.0,
                 valid_fraction: float = 0.05, file_list: str | Path | None = None,
                 min_files: int = 1):
        if split not in ("train", "valid", "all"):
            raise ValueError(f"split={split!r} is invalid: expected train, valid or all")
        if not 0.0 <= valid_fraction < 1.0:
            raise UserError(f"valid fraction {valid_fraction} is invalid; expected 0 <= f < 1")
        if crop_seconds <= 0:
            raise UserError(f"crop length {crop_seconds} s is invalid; expected > 0 seconds")
        self.root = Path(root)
        if not self.root.is_dir():
            raise UserError(f"audio folder {str(self.root)!r} does not exist; give a directory of "
                            "wav/flac/ogg files (`edgekit data synth --out DIR` makes one)")
        self.split = split
        self.crop = int(round(crop_seconds * SAMPLE_RATE))
        files = self._list_files(file_list)
        if split != "all":
            want_valid = split == "valid"
            chosen = [f for f in files if _in_validation(f, valid_fraction) == want_valid]
            # Tiny folders may hash no file into validation; take the last file then, so a
            # validation set always exists when asked for.
            if want_valid and not chosen and valid_fraction > 0 and files:
                chosen = files[-1:]
            elif not want_valid and valid_fraction > 0 and len(files) > 1 and \
                    not any(_in_validation(f, valid_fraction) for f in files):
                chosen = files[:-1]
            files = chosen
        if len(files) < min_files:
            raise UserError(f"{str(self.root)!r} has {len(files)} audio file(s) in the {split} split; expected "
                            f"at least {min_files} (.wav/.flac/.ogg)")
        self.files = files
        self.skipped = 0
        self._bad: set[str] = set()

    def _list_files(self, file_list: str | Path | None) -> list[str]:
        if file_list is None:
            found = []
            for dirpath, _, names in os.walk(self.root):
                for name in names:
                    if name.lower().endswith(AUDIO_EXTENSIONS):
                        found.append(os.path.relpath(os.path.join(dirpath, name), self.root))
            return sorted(found)
        lines = Path(file_list).read_text().splitlines()
        out = []
        for line in lines:
            line = line.strip()
            if line and not line.startswith("#"):
                out.append(line.split()[0])
        return out

    def __len__(self) -> int:
        return len(self.files)

    def read(self, index: int) -> np.ndarray | None:
        """The whole file as 16 kHz mono float32, or None (counted, warned) when unreadable."""
        sf = require_module("soundfile", "audio")
        rel = self.files[index]
        path = rel if os.path.isabs(rel) else str(self.root / rel)
        if rel in self._bad:
            self.skipped += 1
            return None
        try:
            wave, sr = sf.read(path, dtype="float32", always_2d=True)
            if wave.shape[0] == 0:
                raise ValueError("no samples")
        except Exception as e:  # soundfile raises several types for corrupt files
            self._bad.add(rel)
            self.skipped += 1
            warnings.warn(f"skipping unreadable audio {path}: {' '.join(str(e).split())}", stacklevel=2)
            return None
        return resample(wave.mean(axis=1), sr, SAMPLE_RATE)

    def crop_item(self, wave: np.ndarray, rng: np.random.Generator | None) -> tuple[np.ndarray, int]:
        """A crop of `self.crop` samples (random start with rng, else the start), zero-padded."""
        n = len(wave)
        if n >= self.crop:
            start = int(rng.integers(0, n - self.crop + 1)) if rng is not None else 0
            return wave[start:start + self.crop], self.crop
        out = np.zeros(self.crop, dtype=np.float32)
        out[:n] = wave
        return out, n

    def batch(self, indices: list[int], rng: np.random.Generator | None) -> Batch:
        """Items at `indices` (mod len); an unreadable file is replaced by the next readable one."""
        waves, lengths = [], []
        for idx in indices:
            for attempt in range(len(self.files)):
                wave = self.read((idx + attempt) % len(self.files))
                if wave is not None:
                    break
            else:
                raise UserError(f"no readable audio file in {str(self.root)!r} ({self.skipped} skipped); "
                                "check the files with `soundfile` or regenerate them")
            w, n = self.crop_item(wave, rng)
            waves.append(torch.from_numpy(np.ascontiguousarray(w)))
            lengths.append(n)
        return Batch(torch.stack(waves), torch.tensor(lengths, dtype=torch.long))

    def step_batch(self, seed: int, step: int, micro: int, global_batch: int, rank: int = 0,
                   world_size: int = 1) -> Batch:
        """This process's slice of the global batch for (step, micro-batch).

        The global batch (indices and crop offsets) is drawn from a generator seeded by
        (seed, step, micro) only, so it is the same whatever the number of processes.
        """
        if global_batch % world_size:
            raise ValueError(f"global batch {global_batch} is not divisible by {world_size} processes")
        rng = np.random.default_rng([seed, step, micro])
        indices = rng.integers(0, len(self.files), size=global_batch)
        offsets = rng.integers(0, 2**31 - 1, size=global_batch)
        per = global_batch // world_size
        mine = range(rank * per, (rank + 1) * per)
        waves, lengths = [], []
        for i in mine:
            b = self.batch([int(indices[i])], np.random.default_rng(int(offsets[i])))
            waves.append(b.wave)
            lengths.append(b.lengths)
        return Batch(torch.cat(waves), torch.cat(lengths))

    def validation_batches(self, batch_size: int, max_items: int | None = None) -> list[Batch]:
        """Deterministic batches (first crop of every file) for validation."""
        n = len(self.files) if max_items is None else min(max_items, len(self.files))
        return [self.batch(list(range(i, min(i + batch_size, n))), None) for i in range(0, n, batch_size)]
