"""Settings that ran for ever or were killed by the system are refused before a run starts:
one line on stderr naming the setting and its file, exit 2, no workspace written."""

import math

import pytest
import yaml
from step_faults import raise_at_step
from tiny_models import TINY_SIZES

from dreamtext.cli import main
from dreamtext.config import PREVIEW_VIEWS_MAX, TrainConfig, validate
from dreamtext.errors import DreamtextError
from dreamtext.renderer import MARCH_STEPS_MAX, RenderConfig

# How the field memory check's line starts.
GRAPH = "dreamtext: error: a training step's graph of at least "
BUILTIN_RUN = ["text", "a red cube", "--model", "builtin:shapes", "--no-export", "--iters", "2"]


def refused(tmp_path, monkeypatch, capsys, yaml_text, *flags, available=None):
    """The one stderr line of ``dreamtext text`` with a ``--config`` of ``yaml_text`` (and
    ``flags``), where ``available`` bytes of memory are free (``None``: the machine's), after
    checking that it exited 2 and wrote nothing."""
    if available is not None:
        from dreamtext import trainer

        monkeypatch.setattr(trainer, "available_memory", lambda: available)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "big.yaml").write_text(yaml_text, encoding="utf-8")
    code = main([*BUILTIN_RUN, "--config", "big.yaml", "--workspace", "w", *flags])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(lines) == 1, lines
    assert not (tmp_path / "w").exists()
    return lines[0]


def test_a_hundred_million_preview_views_are_refused_naming_the_key_and_its_file(
    tmp_path, monkeypatch, capsys
):
    """It trained, then rendered 100,000,000 views for its first preview: for ever."""
    line = refused(tmp_path, monkeypatch, capsys, "preview_views: 100000000\n")
    assert line == (
        "dreamtext: error: config field 'preview_views' (in big.yaml) must be at most 64 (each "
        "preview renders every view; the default is 4), got 100000000"
    )


def test_a_trillion_march_steps_are_refused_naming_the_key_and_its_file(
    tmp_path, monkeypatch, capsys
):
    """The marcher took 10^12 steps a ray at its first step: for ever."""
    yaml_text = "render:\n  sampler: occupancy\n  march_steps: 1000000000000\n"
    assert refused(tmp_path, monkeypatch, capsys, yaml_text) == (
        "dreamtext: error: render.march_steps (in big.yaml) must be at most 4,096 (16× the "
        "default 256; time and memory grow with it), got 1000000000000"
    )


def test_march_steps_up_to_the_bound_are_taken():
    RenderConfig(march_steps=MARCH_STEPS_MAX).validate()
    with pytest.raises(DreamtextError, match=r"render\.march_steps must be at most 4,096"):
        RenderConfig(march_steps=MARCH_STEPS_MAX + 1).validate()


def test_preview_views_up_to_the_bound_are_taken():
    cfg = TrainConfig(prompt="a cube", preview_views=PREVIEW_VIEWS_MAX)
    validate(cfg)
    cfg.preview_views += 1
    with pytest.raises(DreamtextError, match="'preview_views' must be at most 64"):
        validate(cfg)


def test_the_field_mlps_memory_counts_its_weights_and_what_each_query_keeps_of_each_block():
    """4 levels × 2 features into 8 wide, 2 blocks: (9·8 + 2·11·8 + 9·4) = 284 parameters at
    16 B; a query keeps 8 features and 8 values a linear layer (2 blocks + the output layer), 3
    a block where eager."""
    from dreamtext.field import FieldConfig, mlp_memory_at_least

    cfg = FieldConfig(num_levels=4, level_dim=2, hidden_dim=8, num_blocks=2)
    assert mlp_memory_at_least(cfg, 0) == 16 * 284
    assert mlp_memory_at_least(cfg, 10, value_bytes=2) == 16 * 284 + 2 * (8 + 3 * 8) * 10
    assert mlp_memory_at_least(cfg, 10, 4, eager=True) == 16 * 284 + 4 * (8 + 7 * 8) * 10


