"""Latency predictor: sum of per-block latencies from a table, then the whole-model correction.

A block whose signature is in the table costs its measured median. Any other block (a pruned
width, another sequence length) is interpolated: within its group (same kind and same
structural choices such as kernel, stride, norm, pre/post-LN, and whether attention or FFN is
there at all) latency is fitted as a
non-negative mix of cost features (constant, MACs, element traffic; signature.features) with
relative least squares, and the fit is then corrected by the measured/fitted ratio of the
nearest measured points (inverse distance in log-dimension space). Exact points stay exact;
points between them follow the cost model's shape at the local efficiency.

A group fit is only trusted inside the box its points span (with a small margin) and when it
has at least two points: a group measured at one point, or a fit with a constant term carried
far outside its points, predicts a 32-channel conv at the cost of the 512-channel one it was
measured at. Outside that box, or with a single point, the block is extrapolated from its nearest measured point
(same group first, else same kind) by the table's own roofline: cost = a * MACs + b * bytes +
c, fitted once over every entry of the table (relative non-negative least squares), so
prediction = nearest_ms * cost(block) / cost(nearest).

`Predictor.predict_ms(spec, seconds)` is the search's fast path: pure Python and numpy, with
block signatures and block latencies memoised, so repeated and similar architectures cost a
few dictionary look-ups.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np

from ..arch import SAMPLE_RATE, ArchSpec
from ..widths import PAD_MULTIPLE, PAD_REVISION, padded_spec
from .signature import KIND_DIMS, BlockSig, block_signatures, features, macs, make, parse_key, traffic_bytes
from .table import LatencyTable

# Dimensions that vary continuously (widths, lengths); the others define a block's group.
CONTINUOUS: dict[str, tuple[str, ...]] = {
    "conv": ("cin", "cout", "n"),
    "fbank": ("samples",),
    "projection": ("din", "e", "t"),
    "pos_conv": ("e", "t"),
    "norm": ("e", "t"),
    "attention": ("e", "h", "t"),
    "ffn": ("e", "f", "t"),
    "time_reduction": ("e", "t"),
    "upsample": ("e", "t", "frames"),
}
# A layer pruned to zero heads (or zero FFN width) keeps only its norm and residual: a different
# graph, not the narrow end of the width axis. It has its own group. In one group its 0.05 ms
# dragged the fit down and, sharing log(max(h, 1)) = 0 with one head, gave one head its ratio:
# a 1-head attention block was predicted at 0.10 ms and measured at 0.21 ms (ONNX int8, e=512).
PRESENCE: dict[str, str] = {"attention": "h", "ffn": "f"}
_NEIGHBOURS = 3
# A group fit is trusted up to this factor beyond its measured range in each continuous dim.
_RANGE_MARGIN = 1.25


@dataclass(frozen=True)
class BlockPrediction:
    name: str
    key: str
    ms: float
    source: str  # "table" (measured or estimated entry), "interpolated" or "extrapolated"


@dataclass(frozen=True)
class Prediction:
    predicted_ms: float
    sum_blocks_ms: float
    blocks: tuple[BlockPrediction, ...]
    interpolated: int  # how many blocks were not in the table (interpolated or extrapolated)

    def to_dict(self) -> dict:
        return {"predicted_ms": self.predicted_ms, "sum_blocks_ms": self.sum_blocks_ms,
                "interpolated_blocks": self.interpolated,
                "blocks": [b.__dict__ for b in self.blocks]}


class _GroupModel:
    """Relative least-squares fit of latency on cost features for one group of entries, plus
    the measured/fitted ratios used to correct it near measured points."""

    def __init__(self, kind: str, points: list[tuple[dict[str, int], float]]):
        self.kind = kind
        feats = np.array([features(kind, d) for d, _ in points], dtype=float)
        y = np.array([ms for _, ms in points], dtype=float)
        # Fewer points than features: keep the leading (most important) features only.
        n_feat = max(1, min(feats.shape[1], len(points) - (1 if len(points) > 2 else 0)))
        self.active = list(range(n_feat)) if n_feat < feats.shape[1] else list(range(feats.shape[1]))
        self.scale = np.maximum(np.abs(feats).max(axis=0), 1e-12)
        self.coef = self._fit_nonneg(feats / self.scale, y)
        fitted = (feats / self.scale) @ self.coef
        self.ratios = y / np.maximum(fitted, 1e-9)
        cont = CONTINUOUS[kind]
        self.coords = np.array([[math.log(max(d[c], 1)) for c in cont] for d, _ in points], dtype=float)
        self.span = np.maximum(self.coords.max(axis=0) - self.coords.min(axis=0), 1e-9)
        self._scale, self._coef = self.scale.tolist(), self.coef.tolist()
        self._coords, self._ratios = self.coords.tolist(), self.ratios.tolist()
        self._inv_span = (1.0 / self.span).tolist()
        self._lo = self.coords.min(axis=0).tolist()
        self._hi = self.coords.max(axis=0).tolist()
        # One point fixes no slope: its fit is a constant, right only at that point.
        self.trusted = len(points) >= 2

    def covers(self, d: dict[str, int]) -> bool:
        """Is `d` inside the measured box (log space, with margin) of a trusted fit?"""
        if not self.trusted:
            return False
        m = math.log(_RANGE_MARGIN)
        for c, lo, hi in zip(CONTINUOUS[self.kind], self._lo, self._hi):
            q = math.log(max(d[c], 1))
            if q < lo - m or q > hi + m:
                return False
        return True

    def _fit_nonneg(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        # Relative error: divide each row by its target, so a 0.1 ms block counts as much as a
        # 10 ms one. Negative coefficients are dropped one at a time (a small NNLS) so the
        # model never predicts negative time away from the grid.
        active = list(self.active)
        w = 1.0 / y
        while True:
            coef = np.zeros(x.shape[1])
            sol, *_ = np.linalg.lstsq(x[:, active] * w[:, None], y * w, rcond=None)
            if (sol >= 0).all() or len(active) == 1:
                coef[active] = np.maximum(sol, 0.0)
                return coef
            active.pop(int(np.argmin(sol)))

    def fitted(self, d: dict[str, int]) -> float:
        """The cost-feature fit alone at `d`, before the neighbours' ratio correction."""
        # Plain Python over a few dozen points: numpy's per-call overhead would dominate.
        f = features(self.kind, d)
        return sum(fi / si * ci for fi, si, ci in zip(f, self._scale, self._coef) if ci)

    def predict(self, d: dict[str, int]) -> float:
        base = self.fitted(d)
        q = [math.log(max(d[c], 1)) for c in CONTINUOUS[self.kind]]
        inv = self._inv_span
        sq = [(sum(((a - b) * w) ** 2 for a, b, w in zip(row, q, inv)), r) for row, r in zip(self._coords, self._ratios)]
        dists = [(math.sqrt(d2), r) for d2, r in heapq.nsmallest(_NEIGHBOURS, sq)]
        wsum = sum(1.0 / (dd + 1e-6) for dd, _ in dists)
        ratio = sum(r / (dd + 1e-6) for dd, r in dists) / wsum
        return max(base * ratio, 1e-6)


