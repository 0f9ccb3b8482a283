"""The CUDA code paths, run on the CPU under CUDA's device rules (tests/virtual_cuda.py).

The first part checks the emulation itself: each rule CUDA enforces raises here too, and what
CUDA allows passes. The second runs whole ``dreamtext`` commands with ``--device cuda`` under it,
so a tensor left on the host in any CUDA branch (the built-in prior's image set once was) fails a
test on a machine without a GPU.
"""

from __future__ import annotations

import gc
import json
import os
import re
import shlex
import subprocess
import sys
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from tiny_models import TINY_TRAIN
from virtual_cuda import DeviceMismatch, virtual_cuda

from dreamtext.cameras import CameraRange
from dreamtext.checkpoint import checkpoint_step
from dreamtext.guidance import GuidanceConfig
from dreamtext.prior import ShapesPrior

HARNESS = Path(__file__).with_name("virtual_cuda.py")
# The tests' small field and renderer (tiny_models.TINY_TRAIN) as a --config file.
TINY_CONFIG = yaml.safe_dump(
    {"field": TINY_TRAIN["field"], "render": TINY_TRAIN["render"], "checkpoint_every": 2}
)


def test_a_gpu_tensor_reports_cuda_and_meets_only_gpu_tensors_and_scalars():
    with virtual_cuda():
        x = torch.ones(3, device="cuda")
        assert x.device == torch.device("cuda", 0) and x.is_cuda and not x.is_cpu
        assert torch.ones(1).is_cpu and not torch.ones(1).is_cuda
        assert (x + torch.ones(3, device="cuda")).device.type == "cuda"
        assert (x * torch.tensor(2.0)).tolist() == [2.0, 2.0, 2.0]  # a CPU scalar is allowed
        with pytest.raises(DeviceMismatch, match="cuda:0 and cpu"):
            x + torch.ones(3)
        with pytest.raises(DeviceMismatch):
            torch.cat([x, torch.zeros(2)])


def test_moves_copy_so_the_tensor_left_behind_stays_on_the_host():
    with virtual_cuda():
        host = torch.ones(3)
        gpu = host.to("cuda")
        assert gpu.device.type == "cuda" and host.device.type == "cpu"
        with pytest.raises(DeviceMismatch):
            host + gpu
        back = gpu.cpu()
        assert back.device.type == "cpu" and back.numpy().tolist() == [1.0, 1.0, 1.0]
        with pytest.raises(DeviceMismatch, match="numpy"):
            gpu.numpy()
        assert torch.zeros(2, device=gpu.device).device.type == "cuda"
        assert host.to(gpu).device.type == "cuda"  # .to(other) takes other's device


def test_writing_into_a_tensor_keeps_its_device():
    with virtual_cuda():
        gpu = torch.ones(3, device="cuda")
        host = torch.zeros(3)
        host.copy_(gpu)  # a copy across devices, as on CUDA
        assert host.device.type == "cpu" and (host + torch.ones(3)).tolist() == [2.0, 2.0, 2.0]
        with pytest.raises(DeviceMismatch):
            host + gpu
        gpu.mul_(torch.tensor(2.0)).add_(1.0)
        gpu += torch.ones(3, device="cuda")
        assert gpu.device.type == "cuda" and gpu.cpu().tolist() == [4.0, 4.0, 4.0]
        # A module on the host loading a state saved from the GPU stays on the host.
        layer = torch.nn.Linear(3, 2)
        layer.load_state_dict(torch.nn.Linear(3, 2).cuda().state_dict())
        assert layer(torch.ones(1, 3)).device.type == "cpu"


def test_a_loaded_tensor_goes_where_map_location_says(tmp_path):
    path = tmp_path / "state.pt"
    with virtual_cuda():
        torch.save({"w": torch.ones(2, device="cuda"), "steps": [torch.zeros(1).cuda()]}, path)
        same = torch.load(path)  # no map_location: where it was saved
        assert same["w"].device.type == "cuda" and same["steps"][0].device.type == "cuda"
        host = torch.load(path, map_location="cpu")
        assert host["w"].device.type == "cpu" and host["steps"][0].device.type == "cpu"
        with pytest.raises(DeviceMismatch):
            host["w"] + same["w"]
        assert torch.load(path, map_location=torch.device("cuda"))["w"].device.type == "cuda"