def test_builtin_shapes_steps_query_the_field_at_the_dense_samples_of_the_rays_that_meet_it():
    """32 px, batch 2, 32 dense samples a ray; from 1.8 at 45° the scene's ball fills the image
    past its inscribed disc: π/4 of the 2048 rays."""
    from dreamtext.config import resolve_config
    from dreamtext.trainer import graph_queries_at_least

    cfg = resolve_config({"prompt": "a red cube"}, preset="builtin-shapes")
    assert graph_queries_at_least(cfg) == int(2048 * math.pi / 4) * 32
    cfg.cameras.radius_range = (18.0, 18.0)  # ten times as far: tan θ / tan 22.5° = 0.134
    ratio = math.tan(math.asin(1 / 18)) / math.tan(math.radians(22.5))
    assert graph_queries_at_least(cfg) == int(2048 * math.pi / 4 * ratio**2) * 32 == 29 * 32
    cfg.render.recompute_field = True  # one piece of the backward's re-run at a time
    cfg.render.chunk_points = 700
    assert graph_queries_at_least(cfg) == 100


def test_a_hundred_thousand_mlp_blocks_are_refused_before_anything_is_written(
    tmp_path, monkeypatch, capsys
):
    """`field.num_blocks: 100000` wrote a workspace and was killed by the system (rc 137) in its
    first step: the memory check counted the rays alone."""
    config = "field:\n  num_blocks: 100000\n"
    line = refused(tmp_path, monkeypatch, capsys, config, available=22 * 10**9)
    assert line.startswith(
        f"{GRAPH}{int(2048 * math.pi / 4) * 32:,} field queries at once "
        "(--h 32 --w 32, batch 2, render.num_steps 32 + render.upsample_steps 0 samples a ray) "
        "through the field's MLP (field.num_blocks 100000 × field.hidden_dim 32) need at least "
        "1,978 GB of memory and 22.0 GB is available"
    )
    assert line.endswith(
        "; lower field.num_blocks or field.hidden_dim, render.num_steps or "
        "render.upsample_steps, or --h"
    )


def test_a_trillion_dense_samples_a_ray_are_refused_naming_the_key_and_its_file(
    tmp_path, monkeypatch, capsys
):
    """`render.num_steps: 1000000000000` wrote a workspace and ran out of memory at step 0."""
    yaml_text = "render:\n  num_steps: 1000000000000\n"
    assert refused(tmp_path, monkeypatch, capsys, yaml_text) == (
        "dreamtext: error: render.num_steps (in big.yaml) must be at most 4,096 (the dense "
        "sampler's samples a ray; the default is 64), got 1000000000000"
    )
    RenderConfig(num_steps=MARCH_STEPS_MAX, upsample_steps=MARCH_STEPS_MAX).validate()
    with pytest.raises(DreamtextError, match=r"render\.upsample_steps must be at most 4,096"):
        RenderConfig(upsample_steps=MARCH_STEPS_MAX + 1).validate()


def test_dense_samples_too_many_for_the_mlp_are_named_not_only_the_mlps_size(
    tmp_path, monkeypatch, capsys
):
    """A direct backward of 4,096 dense samples a ray was refused as "the field's MLP
    (field.num_blocks 1 × field.hidden_dim 32) needs at least ...; lower field.num_blocks or
    field.hidden_dim": the samples were too many, not the MLP too large."""
    config = "render:\n  num_steps: 4096\n  backprop: direct\n"
    line = refused(tmp_path, monkeypatch, capsys, config, available=10**9)
    assert line.startswith(
        f"{GRAPH}{int(2048 * math.pi / 4) * 4096:,} field "
        "queries at once (--h 32 --w 32, batch 2, render.num_steps 4096 + render.upsample_steps 0 "
        "samples a ray) through the field's MLP"
    )
    assert line.endswith("render.num_steps or render.upsample_steps, or --h")


def test_a_field_re_run_a_piece_at_a_time_is_told_to_lower_the_piece(tmp_path, monkeypatch, capsys):
    """With render.recompute_field the graph holds chunk_points / 7 queries at a time, whatever
    the samples a ray: lowering render.num_steps would not have helped."""
    config = (
        "render:\n  recompute_field: true\n  chunk_points: 7000\nfield:\n  num_blocks: 10000000\n"
    )
    line = refused(tmp_path, monkeypatch, capsys, config, available=22 * 10**9)
    assert line.startswith(
        f"{GRAPH}1,000 field queries at once (--h 32 --w 32, batch 2, "
        "render.chunk_points 7000 over 7 queries a sample at a time) through the field's MLP "
        "(field.num_blocks 10000000 × field.hidden_dim 32) need at least "
    )
    assert line.endswith("; lower field.num_blocks or field.hidden_dim, render.chunk_points")