class _Roofline:
    """The table's own cost model, one for all kinds: ms = a * MACs + b * bytes + c, fitted by
    relative non-negative least squares over every entry. Used only as a ratio between a block
    and its nearest measured neighbour, so a kind's own efficiency is kept from that neighbour."""

    def __init__(self, points: list[tuple[str, dict[str, int], float]], dtype: str):
        self.dtype = dtype
        x = np.array([self._raw(k, d) for k, d, _ in points], dtype=float)
        y = np.array([ms for _, _, ms in points], dtype=float)
        scale = np.maximum(x.max(axis=0), 1e-12)
        xs, w = x / scale, 1.0 / y
        active = [0, 1, 2]
        coef = np.zeros(3)
        while active:
            sol, *_ = np.linalg.lstsq(xs[:, active] * w[:, None], y * w, rcond=None)
            if (sol >= 0).all():
                coef[active] = sol
                break
            active.pop(int(np.argmin(sol)))
        coef = coef / scale
        # A cost model with no MAC or no byte term cannot tell a narrow block from a wide one;
        # fall back to fixed rates (about 100 GMAC/s, 10 GB/s, 20 us a call) in ms.
        if coef[0] <= 0 or coef[1] <= 0:
            coef = np.array([1e-8, 1e-7, 0.02])
        self.a, self.b, self.c = (float(v) for v in coef)

    def _raw(self, kind: str, d: dict[str, int]) -> tuple[float, float, float]:
        return macs(kind, d), traffic_bytes(kind, d, self.dtype), 1.0

    def cost(self, kind: str, d: dict[str, int]) -> float:
        m, b, _ = self._raw(kind, d)
        return self.a * m + self.b * b + self.c


