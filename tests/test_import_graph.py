"""What the commands that only read files import: each library here costs every such command a
start of seconds (``benchmarks/command_startup.py``). Each test imports in a process of its own
(this one has torch and the rest loaded already) and lists what it found."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

# The libraries of the export (mesh, files) and of the image path, none of which a config, a
# batch's status or a viewer uses.
EXPORT_LIBRARIES = ("trimesh", "scipy", "mcubes", "xatlas", "fast_simplification")
EXPORT_MODULES = ("dreamtext.export", "dreamtext.mesh")


def imported_after(code: str, *names: str) -> list[str]:
    """Which of ``names`` (modules) ``sys.modules`` holds after ``code`` runs in a new process."""
    listed = f"print(json.dumps([n for n in {list(names)!r} if n in sys.modules]))"
    probe = f"{code}\nimport json, sys\n{listed}"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=dict(os.environ)
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_config_imports_neither_the_export_nor_its_mesh_libraries():
    """config took ExportOptions from dreamtext.export, which imports trimesh, scipy, PyMCubes and
    xatlas (0.6-1.1 s of trimesh alone) for every command that reads a config."""
    names = (*EXPORT_MODULES, *EXPORT_LIBRARIES)
    assert imported_after("import dreamtext.config", *names) == []


def test_batch_status_imports_neither_the_export_nor_its_mesh_libraries():
    """``batch --status`` reads files: its module imports no mesh library through config."""
    names = (*EXPORT_MODULES, *EXPORT_LIBRARIES, "diffusers", "transformers")
    assert imported_after("import dreamtext.batchstatus", *names) == []


def test_view_imports_neither_torch_nor_numpy_nor_pillow():
    """The viewer and ``view --static`` show files: runfiles imported dreamtext.images (numpy and
    Pillow, a third of a second) for an image check the viewer never makes."""
    code = "import dreamtext.cli, dreamtext.view, dreamtext.view.static"
    names = ("torch", "numpy", "PIL", "dreamtext.images", *EXPORT_MODULES, *EXPORT_LIBRARIES)
    assert imported_after(code, *names) == []


def test_view_static_of_a_run_imports_neither_torch_nor_numpy_nor_pillow(tmp_path: Path):
    """The command itself, run to its end on a run with a status and a preview."""
    run = tmp_path / "runs" / "a_red_cube"
    (run / "previews").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"prompt": "a red cube", "iters": 20}))
    (run / "status.json").write_text(json.dumps({"state": "finished", "step": 20, "iters": 20}))
    Image.new("RGB", (8, 8), "red").save(run / "previews" / "final.png")
    site = tmp_path / "site"
    code = (
        "from dreamtext.cli import main\n"
        f"assert main(['view', {str(run)!r}, '--static', {str(site)!r}]) == 0"
    )
    names = ("torch", "numpy", "PIL", "trimesh", "dreamtext.images", "dreamtext.export")
    assert imported_after(code, *names) == []
    assert (site / "index.html").is_file()


def test_batch_status_of_a_list_imports_no_export(tmp_path: Path):
    """``batch LIST --status`` run to its end (a line finished, one not started) loads neither
    the export nor a model library."""
    from dreamtext.config import resolve_config

    root = tmp_path / "root"
    run = root / "a_red_cube"
    run.mkdir(parents=True)
    cfg = resolve_config(
        {"prompt": "a red cube", "workspace": str(run), "iters": 20}, preset="builtin-shapes"
    )
    (run / "config.json").write_text(json.dumps(dataclasses.asdict(cfg)))
    (run / "status.json").write_text(json.dumps({"state": "finished", "step": 20}))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red cube\na blue cube\n")
    argv = ["batch", str(prompts), "--model", "builtin:shapes", "--iters", "20"]
    argv += ["--workspace", str(root), "--status"]
    code = f"from dreamtext.cli import main\nassert main({argv!r}) == 1"
    names = (*EXPORT_MODULES, *EXPORT_LIBRARIES, "diffusers", "transformers")
    assert imported_after(code, *names) == []


def test_export_options_are_still_the_exports():
    """``dreamtext.export.ExportOptions`` (the export's, its tests', a benchmark's) is the class
    config builds, now defined beside its flags."""
    import dreamtext.config
    import dreamtext.export
    import dreamtext.exportflags

    assert dreamtext.export.ExportOptions is dreamtext.exportflags.ExportOptions
    default = dreamtext.config.TrainConfig().export_options
    assert type(default) is dreamtext.export.ExportOptions
