"""Per-neuron running statistics of a recording: moments, extremes, histogram, top/bottom k.

``KindStats`` folds every chunk of one layer and kind into its neurons' statistics as the
recording goes, so the dashboard never scans the whole store to start: on CPU with the compiled
loops of ``lstmscope.store.kernels`` (numba, imported when first needed: :func:`load_kernels`),
on an accelerator (or without numba) with torch on the device. Both give the same statistics; a
checkpoint written on one road resumes on the other. ``finalize`` gives the arrays of the
store's ``stats/`` files (names in ``lstmscope.store.layout``).
"""

from __future__ import annotations

import functools
import logging
import math
from types import ModuleType

import numpy as np
import torch

from lstmscope.errors import StoreError
from lstmscope.model.trace import Workspace
from lstmscope.names import GATE_KINDS
from lstmscope.store.encoding import F32_MAX
from lstmscope.store.histograms import hist_edges, hist_lut, hist_quantiles
from lstmscope.store.layout import QUANTILES, SAT_HIGH, SAT_LOW, TOP_K

log = logging.getLogger(__name__)

GROUP = 16  # rows per group when screening for top/bottom-k candidates
HIST_BLOCK = 16  # units per bincount on CPU


@functools.cache
def load_kernels() -> ModuleType | None:
    """``lstmscope.store.kernels``, or None where numba cannot be imported (then torch folds on
    CPU too, about 2x slower): imported when first needed, as numba takes ~0.3 s to import."""
    try:
        from lstmscope.store import kernels
    except ImportError as e:
        log.warning("numba is not available (%s): statistics with torch, about 2x slower", e)
        return None
    return kernels


def _u16_to_int32_works(device) -> bool:
    try:
        x = torch.zeros(2, dtype=torch.float16, device=device)
        torch.empty(2, dtype=torch.int32, device=device).copy_(x.view(torch.uint16))
        return True
    except (RuntimeError, TypeError, AttributeError):
        return False