def _log_dist(kind: str, a: dict[str, int], b: dict[str, int]) -> float:
    return math.sqrt(sum((math.log(max(a[c], 1)) - math.log(max(b[c], 1))) ** 2 for c in CONTINUOUS[kind]))


class Predictor:
    def __init__(self, table: LatencyTable):
        self.table = table
        self._block_ms: dict[str, tuple[float, str]] = {k: (e.median_ms, "table") for k, e in table.entries.items()}
        self._scaled: dict[str, tuple[float, str]] = {}
        self._groups: dict[tuple, list[tuple[dict[str, int], float]]] = {}
        self._kinds: dict[str, list[tuple[dict[str, int], float]]] = {}
        for key, entry in table.entries.items():
            kind, d = parse_key(key)
            self._groups.setdefault(_group_key(kind, d), []).append((d, entry.median_ms))
            self._kinds.setdefault(kind, []).append((d, entry.median_ms))
        self._models: dict[tuple, _GroupModel] = {}
        self._sigs: dict[tuple[ArchSpec, float], list[BlockSig]] = {}
        self._front: dict[tuple, tuple[float, int, int]] = {}
        self._layer: dict[tuple, tuple[float, int]] = {}
        self._roofline: _Roofline | None = None
        # An export for this backend pads off-tile widths (widths.py): price what it runs.
        # Tables profiled before padding existed priced unpadded widths; keep that for them.
        prov = table.provenance
        self.pad_multiple = PAD_MULTIPLE.get(prov.backend) if prov.export_rewrites >= PAD_REVISION else None
        self._deployed: dict[ArchSpec, ArchSpec] = {}

    def deployed_spec(self, spec: ArchSpec) -> ArchSpec:
        """The architecture the export runs for `spec` on this table's backend (widths padded)."""
        if not self.pad_multiple:
            return spec
        out = self._deployed.get(spec)
        if out is None:
            if len(self._deployed) > 50_000:
                self._deployed.clear()
            out = self._deployed[spec] = padded_spec(spec, self.pad_multiple)
        return out

    @property
    def provenance(self):
        return self.table.provenance

    def signatures(self, spec: ArchSpec, seconds: float) -> list[BlockSig]:
        spec = self.deployed_spec(spec)
        k = (spec, seconds)
        sigs = self._sigs.get(k)
        if sigs is None:
            if len(self._sigs) > 50_000:  # the search streams many specs: bound the memo
                self._sigs.clear()
            sigs = self._sigs[k] = block_signatures(spec, seconds)
        return sigs

    def block_ms(self, sig: BlockSig) -> tuple[float, str]:
        """(ms, source) of one block as it costs inside a whole model: its table figure (or
        interpolation) times the correction's factor for its kind."""
        key = sig.key
        hit = self._scaled.get(key)
        if hit is not None:
            return hit
        ms, source = self._raw_block_ms(sig)
        out = self._scaled[key] = (ms * self.table.correction.block_factor(sig.kind), source)
        return out

    def _raw_block_ms(self, sig: BlockSig) -> tuple[float, str]:
        key = sig.key
        hit = self._block_ms.get(key)
        if hit is not None:
            return hit
        d = sig.as_dict()
        gk = _group_key(sig.kind, d)
        model = self._models.get(gk)
        if model is None:
            points = self._groups.get(gk) or self._kinds.get(sig.kind)
            if not points:
                kinds = ", ".join(sorted(self._kinds))
                raise ValueError(f"the latency table has no {sig.kind} blocks (it has: {kinds}), so block "
                                 f"{sig.name} ({key}) cannot be predicted; profile a space that includes it")
            model = self._models[gk] = _GroupModel(sig.kind, points)
        if model.covers(d):
            out = (model.predict(d), "interpolated")
        else:
            out = (self._extrapolate(sig.kind, d, self._groups.get(gk) or self._kinds[sig.kind]), "extrapolated")
        self._block_ms[key] = out
        return out

    def _extrapolate(self, kind: str, d: dict[str, int], points: list[tuple[dict[str, int], float]]) -> float:
        """Nearest measured point of the group (else the kind), scaled by the roofline cost ratio."""
        if self._roofline is None:
            pts = [(k, dd, ms) for k, plist in self._kinds.items() for dd, ms in plist]
            self._roofline = _Roofline(pts, self.table.provenance.dtype)
        near_d, near_ms = min(points, key=lambda p: _log_dist(kind, p[0], d))
        roof = self._roofline
        return max(near_ms * roof.cost(kind, d) / roof.cost(kind, near_d), 1e-6)

    def predict_ms(self, spec: ArchSpec, seconds: float = 1.0) -> float:
        """Predicted whole-model latency in ms (the search's fast path).

        Without time reduction every layer runs at the frontend's frame count, so the cost
        splits into a memoised front part (frontend, projection, positional conv) and one
        memoised figure per distinct (width, heads, FFN) layer: a search that mutates a few
        layers pays a handful of tuple look-ups, not a full signature walk.
        """
        spec = self.deployed_spec(spec)
        if spec.time_reduction is not None:
            sigs = self.signatures(spec, seconds)
            return self.table.correction.apply(sum(self.block_ms(s)[0] for s in sigs), len(sigs))
        samples = int(round(seconds * SAMPLE_RATE))
        fkey = (spec.frontend, spec.embed_dim, spec.feature_layer_norm, spec.pos_conv, spec.layer_norm_first, samples)
        front = self._front.get(fkey)
        if front is None:
            sigs = block_signatures(spec.replace(layers=spec.layers[:1]), seconds)
            rest = [s for s in sigs if not s.name.startswith("layer")]
            front = self._front[fkey] = (sum(self.block_ms(s)[0] for s in rest), len(rest),
                                         spec.num_frames(samples))
        total, n_blocks, t = front
        e, pre = spec.embed_dim, int(spec.layer_norm_first)
        layer_memo = self._layer
        for layer in spec.layers:
            lkey = (e, layer.heads, layer.ffn_dim, layer.head_dim, t, pre)
            cost = layer_memo.get(lkey)
            if cost is None:
                cost = layer_memo[lkey] = self._layer_cost(e, layer, t, pre)
            total += cost[0]
            n_blocks += cost[1]
        return self.table.correction.apply(total, n_blocks)

    def _layer_cost(self, e: int, layer, t: int, pre: int) -> tuple[float, int]:
        ms, n = 0.0, 0
        if layer.heads > 0 or not pre:
            ms += self.block_ms(make("attention", "attention", e=e, h=layer.heads, hd=layer.head_dim, t=t, pre=pre))[0]
            n += 1
        if layer.ffn_dim > 0 or not pre:
            ms += self.block_ms(make("ffn", "ffn", e=e, f=layer.ffn_dim, t=t, pre=pre))[0]
            n += 1
        return ms, n

    def explain(self, spec: ArchSpec, seconds: float = 1.0) -> Prediction:
        sigs = self.signatures(spec, seconds)
        rows = []
        for s in sigs:
            ms, source = self.block_ms(s)
            rows.append(BlockPrediction(s.name, s.key, ms, source))
        total = sum(r.ms for r in rows)
        return Prediction(self.table.correction.apply(total, len(sigs)), total, tuple(rows),
                          sum(r.source != "table" for r in rows))

    def sum_blocks_ms(self, spec: ArchSpec, seconds: float = 1.0) -> tuple[float, int]:
        sigs = self.signatures(spec, seconds)
        return sum(self.block_ms(s)[0] for s in sigs), len(sigs)


