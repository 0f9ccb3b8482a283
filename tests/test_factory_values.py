"""Value tests of how a run's parts are built from its config (mutation round 67P): the
optimiser's constants and groups, the MLPs' precision, the size the prior is told."""

import logging

import pytest
import torch

from dreamtext import factory
from dreamtext.config import resolve_config
from dreamtext.field import FieldConfig

SMALL = FieldConfig(
    num_levels=2,
    log2_hashmap_size=8,
    hidden_dim=8,
    num_blocks=1,
    bg_hidden_dim=8,
    encoding="torch",
)


def test_the_optimiser_is_instant_ngps_adam_with_the_hash_table_at_its_own_rate():
    """β = (0.9, 0.99), ε = 1e-15 (Instant-NGP, stable-dreamfusion); the table at
    ``lr × encoding_lr_scale`` (10 by default), every other parameter at ``lr``."""
    field = factory.build_field(SMALL, "cpu")
    optimizer = factory.build_optimizer(field, 1e-3)
    by_name = {group["name"]: group for group in optimizer.param_groups}
    assert by_name["encoding"]["lr"] == pytest.approx(1e-2)
    assert by_name["mlp"]["lr"] == pytest.approx(1e-3)
    for group in optimizer.param_groups:
        assert group["betas"] == (0.9, 0.99)
        assert group["eps"] == 1e-15
    table = {id(p) for p in field.encoding.parameters()}
    assert {id(p) for p in by_name["encoding"]["params"]} == table
    every = {id(p) for p in field.parameters()}
    assert {id(p) for p in by_name["mlp"]["params"]} == every - table


def test_adam_steps_every_parameter_at_once_to_the_values_of_one_at_a_time():
    """``foreach`` on the CPU too (fewer Python calls a step, one temporary a value instead of
    two): 30 steps of random gradients, some of them zero, end at the same parameters and
    moments, bit for bit, as torch's one-parameter-at-a-time Adam."""
    torch.manual_seed(0)
    field = factory.build_field(SMALL, "cpu")
    other = factory.build_field(SMALL, "cpu")
    other.load_state_dict(field.state_dict())
    built = factory.build_optimizer(field, 1e-2)
    assert all(group["foreach"] is True for group in built.param_groups)
    one_at_a_time = torch.optim.Adam(
        other.param_groups(1e-2), betas=factory.ADAM_BETAS, eps=factory.ADAM_EPS, foreach=False
    )
    for step in range(30):
        for p, q in zip(field.parameters(), other.parameters(), strict=True):
            p.grad = torch.randn_like(p) * (0.0 if step % 7 == 3 else 1e-3)
            q.grad = p.grad.clone()
        built.step()
        one_at_a_time.step()
    for p, q in zip(field.parameters(), other.parameters(), strict=True):
        assert torch.equal(p, q)
        assert torch.equal(built.state[p]["exp_avg_sq"], one_at_a_time.state[q]["exp_avg_sq"])


@pytest.mark.parametrize(
    ("flags", "dtype"),
    [({}, None), ({"fp16": True}, torch.float16), ({"bf16": True}, torch.bfloat16)],
)
def test_the_mlps_autocast_to_the_flags_precision_on_cuda_only(flags, dtype):
    cfg = resolve_config({"prompt": "a red cube", "guidance": flags})
    assert factory.mixed_precision(cfg, torch.device("cuda")) == dtype
    assert factory.mixed_precision(cfg, torch.device("cpu")) is None


def test_a_built_field_carries_the_mlp_dtype_it_was_given():
    assert factory.build_field(SMALL, "cpu", torch.bfloat16).mlp_dtype == torch.bfloat16
    assert factory.build_field(SMALL, "cpu").mlp_dtype is None


def test_auto_tries_to_compile_once_per_process_after_a_failure(monkeypatch, caplog):
    """A batch's later prompts, after ``"auto"`` failed once: eager, without a second try (each
    costs a compile) and without a second warning."""
    import logging

    from dreamtext.errors import DreamtextError
    from dreamtext.field import NeRFField

    tries = []

    class OnCuda(NeRFField):  # the decision only: the field stays on the CPU
        def __init__(self, cfg, device=None):
            super().__init__(cfg, "cpu")

        def compile_mlps(self, backend="inductor", remedy=""):
            tries.append(remedy)
            raise DreamtextError(f"no compiler here; {remedy}")

    monkeypatch.setattr(factory, "NeRFField", OnCuda)
    monkeypatch.setattr(factory, "_AUTO_COMPILE_FAILED", [])
    with caplog.at_level(logging.WARNING, logger="dreamtext"):
        for _ in range(3):
            assert factory.build_field(SMALL, "cuda", compile="auto").mlp_dtype is None
    assert tries == [factory.AUTO_COMPILE_FALLBACK]
    assert len(caplog.records) == 1