def test_tensors_the_mode_never_saw_count_as_host_memory():
    with virtual_cuda():
        loaded = torch.from_numpy(np.ones(3, dtype=np.float32))  # not a torch function call
        with pytest.raises(DeviceMismatch):
            loaded + torch.ones(3, device="cuda")


def test_a_module_moved_to_the_gpu_trains_there_and_an_unmoved_input_fails():
    with virtual_cuda():
        torch.manual_seed(0)
        layer = torch.nn.Linear(3, 2).to("cuda")
        assert {p.device.type for p in layer.parameters()} == {"cuda"}
        with pytest.raises(DeviceMismatch, match="linear"):
            layer(torch.randn(4, 3))
        layer(torch.randn(4, 3).cuda()).square().sum().backward()
        assert layer.weight.grad.device.type == "cuda"
        torch.optim.Adam(layer.parameters()).step()
        # A module that was never moved stays on the host.
        with pytest.raises(DeviceMismatch):
            torch.nn.Linear(3, 2)(torch.randn(4, 3, device="cuda"))


def test_a_module_moved_to_the_gpu_is_freed_once_dropped():
    """``Module.to`` sets each ``param.data``: the emulation's setter kept every parameter alive
    for the rest of the process (a test's default field, 47 MiB, in every later test)."""
    with virtual_cuda():
        layer = torch.nn.Linear(3, 2).to("cuda")
        weight = weakref.ref(layer.weight)
        assert weight().device.type == "cuda"
        del layer
    gc.collect()
    assert weight() is None


def test_generators_must_be_on_the_device_they_draw_for():
    with virtual_cuda():
        gpu_generator = torch.Generator("cuda").manual_seed(0)
        assert gpu_generator.device.type == "cuda" and isinstance(gpu_generator, torch.Generator)
        assert torch.randn(3, generator=gpu_generator, device="cuda").device.type == "cuda"
        with pytest.raises(DeviceMismatch, match="generator"):
            torch.randn(3, generator=torch.Generator().manual_seed(0), device="cuda")
        with pytest.raises(DeviceMismatch, match="generator"):
            torch.randn(3, generator=gpu_generator)


