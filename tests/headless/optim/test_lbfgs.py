"""The engine's L-BFGS (core/optim/lbfgs.py): one evaluation per step, consistent pairs, safeguards."""

import math

import pytest
import torch

from napari_nst.core.optim.lbfgs import LBFGS


def _quadratic(n: int = 30, cond: float = 100.0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    eig = torch.logspace(0, math.log10(cond), n, dtype=torch.float64)
    a = (q * eig) @ q.T
    b = torch.randn(n, generator=g, dtype=torch.float64)
    x_star = torch.linalg.solve(a, b)
    return a.float(), b.float(), x_star.float()


def _closure(opt, x, f, calls):
    def closure():
        opt.zero_grad()
        calls.append(1)
        loss = f(x)
        loss.backward()
        return loss

    return closure


def test_one_evaluation_per_step_and_it_converges_on_a_quadratic():
    a, b, x_star = _quadratic()
    x = torch.zeros(30, requires_grad=True)
    opt = LBFGS([x], history=10)
    calls: list[int] = []
    f = lambda v: 0.5 * v @ a @ v - b @ v  # noqa: E731
    for _ in range(60):
        opt.step(_closure(opt, x, f, calls))
    assert len(calls) == 60
    assert torch.allclose(x.detach(), x_star, atol=1e-3)


def test_matches_torchs_lbfgs_where_there_is_no_projection():
    """Without projection, trust region or failures, the steps are torch's (the textbook's)."""
    a, b, _ = _quadratic(cond=20.0)
    f = lambda v: 0.5 * v @ a @ v - b @ v  # noqa: E731
    x1 = torch.zeros(30, requires_grad=True)
    x2 = torch.zeros(30, requires_grad=True)
    ours = LBFGS([x1], history=5)
    theirs = torch.optim.LBFGS([x2], lr=1, max_iter=1, max_eval=1, history_size=5, tolerance_grad=0, tolerance_change=0)
    for _ in range(12):
        ours.step(_closure(ours, x1, f, []))
        theirs.step(_closure(theirs, x2, f, []))
        assert torch.allclose(x1.detach(), x2.detach(), rtol=1e-4, atol=1e-5)
    assert ours.steps_back == 0


def test_a_step_that_makes_things_worse_is_undone_half_way():
    x = torch.tensor([0.0], requires_grad=True)
    opt = LBFGS([x], history=5)
    seen = []

    def closure():
        opt.zero_grad()
        seen.append(float(x))
        loss = (x - 2) ** 2 + (100.0 if len(seen) == 3 else 0.0)  # the third point looks worse
        loss.backward()
        return loss

    for _ in range(6):
        opt.step(closure)
    assert opt.steps_back == 1
    assert seen[3] == pytest.approx((seen[2] + seen[1]) / 2, rel=1e-6)  # half way back to point 2
    assert not opt.pairs or len(opt.pairs) < 3  # the model was started again
    assert abs(seen[-1] - 2) < abs(seen[1] - 2)


def test_non_finite_objective_is_backed_out_of():
    x = torch.tensor([0.5], requires_grad=True)
    opt = LBFGS([x], history=5)
    n = [0]

    def closure():
        opt.zero_grad()
        n[0] += 1
        loss = (x - 2) ** 2 if n[0] != 3 else x * float("nan")
        loss.backward()
        return loss

    for _ in range(10):
        opt.step(closure)
    assert math.isfinite(float(x)) and opt.steps_back >= 1


def test_trust_region_shortens_long_steps():
    x = torch.zeros(4, requires_grad=True)
    opt = LBFGS([x], history=5, max_change=0.1, image_change=lambda d: float(d[0].abs().max()))
    prev = x.detach().clone()
    for _ in range(6):
        opt.step(_closure(opt, x, lambda v: ((v - 5.0) ** 2).sum(), []))
        assert float((x.detach() - prev).abs().max()) <= 0.1 + 1e-6
        prev = x.detach().clone()
    assert opt.steps_shortened >= 1 and float(x[0]) > 0.3


def test_pairs_use_the_move_that_happened():
    """A projection between steps (the clamp) enters ``s``: the pair is what was evaluated."""
    x = torch.tensor([0.99, 0.2], requires_grad=True)
    opt = LBFGS([x], history=5)
    points = []

    def closure():
        opt.zero_grad()
        with torch.no_grad():
            x.clamp_(0, 1)
        points.append(x.detach().clone())
        loss = ((x - torch.tensor([3.0, 0.5])) ** 2).sum()
        loss.backward()
        return loss

    for _ in range(2):
        opt.step(closure)
    s, _, _ = opt.pairs[-1]
    # the first step proposed +0.87 for x[0]; the clamp made it +0.01, and that is what is stored
    assert torch.allclose(s, points[1] - points[0])
    assert float(s[0]) == pytest.approx(0.01, abs=1e-6)


def test_starts_where_the_curvature_along_the_gradient_is_negative():
    """Torch's steps without pairs (1 / sum|g|, then -g) are tiny for a small objective on a big
    image; where the objective curves down along them every pair is rejected and torch's L-BFGS
    crawls (seen at 256 px in float32, objective ~20)."""
    # negative curvature at 0.1, minimum at 1/sqrt(2); small, like the style objective per pixel
    f = lambda v: 1e-3 * (v**4 - v**2).sum()  # noqa: E731
    runs = {}
    for name in ("ours", "torch"):
        x = torch.full((10000,), 0.1, requires_grad=True)
        if name == "ours":
            opt = LBFGS([x], history=5, max_change=0.25, image_change=lambda d: float(d[0].abs().max()))
        else:
            opt = torch.optim.LBFGS(
                [x], lr=1, max_iter=1, max_eval=1, history_size=5, tolerance_grad=0, tolerance_change=0
            )
        for _ in range(30):
            opt.step(_closure(opt, x, f, []))
        runs[name] = float((x.detach() - 0.5**0.5).abs().max())
    assert runs["ours"] < 0.05, runs
    assert runs["torch"] > 0.3, runs  # what the first step fixes


def test_trust_region_on_the_device_equals_the_host_one():
    """image_change may return a 0-d tensor (no synchronisation): the same steps as with a float."""
    import torch

    from napari_nst.core.optim.lbfgs import LBFGS

    target = torch.tensor([0.9, -0.4, 0.3, 2.0])
    paths, shortened = [], []
    for as_tensor in (False, True):
        x = torch.zeros(4, requires_grad=True)

        def change(d, t=as_tensor):
            m = d[0].abs().max()
            return m if t else float(m)

        opt = LBFGS([x], history=5, max_change=0.1, image_change=change)

        def closure(opt=opt, x=x):
            opt.zero_grad()
            loss = ((x - target) ** 2 * torch.tensor([1.0, 3.0, 0.5, 2.0])).sum()
            loss.backward()
            return loss

        path = []
        for _ in range(12):
            opt.step(closure)
            path.append(x.detach().clone())
        paths.append(torch.stack(path))
        shortened.append(opt.steps_shortened)
    torch.testing.assert_close(paths[0], paths[1], rtol=1e-6, atol=1e-7)
    assert shortened[0] == shortened[1] >= 1


def test_pairs_stored_in_bfloat16_take_half_the_bytes_and_still_converge():
    """history_dtype: the pairs are kept in bfloat16 (half the bytes of float32), read back as
    float32; on a quadratic the run still converges, near the float32 history's steps."""
    a, b, x_star = _quadratic(cond=50.0)
    f = lambda v: 0.5 * v @ a @ v - b @ v  # noqa: E731
    xs, stored = [], []
    for dtype in (None, torch.bfloat16):
        x = torch.zeros(30, requires_grad=True)
        opt = LBFGS([x], history=10, history_dtype=dtype)
        for i in range(40):
            opt.step(_closure(opt, x, f, []))
            if i == 10:  # pairs kept (near convergence, rounding may empty the history again)
                assert opt.pairs
                stored.append({v.dtype for s, y, _ in opt.pairs for v in (s, y)})
                assert all(rho.dtype == torch.float32 and rho > 0 for _, _, rho in opt.pairs)
        xs.append(x.detach())
    assert stored == [{torch.float32}, {torch.bfloat16}]
    assert torch.allclose(xs[1], x_star, atol=2e-3)
    assert torch.allclose(xs[1], xs[0], atol=2e-3)


def test_pairs_reuse_the_rows_of_two_buffers():
    """The pairs live in two buffers made once; the oldest row is reused, order is oldest first,
    and the values are the ones stored (rounded to the history's dtype)."""
    from napari_nst.core.optim.lbfgs import Pairs

    pairs = Pairs(3, torch.bfloat16)
    stored = []
    for k in range(5):
        s, y = torch.full((4, 2), float(k)), torch.full((4, 2), float(k) + 0.5)
        pairs.append(s, y, torch.tensor(1.0 / (k + 1)))
        stored.append(k)
        if k == 0:
            rows = pairs._s.data_ptr(), pairs._y.data_ptr()
    assert (pairs._s.data_ptr(), pairs._y.data_ptr()) == rows  # no new buffers
    assert len(pairs) == 3
    assert [float(s[0]) for s, _, _ in pairs] == [2.0, 3.0, 4.0]  # the newest three, oldest first
    assert [float(y[0]) for _, y, _ in reversed(pairs)] == [4.5, 3.5, 2.5]
    assert pairs[-1][0].dtype == torch.bfloat16 and float(pairs[-1][2]) == pytest.approx(0.2)
    pairs.clear()
    assert not pairs and len(list(pairs)) == 0
    pairs.append(torch.ones(8), torch.ones(8), torch.tensor(1.0))
    assert len(pairs) == 1 and pairs._s.data_ptr() == rows[0]
    pairs.append(torch.ones(6), torch.ones(6), torch.tensor(1.0))  # another size: buffers made again
    assert len(pairs) == 1 and pairs._s.shape == (3, 6)