class KindStats:
    """Running statistics of one ``[*, H]`` stream of activations (one layer and kind).

    Everything is exact except the quantiles (from the histogram): moments are merged per chunk
    with Chan et al.'s formula in float64 (each chunk centred on the running mean first, so
    float32 sums lose nothing to cancellation); min, max and top/bottom-k are the float32
    values themselves, unclamped (format 1 stores held them rounded to float16, clamped to
    +-65,504 for ``c``). Only the histogram works on float16 (its grid; the quantiles it gives
    are stretched to the true min and max in its end bins, see ``hist_quantiles``).
    """

    FIELDS = ("n", "mean", "m2", "vmin", "vmax", "hist", "top_val", "top_pos", "bot_val", "bot_pos")

    def __init__(
        self,
        kind: str,
        hidden_size: int,
        device,
        top_k: int = TOP_K,
        workspace=None,
        fused: bool | None = None,
    ):
        self.kind, self.H, self.k = kind, hidden_size, top_k
        self.nb = len(hist_edges(kind)) - 1
        d = torch.device(device)
        # On CPU the compiled loops of lstmscope.store.kernels; elsewhere torch (``fused=False``
        # takes the torch code on CPU too, for tests).
        kernels = load_kernels() if d.type == "cpu" and fused is not False else None
        if fused and kernels is None:
            raise ValueError("the compiled statistics need numba and a CPU")
        self.fused = kernels is not None
        if self.fused:
            self.kernels = kernels
            self.n = 0
            self.mean = np.zeros(hidden_size)
            self.m2 = np.zeros(hidden_size)
            self.vmin = np.full(hidden_size, np.inf, dtype=np.float32)
            self.vmax = np.full(hidden_size, -np.inf, dtype=np.float32)
            self.hist = np.zeros(hidden_size * self.nb, dtype=np.int64)
            self.lut_np = hist_lut(kind)
            # Heaps, lowest ranked first (see lstmscope.store.kernels); empty slots rank lowest.
            self.top_val = np.full((top_k, hidden_size), -np.inf, dtype=np.float32)
            self.top_pos = np.full((top_k, hidden_size), -1, dtype=np.int64)
            self.bot_val = np.full((top_k, hidden_size), np.inf, dtype=np.float32)
            self.bot_pos = np.full((top_k, hidden_size), -1, dtype=np.int64)
            return
        self.ws = workspace or Workspace(d)
        self.u16 = _u16_to_int32_works(d)
        self.lut = torch.from_numpy(hist_lut(kind).copy()).to(d)  # [65536] int32
        self.offsets = (torch.arange(hidden_size, device=d, dtype=torch.int32) * self.nb).view(
            1, -1
        )
        self.n = torch.zeros((), dtype=torch.int64, device=d)
        self.mean = torch.zeros(hidden_size, dtype=torch.float64, device=d)
        self.m2 = torch.zeros(hidden_size, dtype=torch.float64, device=d)
        self.vmin = torch.full((hidden_size,), math.inf, device=d)
        self.vmax = torch.full((hidden_size,), -math.inf, device=d)
        self.hist = torch.zeros(hidden_size * self.nb, dtype=torch.int64, device=d)
        self.top_val = torch.full((top_k, hidden_size), -math.inf, device=d)  # [k, H] best first
        self.top_pos = torch.full((top_k, hidden_size), -1, dtype=torch.int64, device=d)
        self.bot_val = torch.full((top_k, hidden_size), math.inf, device=d)
        self.bot_pos = torch.full((top_k, hidden_size), -1, dtype=torch.int64, device=d)

    def update(self, v: torch.Tensor, v16: torch.Tensor, pos: torch.Tensor) -> None:
        """``v`` ``[n, H]`` float32 (rows may be strided), ``v16`` ``[n, H]`` its float16 rounding
        in any row order (only the histogram reads it), ``pos`` ``[n]`` text positions of ``v``."""
        n, H = v.shape
        if n == 0:
            return
        if self.fused:
            self._update_fused(v, v16, pos)
            return
        # Moments: centre on the running mean (first chunk: its first row), sum in float32,
        # merge in float64.
        shift = self.mean.float() if int(self.n) > 0 else v[0].clone()
        d = torch.sub(v, shift, out=self.ws.get("d", (n, H), torch.float32))
        s1 = d.sum(0).double()
        s2 = d.mul_(d).sum(0).double()
        self._merge_moments(n, shift.double(), s1, s2, self.n.double())
        self.n += n
        self._histogram(v16)

        # Extremes of groups of rows: min/max come from them, and they screen top-k candidates.
        ng = n // GROUP
        tail = v[ng * GROUP :]
        gmax = v[: ng * GROUP].view(ng, GROUP, H).amax(1) if ng else None  # [ng, H]
        gmin = v[: ng * GROUP].view(ng, GROUP, H).amin(1) if ng else None
        parts_max = [x.amax(0) for x in (gmax, tail) if x is not None and x.shape[0]]
        parts_min = [x.amin(0) for x in (gmin, tail) if x is not None and x.shape[0]]
        torch.maximum(self.vmax, torch.stack(parts_max).amax(0), out=self.vmax)
        torch.minimum(self.vmin, torch.stack(parts_min).amin(0), out=self.vmin)
        self._merge(v, pos, gmax, True)
        self._merge(v, pos, gmin, False)

    def _merge_moments(self, n: int, shift, s1, s2, n_a) -> None:
        """Fold a chunk of ``n`` rows into the running mean and m2 (in place; torch tensors or
        numpy arrays alike), from the chunk's float64 sums ``s1``/``s2`` of ``v - shift`` and
        its square, ``n_a`` rows seen before: Chan et al.'s parallel formula."""
        cmean = shift + s1 / n
        cm2 = (s2 - s1 * s1 / n).clip(min=0)
        tot = n_a + n
        delta = cmean - self.mean
        self.mean += delta * (n / tot)
        self.m2 += cm2 + delta * delta * (n_a * n / tot)

    def _update_fused(self, v: torch.Tensor, v16: torch.Tensor, pos: torch.Tensor) -> None:
        n = v.shape[0]
        # The compiled loops do not check bounds: a wrong shape would read past the arrays.
        if (
            v.shape != (n, self.H) or v16.shape != v.shape or pos.shape != (n,)
            or v.dtype != torch.float32 or v16.dtype != torch.float16 or pos.dtype != torch.int64
        ):  # fmt: skip
            raise ValueError(
                f"statistics of {tuple(v.shape)} {v.dtype} values, {tuple(v16.shape)} "
                f"{v16.dtype} and {tuple(pos.shape)} {pos.dtype} positions: expected "
                f"[n, {self.H}] float32, the same in float16 and [n] int64"
            )
        vn, pn = v.numpy(), pos.numpy()
        # Sums of v - shift in float64 around the running mean (the first chunk: its first
        # row), merged with Chan et al.'s formula, as on the torch road.
        shift = self.mean.copy() if self.n > 0 else vn[0].astype(np.float64)
        s1, s2 = np.zeros(self.H), np.zeros(self.H)
        self.kernels.fold_rows(
            vn, pn, shift, s1, s2, self.vmin, self.vmax,
            self.top_val, self.top_pos, self.bot_val, self.bot_pos,
        )  # fmt: skip
        self._merge_moments(n, shift, s1, s2, self.n)
        self.n += n
        bits = v16.view(torch.int16).numpy().view(np.uint16)
        self.kernels.count_bins(bits, self.lut_np, self.hist.reshape(self.H, self.nb))

    def _histogram(self, v16: torch.Tensor) -> None:
        """Count ``v16`` ``[n, H]`` into (unit, bin): the float16 bit pattern indexes a lookup
        table of bins (the table ``histograms.bin_index`` uses)."""
        n, H = v16.shape
        bits16 = v16.view(torch.int16)
        if v16.device.type == "cpu":
            # Bincount over blocks of 16 units: the block's counts stay in L2; one bincount over
            # all (unit, bin) pairs thrashes the cache and was measured 1.3-2x slower.
            bits = self.ws.get("bits", (n, H), torch.int32)
            if self.u16:
                bits.copy_(v16.view(torch.uint16))
            else:
                bits.copy_(bits16).bitwise_and_(0xFFFF)
            idx = self.ws.get("idx", (n, H), torch.int32)
            torch.index_select(self.lut, 0, bits.view(-1), out=idx.view(-1))
            hist = self.hist.view(H, self.nb)
            loc = self.offsets[:, :HIST_BLOCK]
            for j0 in range(0, H, HIST_BLOCK):
                blk = idx[:, j0 : j0 + HIST_BLOCK] + loc[:, : min(HIST_BLOCK, H - j0)]
                counts = torch.bincount(blk.view(-1), minlength=blk.shape[1] * self.nb)
                hist[j0 : j0 + HIST_BLOCK].view(-1).add_(counts)
            return
        bits = self.ws.get("bits", (n, H), torch.int32)
        if self.u16:
            bits.copy_(v16.view(torch.uint16))
        else:
            bits.copy_(bits16).bitwise_and_(0xFFFF)
        idx = self.ws.get("idx", (n * H,), torch.int32)
        torch.index_select(self.lut, 0, bits.view(-1), out=idx)
        idx.view(n, H).add_(self.offsets)
        self.hist += torch.bincount(idx, minlength=H * self.nb)

    def _merge(self, v, pos, gext, largest: bool) -> None:
        """Fold this chunk into the running top (or bottom) k of every column.

        Only rows that can enter the top k are looked at: those in a group whose extreme beats
        the current k-th value. Early on that is most groups, and the k best groups of each
        column are taken (every top-k value lies in one of them); later few groups qualify, and
        their values that beat the k-th are laid out per column and merged with one ``topk``.
        """
        vals, poss = (self.top_val, self.top_pos) if largest else (self.bot_val, self.bot_pos)
        k, H = self.k, self.H
        n = v.shape[0]
        ng = 0 if gext is None else gext.shape[0]
        t0 = ng * GROUP
        kth = vals[-1]  # [H]
        dev = v.device

        def better(x, t):
            return x > t if largest else x < t

        beats = better(gext, kth) if ng else None
        if ng >= k and int(beats.sum()) > k * H:  # about the first chunk only
            gi = gext.topk(k, dim=0, largest=largest).indices  # [k, H] best groups
            rows = (gi.unsqueeze(1) * GROUP + torch.arange(GROUP, device=dev).view(1, -1, 1)).view(
                k * GROUP, H
            )
            if t0 < n:
                tail = torch.arange(t0, n, device=dev).view(-1, 1).expand(n - t0, H)
                rows = torch.cat([rows, tail])
            cand = v.gather(0, rows)  # [m, H]
            tv, ti = cand.topk(k, dim=0, largest=largest)
            tp = pos[rows.gather(0, ti)]
            allv, allp = torch.cat([vals, tv]), torch.cat([poss, tp])  # old first
            mv, mi = allv.topk(k, dim=0, largest=largest)
            vals.copy_(mv)
            poss.copy_(allp.gather(0, mi))
            return
        if ng:
            gi, gc = beats.nonzero(as_tuple=True)
            rows = ((gi * GROUP).unsqueeze(1) + torch.arange(GROUP, device=dev)).reshape(-1)
            cols = gc.repeat_interleave(GROUP)
        else:
            rows = cols = torch.empty(0, dtype=torch.int64, device=dev)
        if t0 < n:  # rows outside whole groups: all of them are candidates
            ti, tc = better(v[t0:], kth).nonzero(as_tuple=True)
            rows, cols = torch.cat([rows, ti + t0]), torch.cat([cols, tc])
        if rows.numel() == 0:
            return
        x = v[rows, cols]
        keep = better(x, kth[cols])
        x, rows, cols = x[keep], rows[keep], cols[keep]
        if x.numel() == 0:
            return
        # Lay the candidates out densely, column by column (padded), and merge with one topk.
        m = x.numel()
        order = torch.sort(cols, stable=True).indices
        cs = cols[order]
        counts = torch.bincount(cols, minlength=H)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(m, device=dev) - starts[cs]
        M = int(counts.max())
        pad = -math.inf if largest else math.inf
        dense_v = torch.full((M, H), pad, device=dev)
        dense_p = torch.full((M, H), -1, dtype=torch.int64, device=dev)
        dense_v[rank, cs] = x[order]
        dense_p[rank, cs] = pos[rows[order]]
        allv, allp = torch.cat([vals, dense_v]), torch.cat([poss, dense_p])  # old first
        mv, mi = allv.topk(k, dim=0, largest=largest)
        vals.copy_(mv)
        poss.copy_(allp.gather(0, mi))

    def state_dict(self) -> dict[str, np.ndarray]:
        """The running state as numpy arrays, top/bottom k best first (the checkpoint's form,
        the same on every device)."""
        if not self.fused:
            return {f: getattr(self, f).cpu().numpy() for f in self.FIELDS}
        out = {f: np.array(getattr(self, f)) for f in self.FIELDS}
        best_first = self.kernels.best_first
        out["top_val"], out["top_pos"] = best_first(self.top_val, self.top_pos, 1.0)
        out["bot_val"], out["bot_pos"] = best_first(self.bot_val, self.bot_pos, -1.0)
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        for f in self.FIELDS:
            cur = getattr(self, f)
            src = np.asarray(state[f])
            if np.shape(src) != tuple(np.shape(cur)):
                raise StoreError(f"checkpoint statistics '{f}' have shape {tuple(src.shape)}")
            if self.fused:
                setattr(self, f, src.astype(cur.dtype) if src.ndim else int(src))
            else:
                cur.copy_(torch.from_numpy(src))
        if self.fused:
            heap = self.kernels.heap_from_best_first
            self.top_val, self.top_pos = heap(self.top_val, self.top_pos, 1.0)
            self.bot_val, self.bot_pos = heap(self.bot_val, self.bot_pos, -1.0)

    def finalize(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """(npz members, histogram counts ``[H, bins]``)."""
        st = self.state_dict()
        n = int(st["n"])
        counts = st["hist"].reshape(self.H, self.nb)

        def ranked(vals: np.ndarray, poss: np.ndarray) -> np.ndarray:
            """float32 ``[H, k]`` values best first, NaN in empty slots (short texts)."""
            return np.where(poss.T >= 0, vals.T, np.nan).astype(np.float32)

        empty = n == 0
        vmin = np.where(empty, np.nan, st["vmin"]).astype(np.float32)
        vmax = np.where(empty, np.nan, st["vmax"]).astype(np.float32)
        std = np.sqrt(np.maximum(st["m2"] / max(n, 1), 0.0))
        # Clipped: an inf min/max (a diverged model) would make the end bins' quantiles NaN.
        quant = hist_quantiles(
            counts, hist_edges(self.kind), QUANTILES,
            np.clip(vmin, -F32_MAX, F32_MAX), np.clip(vmax, -F32_MAX, F32_MAX),
        )  # fmt: skip
        if self.kind in GATE_KINDS:
            # Edges are k/1000: bins below 100 hold exactly the values < 0.1, bins from 900 on
            # exactly the float16 values > 0.9 (0.9 itself is not a float16).
            lo_bins = int(np.searchsorted(hist_edges(self.kind), SAT_LOW))
            hi_bins = int(np.searchsorted(hist_edges(self.kind), SAT_HIGH))
            sat_left = counts[:, :lo_bins].sum(1) / max(n, 1)
            sat_right = counts[:, hi_bins:].sum(1) / max(n, 1)
        else:
            sat_left = sat_right = np.full(self.H, np.nan)
        mean = st["mean"]
        if n == 0:
            mean, std = np.full(self.H, np.nan), np.full(self.H, np.nan)
        out = {
            "count": np.asarray(n, dtype=np.int64),
            "mean": mean.astype(np.float64),
            "std": std.astype(np.float64),
            "min": vmin,
            "max": vmax,
            "quantiles": quant.astype(np.float64),
            "q": np.asarray(QUANTILES),
            "sat_left": np.asarray(sat_left, dtype=np.float64),
            "sat_right": np.asarray(sat_right, dtype=np.float64),
            "top_pos": st["top_pos"].T.copy(),  # [H, k]
            "top_val": ranked(st["top_val"], st["top_pos"]),
            "bottom_pos": st["bot_pos"].T.copy(),
            "bottom_val": ranked(st["bot_val"], st["bot_pos"]),
        }
        return out, counts