def test_cuda_autocast_lowers_matrix_products():
    with virtual_cuda():
        layer = torch.nn.Linear(4, 4).to("cuda")
        with torch.autocast("cuda", dtype=torch.float16):
            out = layer(torch.randn(2, 4, device="cuda"))
        assert out.dtype == torch.float16 and out.device.type == "cuda"
        assert torch.cuda.get_device_capability() == (8, 6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_autocast_runs_its_float32_ops_in_float32(dtype):
    """CUDA's autocast runs exp, softplus, layer_norm, sum, ... in float32 whatever their
    inputs; the CPU's leaves them in half precision. Outside autocast, and on host tensors,
    nothing changes."""
    with virtual_cuda():
        half = torch.randn(3, 8, device="cuda").to(dtype)
        with torch.autocast("cuda", dtype=dtype):
            widened = {
                "exp": half.exp(),
                "softplus": torch.nn.functional.softplus(half),
                "layer_norm": torch.nn.functional.layer_norm(half, (8,)),
                "sum": half.sum(dim=-1),
                "pow": half**2,
                "rdiv": 1.0 / half,
                "softmax": half.softmax(dim=-1),
            }
            kept = {"silu": torch.nn.functional.silu(half), "mul": half * half}
            host = torch.randn(3).to(dtype).exp()
        for name, out in widened.items():
            assert (name, out.dtype, out.device.type) == (name, torch.float32, "cuda")
        for name, out in kept.items():
            assert (name, out.dtype) == (name, dtype)
        assert host.dtype == dtype
        assert half.exp().dtype == dtype  # no autocast


def test_catches_the_prior_image_set_left_on_the_host(tmp_path, monkeypatch):
    """The bug the first GPU run met (issue 9): x_t on the GPU times an image set on the CPU."""
    monkeypatch.setenv("DREAMTEXT_CACHE", str(tmp_path))
    cfg = GuidanceConfig(model="builtin:shapes")
    x_t, t = torch.zeros(1, 3, 8, 8), torch.tensor([500])
    with virtual_cuda():
        prior = ShapesPrior(cfg, CameraRange(), 8, 8, device="cuda")
        prior.set_prompt("a red sphere")
        prediction = prior.predict_noise(x_t.cuda(), t.cuda(), ["front"])
        assert prediction.cond.device.type == "cuda"
        prior._flat = prior._flat.cpu()
        prior.set_prompt("a red sphere")
        with pytest.raises(DeviceMismatch, match="matmul"):
            prior.predict_noise(x_t.cuda(), t.cuda(), ["front"])


def run_on_virtual_cuda(command: str, cwd: Path, **env: str) -> str:
    """``python tests/virtual_cuda.py COMMAND`` (``dreamtext COMMAND`` under the emulation) in a
    fresh process; returns its stderr after checking that it succeeded and that GPU tensors did
    the work."""
    result = subprocess.run(
        [sys.executable, str(HARNESS), *shlex.split(command)],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    calls = re.search(r"virtual CUDA: (\d+) torch calls on the GPU", result.stderr)
    assert calls is not None and int(calls[1]) > 1000, result.stderr[-3000:]
    return result.stderr


def test_text_to_3d_its_export_and_a_resume_run_on_cuda_with_the_builtin_prior(tmp_path):
    """Training, the export at its end, then a resume: checkpoints load on the CPU and the
    GPU's random state is restored from them."""
    (tmp_path / "tiny.yaml").write_text(TINY_CONFIG)
    command = (
        "text 'a red cube' --model builtin:shapes --device cuda --config tiny.yaml "
        "--encoding torch --workspace run"
    )
    cache = str(tmp_path / "cache")
    run_on_virtual_cuda(f"{command} --iters 4", tmp_path, DREAMTEXT_CACHE=cache)
    run = tmp_path / "run"
    config = json.loads((run / "config.json").read_text())
    assert config["device"] == "cuda"
    assert config["ran_on"]["device"] == "cuda"
    assert config["ran_on"]["device_name"] == "virtual CUDA (CPU), 12.0 GiB"
    assert (run / "mesh" / "mesh.glb").is_file() and (run / "video" / "turntable.mp4").is_file()
    resume = f"{command} --iters 6 --resume --no-export"
    run_on_virtual_cuda(resume, tmp_path, DREAMTEXT_CACHE=cache)
    assert checkpoint_step(run / "checkpoints" / "last.pt") == 6
    assert checkpoint_step(run / "checkpoints" / "step_000004.pt") == 4


def test_image_to_3d_runs_on_cuda_in_fp16(tmp_path, tiny_sd_path, tiny_clip_path):
    """describe (CLIP) → descriptor training with loss scaling → text→3D, in fp16."""
    (tmp_path / "tiny.yaml").write_text(TINY_CONFIG)
    (tmp_path / "nouns.txt").write_text("cube\nsphere\n")
    (tmp_path / "adjectives.txt").write_text("red\nblue\n")
    rgba = np.zeros((48, 48, 4), dtype=np.uint8)
    rgba[12:36, 12:36] = (220, 30, 30, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "red.png")
    run_on_virtual_cuda(
        f"image red.png --model '{tiny_sd_path}' --clip '{tiny_clip_path}' --nouns nouns.txt "
        "--adjectives adjectives.txt --max-words 2 --descriptor-iters 2 --device cuda "
        "--encoding torch --fp16 --h 32 --w 32 --iters 2 --config tiny.yaml --no-export "
        "--workspace run",
        tmp_path,
    )
    sentence = json.loads((tmp_path / "run" / "descriptor" / "sentence.json").read_text())
    assert sentence["sentence"].startswith("An image of")
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
    ran_on = json.loads((tmp_path / "run" / "config.json").read_text())["ran_on"]
    assert (ran_on["guidance_dtype"], ran_on["field_mlp_dtype"]) == ("float16", "float16")


def test_shaded_steps_in_fp16_with_deferred_backprop_train_on_cuda(tmp_path, tiny_sd_path):
    """The trainer's path at FitFusion's 256 px, small: shaded steps (forward-difference
    normals) whose backward is deferred (image first, then ray chunks re-rendered with a graph),
    the field's MLPs in fp16 under CUDA autocast with the loss scaler, the U-Net and VAE in
    fp16 and channels_last."""
    deferred = yaml.safe_load(TINY_CONFIG)
    deferred["render"] |= {"backprop": "deferred", "grad_chunk_points": 2048}
    deferred |= {"albedo_epochs": 0, "shading_probs": [0.0, 0.5, 0.5], "log_every": 1}
    (tmp_path / "deferred.yaml").write_text(yaml.safe_dump(deferred))
    run_on_virtual_cuda(
        f"text 'a red cube' --model '{tiny_sd_path}' --device cuda --config deferred.yaml "
        "--encoding torch --fp16 --h 32 --w 32 --iters 3 --seed 1 --no-export --workspace run",
        tmp_path,
    )
    log = (tmp_path / "run" / "log.jsonl").read_text()
    records = [json.loads(line) for line in log.splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert {r["backprop"] for r in records} == {"deferred"}
    assert {r["shading"] for r in records} <= {"textureless", "lambertian"}
    # The fp16 loss scaler ran: each step either updated or halved the scale.
    assert all("loss_scale" in r for r in records)
    ran_on = json.loads((tmp_path / "run" / "config.json").read_text())["ran_on"]
    assert (ran_on["guidance_dtype"], ran_on["field_mlp_dtype"]) == ("float16", "float16")
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()


TRITON_ON_CUDA = """
import json, sys, torch
sys.path.insert(0, sys.argv[1])
from virtual_cuda import virtual_cuda
from dreamtext.encoding_triton import uses_vector_atomics
from dreamtext.factory import build_field
from dreamtext.field import FieldConfig

small = dict(num_levels=4, log2_hashmap_size=10, base_resolution=4, hidden_dim=16, num_blocks=1)
report = {}
for capability in [(8, 6), (9, 0)]:
    with virtual_cuda(capability):
        torch.manual_seed(0)
        fields = {name: build_field(FieldConfig(encoding=name, **small), "cuda")
                  for name in ("auto", "torch")}
        fields["torch"].load_state_dict(fields["auto"].state_dict())
        x = torch.rand(300, 3, device="cuda") - 0.5
        grads = {}
        for name, field in fields.items():
            sigma, albedo = field(x)
            (sigma.sum() + albedo.square().sum()).backward()
            grads[name] = field.encoding.params.grad
        report[str(capability)] = {
            "backend": fields["auto"].encoding_backend,
            "device": str(grads["auto"].device),
            "vector_atomics": uses_vector_atomics(x.device),
            "difference": (grads["auto"] - grads["torch"]).abs().max().item(),
            "scale": grads["torch"].abs().max().item(),
        }
print(json.dumps(report))
"""


def test_the_triton_hash_grid_is_chosen_on_cuda_and_gives_the_torch_gradient():
    """On CUDA ``--encoding auto`` picks the Triton kernels, with vector atomics from sm_90 on;
    here they run in Triton's interpreter through the same launch code as on a GPU."""
    result = subprocess.run(
        [sys.executable, "-c", TRITON_ON_CUDA, str(HARNESS.parent)],
        capture_output=True,
        text=True,
        env={**os.environ, "TRITON_INTERPRET": "1"},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    for capability, vector in (("(8, 6)", False), ("(9, 0)", True)):
        row = report[capability]
        assert row["backend"] == "triton" and row["device"] == "cuda:0"
        assert row["vector_atomics"] is vector
        assert row["difference"] <= 1e-5 * row["scale"] and row["scale"] > 0


def test_a_script_runs_under_the_emulation_with_its_arguments_and_sibling_modules(tmp_path):
    (tmp_path / "sibling.py").write_text("import torch\nSIZE = 3\n")
    (tmp_path / "script.py").write_text(
        "import sys, torch\n"
        "from sibling import SIZE\n"
        "x = torch.ones(SIZE, device=sys.argv[1])\n"
        "print(x.device, (x * 2).sum().item())\n"
        "x + torch.ones(SIZE)\n"
    )
    result = subprocess.run(
        [sys.executable, str(HARNESS), str(tmp_path / "script.py"), "cuda"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.stdout.splitlines() == ["cuda:0 6.0"]
    assert result.returncode != 0 and "DeviceMismatch: add" in result.stderr
