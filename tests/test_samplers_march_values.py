"""Values of the occupancy marcher's pruning and stepping, derived by hand from the documented
equations of dreamtext/samplers.py (a second pass over the lines the other suites leave loose)."""

import torch
from analytic_field import EmptyField
from test_samplers_values import marcher

DOWN_Z = (torch.tensor([[0.0, 0.0, 2.0]]), torch.tensor([[0.0, 0.0, -1.0]]))


class CountingFog(EmptyField):
    """σ = 0.01 everywhere in the cube of bound 1; counts the points ``forward`` is asked."""

    def __init__(self) -> None:
        super().__init__(bound=1.0)
        self.points = 0

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((len(x),), 0.01, dtype=x.dtype, device=x.device)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.points += len(x)
        return super().forward(x)


def test_an_empty_field_keeps_no_sample_even_with_a_zero_alpha_threshold() -> None:
    # σ = 0 gives α = 1 − exp(0) = 0, and a step is kept only when α > alpha_threshold: with the
    # threshold 0 still nothing is kept, so nothing is queried again with gradients.
    samples, values = marcher().sample(EmptyField(bound=1.0), *DOWN_Z, perturb=False)
    assert len(samples) == 0
    assert values.sigma.numel() == 0


def test_the_marcher_queries_each_step_once_and_nothing_past_far() -> None:
    # near 1, far 3, dt = 2√3/8 ≈ 0.433; cuts e_k = 1 + (k + ½) dt: e_4 ≈ 2.95 < 3 ≤ e_5, so the
    # steps [1, e_0], [e_0, e_1], …, [e_4, 3] are 6 and the field is asked 6 points, no more
    # (the 4-step window's second round must not query the empty steps [3, 3] past far).
    fog = CountingFog()
    samples, _ = marcher().sample(fog, *DOWN_Z, perturb=False)
    assert len(samples) == 6
    assert fog.points == 6


class UniformFog(EmptyField):
    """σ = 1 everywhere in the cube of bound 1."""

    def __init__(self) -> None:
        super().__init__(bound=1.0)

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ones(len(x), dtype=x.dtype, device=x.device)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.density(x), torch.full((len(x), 3), 0.5, dtype=x.dtype, device=x.device)


def test_the_marcher_keeps_every_step_whose_transmittance_is_above_the_threshold() -> None:
    # σ = 1 from near 1: T at a step starting at t is exp(−(t − 1)), above ½ for t − 1 < ln 2 ≈
    # 0.693. dt = 2√3/64 ≈ 0.0541, starts 1 and 1 + (k + ½) dt: k + ½ < 12.81, k ≤ 12, so 14 steps
    # are kept, the same 14 as the first of the march without a threshold. The rays must march
    # on until T falls to the threshold, not stop a round (of 4 steps) or more before it.
    fog = UniformFog()
    every, _ = marcher(march_steps=64).sample(fog, *DOWN_Z, perturb=False)
    kept, _ = marcher(march_steps=64, transmittance_threshold=0.5).sample(
        fog, *DOWN_Z, perturb=False
    )
    assert len(kept) == 14
    assert torch.equal(kept.t_starts, every.t_starts[:14])
    assert (
        float(torch.exp(-(kept.t_starts[-1] - 1.0)))
        > 0.5
        > float(torch.exp(-(every.t_starts[14] - 1.0)))
    )