def disagreement(entries: dict[str, float], min_group: int = 4) -> dict[str, float]:
    """How far each entry is from what the rest of its group says it should be.

    For every entry of a group with at least `min_group` entries: its figure over the group's
    cost-feature fit made without it, times the median measured/fitted ratio of the others (so
    a group that runs at 60% of its fit everywhere does not flag its members). 1.0 means full
    agreement. Entries of smaller groups are left out: three points cannot outvote one."""
    groups: dict[tuple, list[tuple[str, dict[str, int], float]]] = {}
    for key, ms in entries.items():
        kind, d = parse_key(key)
        groups.setdefault(_group_key(kind, d), []).append((key, d, ms))
    out = {}
    for gk, members in groups.items():
        if len(members) < min_group:
            continue
        kind = gk[0]
        for i, (key, d, ms) in enumerate(members):
            rest = _GroupModel(kind, [(dd, m) for j, (_, dd, m) in enumerate(members) if j != i])
            out[key] = ms / max(rest.fitted(d) * float(np.median(rest.ratios)), 1e-12)
    return out


def _group_key(kind: str, d: dict[str, int]) -> tuple:
    cont = CONTINUOUS[kind]
    key = (kind,) + tuple(d[n] for n in KIND_DIMS[kind] if n not in cont)
    width = PRESENCE.get(kind)
    return key + (d[width] > 0,) if width else key