def test_a_deferred_backward_holds_one_chunk_of_the_samples_in_the_graph(monkeypatch):
    """builtin-shapes at 512 px with render.grad_chunk_points 2^18 peaked at 2.6 GB (peak RSS,
    2 CPU cores), and was refused where 6 GB were available: the check counted all 13 M dense
    samples in the MLP's graph, where the deferred backward re-renders 2^18 queries at a time."""
    import torch

    from dreamtext import trainer
    from dreamtext.config import resolve_config
    from dreamtext.trainer import check_field_memory, graph_queries_at_least

    overrides = {"prompt": "a red cube", "h": 512, "w": 512}
    overrides["render"] = {"grad_chunk_points": 2**18}
    cfg = resolve_config(overrides, preset="builtin-shapes")
    assert graph_queries_at_least(cfg) == 2**18 // 7
    monkeypatch.setattr(trainer, "available_memory", lambda: 6 * 10**9)
    check_field_memory(cfg, torch.device("cpu"))  # no DreamtextError
    cfg.render.grad_chunk_points = 2**25  # a chunk is at most chunk_size rays
    assert graph_queries_at_least(cfg) == cfg.render.chunk_size
    cfg.render.backprop = "direct"  # one graph of every sample
    assert graph_queries_at_least(cfg) == int(2 * 512 * 512 * math.pi / 4) * 32


def test_a_deferred_backward_too_large_is_told_to_lower_its_chunk(tmp_path, monkeypatch, capsys):
    """A chunk of the deferred backward's re-render is what the MLP's graph holds: the line names
    render.grad_chunk_points, not the samples a ray."""
    config = "h: 512\nw: 512\nrender:\n  grad_chunk_points: 70000\nfield:\n  num_blocks: 10000000\n"
    line = refused(tmp_path, monkeypatch, capsys, config, available=22 * 10**9)
    assert line.startswith(
        f"{GRAPH}10,000 field queries at once (--h 512 --w 512, batch 2, "
        "render.grad_chunk_points 70000 over 7 queries a sample at a time) through the field's "
        "MLP (field.num_blocks 10000000 × field.hidden_dim 32) need at least "
    )
    assert line.endswith("; lower field.num_blocks or field.hidden_dim, render.grad_chunk_points")


def test_a_backward_that_auto_runs_direct_is_not_told_to_lower_a_chunk(
    tmp_path, monkeypatch, capsys
):
    """A batch of 4 at 32 px (131,072 dense samples, far under grad_chunk_points' 2^25) runs
    its backward direct, yet the line said "render.chunk_size 65536 rays at a time; lower ...
    render.chunk_size", which would change nothing."""
    config = "field:\n  num_blocks: 100000\n"
    line = refused(tmp_path, monkeypatch, capsys, config, "--batch-size", "4", available=22 * 10**9)
    assert "render.chunk_size" not in line
    assert "(--h 32 --w 32, batch 4, render.num_steps 32 + render.upsample_steps 0 samples" in line
    assert line.endswith("render.num_steps or render.upsample_steps, or --batch-size or --h")


def test_a_run_from_before_the_bounds_is_told_how_to_resume(tmp_path, monkeypatch, capsys):
    """A run whose config.json holds a value past a bound (made before it, or an edited file)
    was refused on --resume without a word of the way on: a --config that sets the value in
    range applies over config.json and resumes it."""
    import json

    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY_SIZES), encoding="utf-8")
    assert main([*BUILTIN_RUN, "--config", "tiny.yaml", "--workspace", "w"]) == 0
    saved = json.loads((tmp_path / "w" / "config.json").read_text(encoding="utf-8"))
    saved["preview_views"] = 100
    (tmp_path / "w" / "config.json").write_text(json.dumps(saved), encoding="utf-8")
    resume = [*BUILTIN_RUN[:-1], "4", "--workspace", "w", "--resume"]
    capsys.readouterr()
    assert main(resume) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "dreamtext: error: config field 'preview_views' (in the workspace's config.json) must be "
        "at most 64 (each preview renders every view; the default is 4), got 100; to resume the "
        "run, pass --config with a YAML file that sets preview_views in range (it applies over "
        "config.json)"
    ]
    (tmp_path / "fix.yaml").write_text("preview_views: 4\n", encoding="utf-8")
    assert main([*resume, "--config", "fix.yaml"]) == 0