def test_build_parts_gives_the_field_the_flags_mlp_precision(monkeypatch):
    """``--fp16`` on CUDA: the MLPs autocast to float16 (``mixed_precision``), through
    ``build_parts`` as the trainer builds a run."""
    seen = []
    monkeypatch.setattr(factory, "build_field", lambda cfg, device, dtype, _: seen.append(dtype))
    monkeypatch.setattr(factory, "build_renderer", lambda cfg, device: None)
    cfg = resolve_config({"prompt": "a red cube", "guidance": {"fp16": True}})
    factory.build_parts(cfg, torch.device("cuda"), with_guidance=False, with_optimizer=False)
    factory.build_parts(cfg, torch.device("cpu"), with_guidance=False, with_optimizer=False)
    assert seen == [torch.float16, None]


# -- mutation round 69L ------------------------------------------------------------------------


def test_build_parts_gives_the_optimiser_the_configs_learning_rate():
    """``lr: 5e-4``: the MLPs at 5e-4, the hash table at 10 × that (``encoding_lr_scale``)."""
    cfg = resolve_config(
        {
            "prompt": "a red cube",
            "lr": 5e-4,
            "field": {"num_levels": 2, "log2_hashmap_size": 8, "encoding": "torch"},
        }
    )
    parts = factory.build_parts(cfg, torch.device("cpu"), with_guidance=False)
    by_name = {group["name"]: group["lr"] for group in parts.optimizer.param_groups}
    assert by_name == pytest.approx({"mlp": 5e-4, "encoding": 5e-3})


def test_compile_field_on_the_cpu_warns_naming_the_setting_that_asked(caplog):
    """``render.compile_field: true`` from a --config YAML reaches the CPU without --compile:
    the warning named only --compile, a flag the user never gave."""
    with caplog.at_level(logging.WARNING, logger="dreamtext"):
        field = factory.build_field(SMALL, "cpu", compile=True)
    assert not field.compiled
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "render.compile_field: true (--compile sets it): the field's MLPs compile for CUDA "
        "only; they run eagerly here"
    ]


def small_config(**overrides) -> object:
    field = {"num_levels": 2, "log2_hashmap_size": 8, "hidden_dim": 8, "encoding": "torch"}
    return resolve_config({"prompt": "a red cube", "h": 8, "w": 8, "field": field, **overrides})


COMPILE = {"compile": True, "compile_vae": True, "compile_mode": "reduce-overhead"}


def test_compile_on_the_cpu_is_one_line_once_a_process(tiny_sd_path, monkeypatch, caplog):
    """``--compile`` on a CPU printed two lines, the guidance's and the field's, for the one
    flag, and a batch printed both again at every prompt: now one line, the first time."""
    monkeypatch.setattr(factory, "_IGNORED_COMPILE_WARNED", set())
    cfg = small_config(
        guidance={"model": str(tiny_sd_path), **COMPILE},
        render={"compile_field": True},
    )
    with caplog.at_level(logging.WARNING, logger="dreamtext"):
        for _ in range(2):  # a batch's two prompts
            parts = factory.build_parts(cfg, torch.device("cpu"))
            assert not parts.field.compiled and parts.guidance.compiled == []
    assert [r.getMessage() for r in caplog.records] == [
        "--compile: the guidance and the field's MLPs compile for CUDA only; they run eagerly here"
    ]
    assert cfg.guidance.compile and cfg.render.compile_field is True  # config.json's, as asked


def test_compile_of_the_built_in_prior_on_the_cpu_is_one_line(caplog, monkeypatch, tmp_path):
    monkeypatch.setattr(factory, "_IGNORED_COMPILE_WARNED", set())
    monkeypatch.setenv("DREAMTEXT_CACHE", str(tmp_path))
    cfg = small_config(
        guidance={"model": "builtin:shapes", **COMPILE},
        render={"compile_field": True},
    )
    with caplog.at_level(logging.WARNING, logger="dreamtext"):
        factory.build_parts(cfg, torch.device("cpu"))
    assert [r.getMessage() for r in caplog.records] == [
        "--compile: the built-in prior has no network to compile, and the field's MLPs compile "
        "for CUDA only; they run eagerly here"
    ]


@pytest.mark.parametrize(
    ("guidance", "render", "line"),
    [
        (
            {"compile_vae": True},
            {"compile_field": True},
            "guidance.compile_vae and render.compile_field: true: the guidance and the field's "
            "MLPs compile for CUDA only; they run eagerly here",
        ),
        (
            {"compile_vae": True},
            {},
            "guidance.compile_vae: the guidance compiles for CUDA only; it runs eagerly here",
        ),
        (
            {},
            {"compile_field": True},
            "render.compile_field: true: the field's MLPs compile for CUDA only; they run "
            "eagerly here",
        ),
        ({}, {}, None),  # "auto", the default: eager on the CPU, silently
    ],
)
def test_the_cpus_compile_line_names_the_config_settings_that_alone_asked(guidance, render, line):
    cfg = small_config(guidance={"model": "some/model", **guidance}, render=render)
    assert factory.ignored_compile_line(cfg, torch.device("cpu")) == line
    assert factory.ignored_compile_line(cfg, torch.device("cuda")) is None  # CUDA compiles
