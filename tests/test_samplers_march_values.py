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