def test_a_resumed_run_is_not_told_to_change_what_a_resume_keeps():
    """The seed and the field are fixed for a resume: a --config changing them is refused next,
    so the line keeps to the refusal."""
    from dreamtext.config import with_resume_fix

    line = "config field 'seed' (in the workspace's config.json) must be from 0 to 9, got 10"
    assert with_resume_fix(line) == line
    line = "field.num_levels (in the workspace's config.json) must be at least 1, got 0"
    assert with_resume_fix(line) == line
    line = "render.march_steps (in the workspace's config.json) must be at most 4,096, got 5000"
    assert with_resume_fix(line).endswith(
        "; to resume the run, pass --config with a YAML file that sets render.march_steps in "
        "range (it applies over config.json)"
    )
    line = "render.march_steps (in fix.yaml) must be at most 4,096, got 5000"
    assert with_resume_fix(line) == line


@pytest.mark.parametrize(
    "field",
    [
        {},  # the default: 16 levels × 2 features, 2^19 rows a level at most
        {"num_levels": 8, "log2_hashmap_size": 14, "finest_resolution_factor": 256.0},
        {"num_levels": 3, "level_dim": 4, "log2_hashmap_size": 12, "base_resolution": 8},
        {"num_levels": 1, "log2_hashmap_size": 10, "bound": 2.0, "density_head": "separate"},
        {"num_levels": 5, "log2_hashmap_size": 24, "finest_resolution_factor": 40.0},  # dense
        # The finest level is finest_resolution_factor × bound: a bound of 2 doubles it.
        {"num_levels": 4, "log2_hashmap_size": 24, "finest_resolution_factor": 40.0, "bound": 2.0},
    ],
)
def test_the_memory_check_counts_the_parameters_of_the_field_it_builds(field):
    """The check's counts are the built field's: the hash table's values
    (:func:`grid_parameters`, from the layout the encoding builds) and the MLPs' (its
    parameters at 1 B each), the background MLP aside."""
    from dreamtext.field import FieldConfig, NeRFField, grid_parameters, mlp_memory_at_least

    cfg = FieldConfig(**field)
    built = NeRFField(cfg)
    assert grid_parameters(cfg) == sum(p.numel() for p in built.encoding.parameters())
    mlps = [p for name, p in built.named_parameters() if not name.startswith(("enc", "back"))]
    assert mlp_memory_at_least(cfg, 0, parameter_bytes=1) == sum(p.numel() for p in mlps)


@pytest.mark.parametrize("kind", ["adam", "adan"])
def test_the_memory_check_counts_the_state_the_optimiser_keeps(kind):
    """After one step Adam keeps two values a parameter, Adan four (its three averages and the
    last gradient): OPTIMIZER_STATE_VALUES, which the check counts, besides the step counts."""
    import torch

    from dreamtext.factory import OPTIMIZER_STATE_VALUES, build_optimizer
    from dreamtext.field import FieldConfig, NeRFField

    field = NeRFField(FieldConfig(num_levels=2, log2_hashmap_size=8, hidden_dim=8, num_blocks=1))
    optimizer = build_optimizer(field, 1e-3, kind)
    for p in field.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()
    kept = sum(
        value.numel()
        for state in optimizer.state.values()
        for name, value in state.items()
        if name != "step"
    )
    parameters = sum(p.numel() for p in field.parameters())
    assert kept == OPTIMIZER_STATE_VALUES[kind] * parameters


@pytest.mark.parametrize("kind", ["adam", "adan"])
def test_the_tables_count_is_what_a_first_step_really_takes_and_no_more(kind):
    """What the check counts for the table (grid_memory_at_least) against the peak RSS that
    building the field, its gradients and the optimiser's first step add (16 levels × 4
    features at 2^19: 24.4 M values, 98 MB of float32). It counted the table, its gradient and
    the state alone: 16 B a value with Adam where the step peaked at 24 (its update's two
    temporaries on the CPU, one parameter at a time; 20 since Adam steps with foreach), 24 with
    Adan where it peaked at 28. Now it counts what was measured (to 0.1%: a few pages either
    way), and at least 90% of it."""
    from peak_growth import run_measured

    script = (
        "import sys, torch\n"
        "from dreamtext.config import resolve_config\n"
        "from dreamtext.factory import build_optimizer\n"
        "from dreamtext.field import FieldConfig, NeRFField\n"
        "from dreamtext.trainer import grid_memory_at_least\n"
        "def first_step(built):\n"
        "    for p in built.parameters():\n"
        "        p.grad = torch.ones_like(p)\n"
        "    build_optimizer(built, 1e-3, sys.argv[1]).step()\n"
        # torch.optim's first step imports modules (~150 MB), which a run has before its field
        "first_step(NeRFField(FieldConfig(num_levels=2, log2_hashmap_size=8)))\n"
        "field = {'num_levels': 16, 'level_dim': 4, 'log2_hashmap_size': 19}\n"
        "cfg = resolve_config({'prompt': 'a cube', 'field': field, 'optimizer': sys.argv[1]})\n"
        "before = rss('VmRSS')\n"
        "reset_peak()\n"  # VmHWM from here
        "first_step(NeRFField(cfg.field))\n"
        "print(rss('VmHWM') - before, grid_memory_at_least(cfg, torch.device('cpu')))\n"
    )
    out = run_measured(script, kind)
    measured, counted = map(int, out.split())
    # 585.3 MB measured, 585.4 counted with Adam: pages a few KB either way
    assert 0.9 * measured <= counted <= 1.001 * measured


