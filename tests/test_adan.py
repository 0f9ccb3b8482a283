"""Adan (dreamtext/adan.py), the optimiser of the thesis's Stable-DreamFusion fork, checked on
values against the paper's equations, and ``optimizer: adan`` through a run."""

import json
import math

import pytest
import torch
import yaml
from tiny_models import TINY_SIZES

from dreamtext import factory
from dreamtext.adan import Adan
from dreamtext.cli import main
from dreamtext.config import resolve_config
from dreamtext.field import FieldConfig

BUILTIN_RUN = ["text", "a red cube", "--model", "builtin:shapes", "--no-export"]


def by_hand(theta, grads, lrs, betas=(0.98, 0.92, 0.99), eps=1e-8, decay=2e-5, clip=5.0):
    """The module docstring's equations in float64, one parameter list a step, no torch.optim:
    ``theta`` a list of lists of floats, ``grads`` a list (steps) of such lists."""
    b1, b2, b3 = betas
    theta = [list(t) for t in theta]
    m = [[0.0] * len(t) for t in theta]
    v = [[0.0] * len(t) for t in theta]
    n = [[0.0] * len(t) for t in theta]
    previous = None
    for k, step_grads in enumerate(grads, start=1):
        norm = math.sqrt(sum(g * g for gs in step_grads for g in gs))
        scale = min(1.0, clip / (norm + eps))
        g = [[x * scale for x in gs] for gs in step_grads]
        previous = previous or g
        for i, lr in enumerate(lrs):
            for j in range(len(theta[i])):
                diff = g[i][j] - previous[i][j]
                m[i][j] = b1 * m[i][j] + (1 - b1) * g[i][j]
                v[i][j] = b2 * v[i][j] + (1 - b2) * diff
                n[i][j] = b3 * n[i][j] + (1 - b3) * (g[i][j] + b2 * diff) ** 2
                denom = math.sqrt(n[i][j] / (1 - b3**k)) + eps
                update = m[i][j] / (1 - b1**k) + b2 * v[i][j] / (1 - b2**k)
                theta[i][j] = (theta[i][j] - lr * update / denom) / (1 + lr * decay)
        previous = g
    return theta


def test_four_steps_follow_the_papers_equations_with_the_global_clip_and_weight_decay():
    """Two groups at their own rates (the hash table's and the MLPs'), gradients whose global
    norm (about 12, then 0.3) is clipped to 5 in some steps and not in others."""
    theta = [[0.5, -1.0, 2.0], [0.25, 3.0]]
    grads = [
        [[3.0, -4.0, 1.0], [10.0, -2.0]],
        [[0.1, 0.2, -0.1], [0.05, 0.0]],
        [[-6.0, 1.0, 0.5], [2.0, 8.0]],
        [[0.3, -0.3, 0.2], [-0.1, 0.1]],
    ]
    lrs = [5e-2, 5e-3]
    params = [torch.tensor(t, dtype=torch.float64, requires_grad=True) for t in theta]
    optimizer = Adan([{"params": [p], "lr": lr} for p, lr in zip(params, lrs, strict=True)])
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = torch.tensor(g, dtype=torch.float64)
        optimizer.step()
    expected = by_hand(theta, grads, lrs)
    for p, e in zip(params, expected, strict=True):
        assert p.tolist() == pytest.approx(e, rel=1e-12, abs=1e-15)


def test_the_first_step_moves_each_value_by_about_the_rate_against_its_gradients_sign():
    """Step 1: m₁/c₁ = g, v₁ = 0 (no change yet), n₁/c₃ = g², so θ₁ = (θ₀ − η g / (|g| + ε)) /
    (1 + η λ): a step of η whatever the gradient's size (under the clip)."""
    p = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64, requires_grad=True)
    p.grad = torch.tensor([0.001, -2.0, 0.0], dtype=torch.float64)
    Adan([p], lr=0.1).step()
    decay = 1 + 0.1 * 2e-5
    assert p.tolist() == pytest.approx(
        [(1 - 0.1 * 0.001 / (0.001 + 1e-8)) / decay, (1 + 0.1 * 2 / (2 + 1e-8)) / decay, 1 / decay],
        rel=1e-12,
    )


