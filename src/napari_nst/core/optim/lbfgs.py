"""L-BFGS with one objective evaluation per step, for a variable projected onto [0, 1] between steps.

torch's ``LBFGS(max_iter=1)`` (the textbook's optimiser) builds its curvature pairs from the step
it *proposed* (``s = t * d``), but the textbook then clamps the image before the next evaluation,
so the pair describes a move that did not happen. Here ``s`` is the move between the two points
that were actually evaluated (after the projection), so every pair is consistent. The rest is
textbook L-BFGS (Nocedal & Wright, algorithm 7.4: two-loop recursion, ``H0 = s.y / y.y``, no line
search, unit step), with safeguards (departures from torch's optimiser, not from the paper,
which does not specify L-BFGS's details):

* ``max_change``: a step that would move some pixel of the image by more than this is shortened
  to that (a trust region in image units; the image lives in [0, 1], so larger moves overshoot);
* a step that made the objective worse (or not finite) is undone half way: the next evaluation is
  half way back towards the last better point, which stays the reference, and the curvature pairs
  are dropped (a backtracking line search, one evaluation at a time). Without this, and without
  the trust region, L-BFGS on a pyramid-parametrised image was seen to diverge (objective x1000);
* a pair without positive curvature (``s.y <= 1e-8 |s| |y|``) is not stored; torch's test is
  ``s.y <= 1e-10``, which is scale-dependent and rejected every pair of a float32 run here.

Without curvature pairs (the first step, after a failure) the step is steepest descent that moves
the image by ``max_change / 4`` at most (torch's ``-g * min(1, 1 / sum|g|)`` without a trust region).

``history_dtype`` (e.g. bfloat16; default float32): the curvature pairs are *stored* in that dtype
and read back as float32 copies, one pair at a time, in the two-loop recursion. They are most of
the optimiser's memory (``2 * history`` vectors of the variable's size: 126 MiB of float32 at
512x384 px with the pyramid's 4/3); bfloat16 halves that. The pair's scalars (``1 / s.y`` and the
initial scaling ``s.y / y.y``) come from the float32 vectors before rounding, so every stored pair
keeps a positive ``rho`` (the update stays positive definite whatever the rounding of ``s``, ``y``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence

import torch


class Pairs:
    """The curvature pairs ``(s, y, 1 / s.y)``, oldest first, at most ``history`` of them.

    ``s`` and ``y`` live in two buffers of ``history`` rows made once (at the first pair, in
    ``dtype``; None: the vectors' own) and rows are reused as pairs come and go: a fresh tensor per
    pair would stay alive for ``history`` steps among the evaluations' short-lived tensors, and a
    CPU's heap (glibc's) cannot hand the memory around such islands back, so it grows. Iterating
    yields views of the rows; a pair read after ``history`` more pairs were stored holds a newer
    pair.
    """

    def __init__(self, history: int, dtype: torch.dtype | None = None) -> None:
        self.history = max(1, int(history))
        self.dtype = dtype
        self._s: torch.Tensor | None = None
        self._y: torch.Tensor | None = None
        self._order: deque[int] = deque()  # rows, oldest pair first
        self._rho: list[torch.Tensor | None] = [None] * self.history

    def append(self, s: torch.Tensor, y: torch.Tensor, rho: torch.Tensor) -> None:
        n, dtype = s.numel(), self.dtype or s.dtype
        if self._s is None or self._s.shape[1] != n or self._s.device != s.device or self._s.dtype != dtype:
            self._s = torch.empty((self.history, n), dtype=dtype, device=s.device)
            self._y = torch.empty_like(self._s)
            self._order.clear()
        assert self._y is not None
        # until the buffers are full (again, after clear) the rows in use are 0..len-1
        row = self._order.popleft() if len(self._order) == self.history else len(self._order)
        self._s[row].copy_(s.reshape(-1))
        self._y[row].copy_(y.reshape(-1))
        self._rho[row] = rho
        self._order.append(row)

    def clear(self) -> None:
        """Forget every pair (the buffers stay for the next)."""
        self._order.clear()

    def _pair(self, row: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        assert self._s is not None and self._y is not None
        rho = self._rho[row]
        assert rho is not None
        return self._s[row], self._y[row], rho

    def __len__(self) -> int:
        return len(self._order)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        return (self._pair(r) for r in list(self._order))

    def __reversed__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        return (self._pair(r) for r in reversed(list(self._order)))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self._pair(self._order[i])


class LBFGS:
    """Minimise ``closure()`` over ``params``; :meth:`step` evaluates it exactly once.

    ``closure`` zeroes the gradients, projects the variable if it wants to, evaluates the
    objective, calls ``backward`` and returns the loss. ``image_change(deltas)`` (optional) maps a
    step in ``params`` to the largest absolute change it makes to the image (a float, or a 0-d
    tensor, which keeps the step free of device synchronisations); used with ``max_change``.
    """

    def __init__(
        self,
        params: Sequence[torch.Tensor],
        history: int = 20,
        max_change: float | None = None,
        image_change: Callable[[list[torch.Tensor]], float | torch.Tensor] | None = None,
        history_dtype: torch.dtype | None = None,
    ) -> None:
        self.params = list(params)
        self.history = int(history)
        self.max_change = max_change
        self.image_change = image_change
        self.history_dtype = history_dtype if history_dtype not in (None, torch.float32) else None
        # (s, y, 1 / s.y), s and y in history_dtype; _h0: s.y / y.y of the newest pair, from float32 vectors
        self.pairs = Pairs(self.history, self.history_dtype)
        self._h0: torch.Tensor | None = None
        self._x_prev: torch.Tensor | None = None
        self._g_prev: torch.Tensor | None = None
        self._f_prev = float("inf")
        self._shortened_host = 0
        self._shortened: torch.Tensor | None = None  # counted on the device (see _trust_region)
        self.steps_back = 0

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    def _flat(self, grads: bool) -> torch.Tensor:
        parts = []
        for p in self.params:
            t = p.grad if grads else p.detach()
            parts.append(torch.zeros_like(p).reshape(-1) if t is None else t.reshape(-1))
        return torch.cat(parts).float()

    def _direction(self, g: torch.Tensor) -> torch.Tensor:
        if not self.pairs:
            if self.max_change is not None and self.image_change is not None:
                # steepest descent that moves the image by a quarter of the trust region: torch's
                # first step (below) is so short that on this objective the curvature it sees is
                # negative and L-BFGS never gets a pair (seen at 256 px in float32)
                change = self.image_change(self._split(g))
                if isinstance(change, torch.Tensor):  # no synchronisation; g = 0 gives d = 0 either way
                    return g * (-0.25 * self.max_change / change.clamp(min=1e-30))
                if change > 0:
                    return g * (-0.25 * self.max_change / change)
            return -g * min(1.0, 1.0 / max(float(g.abs().sum()), 1e-30))
        # two-loop recursion; scalars stay tensors so that a GPU is not synchronised per pair
        q = -g  # new tensor
        read = self._reader(g)
        t = torch.empty_like(g)  # one buffer for the products (not a fresh tensor per pair)
        alphas = []
        for s, y, rho in reversed(self.pairs):
            s, y = read(s, y)
            a = rho * (s @ q)
            q.sub_(torch.mul(y, a, out=t))
            alphas.append(a)
        assert self._h0 is not None  # set with every pair
        q.mul_(self._h0)
        for (s, y, rho), a in zip(self.pairs, reversed(alphas), strict=True):
            s, y = read(s, y)
            q.add_(torch.mul(s, a - rho * (y @ q), out=t))
        return q

    def _reader(self, like: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """Stored pairs as float32: themselves, or (history_dtype) copied into two float32 buffers
        made once per step (a fresh float32 tensor per pair cost 45 ms a step at 256 px against 5
        ms: each large allocation is new pages to fault in)."""
        if self.history_dtype is None:
            return lambda s, y: (s, y)
        sb, yb = torch.empty_like(like), torch.empty_like(like)
        return lambda s, y: (sb.copy_(s), yb.copy_(y))

    def _store(self, s: torch.Tensor, y: torch.Tensor, ys: torch.Tensor) -> None:
        """Keep the pair ``(s, y)`` (in ``history_dtype``) with its float32 scalars."""
        self._h0 = ys / (y @ y)
        self.pairs.append(s, y, 1.0 / ys)  # rounded to history_dtype as they are copied in

    def _split(self, flat: torch.Tensor) -> list[torch.Tensor]:
        out, i = [], 0
        for p in self.params:
            n = p.numel()
            out.append(flat[i : i + n].view_as(p))
            i += n
        return out

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:
        with torch.enable_grad():
            loss = closure()
        x, g = self._flat(False), self._flat(True)
        scalars = [loss.detach().float().reshape(())]
        if self._x_prev is not None and self._g_prev is not None and self.history > 0:
            s, y = x - self._x_prev, g - self._g_prev
            ys = y @ s
            scalars += [ys, s.norm() * y.norm()]
        # the step's scalars in one device-to-host transfer: one synchronisation of a GPU per step
        values = torch.stack(scalars).tolist()
        f = values[0]
        # positive curvature, relative to the vectors' sizes: torch's absolute 1e-10 rejects
        # every pair of a small objective's tiny first step, and L-BFGS never starts
        if len(values) == 3 and values[1] > 1e-8 * values[2]:
            self._store(s, y, ys)
        if self._x_prev is not None and not f <= self._f_prev:
            # the step made things worse (or not finite): go back half way towards the last
            # better point, which stays the reference (a backtracking line search, one evaluation
            # at a time)
            d = (self._x_prev - x).mul_(0.5)
            self.steps_back += 1
            self.pairs.clear()  # the curvature model misled: start it again
        else:
            d = self._direction(g)
            self._trust_region(d)
            self._x_prev, self._g_prev, self._f_prev = x, g, f
        for p, dp in zip(self.params, self._split(d), strict=True):
            p.add_(dp.to(p.dtype))
        return loss

    def restart_reference(self) -> None:
        """The objective changed (the same formulas in another number format): the next
        evaluation is not compared with the last (no step back) and makes no curvature pair with
        it; the pairs kept so far still shape the next direction."""
        self._x_prev = self._g_prev = None
        self._f_prev = float("inf")

    def _trust_region(self, d: torch.Tensor) -> None:
        """Shorten ``d`` in place so that no pixel of the image moves by more than ``max_change``."""
        if self.max_change is None or self.image_change is None:
            return
        change = self.image_change(self._split(d))
        if isinstance(change, torch.Tensor):  # scaled on the device: no synchronisation
            over = change > self.max_change
            d.mul_(torch.where(over, self.max_change / change.clamp(min=1e-30), torch.ones_like(change)))
            self._shortened = over.long() if self._shortened is None else self._shortened + over
        elif change > self.max_change:
            d.mul_(self.max_change / change)
            self._shortened_host += 1

    @property
    def steps_shortened(self) -> int:
        """Steps the trust region shortened (reading it synchronises a GPU)."""
        return self._shortened_host + (int(self._shortened) if self._shortened is not None else 0)