def test_a_hash_table_too_large_is_refused_naming_its_keys_before_anything_is_written(
    tmp_path, monkeypatch, capsys
):
    """16 levels × 8 features at 2^24 rows a level (39,601,112 rows of builtin-shapes' levels,
    1.3 GB of float32) with its gradient, Adam's two moments and the update's temporary is
    6.3 GB: where 2 GB were
    available the check counted the MLP alone, the run wrote its workspace and ran out of
    memory after step 0, told to lower --h or the samples."""
    yaml_text = "field:\n  log2_hashmap_size: 24\n  level_dim: 8\n  num_levels: 16\n"
    assert refused(tmp_path, monkeypatch, capsys, yaml_text, available=2 * 10**9) == (
        "dreamtext: error: the field's hash grid (field.num_levels 16 × field.level_dim 8 "
        "features, up to 2^24 rows a level: field.log2_hashmap_size) with its gradient, "
        "Adam's two moments and the update's temporaries needs 6.3 GB; the run needs at least "
        "6.4 GB of memory and 2.0 GB is available; lower field.log2_hashmap_size, "
        "field.num_levels or field.level_dim"
    )


def test_the_default_fields_table_at_2_to_the_24_needs_5_3_gb_with_adam_6_4_with_adan(monkeypatch):
    """133,023,704 rows × 2 features: the table, its gradient, Adam's two moments and the one
    temporary of its update (foreach: √v divided in place) are 5.3 GB (20 B a value; one
    parameter at a time made two temporaries on the CPU, 24 B, 6.4 GB), and Adan's four values
    6.4 GB (24 B; 28 B, 7.4 GB, while it clipped a copy of the gradient): a machine of 7 GB takes
    both, one of 6 GB Adam's only."""
    import torch

    from dreamtext import trainer
    from dreamtext.config import resolve_config
    from dreamtext.field import grid_parameters

    cfg = resolve_config({"prompt": "a red cube", "field": {"log2_hashmap_size": 24}})
    assert grid_parameters(cfg.field) == 133_023_704 * 2
    monkeypatch.setattr(trainer, "available_memory", lambda: 7 * 10**9)
    trainer.check_field_memory(cfg, torch.device("cpu"))  # no DreamtextError
    cfg.optimizer = "adan"
    trainer.check_field_memory(cfg, torch.device("cpu"))
    monkeypatch.setattr(trainer, "available_memory", lambda: 6 * 10**9)
    with pytest.raises(DreamtextError, match=r"and Adan's four state values needs 6\.4 GB; "):
        trainer.check_field_memory(cfg, torch.device("cpu"))
    cfg.optimizer = "adam"
    trainer.check_field_memory(cfg, torch.device("cpu"))  # 5.3 GB: no DreamtextError


def gpu_of(monkeypatch, total_memory):
    """torch.cuda's device properties as a GPU of ``total_memory`` bytes has them."""
    import types

    import torch

    props = types.SimpleNamespace(name="a GPU", total_memory=total_memory)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: props)


def test_on_a_gpu_the_mlp_is_checked_against_its_memory_in_the_precision_it_runs(monkeypatch):
    """On CUDA the MLP may run compiled, keeping each linear layer's input alone, in 2 bytes
    with --fp16: `field.num_blocks: 100000` on builtin-shapes' 51,456 queries needs 331.1 GB
    there (660.4 GB in float32; 1,978 GB eager on the CPU), against the GPU's total memory."""
    import torch

    from dreamtext.config import resolve_config
    from dreamtext.trainer import check_field_memory

    gpu_of(monkeypatch, 80 * 10**9)
    overrides = {"prompt": "a red cube", "field": {"num_blocks": 100000}}
    cfg = resolve_config(overrides, preset="builtin-shapes")
    with pytest.raises(DreamtextError) as float32:
        check_field_memory(cfg, torch.device("cuda"))
    cfg.guidance.fp16 = True
    with pytest.raises(DreamtextError) as fp16:
        check_field_memory(cfg, torch.device("cuda"))
    has = "of GPU memory and the GPU has 80.0 GB (its weights and activations); lower "
    assert f"need at least 660.4 GB {has}" in str(float32.value)
    assert f"need at least 331.1 GB {has}" in str(fp16.value)