def test_the_clip_scales_every_gradient_by_one_factor():
    a = torch.zeros(2, requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    a.grad, b.grad = torch.tensor([30.0, 0.0]), torch.tensor([40.0])  # norm 50
    optimizer = Adan([a, b])
    assert optimizer.clip_factor().item() == pytest.approx(0.1)
    assert Adan([a, b], max_grad_norm=0.0).clip_factor() is None
    a.grad, b.grad = torch.tensor([0.3, 0.0]), torch.tensor([0.4])
    assert optimizer.clip_factor().item() == 1.0


def test_a_state_dict_round_trip_continues_bit_for_bit():
    """A resume loads the optimiser's state_dict: the steps after it are those of a run that
    never stopped."""
    torch.manual_seed(0)
    start = torch.randn(40)
    grads = [torch.randn(40) * 3 for _ in range(6)]

    def run(steps, optimizer_state=None, value=start):
        p = value.clone().requires_grad_()
        optimizer = Adan([p], lr=1e-2)
        if optimizer_state is not None:
            optimizer.load_state_dict(optimizer_state)
        for g in steps:
            p.grad = g.clone()
            optimizer.step()
        return p.detach(), optimizer.state_dict()

    straight, _ = run(grads)
    half, state = run(grads[:3])
    state = torch.load(save_load(state), weights_only=True)
    resumed, _ = run(grads[3:], state, half)
    assert torch.equal(straight, resumed)


def test_a_step_makes_no_temporary_the_size_of_a_parameter():
    """A step held four temporaries of each parameter's size at once (the clipped gradient, its
    change, the look-ahead, the denominator): 16 B a value of the hash table above its 24 B of
    table, gradient and state (a table of 2^24 rows × 16 levels × 4 features peaked at 7.0 GB
    where 4.5 GB stay), then the clipped gradient alone (4 B a value, 0.63 GB of that table:
    a copy kept so that ``param.grad`` stayed as it was, which nothing reads after the step:
    the trainer's finiteness check and fp16's unscale run before it, the next step's zero_grad
    drops it). Now none: the gradient is clipped in place. The values are the same bit for bit
    (against the step as it was written before, float32 and float64, with and without the
    clip)."""
    from peak_growth import run_measured

    script = (
        "import torch\n"
        "from dreamtext.adan import Adan\n"
        "p = torch.zeros(20_000_000, requires_grad=True)\n"  # 80 MB
        "p.grad = torch.ones(20_000_000)\n"
        "optimizer = Adan([p], lr=1e-3)\n"
        "optimizer.step()\n"  # the state: 4 values a parameter
        "before = rss('VmRSS')\n"
        "reset_peak()\n"  # VmHWM from here
        "optimizer.step()\n"
        "print(rss('VmHWM') - before)\n"
    )
    grown = run_measured(script)
    assert int(grown) < 80_000_000 // 2  # no temporary of 80 MB (the gradient's norm is clipped)

    def as_before(param, state, grad, k, lr, betas=(0.98, 0.92, 0.99), eps=1e-8, decay=2e-5):
        beta1, beta2, beta3 = betas
        diff = grad - state["previous_grad"]
        state["exp_avg"].mul_(beta1).add_(grad, alpha=1.0 - beta1)
        state["exp_avg_diff"].mul_(beta2).add_(diff, alpha=1.0 - beta2)
        ahead = grad.add(diff, alpha=beta2)
        state["exp_avg_sq"].mul_(beta3).addcmul_(ahead, ahead, value=1.0 - beta3)
        denom = (state["exp_avg_sq"] / (1.0 - beta3**k)).sqrt_().add_(eps)
        param.addcdiv_(state["exp_avg"], denom, value=-lr / (1.0 - beta1**k))
        param.addcdiv_(state["exp_avg_diff"], denom, value=-lr * beta2 / (1.0 - beta2**k))
        param.div_(1.0 + lr * decay)
        state["previous_grad"].copy_(grad)

    for dtype in (torch.float32, torch.float64):
        for clip in (5.0, 0.0):
            torch.manual_seed(0)
            p = torch.randn(10_001, dtype=dtype, requires_grad=True)
            expected = p.detach().clone()
            optimizer = Adan([p], lr=0.1, max_grad_norm=clip)
            state = None
            for k in range(1, 5):
                p.grad = torch.randn_like(expected) * 3
                factor = optimizer.clip_factor()
                grad = p.grad if factor is None else p.grad * factor
                if state is None:
                    names = ("exp_avg", "exp_avg_diff", "exp_avg_sq")
                    state = {name: torch.zeros_like(expected) for name in names}
                    state["previous_grad"] = grad.clone()
                as_before(expected, state, grad, k, lr=0.1)
                optimizer.step()
                assert torch.equal(p.detach(), expected)
            for name, value in state.items():
                assert torch.equal(optimizer.state[p][name], value)


def save_load(state):
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


def test_optimizer_adan_builds_adan_over_the_fields_groups_and_others_are_refused(tmp_path):
    field = factory.build_field(FieldConfig(num_levels=2, log2_hashmap_size=8, hidden_dim=8), "cpu")
    optimizer = factory.build_optimizer(field, 1e-3, "adan")
    assert isinstance(optimizer, Adan)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1e-2, 1e-3])
    assert isinstance(factory.build_optimizer(field, 1e-3), torch.optim.Adam)
    (tmp_path / "c.yaml").write_text("optimizer: adamw\n", encoding="utf-8")
    from dreamtext.errors import DreamtextError

    with pytest.raises(DreamtextError, match=r"'optimizer' \(in .*c\.yaml\) must be one of adam, "):
        resolve_config({"prompt": "a cube"}, config_file=tmp_path / "c.yaml")


def test_an_adan_run_resumes_to_the_uninterrupted_result_and_keeps_its_optimizer(
    tmp_path, monkeypatch, capsys
):
    """4 steps straight, and 2 + 2 with a resume: the same field, bit for bit; config.json
    records the optimiser, and a resume asked to change it is refused (its state is Adan's)."""
    monkeypatch.chdir(tmp_path)
    adan_run = {**TINY_SIZES, "optimizer": "adan", "lr": 0.005}
    (tmp_path / "adan.yaml").write_text(yaml.safe_dump(adan_run), encoding="utf-8")
    adan = ["--config", "adan.yaml"]
    assert main([*BUILTIN_RUN, "--iters", "4", "--workspace", "a", *adan]) == 0
    assert main([*BUILTIN_RUN, "--iters", "2", "--workspace", "b", *adan]) == 0
    assert main([*BUILTIN_RUN, "--iters", "4", "--workspace", "b", "--resume"]) == 0
    fields = [
        torch.load(tmp_path / run / "checkpoints" / "last.pt", weights_only=True)["field"]
        for run in ("a", "b")
    ]
    assert all(torch.equal(fields[0][k], fields[1][k]) for k in fields[0])
    saved = json.loads((tmp_path / "b" / "config.json").read_text(encoding="utf-8"))
    assert saved["optimizer"] == "adan"
    (tmp_path / "adam.yaml").write_text("optimizer: adam\n", encoding="utf-8")
    capsys.readouterr()
    resume = [*BUILTIN_RUN, "--iters", "6", "--workspace", "b", "--resume", "--config", "adam.yaml"]
    assert main(resume) == 2
    assert "optimizer adan → adam" in capsys.readouterr().err


def test_an_adan_rate_whose_first_step_overflows_float32_is_refused_before_the_run(
    tmp_path, monkeypatch, capsys
):
    """Adan's first step is 50 lr (Adam's 10 lr): --lr 1e36 passed Adam's bound and the run
    raised a torch traceback at its first step, after writing its workspace."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "adan.yaml").write_text("optimizer: adan\n", encoding="utf-8")
    run = [*BUILTIN_RUN, "--iters", "2", "--workspace", "w", "--config", "adan.yaml"]
    assert main([*run, "--lr", "1e36"]) == 2
    err = capsys.readouterr().err
    assert "--lr is too large (1e+36): Adan's steps would overflow float32 above 6.81e+35" in err
    assert not (tmp_path / "w").exists()