def test_on_a_gpu_a_hash_table_too_large_is_refused_against_its_memory(monkeypatch):
    """The table's 6.3 GB (16 levels × 8 features at 2^24, with its gradient, Adam's moments
    and its update's one temporary on CUDA) do not fit a GPU of 4 GB: the table stays float32
    with --fp16, which lowers the MLPs' activations alone."""
    import torch

    from dreamtext.config import resolve_config
    from dreamtext.trainer import check_field_memory

    gpu_of(monkeypatch, 4 * 10**9)
    field = {"log2_hashmap_size": 24, "num_levels": 16, "level_dim": 8}
    cfg = resolve_config({"prompt": "a red cube", "field": field}, preset="builtin-shapes")
    cfg.guidance.fp16 = True
    with pytest.raises(DreamtextError) as refusal:
        check_field_memory(cfg, torch.device("cuda"))
    assert str(refusal.value).startswith("the field's hash grid (field.num_levels 16 × ")
    assert str(refusal.value).endswith(
        "needs 6.3 GB; the run needs at least 6.4 GB of GPU memory and the GPU has 4.0 GB; "
        "lower field.log2_hashmap_size, field.num_levels or field.level_dim"
    )


def test_a_batch_whose_field_cannot_fit_is_refused_once_before_the_field_is_built(
    tmp_path, monkeypatch, capsys
):
    """The batch built its field and dropped it (to check the encoding) before any memory
    check, allocating the table it then refused line by line in a table of failures, with its
    batch.jsonl written: every line shares the config, so the line is said once, nothing
    written, exit 2."""
    from dreamtext import factory, trainer

    def no_build(*args, **kwargs):
        raise AssertionError("the field was built before the memory check")

    monkeypatch.setattr(trainer, "available_memory", lambda: 2 * 10**9)
    monkeypatch.setattr(factory, "build_field", no_build)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shapes.txt").write_text("a red cube\na blue sphere\n", encoding="utf-8")
    yaml_text = "field:\n  log2_hashmap_size: 24\n  level_dim: 8\n  num_levels: 16\n"
    (tmp_path / "big.yaml").write_text(yaml_text, encoding="utf-8")
    args = ["batch", "shapes.txt", "--model", "builtin:shapes", "--no-export", "--iters", "2"]
    assert main([*args, "--config", "big.yaml", "--workspace", "runs"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("dreamtext: error: the field's hash grid (field.num_levels 16 ")
    assert not (tmp_path / "runs").exists()


def test_a_resumed_run_whose_table_cannot_fit_is_not_told_to_lower_the_field_it_keeps(
    tmp_path, monkeypatch, capsys
):
    """A run trained where its table (0.2 GB with its gradient and Adam's) fitted, resumed
    where 0.1 GB is available, was told to lower field.log2_hashmap_size, and a --config that
    did was refused ("a resumed run keeps its ... field"): the line says so and what can be done
    instead; the run is untouched. (2^19 rows: at 2^18 the table's 0.1 GB left the run needing
    "at least 0.1 GB" where 0.1 GB was available, as rounded.)"""
    from dreamtext import trainer

    monkeypatch.chdir(tmp_path)
    yaml_text = "field:\n  log2_hashmap_size: 19\n  level_dim: 4\n"
    (tmp_path / "big.yaml").write_text(yaml_text, encoding="utf-8")
    assert main([*BUILTIN_RUN[:-1], "1", "--config", "big.yaml", "--workspace", "w"]) == 0
    files = {p: p.read_bytes() for p in (tmp_path / "w").rglob("*") if p.is_file()}
    capsys.readouterr()
    monkeypatch.setattr(trainer, "available_memory", lambda: 10**8)
    assert main([*BUILTIN_RUN, "--workspace", "w", "--resume"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "dreamtext: error: the field's hash grid (field.num_levels 8 × field.level_dim 4 "
        "features, up to 2^19 rows a level: field.log2_hashmap_size) with its gradient, "
        "Adam's two moments and the update's temporaries needs 0.2 GB; the run needs at least "
        "0.2 GB of memory and 0.1 GB is available; a resumed run keeps its field: resume it on "
        "a machine with more memory, "
        "or start a new run (--workspace NEW_FOLDER) with a smaller field.log2_hashmap_size, "
        "field.num_levels or field.level_dim"
    ]
    assert {p: p.read_bytes() for p in (tmp_path / "w").rglob("*") if p.is_file()} == files


def test_a_batch_with_resumed_lines_whose_table_cannot_fit_names_what_each_line_can_change(
    tmp_path, monkeypatch, capsys
):
    """A batch whose pending lines resume runs (line 1: trained 1 step, --iters 2 trains it
    further) was told to lower field.log2_hashmap_size, which those lines then refused at their
    turn ("a resumed run keeps its ... field"): the line says which lines resume and what they
    and the new lines can do; nothing is written."""
    from dreamtext import trainer

    monkeypatch.chdir(tmp_path)
    yaml_text = "field:\n  log2_hashmap_size: 18\n  level_dim: 4\n"
    (tmp_path / "big.yaml").write_text(yaml_text, encoding="utf-8")
    run = [*BUILTIN_RUN[:-1], "1", "--config", "big.yaml", "--workspace", "runs/a_red_cube"]
    assert main(run) == 0
    files = {p: p.read_bytes() for p in (tmp_path / "runs").rglob("*") if p.is_file()}
    capsys.readouterr()
    monkeypatch.setattr(trainer, "available_memory", lambda: 10**8)
    keys = "field.log2_hashmap_size, field.num_levels or field.level_dim"
    resumed = "the batch resumes the runs of line 1, which keep their field: resume those on a "
    resumed += "machine with more memory, or remove their folders to train them anew"
    for lines, flags, fix in [
        ("a red cube\na blue cube\n", [], f"lower {keys} for the new lines; {resumed} too"),
        ("a red cube\n", [], f"{resumed} with a smaller {keys}"),
        ("a red cube\na blue cube\n", ["--overwrite"], f"lower {keys}"),  # all new runs
    ]:
        (tmp_path / "shapes.txt").write_text(lines, encoding="utf-8")
        args = ["batch", "shapes.txt", "--model", "builtin:shapes", "--no-export", "--iters", "2"]
        assert main([*args, *flags, "--config", "big.yaml", "--workspace", "runs"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1
        assert err[0].startswith("dreamtext: error: the field's hash grid (field.num_levels 8 ")
        assert err[0].endswith(f"is available; {fix}")
    assert {p: p.read_bytes() for p in (tmp_path / "runs").rglob("*") if p.is_file()} == files


def test_a_resumed_run_whose_mlp_cannot_fit_is_told_to_lower_the_samples_alone(monkeypatch):
    """A resume keeps field.num_blocks and field.hidden_dim: the line names the samples, which
    it can change, and a machine with more memory."""
    import torch

    from dreamtext import trainer
    from dreamtext.config import resolve_config

    overrides = {"prompt": "a red cube", "field": {"num_blocks": 100000}}
    cfg = resolve_config(overrides, preset="builtin-shapes")
    monkeypatch.setattr(trainer, "available_memory", lambda: 22 * 10**9)
    with pytest.raises(DreamtextError) as refusal:
        trainer.check_field_memory(cfg, torch.device("cpu"), resume=True)
    assert str(refusal.value).endswith(
        "; lower render.num_steps or render.upsample_steps, or --h (a resumed run keeps its "
        "field.num_blocks and field.hidden_dim), or resume it on a machine with more memory"
    )


def test_a_batchs_mlp_that_cannot_fit_names_what_its_resumed_and_new_lines_can_lower(monkeypatch):
    """A batch whose line 1 resumes (its run keeps field.num_blocks and field.hidden_dim): the
    samples for every line, the MLP's size for the new lines only."""
    import torch

    from dreamtext import trainer
    from dreamtext.config import resolve_config

    overrides = {"prompt": "a red cube", "field": {"num_blocks": 100000}}
    cfg = resolve_config(overrides, preset="builtin-shapes")
    monkeypatch.setattr(trainer, "available_memory", lambda: 22 * 10**9)
    fewer = "render.num_steps or render.upsample_steps, or --h"
    kept = "the batch resumes the runs of line 1, which keep their field.num_blocks and "
    kept += "field.hidden_dim"
    for resume, fix in [
        (False, f"{fewer}, or field.num_blocks or field.hidden_dim for the new lines ({kept})"),
        (True, f"{fewer} ({kept}), or resume those on a machine with more memory"),
    ]:
        with pytest.raises(DreamtextError) as refusal:
            trainer.check_field_memory(cfg, torch.device("cpu"), resume, resumed="line 1")
        assert str(refusal.value).endswith(f"; lower {fix}")


def test_an_mlp_that_fits_alone_but_not_beside_its_table_says_the_table_is_counted(monkeypatch):
    """The MLP's graph (1,024 dense samples a ray, a direct backward: 1.27 GB) is most of the
    need, the table (8 levels × 8 features at 2^18: 0.24 GB) the rest: the line blames the MLP
    and the samples as before, its figure counting the table, which it names."""
    import torch

    from dreamtext import trainer
    from dreamtext.config import resolve_config

    overrides = {"prompt": "a red cube", "field": {"log2_hashmap_size": 18, "level_dim": 8}}
    overrides["render"] = {"num_steps": 1024, "backprop": "direct"}
    cfg = resolve_config(overrides, preset="builtin-shapes")
    monkeypatch.setattr(trainer, "available_memory", lambda: 13 * 10**8)
    with pytest.raises(DreamtextError) as refusal:
        trainer.check_field_memory(cfg, torch.device("cpu"))
    assert (
        "need at least 1.5 GB of memory and 1.3 GB is available (its weights and activations, "
        "and the hash grid's 0.2 GB); lower field.num_blocks or field.hidden_dim, "
        "render.num_steps or render.upsample_steps, or --h"
    ) in str(refusal.value)


@pytest.mark.parametrize("big_table", [True, False])
def test_out_of_memory_in_a_step_names_the_tables_keys_where_the_table_is_much_of_it(
    tmp_path, monkeypatch, capsys, big_table
):
    """`field.log2_hashmap_size: 24` with 16 levels × 4 features passed the check (a lower
    bound) and ran out of memory in its first update of a 32 px render, told to lower --h/--w,
    --batch-size and the samples alone. Where the table (8 levels × 4 features at 2^18 here:
    0.1 GB) is a quarter or more of what the run held (0.4 GB, as if measured) the line also
    names its keys, for a new run (the saved one keeps its field); the preset's own table
    (6 MB of a run of over 0.1 GB) is not named. One line, exit 2."""
    from dreamtext import trainer

    monkeypatch.chdir(tmp_path)
    if big_table:
        monkeypatch.setattr(trainer, "memory_peak", lambda memory: 4 * 10**8, raising=False)
    yaml_text = "field:\n  log2_hashmap_size: 18\n  level_dim: 4\n" if big_table else "seed: 0\n"
    (tmp_path / "c.yaml").write_text(yaml_text, encoding="utf-8")
    raise_at_step(monkeypatch, 1, MemoryError())
    assert main([*BUILTIN_RUN, "--config", "c.yaml", "--workspace", "w"]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("dreamtext")]
    assert len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith("dreamtext: error: out of memory after step 1 (32x32 px, batch 2)")
    named = (
        "or close other programs; or, in a new run, lower field.log2_hashmap_size, "
        "field.num_levels or field.level_dim (the hash table, its gradient and the optimiser's "
        "state and update need at least 0.1 GB)"
    )
    assert lines[0].endswith(named) is big_table
    assert "field.log2_hashmap_size" not in lines[0] or big_table
    if not big_table:
        assert trainer.memory_peak("memory") > 10**8  # this process's peak RSS, in bytes


@pytest.mark.parametrize(
    ("platform", "unit"), [("linux", 1024), ("darwin", 1), ("freebsd14", 1024)]
)
def test_host_memory_peak_reads_ru_maxrss_in_the_platforms_unit(monkeypatch, platform, unit):
    """getrusage's ``ru_maxrss`` is in KiB on Linux and the BSDs and in bytes on macOS: a Mac's
    peak of 3 GiB was read as 3 TiB, so the out-of-memory line never named the hash table's
    keys (the table was never a quarter of it). Read where there is no ``/proc`` (Linux's
    VmHWM comes first)."""
    import resource
    from types import SimpleNamespace

    from dreamtext import trainer

    held = 3 * 2**30
    monkeypatch.setattr(trainer, "resident_peak", lambda: None)
    monkeypatch.setattr(trainer.sys, "platform", platform)
    monkeypatch.setattr(resource, "getrusage", lambda who: SimpleNamespace(ru_maxrss=held // unit))
    assert trainer.memory_peak("memory") == held
