"""Export of a field with known answers and of short trained runs: files, what export reports,
valid glTF, textures, turntable, atomic writes, bad input."""

import dataclasses
import errno
import functools
import importlib.metadata
import io
import json
import os
import resource
import shlex
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
import trimesh
from analytic_field import ALBEDO, EmptyField, SphereField, SphereTracer, direction_albedo
from PIL import Image
from test_checkpoint import files_limited_to
from test_early import files_under
from tiny_models import TINY_SIZES

import dreamtext
from dreamtext import export as export_module
from dreamtext import shapes
from dreamtext.checkpoint import load_checkpoint, load_field, save_checkpoint
from dreamtext.config import resolve_config
from dreamtext.devices import resolve_device
from dreamtext.errors import DreamtextError, TrainedRun, trained_run_line
from dreamtext.export import (
    FORMATS,
    MESH_LIBRARIES,
    ExportOptions,
    ExportResult,
    export_field,
    export_workspace,
    find_latest_workspace,
    mp4_is_whole,
    render_turntable,
    turntable_poses,
    without_nulls,
    write_all_atomically,
)
from dreamtext.mesh import (
    bake_texture,
    extract_mesh,
    face_components,
    is_closed_manifold,
    query_surface_albedo,
    render_occupancy,
    sample_density_grid,
    unwrap_uv,
    voxelize_solid,
)
from dreamtext.trainer import train

GLTF_DIR = Path(__file__).parent / "gltf"
SMALL = {"resolution": 48, "threshold": 50.0, "decimate": 2000, "texture_size": 128}


def small_options(**overrides) -> ExportOptions:
    return ExportOptions(**{**SMALL, "video_size": 32, **overrides})


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, ExportResult]:
    """A uniform-albedo sphere exported in every format, turntable by the analytic tracer."""
    out = tmp_path_factory.mktemp("sphere")
    return out, export_field(SphereField(), out, small_options(), renderer=SphereTracer())


@pytest.fixture(scope="module")
def coloured(tmp_path_factory) -> Path:
    """A sphere whose colour differs in every direction, exported as GLB and OBJ."""
    out = tmp_path_factory.mktemp("coloured")
    field = SphereField(albedo=direction_albedo)
    export_field(field, out, small_options(video=False, formats=("glb", "obj"), texture_size=256))
    return out


def texture_at_vertices(mesh: trimesh.Trimesh, image: Image.Image) -> np.ndarray:
    """The texel under each vertex's UV (trimesh's convention: v = 0 is the image's bottom row)."""
    texture = np.asarray(image.convert("RGB")) / 255.0
    height, width = texture.shape[:2]
    uv = mesh.visual.uv
    cols = np.clip((uv[:, 0] * width).astype(int), 0, width - 1)
    rows = np.clip(((1 - uv[:, 1]) * height).astype(int), 0, height - 1)
    return texture[rows, cols]


def test_export_writes_the_mesh_files_and_the_turntable(exported):
    out, result = exported
    assert sorted(p.name for p in (out / "mesh").iterdir()) == [
        "albedo.png",
        "mesh.glb",
        "mesh.json",
        "mesh.mtl",
        "mesh.obj",
        "mesh.ply",
    ]
    assert sorted(p.name for p in (out / "video").iterdir()) == ["turntable.gif", "turntable.mp4"]
    assert all(path.is_file() and path.stat().st_size > 0 for path in result.files.values())


def test_an_obj_only_export_writes_the_obj_its_material_and_its_texture(tmp_path):
    """``--formats obj`` alone: the OBJ needs the UV atlas and baked texture as the GLB does,
    and gets them without the GLB beside it."""
    result = export_field(SphereField(), tmp_path, small_options(video=False, formats=("obj",)))
    assert sorted(p.name for p in (tmp_path / "mesh").iterdir()) == [
        "albedo.png",
        "mesh.json",
        "mesh.mtl",
        "mesh.obj",
    ]
    assert set(result.files) == {"obj", "mtl", "texture", "json"}


def test_exported_mesh_is_a_closed_outward_sphere_of_the_field_radius(exported):
    out, result = exported
    mesh = trimesh.load(out / "mesh" / "mesh.ply", process=False)
    assert np.abs(np.linalg.norm(mesh.vertices, axis=1) - 0.5).max() < 0.01
    assert mesh.is_watertight
    assert mesh.volume > 0
    assert np.einsum("ij,ij->i", mesh.vertex_normals, mesh.vertices).mean() > 0.45
    assert (result.stats.faces, result.stats.vertices) == (len(mesh.faces), len(mesh.vertices))


def test_mesh_json_records_what_made_the_files(exported):
    """mesh.json recorded the options but not what ran them: a re-export with another xatlas
    or PyMCubes (which change the mesh), torch or thread count could not be told apart. Its
    ``ran_on`` records them, as a run's config.json does."""
    import platform
    from importlib.metadata import version

    out, _ = exported
    ran_on = json.loads((out / "mesh" / "mesh.json").read_text())["ran_on"]
    assert (ran_on["device"], ran_on["cpu_threads"]) == ("cpu", torch.get_num_threads())
    assert ran_on["device_name"].endswith(f"CPU, {torch.get_num_threads()} threads")
    versions = ran_on["versions"]
    assert (versions["torch"], versions["python"]) == (torch.__version__, platform.python_version())
    libraries = ("numpy", "scipy", "PyMCubes", "fast-simplification", "xatlas", "trimesh")
    assert {name: versions[name] for name in libraries} == {
        name: version(name) for name in libraries
    }


def test_mesh_json_reports_what_was_made(exported):
    out, result = exported
    report = json.loads((out / "mesh" / "mesh.json").read_text())
    assert report == result.report()
    ply = trimesh.load(out / "mesh" / "mesh.ply", process=False)
    assert (report["faces"], report["vertices"]) == (len(ply.faces), len(ply.vertices))
    assert report["components"] == 1
    assert report["watertight"] is True and report["manifold"] is True
    assert report["volume"] == pytest.approx(4 / 3 * np.pi * 0.5**3, rel=0.02)
    # The given iso-level σ = 50 lies at r = 0.5, inside the renders' surface (r ≈ 0.513): the
    # IoU measures the mesh against what the renders show, not against the threshold asked for.
    assert 0.85 < report["iou_field"] < 0.95
    assert report["threshold"] == 50.0 and report["threshold_is_auto"] is False
    assert report["resolution"] == 48 and report["smoothing"] == 0
    assert report["textured_vertices"] > report["vertices"]  # UV seams split
    assert report["step"] is None  # a field of no run
    assert report["options"] == {**dataclasses.asdict(small_options()), "formats": list(FORMATS)}


def test_summary_says_what_was_made(exported):
    _, result = exported
    summary = result.summary()
    assert f"{result.stats.faces} faces, {result.stats.vertices} vertices" in summary
    assert "1 component, watertight, manifold" in summary
    assert f"IoU with the field's occupancy {result.stats.iou_field:.3f}" in summary


def test_texture_mean_colour_is_the_albedo(exported):
    out, _ = exported
    texture = np.asarray(Image.open(out / "mesh" / "albedo.png").convert("RGB")) / 255.0
    assert texture.shape == (128, 128, 3)
    np.testing.assert_allclose(texture.reshape(-1, 3).mean(axis=0), ALBEDO, atol=0.05)


def test_ply_has_the_albedo_as_vertex_colours(exported):
    out, _ = exported
    mesh = trimesh.load(out / "mesh" / "mesh.ply", process=False)
    assert mesh.visual.kind == "vertex"
    np.testing.assert_allclose(
        mesh.visual.vertex_colors[:, :3] / 255.0, [ALBEDO] * len(mesh.vertices), atol=0.01
    )


def read_ply(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(vertex property names, vertices (a structured array), faces [F, 3])`` of a binary
    little-endian PLY of triangles, read as the format defines it (not through trimesh)."""
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    assert header[1] == "format binary_little_endian 1.0"
    types = {"float": "<f4", "uchar": "u1"}
    names, dtype, count, faces = [], [], {}, 0
    element = None
    for line in header:
        words = line.split()
        if words[0] == "element":
            element = words[1]
            count[element] = int(words[2])
        elif words[0] == "property" and element == "vertex":
            names.append(words[2])
            dtype.append((words[2], types[words[1]]))
    vertices = np.frombuffer(data, dtype=dtype, count=count["vertex"], offset=end)
    face_dtype = [("n", "u1"), ("index", "<i4", 3)]
    offset = end + vertices.nbytes
    faces = np.frombuffer(data, dtype=face_dtype, count=count["face"], offset=offset)
    assert (faces["n"] == 3).all() and offset + faces.nbytes == len(data)
    return names, vertices, faces["index"].astype(np.int64)


def test_ply_has_unit_float_normals_beside_its_colours(exported):
    names, vertices, _ = read_ply(exported[0] / "mesh" / "mesh.ply")
    assert names == ["x", "y", "z", "nx", "ny", "nz", "red", "green", "blue", "alpha"]
    assert vertices.dtype.itemsize == 28  # 12 B position, 12 B normal, 4 B colour
    normals = np.stack([vertices[k] for k in ("nx", "ny", "nz")], axis=1)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-5)
    mesh = trimesh.load(exported[0] / "mesh" / "mesh.ply", process=False)
    np.testing.assert_array_equal(mesh.vertex_normals, normals)  # what trimesh reads back


def ply_header(path: Path) -> list[str]:
    data = path.read_bytes()
    return data[: data.index(b"end_header\n")].decode("ascii").splitlines()


def test_ply_header_names_dreamtext_and_the_prompt_not_trimesh(tmp_path):
    """trimesh wrote ``comment https://github.com/mikedh/trimesh`` and nothing of the run."""
    options = small_options(video=False, formats=("ply",))
    export_field(SphereField(albedo=direction_albedo), tmp_path, options, prompt="Crème\n brûlée")
    path = tmp_path / "mesh" / "mesh.ply"
    header = ply_header(path)
    assert [line for line in header if line.startswith("comment")] == [
        f"comment generator dreamtext {dreamtext.__version__}",
        "comment title Cr\\xe8me br\\xfbl\\xe9e",  # one ASCII line
    ]
    assert not any("trimesh" in line for line in header)
    # The body is trimesh's own: it reads the file back with its normals and colours.
    names, vertices, faces = read_ply(path)
    assert names == ["x", "y", "z", "nx", "ny", "nz", "red", "green", "blue", "alpha"]
    mesh = trimesh.load(path, process=False)
    normals = np.stack([vertices[k] for k in ("nx", "ny", "nz")], axis=1)
    colours = np.stack([vertices[k] for k in ("red", "green", "blue", "alpha")], axis=1)
    np.testing.assert_array_equal(mesh.faces, faces)
    np.testing.assert_array_equal(mesh.vertex_normals, normals)
    np.testing.assert_array_equal(mesh.visual.vertex_colors, colours)
    assert len(np.unique(colours[:, :3], axis=0)) > 100  # a colour per direction, kept


def test_a_title_holding_end_header_leaves_the_ply_readable(tmp_path):
    """trimesh ends a PLY header at any line holding ``end_header``: a prompt with the word
    made a file it could not read ("PLY is unexpected length!")."""
    options = small_options(video=False, formats=("ply",))
    export_field(SphereField(), tmp_path, options, prompt="the end_header cube")
    path = tmp_path / "mesh" / "mesh.ply"
    assert "comment title the end-header cube" in ply_header(path)
    assert len(trimesh.load(path, process=False).faces) == len(read_ply(path)[2])


def test_ply_of_no_prompt_has_no_title(exported):
    header = ply_header(exported[0] / "mesh" / "mesh.ply")
    assert [line for line in header if line.startswith("comment")] == [
        f"comment generator dreamtext {dreamtext.__version__}"
    ]


def test_ply_normals_point_out_of_the_sphere(exported):
    _, vertices, _ = read_ply(exported[0] / "mesh" / "mesh.ply")
    positions = np.stack([vertices[k] for k in ("x", "y", "z")], axis=1)
    normals = np.stack([vertices[k] for k in ("nx", "ny", "nz")], axis=1)
    radial = positions / np.linalg.norm(positions, axis=1, keepdims=True)
    cosines = np.einsum("ij,ij->i", normals, radial)
    assert cosines.min() > 0.9 and cosines.mean() > 0.99  # a 2000-face sphere: a few degrees off


@pytest.mark.parametrize("shape", shapes.SHAPES)
def test_trained_ply_normals_agree_with_its_faces(trained, shape):
    """The vertex normals on the side the faces face: the average of a face's corner normals
    is within 60° of the face's own normal on every face (a cube's corners too, a torus's inner
    ring too), so smooth shading shows no dark speck where decimation folded a face."""
    _, vertices, faces = read_ply(trained[shape] / "mesh" / "mesh.ply")
    positions = np.stack([vertices[k] for k in ("x", "y", "z")], axis=1).astype(np.float64)
    normals = np.stack([vertices[k] for k in ("nx", "ny", "nz")], axis=1).astype(np.float64)
    corners = positions[faces]
    face_normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    area = np.linalg.norm(face_normals, axis=1)
    agreement = np.einsum("ij,ij->i", normals[faces].mean(axis=1), face_normals / area[:, None])
    agreement /= np.linalg.norm(normals[faces].mean(axis=1), axis=1)
    # Export unfolds faces past 60°; a degree more for the float32 the file stores.
    assert (agreement > np.cos(np.radians(61))).all() and np.median(agreement) > 0.9
    assert trimesh.Trimesh(positions, faces, process=False).volume > 0  # faces face outward


def test_glb_reloads_with_a_pbr_texture_that_matches_the_surface(coloured):
    mesh = trimesh.load(coloured / "mesh" / "mesh.glb", force="mesh")
    material = mesh.visual.material
    assert isinstance(material, trimesh.visual.material.PBRMaterial)
    assert material.baseColorTexture.size == (256, 256)
    expected = direction_albedo(torch.from_numpy(mesh.vertices)).numpy()
    assert np.abs(texture_at_vertices(mesh, material.baseColorTexture) - expected).mean() < 0.03


def read_glb(path: Path) -> tuple[dict, bytes]:
    """The JSON and BIN chunks of a GLB file (glTF 2.0 spec, section 4.4)."""
    data = path.read_bytes()
    json_length = int.from_bytes(data[12:16], "little")
    tree = json.loads(data[20 : 20 + json_length])
    bin_start = 20 + json_length + 8
    return tree, data[bin_start:]


def accessor_array(tree: dict, binary: bytes, index: int) -> np.ndarray:
    """One accessor's values ``[count, width]`` (FLOAT, UNSIGNED_INT or UNSIGNED_SHORT)."""
    accessor = tree["accessors"][index]
    view = tree["bufferViews"][accessor["bufferView"]]
    dtype = {5126: np.float32, 5125: np.uint32, 5123: np.uint16}[accessor["componentType"]]
    width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3}[accessor["type"]]
    start = view.get("byteOffset", 0) + accessor.get("byteOffset", 0)
    flat = np.frombuffer(binary, dtype, accessor["count"] * width, start)
    return flat.reshape(-1, width)


def glb_mesh(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(positions [V, 3], normals [V, 3], faces [F, 3])`` of a one-primitive GLB, as stored."""
    tree, binary = read_glb(path)
    primitive = tree["meshes"][0]["primitives"][0]
    positions = accessor_array(tree, binary, primitive["attributes"]["POSITION"])
    normals = accessor_array(tree, binary, primitive["attributes"]["NORMAL"])
    faces = accessor_array(tree, binary, primitive["indices"]).reshape(-1, 3).astype(np.int64)
    return positions, normals, faces


def test_glb_texcoords_follow_the_gltf_convention(coloured):
    # Read the file as glTF defines it, not through trimesh: UV (0, 0) is the image's top-left.
    tree, binary = read_glb(coloured / "mesh" / "mesh.glb")
    attributes = tree["meshes"][0]["primitives"][0]["attributes"]
    positions = accessor_array(tree, binary, attributes["POSITION"])
    uv = accessor_array(tree, binary, attributes["TEXCOORD_0"])
    image_view = tree["bufferViews"][tree["images"][0]["bufferView"]]
    start = image_view.get("byteOffset", 0)
    png = binary[start : start + image_view["byteLength"]]
    texture = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")) / 255.0
    size = texture.shape[0]
    cols = np.clip((uv[:, 0] * size).astype(int), 0, size - 1)
    rows = np.clip((uv[:, 1] * size).astype(int), 0, size - 1)
    expected = direction_albedo(torch.from_numpy(positions.copy())).numpy()
    assert np.abs(texture[rows, cols] - expected).mean() < 0.03


def test_obj_reloads_with_its_mtl_texture_that_matches_the_surface(coloured):
    assert "map_Kd albedo.png" in (coloured / "mesh" / "mesh.mtl").read_text()
    mesh = trimesh.load(coloured / "mesh" / "mesh.obj", force="mesh")
    assert mesh.visual.material.image.size == (256, 256)
    expected = direction_albedo(torch.from_numpy(mesh.vertices)).numpy()
    assert np.abs(texture_at_vertices(mesh, mesh.visual.material.image) - expected).mean() < 0.03


def obj_statements(path: Path) -> dict[str, list[list[str]]]:
    """The OBJ's statements by keyword: ``{"v": [["0.1", "0.2", "0.3"], ...], "f": ...}``."""
    statements: dict[str, list[list[str]]] = {}
    for line in path.read_text().splitlines():
        if line.split():
            key, *values = line.split()
            statements.setdefault(key, []).append(values)
    return statements


def obj_objects(path: Path) -> list[str]:
    """The names of an OBJ file's ``o`` statements."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.split(" ", 1)[1] for line in lines if line.startswith("o ")]


def test_obj_names_its_one_object_before_its_vertices(coloured):
    text = (coloured / "mesh" / "mesh.obj").read_text(encoding="utf-8")
    assert obj_objects(coloured / "mesh" / "mesh.obj") == ["dreamtext"]  # a field of no run
    assert text.index("\no dreamtext\n") < text.index("\nv ")
    assert len(trimesh.load(coloured / "mesh" / "mesh.obj", force="mesh").faces) > 0


def test_trained_obj_is_named_after_the_prompt(trained):
    assert obj_objects(trained["sphere"] / "mesh" / "mesh.obj") == ["a_green_sphere"]


def test_obj_shares_positions_across_uv_seams_so_its_faces_close_the_surface(coloured):
    # OBJ indexes positions and UVs separately: only the UVs split at seams, so Blender, MeshLab
    # and slicers read one closed surface (the GLB, whose vertices carry both, must split).
    obj = obj_statements(coloured / "mesh" / "mesh.obj")
    positions = np.array(obj["v"], dtype=np.float64)
    corners = [[corner.split("/") for corner in face] for face in obj["f"]]
    faces = np.array([[int(c[0]) - 1 for c in face] for face in corners])
    assert len(np.unique(positions, axis=0)) == len(positions)  # no position written twice
    mesh = trimesh.Trimesh(positions, faces, process=False)
    assert is_closed_manifold(mesh) and mesh.volume > 0
    report = json.loads((coloured / "mesh" / "mesh.json").read_text())
    assert len(positions) == report["vertices"] and len(faces) == report["faces"]
    assert len(obj["vt"]) == report["textured_vertices"]  # the UVs still split at the seams
    normals = np.array(obj["vn"], dtype=np.float64)[[[int(c[2]) - 1 for c in f] for f in corners]]
    outward = positions[faces] / np.linalg.norm(positions[faces], axis=-1, keepdims=True)
    assert (np.einsum("fkc,fkc->fk", normals, outward) > 0.9).all()  # one normal a position


def test_obj_marks_every_face_smooth_before_its_faces(coloured):
    """Without ``s 1``, Blender's OBJ importer (``wm.obj_import``) marked every face flat: the
    object shaded smooth only through the ``vn`` custom normals, and flat once they are
    cleared, where the GLB's import is smooth (benchmarks/blender_import.py)."""
    text = (coloured / "mesh" / "mesh.obj").read_text()
    statements = obj_statements(coloured / "mesh" / "mesh.obj")
    assert statements["s"] == [["1"]]
    assert text.index("\ns 1\n") < text.index("\nf ")


def test_obj_material_is_matte_like_the_glb(coloured):
    # The GLB says metallic 0, roughness 1; the MTL must not add a specular sheen (Ks with a
    # low Ns in Phong viewers) or an ambient grey that Blender may read as metallic.
    statements = {}
    for line in (coloured / "mesh" / "mesh.mtl").read_text().splitlines():
        key, _, value = line.partition(" ")
        text = key in ("newmtl", "map_Kd", "#", "")
        statements[key] = value if text else [float(v) for v in value.split()]
    assert statements["Kd"] == [1.0, 1.0, 1.0] and statements["map_Kd"] == "albedo.png"
    assert statements["Ka"] == [0.0, 0.0, 0.0] and statements["Ks"] == [0.0, 0.0, 0.0]
    assert statements["illum"] == [1.0]  # diffuse only
    assert statements["Pr"] == [1.0] and statements["Pm"] == [0.0]


def test_glb_material_is_a_matte_dielectric_with_the_texture(coloured):
    """metallic 0, roughness 1, a white base colour factor and the texture: a metallic factor of
    1 (glTF's default when left out) made the GLB a mirror; only Blender's test, skipped
    where there is no Blender, read the material."""
    tree, _ = read_glb(coloured / "mesh" / "mesh.glb")
    pbr = tree["materials"][0]["pbrMetallicRoughness"]
    assert pbr.get("metallicFactor", 1.0) == 0.0 and pbr.get("roughnessFactor", 1.0) == 1.0
    assert pbr.get("baseColorFactor", [1.0] * 4) == [1.0] * 4
    assert tree["textures"][pbr["baseColorTexture"]["index"]]["source"] == 0


def test_glb_texture_clamps_at_its_edges_where_the_atlas_charts_reach(coloured):
    """xatlas puts charts within half a texel of the texture's edge; glTF repeats a texture that
    names no sampler, so a viewer's linear lookup there blended in the texel at the opposite
    edge (another chart's colour). The texture names a sampler that clamps (CLAMP_TO_EDGE,
    33071) in both directions."""
    tree, _ = read_glb(coloured / "mesh" / "mesh.glb")
    texture = tree["textures"][
        tree["materials"][0]["pbrMetallicRoughness"]["baseColorTexture"]["index"]
    ]
    sampler = tree["samplers"][texture["sampler"]]
    assert (sampler["wrapS"], sampler["wrapT"]) == (33071, 33071)


def test_mesh_json_counts_the_faces_before_decimation_as_marching_cubes_made_them(exported):
    out, _ = exported
    report = json.loads((out / "mesh" / "mesh.json").read_text())
    made = len(extract_mesh(SphereField(), 48, threshold=50.0).mesh.faces)
    assert report["faces_before_decimation"] == made > report["faces"]


def khronos_validate(path: Path) -> None:
    """Run the Khronos glTF validator on ``path``; fail on any message (error, warning, info or
    hint), skip when it is absent."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed: the Khronos glTF validator runs on node")
    if not (GLTF_DIR / "node_modules" / "gltf-validator").is_dir():
        pytest.skip("gltf-validator not installed: run scripts/install-gltf-validator.sh")
    run = subprocess.run(
        ["node", str(GLTF_DIR / "validate.js"), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert " 0 errors, 0 warnings, 0 infos, 0 hints" in run.stdout, run.stdout


def test_glb_passes_the_khronos_gltf_validator(coloured):
    khronos_validate(coloured / "mesh" / "mesh.glb")


MATTER_GREEN, UNTRAINED_PALE = (0.1, 0.7, 0.2), (0.85, 0.8, 0.75)


def matter_ball() -> SphereField:
    """Matter out to radius 0.41, green; beyond it no density and a pale albedo, as a trained
    field's empty space has where no view ever put matter."""

    def albedo(x: torch.Tensor) -> torch.Tensor:
        inside = (x.norm(dim=-1, keepdim=True) < 0.42).to(x.dtype)
        green, pale = torch.tensor(MATTER_GREEN), torch.tensor(UNTRAINED_PALE)
        return inside * green + (1 - inside) * pale

    return SphereField(radius=0.4, width=0.02, albedo=albedo)


def test_surface_in_empty_space_takes_the_colour_of_the_matter_inward_of_it():
    """The solid the export meshes spans pits that renders see into at a slant, so parts of the
    surface lie in empty space, whose albedo no view trained: the README's green sphere had
    pale specks on 2.7 % of its texels, in Blender and every viewer, and pale PLY vertices.
    A point in empty space takes the colour a ray entering the surface there sees."""
    field, cell = matter_ball(), 2.0 / 48
    shell = trimesh.creation.icosphere(subdivisions=3, radius=0.45)  # a cell outside the matter
    textured, uv = unwrap_uv(shell, 64)
    baked = bake_texture(field, textured, uv, 64, cell=cell) / 255.0
    assert np.abs(baked - MATTER_GREEN).max() < 0.01
    points_only = bake_texture(field, textured, uv, 64) / 255.0  # the bake as it was
    assert np.abs(points_only - UNTRAINED_PALE).max() < 0.01
    normals = np.asarray(shell.vertex_normals)
    colours = query_surface_albedo(field, shell.vertices, lambda index: normals[index], cell)
    assert np.abs(colours - MATTER_GREEN).max() < 1e-3  # the PLY's vertex colours too


def test_a_surface_point_in_empty_space_takes_the_front_layers_colour():
    """Matter with a red skin (r 0.38-0.42) over a green core, seen from a shell 1 to 3 cells
    outside it: the colour is the skin's, the first layer a ray entering there sees (weighted
    by transmittance), not an average over the cells of matter behind it, which is green."""
    red, green, pale = (0.9, 0.1, 0.1), (0.1, 0.7, 0.2), UNTRAINED_PALE

    def layered(x: torch.Tensor) -> torch.Tensor:
        r = x.norm(dim=-1, keepdim=True)
        core, skin = torch.tensor(green), torch.tensor(red)
        return torch.where(r < 0.38, core, torch.where(r < 0.42, skin, torch.tensor(pale)))

    field, cell = SphereField(radius=0.4, width=0.02, sigma_max=1000.0, albedo=layered), 2.0 / 48
    for radius in (0.41 + cell, 0.41 + 3 * cell):
        shell = trimesh.creation.icosphere(subdivisions=2, radius=radius)
        normals = np.asarray(shell.vertex_normals)
        colours = query_surface_albedo(field, shell.vertices, normals.__getitem__, cell)
        assert np.abs(colours - red).max() < 0.05, radius


def test_an_export_colours_its_surface_in_empty_space_from_the_matter(tmp_path):
    """Through ``export_field``, not the bake alone: the export passes its cell size, so no
    texel and no PLY vertex takes the pale albedo of the empty space round a hard-walled ball
    (without it 37 % of the texels and 47 % of the vertices did)."""
    from analytic_field import SolidField

    ball = SolidField(lambda x: x.norm(dim=-1) <= 0.4, 0.0, noisy=False)  # a hard wall
    green, pale = torch.tensor(MATTER_GREEN), torch.tensor(UNTRAINED_PALE)
    ball.albedo = lambda x: torch.where(x.norm(dim=-1, keepdim=True) <= 0.4, green, pale)
    export_field(ball, tmp_path, small_options(video=False, formats=("glb", "ply"), threshold=None))
    ply = trimesh.load(tmp_path / "mesh" / "mesh.ply", process=False)
    vertices = ply.visual.vertex_colors[:, :3] / 255.0
    assert not (np.abs(vertices - UNTRAINED_PALE).max(axis=1) < 0.05).any()
    glb = trimesh.load(tmp_path / "mesh" / "mesh.glb", force="mesh", process=False)
    texels = np.asarray(glb.visual.material.baseColorTexture.convert("RGB")) / 255.0
    assert not (np.abs(texels - UNTRAINED_PALE).max(axis=-1) < 0.05).any()


def test_surface_with_matter_keeps_the_albedo_at_its_points():
    """Where the field has matter at the surface, the colour is the albedo there, as before:
    the search inward is only for points in empty space."""
    field, cell = SphereField(albedo=direction_albedo), 2.0 / 48
    shell = trimesh.creation.icosphere(subdivisions=3, radius=0.5)  # mid-ramp: density 50
    points, normals = np.asarray(shell.vertices), np.asarray(shell.vertex_normals)
    colours = query_surface_albedo(field, points, lambda index: normals[index], cell)
    expected = direction_albedo(torch.from_numpy(points)).numpy()
    assert np.abs(colours - expected).max() < 1e-6
    as_they_are = query_surface_albedo(field, points, lambda index: normals[index], None)
    assert np.array_equal(colours, as_they_are)


BLENDER_IMPORT = Path(__file__).parents[1] / "benchmarks" / "blender_import.py"


@pytest.mark.skipif(shutil.which("blender") is None, reason="Blender is not installed")
def test_blender_imports_each_file_upright_named_textured_and_closed(tmp_path):
    """What Blender shows, through its own importers (benchmarks/blender_import.py, run by
    Blender). CI has no Blender: the tests above check the content Blender relies on. The ball
    is off centre so that each file axis lands on one Blender axis only."""
    field = SphereField(radius=0.4, centre=(0.1, 0.25, -0.15), albedo=direction_albedo)
    export_field(field, tmp_path, small_options(video=False), step=7, prompt="a test ball")
    mesh_dir = tmp_path / "mesh"
    report = json.loads((mesh_dir / "mesh.json").read_text())
    files = [str(mesh_dir / name) for name in ("mesh.glb", "mesh.obj", "mesh.ply")]
    command = ["blender", "-b", "--factory-startup", "--python", str(BLENDER_IMPORT), "--"]
    run = subprocess.run(
        [*command, "--json", str(tmp_path / "blender.json"), *files],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if "No module named 'numpy'" in run.stdout + run.stderr:
        pytest.skip("Blender's Python has no numpy (Debian: apt-get install python3-numpy)")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    imports = {r["importer"]: r for r in json.loads((tmp_path / "blender.json").read_text())}
    for importer, found in imports.items():
        assert found["error"] is None, (importer, found["printed"])
        [mesh] = found["meshes"]
        assert mesh["faces"] == report["faces"], importer
        assert mesh["signed_volume_m3"] == pytest.approx(report["volume"], rel=1e-3), importer
        assert mesh["corner_normals_agree"] == 1.0, importer
        assert found["unit_system"] == "METRIC" and found["unit_scale"] == 1.0
    textured = [name for name in imports if not name.endswith("ply")]
    assert {"import_scene.gltf", "import_scene.gltf merge_vertices"} < set(textured)
    for importer in textured:
        [mesh] = imports[importer]["meshes"]
        assert mesh["object"] == "a_test_ball" and mesh["upright"], importer
        assert mesh["smooth_faces"] == report["faces"], importer
        [material] = mesh["materials"]
        assert material["base_color"] == "TEX_IMAGE" and material["metallic"] == 0.0
        assert material["roughness"] == 1.0
        assert material["image"]["size"] == [SMALL["texture_size"]] * 2
        assert material["image"]["loaded"] and material["image"]["name"].startswith("albedo")
        assert mesh["uv_layers"] and mesh["welded_non_manifold_edges"] == 0
        # The texel under each corner's UV is the colour the PLY gives its vertex: the texture
        # lands where it should (a flipped V gives about the colours' spread).
        match = mesh["texture_vs_ply"]
        assert match["corners_matched"] > 0.95 and match["ply_colour_spread"] > 0.1, importer
        assert match["mean_abs_diff"] < 0.03, importer
    [glb] = imports["import_scene.gltf"]["meshes"]
    # The GLB's extras, nested ones included: Blender keeps mesh.json's `ran_on` (its versions a
    # dict inside a dict) as nested custom properties, nulls dropped as the export drops them.
    assert glb["object_properties"] == {
        "prompt": "a test ball",
        "step": 7,
        "resolution": SMALL["resolution"],
        "threshold": SMALL["threshold"],
        "decimate": SMALL["decimate"],
        "texture_size": SMALL["texture_size"],
        "ran_on": without_nulls(report["ran_on"]),
    }
    assert glb["object_properties"]["ran_on"]["versions"]["torch"] == torch.__version__
    assert glb["vertices"] == report["textured_vertices"]  # split at the UV seams
    [merged] = imports["import_scene.gltf merge_vertices"]["meshes"]
    assert merged["vertices"] == report["vertices"] and merged["non_manifold_edges"] == 0
    [ply] = [r["meshes"][0] for name, r in imports.items() if name.endswith("ply")]
    assert ply["color_attributes"] and not ply["upright"]  # +z up, as the README says
    assert ply["upright_rotated_x_plus_90"]
    assert ply["vertices"] == report["vertices"] and ply["non_manifold_edges"] == 0


# --- exports of short trained runs, one per primitive ------------------------------------------

TRAINED_STEPS = 60


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A short `builtin:shapes` run of each primitive (the preset, 32 px, 60 of its 1000 steps),
    exported at its end by the trainer exactly as a user's run is, without the turntable.
    Maps the shape to the workspace."""
    root = tmp_path_factory.mktemp("trained")
    runs = {}
    for shape in shapes.SHAPES:
        overrides = {
            "prompt": f"a green {shape}",
            "guidance": {"model": "builtin:shapes"},
            "iters": TRAINED_STEPS,
            "seed": 0,
            "workspace": str(root / shape),
            "preview_every": 0,
            "export_options": {"video": False},
        }
        runs[shape] = train(resolve_config(overrides))
    return runs


@pytest.mark.parametrize("shape", shapes.SHAPES)
def test_trained_glb_passes_the_khronos_gltf_validator(trained, shape):
    khronos_validate(trained[shape] / "mesh" / "mesh.glb")


@pytest.mark.parametrize("shape", shapes.SHAPES)
def test_trained_glb_has_unit_normals_and_no_degenerate_face(trained, shape):
    positions, normals, faces = glb_mesh(trained[shape] / "mesh" / "mesh.glb")
    np.testing.assert_allclose(np.linalg.norm(normals.astype(np.float64), axis=1), 1.0, atol=1e-5)
    assert (faces[:, 0] != faces[:, 1]).all() and (faces[:, 1] != faces[:, 2]).all()
    assert (faces[:, 0] != faces[:, 2]).all()
    corners = positions.astype(np.float64)[faces]
    area = np.linalg.norm(
        np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1
    )
    assert area.min() > 0.0
    assert len(np.unique(faces)) == len(positions)  # no orphan vertex


@pytest.mark.parametrize("shape", shapes.SHAPES)
def test_trained_glb_welded_by_position_is_the_reported_closed_manifold(trained, shape):
    positions, _, faces = glb_mesh(trained[shape] / "mesh" / "mesh.glb")
    unique, index = np.unique(positions, axis=0, return_inverse=True)
    closed = trimesh.Trimesh(unique, index.ravel()[faces], process=False)
    report = json.loads((trained[shape] / "mesh" / "mesh.json").read_text())
    assert is_closed_manifold(closed)
    assert report["watertight"] and report["manifold"]
    assert face_components(closed).max() + 1 == report["components"]
    assert (len(closed.faces), len(closed.vertices)) == (report["faces"], report["vertices"])
    assert len(positions) == report["textured_vertices"]


@pytest.mark.parametrize("shape", shapes.SHAPES)
def test_trained_mesh_solid_is_the_field_occupancy(trained, shape):
    report = json.loads((trained[shape] / "mesh" / "mesh.json").read_text())
    assert report["iou_field"] >= 0.95
    # Measured again from the files: the GLB's solid against the checkpoint's field.
    field, config = load_field(trained[shape])
    assert report["step"] == config["iters"]  # the run's own export: of its last step
    bound = config["field"]["bound"]
    occupancy = render_occupancy(sample_density_grid(field, report["resolution"], bound), bound)
    positions, _, faces = glb_mesh(trained[shape] / "mesh" / "mesh.glb")
    solid = voxelize_solid(trimesh.Trimesh(positions, faces, process=False), len(occupancy), bound)
    iou = (solid & occupancy).sum() / (solid | occupancy).sum()
    assert iou == pytest.approx(report["iou_field"], abs=0.01)


def test_trained_glb_names_the_object_after_the_prompt_and_records_how_it_was_made(trained):
    """trimesh named the node and mesh ``geometry_0`` and the generator trimesh: Blender's
    outliner and glTF viewers showed nothing of what the object is."""
    tree, _ = read_glb(trained["cube"] / "mesh" / "mesh.glb")
    report = json.loads((trained["cube"] / "mesh" / "mesh.json").read_text())
    assert tree["asset"]["generator"] == f"dreamtext {dreamtext.__version__}"
    assert tree["asset"]["extras"] == {"title": "a green cube"}
    [node] = tree["nodes"]
    assert node["name"] == tree["meshes"][node["mesh"]]["name"] == "a_green_cube"
    assert node["extras"] == {
        "prompt": "a green cube",
        "step": TRAINED_STEPS,
        "resolution": report["resolution"],
        "decimate": report["options"]["decimate"],
        "texture_size": report["options"]["texture_size"],
        "ran_on": without_nulls(report["ran_on"]),
    }  # no "threshold": the renders' surface (mesh.json's null), which Blender cannot hold
    assert report["threshold"] is None
    assert (report["resolution"], report["options"]["texture_size"]) == (96, 256)  # the preset's


def test_a_glb_of_no_prompt_is_named_dreamtext_and_has_no_title(exported):
    tree, _ = read_glb(exported[0] / "mesh" / "mesh.glb")
    report = json.loads((exported[0] / "mesh" / "mesh.json").read_text())
    assert [node["name"] for node in tree["nodes"]] == ["dreamtext"]
    assert tree["meshes"][0]["name"] == "dreamtext"
    assert tree["nodes"][0]["extras"] == {
        "resolution": SMALL["resolution"],
        "threshold": SMALL["threshold"],
        "decimate": SMALL["decimate"],
        "texture_size": SMALL["texture_size"],
        "ran_on": without_nulls(report["ran_on"]),
    }  # no prompt, no step: a field of no run
    assert "extras" not in tree["asset"]


def json_nulls(value: object, path: str = "") -> list[str]:
    """Where a JSON tree holds ``null``, as paths (``nodes/0/extras/step``)."""
    if value is None:
        return [path]
    if isinstance(value, dict):
        return [n for key, item in value.items() for n in json_nulls(item, f"{path}/{key}")]
    if isinstance(value, list):
        return [n for i, item in enumerate(value) for n in json_nulls(item, f"{path}/{i}")]
    return []


def test_glb_extras_hold_no_null_which_blender_makes_an_empty_data_block_field(tmp_path):
    """Blender's glTF importer copies a node's extras onto the object's custom properties, and
    Blender stores Python's None as an ID pointer: ``threshold: null`` (the renders' surface)
    and a field of no run's ``prompt``/``step`` showed as empty data-block selectors
    (benchmarks/blender_import.py, benchmarks/RESULTS.md). Settings without a value are left
    out."""
    options = small_options(video=False, formats=("glb",), threshold=None)
    export_field(SphereField(), tmp_path, options)
    tree, _ = read_glb(tmp_path / "mesh" / "mesh.glb")
    report = json.loads((tmp_path / "mesh" / "mesh.json").read_text())
    assert report["threshold"] is None and report["step"] is None  # what the files describe
    assert json_nulls(tree) == []
    assert set(tree["nodes"][0]["extras"]) == {"resolution", "decimate", "texture_size", "ran_on"}


def test_glb_records_the_versions_that_made_it_as_mesh_json_does(exported):
    """The GLB's node extras held the export's settings but no version: a GLB passed on alone
    could not say which dreamtext, xatlas or PyMCubes made its mesh and texture. It holds
    mesh.json's ``ran_on`` (the device, the threads, dreamtext's and the mesh libraries'
    versions), less its ``null``s."""
    tree, _ = read_glb(exported[0] / "mesh" / "mesh.glb")
    report = json.loads((exported[0] / "mesh" / "mesh.json").read_text())
    ran_on = tree["nodes"][0]["extras"]["ran_on"]
    assert ran_on == without_nulls(report["ran_on"])
    versions = ran_on["versions"]
    assert versions["dreamtext"] == dreamtext.__version__
    assert versions["torch"] == torch.__version__
    for library in MESH_LIBRARIES:
        assert versions[library] == importlib.metadata.version(library), library
    assert ran_on["device"] == "cpu"


def test_glb_names_its_texture_as_the_objs_texture_file(coloured):
    """Blender's glTF importer names an unnamed image ``Image_0``."""
    tree, _ = read_glb(coloured / "mesh" / "mesh.glb")
    assert [image["name"] for image in tree["images"]] == ["albedo"]
    assert "map_Kd albedo.png" in (coloured / "mesh" / "mesh.mtl").read_text()


def test_a_prompt_named_like_trimeshs_scene_root_keeps_its_node_and_extras(tmp_path):
    """trimesh's scene root is ``world``: an object of that name was the root, not written with
    its extras."""
    options = small_options(video=False, formats=("glb",))
    export_field(SphereField(), tmp_path, options, step=3, prompt="World")
    tree, _ = read_glb(tmp_path / "mesh" / "mesh.glb")
    [node] = tree["nodes"]
    assert node["name"] == "world" and node["extras"]["prompt"] == "World"
    assert node["extras"]["step"] == 3
    khronos_validate(tmp_path / "mesh" / "mesh.glb")


TRAINED_SENTENCE = "An image of a <descriptor> mug"


def test_an_image_runs_files_are_named_after_its_image_and_keep_its_trained_sentence(
    tmp_path, monkeypatch
):
    """An image run's prompt is its trained sentence: its objects were named
    ``an_image_of_a_descriptor_mug`` after a placeholder token the user never typed."""
    workspace = make_run(tmp_path, "mug", 1_000_000)
    image_run = {"prompt": TRAINED_SENTENCE, "image_to_3d": {"image": "/photos/mug.png"}}
    (workspace / "config.json").write_text(json.dumps(image_run))
    stub_run(monkeypatch, SphereField(), None)
    monkeypatch.setattr(
        export_module,
        "run_from_state",
        lambda state, device: (SphereField(), None, {"prompt": TRAINED_SENTENCE}),
    )
    export_workspace(workspace, small_options(video=False))
    tree, _ = read_glb(workspace / "mesh" / "mesh.glb")
    [node] = tree["nodes"]
    assert node["name"] == tree["meshes"][node["mesh"]]["name"] == "mug"
    assert tree["asset"]["extras"] == {"title": "mug"}
    assert node["extras"]["prompt"] == TRAINED_SENTENCE
    assert obj_objects(workspace / "mesh" / "mesh.obj") == ["mug"]
    assert "comment title mug" in ply_header(workspace / "mesh" / "mesh.ply")


@pytest.mark.parametrize(
    ("sections", "title"),
    [
        ({}, TRAINED_SENTENCE),  # a text run (here of a sentence another run trained)
        ({"image_to_3d": {"image": "/photos/IMG 0042.jpeg"}}, "IMG 0042"),
        # --diverse: the sampled image is diverse/sample_seed3.png; its prompt names it
        (
            {
                "image_to_3d": {"image": "/w/diverse/sample_seed3.png"},
                "diverse": {"prompt": "a blue mug", "image": "/w/diverse/sample_seed3.png"},
            },
            "a blue mug",
        ),
    ],
)
def test_run_title_is_the_prompt_the_image_or_the_diverse_prompt(tmp_path, sections, title):
    (tmp_path / "config.json").write_text(json.dumps({"prompt": TRAINED_SENTENCE, **sections}))
    assert export_module.run_title(tmp_path, TRAINED_SENTENCE) == title


def test_run_title_of_a_text_run_of_an_image_runs_trained_sentence_is_the_images_name(tmp_path):
    """`text SENTENCE --config mug/config.json --workspace rerun` trains the image run's sentence
    with its learned tokens: its files were named an_image_of_a_descriptor_mug, the image run's
    mug. A sentence of the user's own around the token keeps the user's words."""
    image_run, rerun = tmp_path / "mug", tmp_path / "rerun"
    (image_run / "descriptor").mkdir(parents=True)
    rerun.mkdir()
    record = {"image": "/photos/mug.png", "trained_sentence": TRAINED_SENTENCE}
    (image_run / "descriptor" / "sentence.json").write_text(json.dumps(record))
    learned = str(image_run / "descriptor" / "learned_embeds.safetensors")
    for prompt, title in ((TRAINED_SENTENCE, "mug"), (f"{TRAINED_SENTENCE} on a table", None)):
        config = {"prompt": prompt, "guidance": {"textual_inversion": learned}}
        (rerun / "config.json").write_text(json.dumps(config))
        assert export_module.run_title(rerun, prompt) == (title or prompt)
    (image_run / "descriptor" / "sentence.json").write_text("{")  # unreadable: the prompt
    config = {"prompt": TRAINED_SENTENCE, "guidance": {"textual_inversion": learned}}
    (rerun / "config.json").write_text(json.dumps(config))
    assert export_module.run_title(rerun, TRAINED_SENTENCE) == TRAINED_SENTENCE


def test_run_title_of_a_run_without_a_readable_config_is_its_prompt(tmp_path):
    assert export_module.run_title(tmp_path, "a mug") == "a mug"
    (tmp_path / "config.json").write_text("{")
    assert export_module.run_title(tmp_path, "a mug") == "a mug"


def test_turntable_has_60_frames_rendered_a_few_at_a_time(tmp_path):
    # A colour that turns with the object: GIF encoders merge identical consecutive frames.
    tracer = SphereTracer()
    options = small_options(formats=("ply",))
    result = export_field(SphereField(albedo=direction_albedo), tmp_path, options, tracer)
    with Image.open(tmp_path / "video" / "turntable.gif") as gif:
        assert gif.n_frames == result.frames == 60
        assert gif.size == (64, 32)  # RGB beside depth
    # README: "a chunk of 4 frames" (the test took export.FRAMES_PER_CHUNK: 5 a chunk passed)
    assert tracer.calls == [4] * 15
    with imageio.get_reader(tmp_path / "video" / "turntable.mp4") as reader:
        assert reader.count_frames() == 60


def test_gif_frames_keep_the_colours_and_a_pure_white_background(tmp_path):
    field = SphereField(albedo=direction_albedo)
    export_field(field, tmp_path, small_options(formats=("ply",)), SphereTracer())
    poses = turntable_poses(60, trimesh.load(tmp_path / "mesh" / "mesh.ply").vertices)
    rendered = render_turntable(field, 60, 32, SphereTracer(), poses)[10].astype(float)
    with Image.open(tmp_path / "video" / "turntable.gif") as gif:
        gif.seek(10)
        frame = np.asarray(gif.convert("RGB")).astype(float)
    assert np.abs(frame - rendered).mean() < 4.0  # of 255: dithering, no banding into patches
    np.testing.assert_array_equal(frame[0, 0], [255, 255, 255])


def test_gif_turns_as_fast_as_the_mp4(tmp_path):
    # GIF delays are whole hundredths of a second: 33 ms a frame would be stored as 30 ms.
    export_field(
        SphereField(albedo=direction_albedo), tmp_path, small_options(formats=("ply",)),
        SphereTracer(),
    )  # fmt: skip
    durations = []
    with Image.open(tmp_path / "video" / "turntable.gif") as gif:
        for index in range(gif.n_frames):
            gif.seek(index)
            durations.append(gif.info["duration"])
    with imageio.get_reader(tmp_path / "video" / "turntable.mp4") as mp4:
        mp4_ms = 1000 * mp4.count_frames() / mp4.get_meta_data()["fps"]
    assert sum(durations) == pytest.approx(mp4_ms) == 2000
    assert set(durations) <= {30, 40}


def test_the_mp4_has_its_index_before_its_frames(tmp_path):
    """ffmpeg writes the index (moov) after the frames unless told +faststart: a browser then
    needs the whole file, or a server that answers byte ranges, before it plays a frame."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (32, 48, 3), dtype=np.uint8) for _ in range(10)]
    mp4 = tmp_path / "turntable.mp4"
    export_module._write_mp4(images, mp4)
    boxes = export_module.mp4_boxes(mp4)
    assert boxes is not None and boxes.index(b"moov") < boxes.index(b"mdat")
    assert export_module.mp4_is_whole(mp4)
    mp4.write_bytes(mp4.read_bytes()[:-100])  # cut short: its boxes no longer fill it
    assert export_module.mp4_boxes(mp4) is None and not export_module.mp4_is_whole(mp4)


def colour_bars(height: int) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """A ``[height, 2 height, 3]`` frame of four vertical bars of saturated colours."""
    colours = [(223, 38, 38), (40, 160, 60), (30, 60, 200), (250, 240, 20)]
    frame = np.zeros((height, 2 * height, 3), np.uint8)
    for i, colour in enumerate(colours):
        frame[:, i * height // 2 : (i + 1) * height // 2] = colour
    return frame, colours


def test_the_mp4_says_which_colour_space_its_frames_are_in(tmp_path):
    """An MP4 that does not say leaves players to guess: Chromium (and so `dreamtext view`)
    guesses BT.709 for a video 720 rows tall, and shows the turntable's red (223, 38, 38) as
    (239, 56, 37). The stream names its matrix, primaries and transfer."""
    from imageio_ffmpeg import get_ffmpeg_exe

    mp4 = tmp_path / "turntable.mp4"
    export_module._write_mp4([colour_bars(64)[0]] * 4, mp4)
    said = subprocess.run([get_ffmpeg_exe(), "-hide_banner", "-i", str(mp4)], capture_output=True)
    stream = next(line for line in said.stderr.decode().splitlines() if "Video:" in line)
    assert "yuv420p(tv, smpte170m, progressive)" in stream, stream


@pytest.mark.parametrize("height", [64, 720])
def test_the_mp4_decoded_as_it_says_gives_the_frames_colours_back(tmp_path, height):
    # ffmpeg decodes with the colour space the stream names: a tag that is not the matrix the
    # frames were encoded with shifts these colours by over 15 levels.
    frame, colours = colour_bars(height)
    mp4 = tmp_path / "turntable.mp4"
    export_module._write_mp4([frame] * 2, mp4)
    with imageio.get_reader(mp4) as reader:
        decoded = reader.get_data(0)
    for i, colour in enumerate(colours):
        centre = decoded[height // 2, i * height // 2 + height // 4].astype(int)
        assert np.abs(centre - colour).max() <= 4, (colour, centre)


def test_turntable_frame_shows_rgb_beside_depth_on_white():
    first = render_turntable(SphereField(), 60, 32, SphereTracer())[0] / 255.0
    np.testing.assert_allclose(first[16, 16], ALBEDO, atol=0.01)
    depth = first[:, 32:, 0]
    np.testing.assert_allclose(first[:, 32:, 0], first[:, 32:, 2])  # grey
    assert depth[16, 16] == pytest.approx(0.2, abs=0.02)  # the nearest point is the darkest
    assert depth[16, 16] < depth[16, 21] < depth[16, 25] < 0.8  # farther towards the rim
    np.testing.assert_allclose(first[0, 0], 1.0)
    np.testing.assert_allclose(depth[0, 0], 1.0)


def test_export_help_gives_the_turntables_frame_size_and_speed_as_rendered():
    """--help said --video-size was "the turntable's width and height": the video is twice as
    wide (albedo beside depth); and --frames did not say that more frames make a longer turn."""
    from dreamtext.cli import build_parser

    export = build_parser()._subparsers._group_actions[0].choices["export"]
    text = " ".join(export.format_help().split())
    size = 16
    assert render_turntable(SphereField(), 60, size, SphereTracer())[0].shape == (size, 2 * size, 3)
    assert "each VIDEO_SIZE pixels square: a video twice as wide as high" in text
    assert f"one turn at {export_module.VIDEO_FPS} frames a second (60: 2 s)" in text


def test_turntable_shows_all_of_an_object_that_reaches_past_the_training_view(tmp_path):
    # A sphere of radius 0.7 below the origin: from the training cameras' distance (1.3) it
    # spans more than their field of view, and its bottom would be cut off.
    field = SphereField(radius=0.7, centre=(0.0, -0.25, 0.0))
    export_field(field, tmp_path, small_options(formats=("ply",), video_size=48), SphereTracer())
    frames = imageio.mimread(tmp_path / "video" / "turntable.gif")
    for frame in frames[::15]:
        rgb = np.asarray(frame)[:, :48, :3].astype(int)
        drawn = (rgb < 250).any(axis=-1)
        border = np.concatenate([drawn[0], drawn[-1], drawn[:, 0], drawn[:, -1]])
        assert not border.any(), "the object touches the edge of the frame"
        rows, cols = np.nonzero(drawn)
        assert abs(rows.mean() - 23.5) < 1.0 and abs(cols.mean() - 23.5) < 1.0  # centred
        assert drawn.mean() > 0.3  # and not lost in the distance


def test_turntable_keeps_the_training_distance_from_a_small_object():
    # Closer, the cameras of a small mesh would sit inside the faint density around it.
    small = trimesh.creation.icosphere(radius=0.2)
    small.apply_translation([0.1, 0.2, 0.0])
    poses = turntable_poses(60, small.vertices)
    np.testing.assert_allclose(poses.radius.numpy(), 1.3)
    distance = (poses.eye - torch.tensor([0.1, 0.2, 0.0])).norm(dim=-1)
    np.testing.assert_allclose(distance, 1.3, rtol=1e-5)
    large = trimesh.creation.icosphere(radius=0.8).vertices
    assert (turntable_poses(60, large).radius > 1.9).all()  # 0.8 / sin(0.9 · 27.5°)


@pytest.mark.parametrize(
    ("radius_range", "distance"),
    [(None, 1.3), ((1.0, 1.5), 1.3), ((1.8, 1.8), 1.8), ((2.5, 3.5), 2.5), ((0.8, 1.1), 1.1)],
)
def test_turntable_films_from_within_the_runs_training_distances(radius_range, distance):
    """README: "at the training cameras' distance or farther". A run trained from 2.5-3.5
    (a config's larger bound) or from builtin:shapes' 1.8 was filmed from 1.3: a close-up, from
    inside its scene cube."""
    small = trimesh.creation.icosphere(radius=0.2).vertices
    poses = turntable_poses(8, small, radius_range)
    np.testing.assert_allclose(poses.radius.numpy(), distance, rtol=1e-6)


def test_an_export_of_a_run_films_from_its_recorded_camera_distances(tmp_path, monkeypatch):
    from dreamtext.export import recorded_radius_range

    assert recorded_radius_range({"cameras": {"radius_range": [2.5, 3.5]}}) == (2.5, 3.5)
    for config in ({}, {"cameras": None}, {"cameras": {"radius_range": [1.0]}}):
        assert recorded_radius_range(config) is None
    assert recorded_radius_range({"cameras": {"radius_range": [1.0, float("nan")]}}) is None
    filmed = []

    def poses(frames, vertices, radius_range=None):
        filmed.append(radius_range)
        return turntable_poses(frames, vertices, radius_range)

    monkeypatch.setattr(export_module, "turntable_poses", poses)
    monkeypatch.setattr(export_module, "read_run_checkpoint", lambda workspace: {"step": 3})
    config = {"cameras": {"radius_range": [2.5, 3.5]}}
    monkeypatch.setattr(
        export_module,
        "run_from_state",
        lambda state, device: (SphereField(), SphereTracer(), config),
    )
    no_field_check(monkeypatch)
    (tmp_path / "checkpoints").mkdir()
    torch.save({"step": 3}, tmp_path / "checkpoints" / "last.pt")
    export_workspace(tmp_path, small_options(formats=("ply",), video_size=16))
    assert filmed == [(2.5, 3.5)]


def test_turntable_renders_with_the_volume_renderer():
    frames = render_turntable(SphereField(), 60, 16)
    assert len(frames) == 60
    np.testing.assert_allclose(frames[7][8, 8] / 255.0, ALBEDO, atol=0.05)
    np.testing.assert_allclose(frames[7][0, 0] / 255.0, 1.0)


def test_by_default_the_surface_is_the_one_the_renders_show(tmp_path):
    result = export_field(SphereField(), tmp_path, small_options(threshold=None, video=False))
    report = json.loads((tmp_path / "mesh" / "mesh.json").read_text())
    assert report["threshold"] is None and report["threshold_is_auto"] is True
    assert report["surface"] == "transmittance" and report["transmittance"] == 0.5
    assert report["iou_field"] > 0.95
    assert "transmittance 0.5" in result.summary()


def test_only_the_asked_formats_are_written(tmp_path):
    result = export_field(SphereField(), tmp_path, small_options(video=False, formats=("ply",)))
    assert sorted(result.files) == ["json", "ply"]
    assert sorted(p.name for p in (tmp_path / "mesh").iterdir()) == ["mesh.json", "mesh.ply"]
    assert not (tmp_path / "video").exists()


def test_a_no_video_export_of_another_step_drops_the_turntable_of_the_step_before(tmp_path):
    """`dreamtext export --no-video` (or --mesh) of step 20 after a full export of step 10: the
    turntable of step 10 would pass for step 20's beside its mesh. It goes (a file of the
    user's own in video/ stays), and mesh.json records that no turntable is of this mesh."""
    export_field(SphereField(), tmp_path, small_options(formats=("ply",)), SphereTracer(), 10)
    assert json.loads((tmp_path / "mesh" / "mesh.json").read_text())["turntable_step"] == 10
    (tmp_path / "video" / "notes.txt").write_text("mine")
    export_field(SphereField(), tmp_path, small_options(video=False, formats=("ply",)), step=20)
    assert sorted(p.name for p in (tmp_path / "video").iterdir()) == ["notes.txt"]
    report = json.loads((tmp_path / "mesh" / "mesh.json").read_text())
    assert (report["step"], report["turntable_step"]) == (20, None)
    (tmp_path / "video" / "notes.txt").unlink()
    export_field(SphereField(), tmp_path, small_options(formats=("ply",)), SphereTracer(), 10)
    export_field(SphereField(), tmp_path, small_options(video=False, formats=("ply",)), step=20)
    assert not (tmp_path / "video").exists()  # the export's own folder, empty, goes too


def test_a_no_video_export_of_the_same_step_keeps_its_turntable(tmp_path):
    """`--formats ply --no-video` after a full export of the same checkpoint: the turntable
    still shows the field this mesh is of, and the next export still knows its step."""
    export_field(SphereField(), tmp_path, small_options(formats=("ply",)), SphereTracer(), 10)
    gif = (tmp_path / "video" / "turntable.gif").read_bytes()
    for _ in range(2):
        export_field(SphereField(), tmp_path, small_options(video=False, formats=("ply",)), step=10)
        assert (tmp_path / "video" / "turntable.gif").read_bytes() == gif
        assert json.loads((tmp_path / "mesh" / "mesh.json").read_text())["turntable_step"] == 10


def test_a_no_video_export_drops_a_turntable_an_older_export_left_unrecorded(tmp_path):
    """Before mesh.json recorded the turntable's step, a --no-video export left the turntable of
    the export before it: the mesh.json of such an export (video false) cannot vouch for it."""
    export_field(SphereField(), tmp_path, small_options(formats=("ply",)), SphereTracer(), 10)
    report = tmp_path / "mesh" / "mesh.json"
    older = json.loads(report.read_text())
    del older["turntable_step"]
    report.write_text(json.dumps({**older, "step": 20, "options": {"video": False}}))
    export_field(SphereField(), tmp_path, small_options(video=False, formats=("ply",)), step=20)
    assert not (tmp_path / "video").exists()
    # The mesh.json of the full export that made it, of this step: it stays.
    export_field(SphereField(), tmp_path, small_options(formats=("ply",)), SphereTracer(), 10)
    report.write_text(json.dumps(older))
    export_field(SphereField(), tmp_path, small_options(video=False, formats=("ply",)), step=10)
    assert (tmp_path / "video" / "turntable.gif").exists()


@pytest.mark.parametrize(
    ("field", "threshold", "message"),
    [(EmptyField(), None, "train longer"), (SphereField(), 1000.0, "lower --threshold")],
)
def test_empty_field_error_leaves_no_files(tmp_path, field, threshold, message):
    out = tmp_path / "run"
    with pytest.raises(DreamtextError, match=message):
        export_field(field, out, small_options(threshold=threshold), renderer=SphereTracer())
    assert not out.exists()


def test_failed_write_leaves_old_files_and_no_temp_files(tmp_path):
    old = tmp_path / "mesh" / "mesh.glb"
    old.parent.mkdir()
    old.write_bytes(b"old")

    def broken_encoder(path: Path) -> None:
        path.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_all_atomically({old: b"new", tmp_path / "video" / "turntable.mp4": broken_encoder})
    assert old.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["mesh", "mesh.glb"]


def test_a_turntable_ffmpeg_could_not_finish_is_the_file_size_error_and_no_file(tmp_path):
    """A file-size limit (as a full disk) stops ffmpeg while it writes the index at the end:
    imageio-ffmpeg took that for success, and the export renamed a truncated turntable.mp4 into
    place."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(60)]
    mp4 = tmp_path / "video" / "turntable.mp4"
    with files_limited_to(20_000), pytest.raises(OSError) as raised:
        write_all_atomically({mp4: lambda path: export_module._write_mp4(images, path)})
    assert (raised.value.errno, raised.value.filename) == (errno.EFBIG, str(mp4))
    assert not (tmp_path / "video").exists()


def test_an_ffmpeg_killed_mid_stream_is_the_file_size_error_not_a_traceback(tmp_path):
    """Under `ulimit -f` ffmpeg is killed (SIGXFSZ) while frames still come: imageio-ffmpeg
    raised an OSError without an errno ('Broken pipe' and ffmpeg's command line), which the CLI
    shows as a traceback. Run in a process of its own, as the shell's limit applies (Python
    ignores SIGXFSZ and gives ffmpeg the default action back)."""
    script = f"""
import numpy as np
from pathlib import Path
from dreamtext import export
images = [np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)] * 60
mp4 = Path({str(tmp_path / "video" / "turntable.mp4")!r})
try:
    export.write_all_atomically({{mp4: lambda path: export._write_mp4(images, path)}})
except OSError as error:
    print(error.errno, error.filename == str(mp4))
"""

    def limit_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, resource.RLIM_INFINITY))

    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, preexec_fn=limit_files
    )
    assert done.stdout.strip() == f"{errno.EFBIG} True", done.stderr[-2000:]
    assert not (tmp_path / "video").exists()


def fake_ffmpeg(tmp_path: Path, monkeypatch, said: str, status: int) -> None:
    """An ffmpeg (imageio-ffmpeg's ``IMAGEIO_FFMPEG_EXE``) that reads the frames, writes
    ``said`` on stderr as the real one does when it fails, and exits with ``status``."""
    exe = tmp_path / "ffmpeg"
    exe.write_text(f"#!/bin/sh\ncat > /dev/null\nprintf '%s\\n' {said!r} >&2\nexit {status}\n")
    exe.chmod(0o755)
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(exe))


@pytest.mark.parametrize(
    "words, number",
    [
        ("No space left on device", errno.ENOSPC),
        ("Disk quota exceeded", errno.EDQUOT),
        ("Permission denied", errno.EACCES),
    ],
)
def test_ffmpegs_own_lines_stay_off_stderr_and_a_full_disk_is_its_os_error(
    tmp_path, monkeypatch, capfd, words, number
):
    """ffmpeg's lines came on stderr before dreamtext's one line; a full disk during the video
    now stops a batch as any other full disk does (an OSError, not a DreamtextError)."""
    fake_ffmpeg(tmp_path, monkeypatch, f"[out#0/mp4 @ 0x5579] Error writing trailer: {words}", 228)
    mp4 = tmp_path / "video" / "turntable.mp4"
    images = [np.zeros((32, 64, 3), dtype=np.uint8)] * 4
    with pytest.raises(OSError) as raised:
        write_all_atomically({mp4: lambda path: export_module._write_mp4(images, path)})
    assert (raised.value.errno, raised.value.filename) == (number, str(mp4))
    assert capfd.readouterr().err == ""
    assert not (tmp_path / "video").exists()


def test_the_mp4_writer_leaves_no_pipe_open(tmp_path):
    """Each video closes ffmpeg's pipes itself, written or failed: a batch exports run after run
    in one process, and a pipe left to the garbage collector holds a file descriptor until then
    (it said so as a ResourceWarning)."""
    import gc
    import warnings

    images = [np.zeros((32, 32, 3), dtype=np.uint8)] * 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        export_module._write_mp4(images, tmp_path / "turntable.mp4")
        with pytest.raises(DreamtextError):
            export_module._write_mp4(images, tmp_path / "missing" / "turntable.mp4")
        gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaks == []


def test_another_ffmpeg_failure_ends_its_one_line_with_ffmpegs_last_words(tmp_path, capfd):
    """A failure that is not the machine's (here a folder that does not exist) keeps ffmpeg's
    reason, short, at the end of dreamtext's line, and nothing of ffmpeg's on stderr."""
    images = [np.zeros((32, 64, 3), dtype=np.uint8)] * 4
    capfd.readouterr()
    with pytest.raises(DreamtextError) as raised:
        export_module._write_mp4(images, tmp_path / "missing" / "turntable.mp4")
    message = str(raised.value)
    assert message.startswith("ffmpeg could not write the turntable video (exit status ")
    assert "No such file or directory" in message and "\n" not in message
    assert message.endswith("); export again, or export with --no-video")
    assert capfd.readouterr().err == ""


def test_a_full_disk_in_the_turntable_is_one_line_of_dreamtext_export(tmp_path, monkeypatch, capfd):
    from dreamtext.cli import main

    fake_ffmpeg(tmp_path, monkeypatch, "Error writing trailer: No space left on device", 228)
    workspace = recorded_run(tmp_path, {**SMALL, "video_size": 32})
    stub_run(monkeypatch, SphereField(), SphereTracer())
    capfd.readouterr()
    assert main(["export", "--workspace", str(workspace)]) == 2
    err = capfd.readouterr().err.replace("\r", "\n").splitlines()
    ours = [line for line in err if "dreamtext: error:" in line or "trailer" in line]
    assert ours == [
        f"dreamtext: error: No space left on device ({workspace / 'video' / 'turntable.mp4'}); "
        "free space on that disk (or quota) or copy the run to a disk with room (or one you can "
        "write) and export it there"
    ]
    assert sorted(p.name for p in workspace.iterdir()) == ["checkpoints", "config.json"]


@pytest.mark.parametrize("ffmpeg", ["missing", "not executable", "none found"])
def test_an_ffmpeg_that_cannot_start_is_one_line_of_dreamtext_export_not_the_disks(
    tmp_path, monkeypatch, capfd, ffmpeg
):
    """IMAGEIO_FFMPEG_EXE naming no file printed a FileNotFoundError traceback (exit 1), one
    not executable blamed the disk ("Permission denied (.../ffmpeg); copy the run to a disk
    you can write"), and imageio-ffmpeg finding none (a platform its wheels ship no binary
    for) a RuntimeError traceback. Each is one line that says to install ffmpeg."""
    import imageio_ffmpeg

    from dreamtext.cli import main

    exe = tmp_path / "ffmpeg"
    if ffmpeg == "none found":

        def no_ffmpeg():
            raise RuntimeError("No ffmpeg exe could be found.")

        monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", no_ffmpeg)
    else:
        if ffmpeg == "not executable":
            exe.write_text("#!/bin/sh\nexit 0\n")
            exe.chmod(0o644)
        monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(exe))
    workspace = recorded_run(tmp_path, {**SMALL, "video_size": 32})
    stub_run(monkeypatch, SphereField(), SphereTracer())
    capfd.readouterr()
    assert main(["export", "--workspace", str(workspace)]) == 2
    err = capfd.readouterr().err
    assert "Traceback" not in err
    ours = [line for line in err.replace("\r", "\n").splitlines() if "error" in line.lower()]
    assert len(ours) == 1, err[-2000:]
    assert ours[0].startswith(
        "dreamtext: error: no ffmpeg found for the turntable video; "
        if ffmpeg == "none found"
        else f"dreamtext: error: ffmpeg {exe} could not start ("
    )
    assert ours[0].endswith(
        "install ffmpeg (or set IMAGEIO_FFMPEG_EXE to a working one) and export again, "
        "or export with --no-video"
    )
    assert sorted(p.name for p in workspace.iterdir()) == ["checkpoints", "config.json"]


@pytest.mark.parametrize("command", ["text", "batch"])
def test_an_ffmpeg_that_cannot_start_is_refused_before_the_training_whose_export_needs_it(
    tmp_path, monkeypatch, capfd, command
):
    """Without an ffmpeg that starts, `text` trained every step and `batch` every line, each
    failing in the export at its end (the video is its last file). Now refused before any
    training: one line, exit 2, nothing written."""
    from dreamtext.cli import main

    missing = tmp_path / "no-ffmpeg"
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(missing))
    monkeypatch.chdir(tmp_path)
    common = ["--model", "builtin:shapes", "--iters", "2", "--workspace", "runs"]
    if command == "text":
        args = ["text", "a red cube", *common]
    else:
        (tmp_path / "prompts.txt").write_text("a red cube\na blue sphere\n")
        args = ["batch", "prompts.txt", *common]
    capfd.readouterr()
    assert main(args) == 2
    err = capfd.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[-1] == (
        f"dreamtext: error: ffmpeg {missing} could not start (No such file or directory); "
        "install ffmpeg (or set IMAGEIO_FFMPEG_EXE to a working one), or set "
        "export_options.video: false in a --config, or pass --no-export and export later"
    )
    assert not (tmp_path / "runs").exists()


def test_an_ffmpeg_wrapper_whose_program_is_gone_is_refused_before_the_training(
    tmp_path, monkeypatch
):
    """A wrapper script (or a binary whose shared libraries are gone) starts, but its shell (the
    loader) exits 127 at once: the check passed it, and `text` trained every step to fail in
    the export with "export again, or export with --no-video"."""
    exe = tmp_path / "ffmpeg"
    exe.write_text('#!/bin/sh\nexec /nonexistent/bin/ffmpeg "$@"\n')
    exe.chmod(0o755)
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(exe))
    with pytest.raises(DreamtextError) as raised:
        export_module.check_ffmpeg(small_options(), after_training=True)
    message = str(raised.value)
    assert message.startswith(f"ffmpeg {exe} could not start (")
    assert "/nonexistent/bin/ffmpeg" in message and "\n" not in message
    assert message.endswith("or pass --no-export and export later")


def test_the_ffmpeg_check_asks_for_no_ffmpeg_where_there_is_no_video(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(tmp_path / "no-ffmpeg"))
    export_module.check_ffmpeg(small_options(video=False), after_training=True)
    with pytest.raises(DreamtextError, match=r"or export with --no-video$"):
        export_module.check_ffmpeg(small_options())


@pytest.mark.parametrize(
    ("number", "fix"),
    [
        (errno.EIO, "check that disk or file server (an I/O error: the system log says more)"),
        (errno.ESTALE, "run the command again once the file server is back (a stale NFS file"),
        (errno.ENOTCONN, "mount that file system again (its network or FUSE connection is gone)"),
    ],
    ids=["EIO", "ESTALE", "ENOTCONN"],
)
def test_a_failing_disk_or_file_server_in_dreamtext_export_is_one_line_that_fits_it(
    tmp_path, monkeypatch, capsys, number, fix
):
    """An export reading its run's last.pt on NFS (its check after meshing) that met EIO,
    ESTALE or ENOTCONN printed a traceback; it is one line with what to do, and nothing is
    written."""
    from dreamtext.cli import main

    workspace = make_run(tmp_path, "run", 1_000_000, run_id="a1")
    stub_run(monkeypatch, SphereField(), SphereTracer())
    last = workspace / "checkpoints" / "last.pt"

    def unreadable(path):
        raise OSError(number, os.strerror(number), str(last))

    monkeypatch.setattr(export_module, "checkpoint_run", unreadable)
    code = main(["export", "--workspace", str(workspace), "--resolution", "32", "--no-video"])
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if line.startswith("dreamtext: error")]
    assert code == 2 and "Traceback" not in err and len(said) == 1, err
    assert said[0].startswith(f"dreamtext: error: {os.strerror(number)} ({last}); {fix}")
    assert said[0].endswith(
        " or copy the run to a disk with room (or one you can write) and export it there"
    )
    assert sorted(p.name for p in workspace.iterdir()) == ["checkpoints"]


def test_a_whole_mp4_is_told_from_one_cut_short(tmp_path):
    rng = np.random.default_rng(0)
    mp4 = tmp_path / "whole.mp4"
    export_module._write_mp4([rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)] * 30, mp4)
    data = mp4.read_bytes()
    assert mp4_is_whole(mp4)
    for cut in (len(data) - 1, len(data) // 2, 7):
        short = tmp_path / f"cut{cut}.mp4"
        short.write_bytes(data[:cut])
        assert not mp4_is_whole(short), cut


def test_an_export_file_that_does_not_fit_is_named(tmp_path):
    """ulimit -f or a full disk: 'File too large (…/mesh/mesh.glb)', not a nameless error."""
    glb = tmp_path / "mesh" / "mesh.glb"
    with files_limited_to(20_000), pytest.raises(OSError) as error:
        write_all_atomically({tmp_path / "mesh" / "mesh.json": b"{}", glb: bytes(50_000)})
    assert error.value.errno in (errno.EFBIG, errno.ENOSPC)
    assert error.value.filename == str(glb)
    assert not (tmp_path / "mesh").exists()


def test_an_export_removes_the_temp_files_of_an_export_that_was_killed(tmp_path):
    """SIGKILL mid-export (the OOM killer) leaves hidden half-written files such as
    ``mesh/.mesh.k2j4x9ab.glb``; the next export of the workspace removes them."""
    import tempfile

    killed = []
    for folder, name in (("mesh", "mesh.glb"), ("mesh", "albedo.png"), ("video", "turntable.mp4")):
        (tmp_path / folder).mkdir(exist_ok=True)
        stem, suffix = name.split(".")
        path = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".{suffix}", dir=tmp_path / folder)[1]
        Path(path).write_bytes(b"half")
        killed.append(Path(path))
    export_field(SphereField(), tmp_path, small_options(video=False, formats=("ply",)))
    assert not any(path.exists() for path in killed)
    assert sorted(p.name for p in (tmp_path / "mesh").iterdir()) == ["mesh.json", "mesh.ply"]


def test_atomic_write_renames_complete_readable_files(tmp_path):
    written = write_all_atomically({tmp_path / "a" / "x.bin": b"12345"})
    assert written == [tmp_path / "a" / "x.bin"]
    assert written[0].read_bytes() == b"12345"
    assert os.stat(written[0]).st_mode & 0o044 == 0o044
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["x.bin"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"frames": 59}, "at least 60"), ({"formats": ("fbx",)}, "glb,obj,ply")],
)
def test_bad_options_name_the_fix(tmp_path, overrides, message):
    with pytest.raises(DreamtextError, match=message):
        export_field(SphereField(), tmp_path, small_options(**overrides))


def no_field_check(monkeypatch) -> None:
    """An export of a stubbed run (an analytic field, a tracer or no renderer) skips the check
    that its weights render finite, which renders with the run's own field and renderer."""
    monkeypatch.setattr(export_module, "refuse_overflowed_field", lambda *args: None)


def stub_run(monkeypatch, field, renderer, step: int = 7) -> None:
    """``dreamtext export`` of a workspace loads ``field`` and ``renderer``, trained ``step``
    steps, instead of its checkpoint."""
    monkeypatch.setattr(export_module, "read_run_checkpoint", lambda workspace: {"step": step})
    monkeypatch.setattr(
        export_module, "run_from_state", lambda state, device: (field, renderer, {})
    )
    no_field_check(monkeypatch)


def make_run(root: Path, name: str, mtime: float, run_id: str | None = None) -> Path:
    """A run folder whose ``last.pt`` holds a step and, when given, the run's ``run_id`` (what an
    export checks before its swap); its field comes from :func:`stub_run`."""
    last = root / name / "checkpoints" / "last.pt"
    last.parent.mkdir(parents=True)
    torch.save({"step": 0, **({} if run_id is None else {"run_id": run_id})}, last)
    os.utime(last, (mtime, mtime))
    return root / name


def test_an_export_over_a_folder_named_as_its_file_keeps_the_folder(tmp_path, capsys):
    """A folder mesh/mesh.json (a user's, with a file in it) was dropped by the export's swap
    as an earlier export's mesh.json, and the user's file with it, without a word."""
    from tiny_models import TINY_TRAIN

    from dreamtext.cli import main
    from dreamtext.config import resolve_config
    from dreamtext.trainer import train

    settings = {
        **TINY_TRAIN,
        "prompt": "a red cube",
        "iters": 2,
        "guidance": {"model": "builtin:shapes"},
    }
    workspace = train(resolve_config({**settings, "workspace": str(tmp_path / "run")}))
    kept = workspace / "mesh" / "mesh.json" / "notes.txt"
    kept.parent.mkdir(parents=True)
    kept.write_text("mine")
    code = main(["export", "--workspace", str(workspace), "--no-video", "--formats", "ply"])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"dreamtext: error: {kept.parent} is a folder, not a file of an export, which replaces "
        f"it; move it out of {kept.parent.parent} and run the command again"
    )
    assert kept.read_text() == "mine"


def test_latest_workspace_is_the_most_recently_trained(tmp_path):
    make_run(tmp_path, "old-run", 1_000_000)
    newest = make_run(tmp_path, "new-run", 2_000_000)
    make_run(tmp_path, "middle-run", 1_500_000)
    assert find_latest_workspace(tmp_path) == newest


def test_export_without_workspace_finds_a_run_that_has_only_whole_step_files(
    tmp_path, monkeypatch, capsys
):
    """A run whose last.pt is missing (deleted by hand, a sync cut short) is resumed from its
    newest whole step file; export without --workspace passed it over for an older run with a
    last.pt (or said there was no trained run). It finds it as the resume does, by its newest
    whole step file, and names that file; step files that are all damaged make no run."""
    from dreamtext.checkpoint import RUN_KEYS, save_checkpoint
    from dreamtext.cli import main

    monkeypatch.chdir(tmp_path)
    root = tmp_path / "workspace"
    make_run(root, "old-run", 1_000_000)
    for name, mtime in (("stepped-run", 2_000_000), ("damaged-run", 3_000_000)):
        for step in (5, 10):
            save_checkpoint(root / name, {**{key: {} for key in RUN_KEYS}, "step": step})
        (root / name / "checkpoints" / "last.pt").unlink()
        os.utime(root / name / "checkpoints" / "step_000005.pt", (mtime, mtime))
    os.truncate(root / "damaged-run" / "checkpoints" / "step_000005.pt", 100)
    stepped = Path("workspace") / "stepped-run"
    assert find_latest_workspace(Path("workspace")) == stepped
    assert main(["export", "--no-video", "--formats", "ply"]) == 2
    step_file = stepped / "checkpoints" / "step_000005.pt"
    assert (
        capsys.readouterr()
        .err.strip()
        .splitlines()[-1]
        .startswith(
            f"dreamtext: error: {stepped / 'checkpoints' / 'last.pt'} is missing; its newest whole "
            f"checkpoint is {step_file} (step 5)"
        )
    )
    assert sorted(p.name for p in (root / "stepped-run").iterdir()) == ["checkpoints"]


def test_the_newest_run_is_found_before_torch_where_no_step_file_must_be_read(tmp_path):
    """dreamtext.latestrun, which the CLI asks before the export's imports (torch), chooses the
    run the export chooses where the newest checkpoint is a last.pt, and leaves it to the export
    (None) where a run without last.pt is newer (its step files are read whole: torch) or
    there is no run; it imports no torch."""
    from dreamtext.checkpoint import RUN_KEYS, save_checkpoint
    from dreamtext.latestrun import newest_run_unread

    assert newest_run_unread(tmp_path) is None
    make_run(tmp_path, "old-run", 1_000_000)
    newest = make_run(tmp_path, "new-run", 3_000_000)
    for step in (5, 10):
        save_checkpoint(tmp_path / "stepped-run", {**{key: {} for key in RUN_KEYS}, "step": step})
    stepped = tmp_path / "stepped-run" / "checkpoints"
    (stepped / "last.pt").unlink()
    os.utime(stepped / "step_000005.pt", (2_000_000, 2_000_000))
    assert newest_run_unread(tmp_path) == find_latest_workspace(tmp_path) == newest
    os.utime(stepped / "step_000005.pt", (4_000_000, 4_000_000))
    assert newest_run_unread(tmp_path) is None
    assert find_latest_workspace(tmp_path) == tmp_path / "stepped-run"
    code = (
        "import sys, dreamtext.latestrun, dreamtext.exportflags; "
        "print(sorted({'torch', 'diffusers'} & set(sys.modules)))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert (done.returncode, done.stdout.strip()) == (0, "[]"), done.stderr


def test_no_trained_run_names_the_training_command(tmp_path):
    with pytest.raises(DreamtextError, match="dreamtext text"):
        find_latest_workspace(tmp_path)


def test_a_run_whose_weights_overflowed_is_refused_before_its_mesh_naming_the_retraining(
    tmp_path, tiny_sd_path, monkeypatch
):
    """The only checkpoint of a run holds weights that overflowed float32 (saved by a dreamtext
    from before its saves checked them): the export sampled the whole density grid (3.6 s of a
    builtin:shapes run) before saying it was NaN, and named no command. It is refused once
    loaded, with the command that trains the run again, and writes nothing."""
    from test_trainer import overflow_last_checkpoint, tiny_config

    workspace = train(tiny_config(tmp_path, tiny_sd_path, iters=2, export=False))
    overflow_last_checkpoint(workspace)
    meshed, real = [], export_module.extract_mesh
    monkeypatch.setattr(
        export_module, "extract_mesh", lambda *a, **k: meshed.append(1) or real(*a, **k)
    )
    before = sorted(p.relative_to(workspace) for p in workspace.rglob("*"))
    with pytest.raises(DreamtextError) as error:
        export_workspace(workspace, small_options())
    message = str(error.value)
    assert meshed == [] and "\n" not in message
    for part in (
        f"cannot export {workspace}: {workspace / 'checkpoints' / 'last.pt'} (step 2) holds "
        "weights that overflowed float32",
        f"`dreamtext text 'a red sphere' --workspace {workspace} --overwrite`",
        "a smaller --lr",
    ):
        assert part in message, message
    assert sorted(p.relative_to(workspace) for p in workspace.rglob("*")) == before


def _nan_density_grid(monkeypatch) -> None:
    """The density grid of every export holds a NaN (a field whose training diverged, NaN off
    the rays its renders sample: those renders are finite)."""
    from dreamtext import mesh

    real = mesh.sample_density_grid

    def with_a_nan(*args, **kwargs):
        grid = real(*args, **kwargs)
        grid.flat[0] = np.nan
        return grid

    monkeypatch.setattr(mesh, "sample_density_grid", with_a_nan)


def test_an_export_of_a_nan_density_names_the_command_that_trains_the_run_again(
    tmp_path, tiny_sd_path, monkeypatch
):
    """A density grid with NaN (renders finite, so not refused before the mesh) said "train
    again with a smaller --lr", no command: `dreamtext export` has no --lr. It names the run's
    own command, which parses to its prompt and folder, and writes nothing."""
    from test_trainer import tiny_config

    from dreamtext.cli import build_parser

    workspace = train(tiny_config(tmp_path, tiny_sd_path, iters=2, export=False))
    _nan_density_grid(monkeypatch)
    before = sorted(p.relative_to(workspace) for p in workspace.rglob("*"))
    with pytest.raises(DreamtextError) as error:
        export_workspace(workspace, small_options(video=False))
    message = str(error.value)
    assert message.startswith(f"cannot export {workspace}: the field's density is NaN at 1 of ")
    assert message.endswith(" with the flags it was trained with and a smaller --lr"), message
    command = message.split("`")[1]
    args = build_parser().parse_command_line(shlex.split(command)[1:])
    assert (args.command, args.prompt, Path(args.workspace), args.overwrite) == (
        "text", "a red sphere", workspace, True,
    )  # fmt: skip
    assert sorted(p.relative_to(workspace) for p in workspace.rglob("*")) == before


def test_workspace_without_checkpoint_names_the_path_and_the_fix(tmp_path):
    with pytest.raises(DreamtextError, match=r"checkpoints/last\.pt.*dreamtext text"):
        export_workspace(tmp_path, small_options())
    assert list(tmp_path.iterdir()) == []


def test_export_of_a_mistyped_folder_says_there_is_no_such_folder(tmp_path, capsys):
    """`export --workspace workspace/a_rde_cube` said "no checkpoint at .../checkpoints/last.pt:
    train first", sending the user to train a run they have."""
    from dreamtext.cli import main

    missing = tmp_path / "a_rde_cube"
    assert main(["export", "--workspace", str(missing)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"dreamtext: error: no such folder: {missing}; pass --workspace the folder of a trained "
        "run (the one that holds checkpoints/)"
    ]
    assert not missing.exists()


def test_export_of_an_image_file_says_it_is_an_image_and_what_to_run(tmp_path, capsys):
    """`export --workspace mug.png` said "no checkpoint at mug.png/checkpoints/last.pt: train
    first with `dreamtext text PROMPT`", a path inside a file and the wrong command."""
    from dreamtext.cli import main

    image = tmp_path / "mug.png"
    image.write_bytes(b"\x89PNG")
    assert main(["export", "--workspace", str(image)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"dreamtext: error: {image} is an image, not a run's folder: `dreamtext image {image}` "
        "makes its run and exports it; export takes --workspace the folder of a trained run"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mug.png"]


def test_export_of_an_image_names_the_run_its_image_command_made(tmp_path, monkeypatch, capsys):
    from dreamtext.cli import main

    monkeypatch.chdir(tmp_path)
    run = make_run(tmp_path / "workspace", "mug", 1_000_000)
    config = {"prompt": "mug", "image_to_3d": {"image": str(tmp_path / "mug.png")}}
    (run / "config.json").write_text(json.dumps(config))
    Path("mug.png").write_bytes(b"\x89PNG")
    assert main(["export", "--workspace", "mug.png"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "dreamtext: error: mug.png is an image, not a run's folder: its `dreamtext image` run "
        f"is exported with --workspace {run.relative_to(tmp_path)}"
    ]
    # Another mug.png (its own bytes): workspace/mug is not its run, though named after it.
    Path("other").mkdir()
    Path("other/mug.png").write_bytes(b"\x89PNG other")
    assert main(["export", "--workspace", "other/mug.png"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "dreamtext: error: other/mug.png is an image, not a run's folder: `dreamtext image "
        "other/mug.png` makes its run and exports it; export takes --workspace the folder of a "
        "trained run"
    ]


def test_export_of_a_run_file_names_its_run(tmp_path, capsys):
    """`export --workspace RUN/config.json` (a tab completion too far) names RUN."""
    from dreamtext.cli import main

    run = make_run(tmp_path, "a_red_cube", 1_000_000)
    for path in (run / "config.json", run / "checkpoints" / "last.pt"):
        path.touch()
        assert main(["export", "--workspace", str(path)]) == 2
        assert capsys.readouterr().err.strip().splitlines() == [
            f"dreamtext: error: {path} is a file of the run in {run}: pass --workspace {run}"
        ]
    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    assert main(["export", "--workspace", str(notes)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"dreamtext: error: {notes} is a file, not a run's folder: pass --workspace the folder "
        "of a trained run (the one that holds checkpoints/)"
    ]


def test_export_of_an_image_runs_descriptor_folder_names_the_run(tmp_path, capsys):
    """`export --workspace workspace/mug/descriptor` (the descriptor stage's folder, which has a
    checkpoints/last.pt of its own) said "... is not a dreamtext run checkpoint (...); delete
    it to start over": deleting it loses the trained descriptor."""
    from dreamtext.cli import main

    run = make_run(tmp_path, "mug", 1_000_000)
    descriptor = run / "descriptor"
    (descriptor / "checkpoints").mkdir(parents=True)
    torch.save({"step": 5, "embeds": torch.zeros(1, 4)}, descriptor / "checkpoints" / "last.pt")
    (descriptor / "sentence.json").write_text("{}")
    before = sorted(p.name for p in run.rglob("*"))
    assert main(["export", "--workspace", str(descriptor)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"dreamtext: error: {descriptor} is inside the run in {run}: pass --workspace {run}"
    ]
    sentence = descriptor / "sentence.json"
    assert main(["export", "--workspace", str(sentence)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"dreamtext: error: {sentence} is a file of the run in {run}: pass --workspace {run}"
    ]
    assert sorted(p.name for p in run.rglob("*")) == before


def test_export_of_a_folder_of_runs_names_its_newest_run(tmp_path, capsys):
    """`export --workspace workspace` (or a batch's root) said "no checkpoint at
    workspace/checkpoints/last.pt: train first" although it holds trained runs."""
    from dreamtext.cli import main

    make_run(tmp_path, "a_red_cube", 1_000_000)
    newest = make_run(tmp_path, "a_blue_sphere", 2_000_000)
    assert main(["export", "--workspace", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"dreamtext: error: {tmp_path} holds 2 runs, not one: pass --workspace one run's "
        f"folder, such as {newest} (the newest)"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_blue_sphere", "a_red_cube"]


def test_an_image_runs_descriptor_checkpoints_are_not_a_run_to_export(tmp_path):
    """An image run stopped (or still running) in its descriptor stage has the newest
    ``checkpoints/last.pt``, in ``mug/descriptor/``: plain `export` chose that folder and was
    told to pass ``mug``, which it then said held one run, ``mug/descriptor``."""
    from dreamtext.latestrun import newest_run_unread, runs_in

    trained = make_run(tmp_path, "a_red_cube", 1_000_000)
    descriptor = make_run(tmp_path / "mug", "descriptor", 2_000_000)
    (descriptor / "sentence.json").write_text(json.dumps({"sentence": "a mug"}))
    (descriptor / "checkpoints" / "step_000002.pt").write_bytes(b"")
    assert newest_run_unread(tmp_path) == find_latest_workspace(tmp_path) == trained
    assert runs_in(tmp_path / "mug") == []
    # A text run whose prompt was "descriptor" is a run.
    text_run = make_run(tmp_path, "descriptor", 3_000_000)
    assert find_latest_workspace(tmp_path) == text_run


def test_export_of_a_folder_of_runs_counts_runs_that_have_only_step_files(tmp_path, capsys):
    """A run whose last.pt is gone (deleted, a copy cut short) still holds its step files: the
    folder of runs holds it too, and it can be the newest (its newest step file's time)."""
    from dreamtext.cli import main

    make_run(tmp_path, "a_red_cube", 1_000_000)
    newest = make_run(tmp_path, "a_blue_sphere", 2_000_000)
    last = newest / "checkpoints" / "last.pt"
    last.rename(last.with_name("step_000004.pt"))
    (tmp_path / "notes").mkdir()
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    assert main(["export", "--workspace", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"dreamtext: error: {tmp_path} holds 2 runs, not one: pass --workspace one run's "
        f"folder, such as {newest} (the newest)"
    ]


def test_export_without_workspace_takes_the_latest_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_run(tmp_path / "workspace", "old-run", 1_000_000)
    newest = make_run(tmp_path / "workspace", "new-run", 2_000_000)
    loaded = []

    def fake_read(workspace):
        loaded.append(Path(workspace))
        return {"step": 7}

    monkeypatch.setattr(export_module, "read_run_checkpoint", fake_read)
    monkeypatch.setattr(
        export_module, "run_from_state", lambda state, device: (SphereField(), None, {})
    )
    no_field_check(monkeypatch)
    result = export_workspace(None, small_options(video=False, formats=("ply",)))
    assert loaded == [Path("workspace/new-run")]
    assert result.summary().startswith("exported workspace/new-run (step 7):")
    assert result.files["ply"].resolve() == (newest / "mesh" / "mesh.ply").resolve()
    # mesh.json says which checkpoint step the mesh is of (a run may have trained on since).
    assert json.loads((newest / "mesh" / "mesh.json").read_text())["step"] == 7


@pytest.mark.parametrize("stage", ["bake_texture", "render_turntable"])
@pytest.mark.parametrize(
    ("error", "memory"),
    [
        (lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.00 GiB"), "GPU"),
        (  # torch's CPU allocator (ulimit -v, a full RAM)
            lambda: RuntimeError(
                "DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes."
            ),
            "CPU",
        ),
        (lambda: MemoryError(), "CPU"),  # numpy's, marching cubes' and the texture's arrays
    ],
    ids=["gpu", "cpu-allocator", "memory-error"],
)
def test_out_of_memory_in_export_names_the_fixes_and_writes_nothing(
    tmp_path, monkeypatch, stage, error, memory
):
    def run_out(*args, **kwargs):
        raise error()

    monkeypatch.setattr(export_module, stage, run_out)
    with pytest.raises(DreamtextError) as raised:
        export_field(SphereField(), tmp_path / "run", small_options(), renderer=SphereTracer())
    message = str(raised.value)
    assert "\n" not in message
    for fix in ("--resolution", "--texture-size", "--video-size", "--no-video"):
        assert fix in message
    assert "60-frame 32 px turntable" in message
    if memory == "GPU":
        assert "out of GPU memory" in message and "--device cpu" in message
    else:
        assert "out of memory" in message and "GPU" not in message and "--device" not in message
    assert f"--workspace {shlex.quote(str(tmp_path / 'run'))}" in message
    assert not (tmp_path / "run").exists()


def test_out_of_memory_in_an_export_without_a_turntable_names_no_video_flag(tmp_path, monkeypatch):
    def run_out(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(export_module, "bake_texture", run_out)
    with pytest.raises(DreamtextError) as raised:
        export_field(SphereField(), tmp_path / "run", small_options(video=False), SphereTracer())
    message = str(raised.value)
    assert "with a smaller --resolution or --texture-size" in message
    assert "turntable" not in message and "--video-size" not in message


def suggested_workspace(message: str) -> Path:
    """The ``--workspace`` of the command a message suggests between backticks, read as a shell
    reads the command pasted from it (``dreamtext export --workspace 'my runs/a cube'``)."""
    from dreamtext.cli import build_parser

    named = shlex.split(message.split("`")[1])
    assert named[0] == "dreamtext"
    return Path(build_parser().parse_command_line(named[1:]).workspace)


def test_the_export_an_out_of_memory_export_suggests_pastes_for_a_folder_with_spaces(
    tmp_path, monkeypatch
):
    # Pasted unquoted, `--workspace my runs/a red cube` names the folder "my" and fails.
    def run_out(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(export_module, "bake_texture", run_out)
    workspace = tmp_path / "my runs" / "a red cube"
    with pytest.raises(DreamtextError) as raised:
        export_field(SphereField(), workspace, small_options(), renderer=SphereTracer())
    assert suggested_workspace(str(raised.value)) == workspace


def test_the_export_a_full_disk_after_training_suggests_pastes_for_a_folder_with_spaces(tmp_path):
    workspace = tmp_path / "my runs" / "a red cube"
    error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(workspace / "mesh" / "mesh.glb"))
    line = trained_run_line(error, TrainedRun(3, workspace / "checkpoints" / "last.pt", workspace))
    assert suggested_workspace(line) == workspace


def test_dreamtext_export_out_of_gpu_memory_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    from dreamtext.cli import main

    workspace = make_run(tmp_path, "run", 1_000_000)
    stub_run(monkeypatch, SphereField(), None)

    def run_out(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory.")

    monkeypatch.setattr(export_module, "extract_mesh", run_out)
    code = main(["export", "--workspace", str(workspace)])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "out of GPU memory" in err
    assert "Traceback" not in err
    assert sorted(p.name for p in workspace.iterdir()) == ["checkpoints"]


def replace_run_while_meshing(monkeypatch, workspace: Path, new_run: str | None) -> None:
    """Start a new run in ``workspace`` (as ``text --overwrite`` does: the old run's files
    cleared, then, with ``new_run``, its first checkpoint) after the export has read the old
    run's checkpoint and before it swaps its files in."""
    from dreamtext.trainer import remove_earlier_run

    meshing = export_module.extract_mesh

    def replaced_meanwhile(*args, **kwargs):
        remove_earlier_run(workspace)
        if new_run is not None:
            torch.save({"step": 3, "run_id": new_run}, workspace / "checkpoints" / "last.pt")
        return meshing(*args, **kwargs)

    monkeypatch.setattr(export_module, "extract_mesh", replaced_meanwhile)


@pytest.mark.parametrize(
    ("new_run", "message"),
    [
        (None, r"last\.pt was removed while exporting \(a new run started in .*run, or the chec"),
        ("b2", "run was replaced by a new run while exporting; export it again"),
    ],
    ids=["cleared", "new-checkpoint"],
)
def test_an_export_of_a_run_replaced_meanwhile_swaps_nothing_in(
    tmp_path, monkeypatch, new_run, message
):
    """An export started before `text --overwrite` and ending after it swapped the old run's
    mesh/ and video/ into the new run's folder: the new run (--no-export) ended with a mesh of
    a run that is no longer there."""
    workspace = make_run(tmp_path, "run", 1_000_000, run_id="a1")
    stub_run(monkeypatch, SphereField(), SphereTracer())
    monkeypatch.setattr(export_module, "read_run_checkpoint", lambda w: {"step": 7, "run_id": "a1"})
    replace_run_while_meshing(monkeypatch, workspace, new_run)
    with pytest.raises(DreamtextError, match=message):
        export_workspace(workspace, small_options(formats=("ply",)))
    assert not (workspace / "mesh").exists() and not (workspace / "video").exists()
    assert not list(workspace.glob(".export-*"))


def counted(monkeypatch, stage: str) -> list[int]:
    """One entry per call of ``export_module.<stage>``, appended as the export makes it."""
    calls, original = [], getattr(export_module, stage)

    def count(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(export_module, stage, count)
    return calls


def test_an_export_of_a_run_replaced_while_it_meshes_stops_before_texture_and_turntable(
    tmp_path, monkeypatch, capsys
):
    """`text RUN --overwrite` while `dreamtext export RUN` meshed: the export went on to bake
    the texture and render all 60 turntable frames (minutes on a real run) and was refused only
    at its swap. It stops after meshing, with the swap's one line and exit 2."""
    from dreamtext.cli import main

    workspace = make_run(tmp_path, "run", 1_000_000, run_id="a1")
    tracer = SphereTracer()
    stub_run(monkeypatch, SphereField(), tracer)
    monkeypatch.setattr(export_module, "read_run_checkpoint", lambda w: {"step": 7, "run_id": "a1"})
    replace_run_while_meshing(monkeypatch, workspace, "b2")
    baked = counted(monkeypatch, "bake_texture")
    code = main(["export", "--workspace", str(workspace), "--resolution", "48"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err
    assert err.splitlines()[-1] == (
        f"dreamtext: error: {workspace} was replaced by a new run while exporting; export it again"
    )
    assert baked == [] and tracer.calls == []
    assert not (workspace / "mesh").exists() and not (workspace / "video").exists()
    assert not list(workspace.glob(".export-*"))


class SlowSphere(SphereField):
    """A sphere whose density queries take ``seconds`` each on a clock of its own (``now``, the
    one the density grid reads), and that calls ``meanwhile`` at its ``at``-th query."""

    def __init__(self, seconds: float, at: int, meanwhile) -> None:
        super().__init__()
        self.seconds, self.at, self.meanwhile, self.now, self.queries = seconds, at, meanwhile, 0, 0

    def density(self, x):
        self.now += self.seconds
        self.queries += 1
        if self.queries == self.at:
            self.meanwhile()
        return super().density(x)


def test_an_export_of_a_run_replaced_while_it_samples_the_density_grid_stops_there(
    tmp_path, monkeypatch
):
    """The check ran only after marching cubes: a run replaced early in an image run's 256^3
    density grid (~8 min on a CPU) let the export sample the rest first. It stops within a
    second's worth of chunks: 1/8 s each, replaced in the 12th of 2,744, stopped after the 16th."""
    import dreamtext.mesh as mesh_module
    from dreamtext.trainer import remove_earlier_run

    workspace = make_run(tmp_path, "run", 1_000_000, run_id="a1")

    def replaced() -> None:
        remove_earlier_run(workspace)
        torch.save({"step": 3, "run_id": "b2"}, workspace / "checkpoints" / "last.pt")

    field = SlowSphere(0.125, at=12, meanwhile=replaced)
    monkeypatch.setattr(mesh_module, "time", SimpleNamespace(monotonic=lambda: field.now))
    small_chunks = functools.partial(mesh_module.extract_mesh, chunk=64)
    monkeypatch.setattr(export_module, "extract_mesh", small_chunks)
    stub_run(monkeypatch, field, SphereTracer())
    monkeypatch.setattr(export_module, "read_run_checkpoint", lambda w: {"step": 7, "run_id": "a1"})
    surfaces = []
    monkeypatch.setattr(mesh_module, "solid_surface", lambda *a: surfaces.append(1))
    with pytest.raises(DreamtextError, match="run was replaced by a new run while exporting"):
        export_workspace(workspace, small_options(resolution=56, formats=("ply",)))
    assert field.queries == 16 and surfaces == []
    assert not (workspace / "mesh").exists() and not list(workspace.glob(".export-*"))


def test_an_export_of_a_run_replaced_during_its_turntable_renders_no_further_chunk(
    tmp_path, monkeypatch
):
    workspace = make_run(tmp_path, "run", 1_000_000, run_id="a1")
    tracer = SphereTracer()
    render = tracer.render

    def replaced_after_two_chunks(*args, **kwargs):
        out = render(*args, **kwargs)
        if len(tracer.calls) == 2:
            shutil.rmtree(workspace / "checkpoints")
            save_checkpoint(workspace, {"step": 3, "run_id": "b2"}, keep=1)
        return out

    tracer.render = replaced_after_two_chunks
    stub_run(monkeypatch, SphereField(), tracer)
    monkeypatch.setattr(export_module, "read_run_checkpoint", lambda w: {"step": 7, "run_id": "a1"})
    with pytest.raises(DreamtextError, match="run was replaced by a new run while exporting"):
        export_workspace(workspace, small_options(formats=("ply",)))
    assert tracer.calls == [4, 4]  # two chunks of 4 frames
    assert not (workspace / "mesh").exists() and not (workspace / "video").exists()
    assert not list(workspace.glob(".export-*"))


def test_an_export_of_its_run_checks_it_once_per_turntable_chunk_not_per_frame(
    tmp_path, monkeypatch
):
    """The check reads last.pt (memory-mapped) each time: a few hundredths of a second, once
    after meshing, once after decimation, once before each chunk and once at the swap."""
    workspace = make_run(tmp_path, "run", 1_000_000, run_id="a1")
    stub_run(monkeypatch, SphereField(), SphereTracer())
    monkeypatch.setattr(export_module, "read_run_checkpoint", lambda w: {"step": 7, "run_id": "a1"})
    reads = counted(monkeypatch, "checkpoint_run")
    result = export_workspace(workspace, small_options(formats=("ply",)))
    chunks = 15  # 60 frames, 4 a chunk
    assert result.frames == 60 and len(reads) == 1 + 1 + chunks + 1


@pytest.mark.parametrize(
    ("meanwhile", "line"),
    [
        (
            lambda last: shutil.rmtree(last.parent),
            "{last} was removed while exporting (a new run started in {workspace}, or the "
            "checkpoints were deleted); nothing was written",
        ),
        (
            lambda last: last.write_bytes(b"not a checkpoint"),
            "cannot read {last} (not a whole checkpoint) to check that it is still the run this "
            "export read; nothing was written: make it readable and export again",
        ),
        (
            lambda last: last.parent.parent.rename(last.parent.parent.with_name("moved")),
            "{workspace} was moved or deleted while exporting; nothing was written: export the "
            "run where it is now",
        ),
    ],
    ids=["checkpoints-deleted", "last-unreadable", "folder-moved"],
)
def test_an_export_whose_checkpoint_went_away_says_so_not_that_a_new_run_came(
    tmp_path, monkeypatch, capsys, meanwhile, line
):
    """`rm -rf RUN/checkpoints` (or a last.pt made unreadable, or `mv RUN ELSEWHERE`) while
    `dreamtext export RUN` ran ended in "RUN was replaced by a new run while exporting; export
    it again": no new run had started, and exporting RUN again cannot work. The line says what
    happened; the folder a moved run left is not made again."""
    from dreamtext.cli import main

    workspace = make_run(tmp_path, "run", 1_000_000, run_id="a1")
    last = workspace / "checkpoints" / "last.pt"
    stub_run(monkeypatch, SphereField(), SphereTracer())
    monkeypatch.setattr(export_module, "read_run_checkpoint", lambda w: {"step": 7, "run_id": "a1"})
    meshing = export_module.extract_mesh

    def went_away(*args, **kwargs):
        meanwhile(last)
        return meshing(*args, **kwargs)

    monkeypatch.setattr(export_module, "extract_mesh", went_away)
    code = main(["export", "--workspace", str(workspace), *SMALL_FLAGS, "--no-video"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err
    expected = "dreamtext: error: " + line.format(last=last, workspace=workspace)
    assert err.splitlines()[-1] == expected
    assert not (workspace / "mesh").exists() and not list(workspace.glob(".export-*"))
    assert workspace.is_dir() != ("was moved" in line)  # not made again where the run was


def test_an_export_while_its_run_trains_on_swaps_its_files_in(tmp_path, monkeypatch):
    """Export while the run trains is allowed: a later checkpoint of the same run replaces the
    one the export read, and the export's mesh is of the step it read."""
    workspace = make_run(tmp_path, "run", 1_000_000, run_id="a1")
    stub_run(monkeypatch, SphereField(), SphereTracer())
    monkeypatch.setattr(export_module, "read_run_checkpoint", lambda w: {"step": 7, "run_id": "a1"})
    meshing = export_module.extract_mesh

    def trained_on(*args, **kwargs):
        save_checkpoint(workspace, {"step": 9, "run_id": "a1"}, keep=1)
        return meshing(*args, **kwargs)

    monkeypatch.setattr(export_module, "extract_mesh", trained_on)
    export_workspace(workspace, small_options(video=False, formats=("ply",)))
    assert json.loads((workspace / "mesh" / "mesh.json").read_text())["step"] == 7


def _exported_meanwhile(monkeypatch, workspace: Path, step: int) -> None:
    """While the export meshes, an export of ``step`` of the same run lands in the folder (the
    run's own at the end of its training, or one from another shell)."""
    meshing = export_module.extract_mesh

    def landed(*args, **kwargs):
        write_all_atomically({workspace / "mesh" / "mesh.json": b'{"step": %d}' % step})
        return meshing(*args, **kwargs)

    monkeypatch.setattr(export_module, "extract_mesh", landed)


def test_an_export_does_not_swap_its_step_over_a_newer_one_that_landed_meanwhile(
    tmp_path, monkeypatch
):
    """`dreamtext export RUN` (step 20) while `text --resume --iters 30` trained on and exported
    step 30 at its end: the export, finishing 2 s later, swapped step 20's mesh/ and video/ over
    the run's own; the run ended "finished" at step 30 with a mesh of step 20."""
    workspace = make_run(tmp_path, "run", 1_000_000, run_id="a1")
    stub_run(monkeypatch, SphereField(), SphereTracer())
    monkeypatch.setattr(export_module, "read_run_checkpoint", lambda w: {"step": 7, "run_id": "a1"})
    _exported_meanwhile(monkeypatch, workspace, 9)
    with pytest.raises(DreamtextError, match="run was exported at step 9 while this export of st"):
        export_workspace(workspace, small_options(formats=("ply",)))
    assert json.loads((workspace / "mesh" / "mesh.json").read_text()) == {"step": 9}
    assert not (workspace / "video").exists() and not list(workspace.glob(".export-*"))


@pytest.mark.parametrize("meanwhile", [None, 7], ids=["older-export-kept-as-it-was", "same-step"])
def test_an_export_swaps_in_over_an_older_or_same_step_export(tmp_path, monkeypatch, meanwhile):
    """What the newer-export refusal must not refuse: a re-export of a run rolled back (its
    mesh.json, of a later step, was there before the export began), and two exports of one
    step from two shells."""
    workspace = make_run(tmp_path, "run", 1_000_000, run_id="a1")
    (workspace / "mesh").mkdir()
    (workspace / "mesh" / "mesh.json").write_text('{"step": 30}')
    stub_run(monkeypatch, SphereField(), SphereTracer())
    monkeypatch.setattr(export_module, "read_run_checkpoint", lambda w: {"step": 7, "run_id": "a1"})
    if meanwhile is not None:
        _exported_meanwhile(monkeypatch, workspace, meanwhile)
    export_workspace(workspace, small_options(video=False, formats=("ply",)))
    assert json.loads((workspace / "mesh" / "mesh.json").read_text())["step"] == 7


def test_dreamtext_export_of_a_replaced_run_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    from dreamtext.cli import main

    workspace = make_run(tmp_path, "run", 1_000_000)  # a run from before runs had an id
    stub_run(monkeypatch, SphereField(), SphereTracer())
    replace_run_while_meshing(monkeypatch, workspace, "b2")
    code = main(["export", "--workspace", str(workspace), *SMALL_FLAGS, "--no-video"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err
    assert err.splitlines()[-1] == (
        f"dreamtext: error: {workspace} was replaced by a new run while exporting; export it again"
    )
    assert not (workspace / "mesh").exists()


def test_other_errors_in_export_are_not_taken_for_memory(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(export_module, "bake_texture", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        export_field(SphereField(), tmp_path, small_options(video=False))


# ----------------------------------------------------------------------------------------------
# `dreamtext export` of a run: the run's own export options, flags over them


def test_re_export_of_a_trained_run_makes_the_mesh_its_training_made(trained, tmp_path, capsys):
    from dreamtext.cli import main

    copy = tmp_path / "cube"
    shutil.copytree(trained["cube"], copy, ignore=shutil.ignore_patterns("mesh"))
    assert main(["export", "--workspace", str(copy), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "the run's export options: resolution 96, decimate 8000, texture_size 256" in err
    assert "video False" in err
    original = json.loads((trained["cube"] / "mesh" / "mesh.json").read_text())
    again = json.loads((copy / "mesh" / "mesh.json").read_text())
    # The same mesh, by the same software; the rest of what ran it is each export's own (the
    # training here was a library call: nothing of dreamtext's chose its threads).
    assert {**again, "ran_on": None} == {**original, "ran_on": None}
    assert again["ran_on"]["versions"] == original["ran_on"]["versions"]
    # Named after the prompt the checkpoint's config records, as the training's export was.
    made, remade = (read_glb(run / "mesh" / "mesh.glb")[0] for run in (trained["cube"], copy))
    assert remade["asset"] == made["asset"]
    # The GLB's extras hold each export's own ran_on (mesh.json's, nulls dropped), the rest alike.
    for glb, record in ((made, original), (remade, again)):
        assert glb["nodes"][0]["extras"].pop("ran_on") == without_nulls(record["ran_on"])
    assert remade["nodes"] == made["nodes"]
    assert remade["nodes"][0]["name"] == "a_green_cube"
    assert not (copy / "video").exists()


def test_mesh_json_names_the_checkpoint_step_and_the_options_of_the_export(trained, tmp_path):
    """mesh.json said neither which step's field the mesh is nor with what options it was made:
    after ``--resume --iters N --no-export`` or ``dreamtext export --texture-size 512`` nothing
    told the mesh on disk from another."""
    from dreamtext.cli import main

    made = json.loads((trained["cube"] / "mesh" / "mesh.json").read_text())
    assert made["step"] == TRAINED_STEPS
    recorded = json.loads((trained["cube"] / "config.json").read_text())["export_options"]
    assert made["options"] == {**recorded, "device": "cpu"}  # the device that ran
    copy = tmp_path / "cube"
    shutil.copytree(trained["cube"], copy, ignore=shutil.ignore_patterns("mesh"))
    state = load_checkpoint(copy / "checkpoints" / "last.pt")
    state["step"] = 45
    save_checkpoint(copy, state, keep=1)
    flags = ["--texture-size", "64", "--formats", "ply,glb", "--decimate", "2000"]
    assert main(["export", "--workspace", str(copy), *flags]) == 0
    again = json.loads((copy / "mesh" / "mesh.json").read_text())
    assert again["step"] == 45
    assert again["options"] == {
        **recorded, "texture_size": 64, "formats": ["ply", "glb"], "decimate": 2000,
        "device": "cpu",
    }  # fmt: skip


def recorded_run(root: Path, export_options: dict) -> Path:
    workspace = make_run(root, "run", 1_000_000)
    config = {"prompt": "a ball", "export_options": export_options}
    (workspace / "config.json").write_text(json.dumps(config))
    return workspace


def exported_with(monkeypatch, workspace: Path, *flags: str) -> ExportOptions:
    """The options ``dreamtext export --workspace W FLAGS`` exports with (the export stubbed)."""
    from dreamtext.cli import main

    used = []
    stub_run(monkeypatch, SphereField(), None)

    def fake_export(field, out_dir, options, renderer, step, **kwargs):
        used.append(options)
        return SimpleNamespace(summary=lambda: f"exported {out_dir}", step=step, out_dir=out_dir)

    monkeypatch.setattr(export_module, "export_field", fake_export)
    assert main(["export", "--workspace", str(workspace), *flags]) == 0
    return used[0]


def test_export_takes_the_runs_recorded_options_but_not_its_device(tmp_path, monkeypatch):
    recorded = {
        "resolution": 40, "threshold": 12.5, "decimate": 900, "texture_size": 64,
        "formats": ["ply"], "video": False, "frames": 72, "video_size": 48, "device": "cuda",
    }  # fmt: skip
    workspace = recorded_run(tmp_path, recorded)
    options = exported_with(monkeypatch, workspace)
    here = str(resolve_device("auto"))  # the machine that exports, not the run's
    assert dataclasses.asdict(options) == {**recorded, "formats": ("ply",), "device": here}


def test_export_flags_override_the_recorded_options(tmp_path, monkeypatch):
    recorded = {"resolution": 40, "threshold": 12.5, "formats": ["ply"], "video": False}
    workspace = recorded_run(tmp_path, recorded)
    flags = ["--resolution", "64", "--threshold", "auto", "--formats", "glb,obj", "--video"]
    flags += ["--video-size", "128", "--frames", "90"]
    options = exported_with(monkeypatch, workspace, *flags)
    assert (options.resolution, options.threshold) == (64, None)
    assert (options.formats, options.video) == (("glb", "obj"), True)
    assert (options.video_size, options.frames) == (128, 90)
    assert options.decimate == ExportOptions().decimate
    options = exported_with(monkeypatch, recorded_run(tmp_path / "b", {}), "--no-video")
    here = str(resolve_device("auto"))
    expected = ExportOptions(video=False, device=here)
    assert dataclasses.asdict(options) == dataclasses.asdict(expected)


def test_the_runs_options_line_shows_what_a_flag_replaced(tmp_path, monkeypatch, capsys):
    """`export --video-size 96` of a run recorded at 64 said "the run's export options: ...,
    video_size 64 (flags override them)", naming 64 as if it were used."""
    recorded = {"resolution": 40, "threshold": 12.5, "video_size": 64, "formats": ["ply"]}
    workspace = recorded_run(tmp_path, recorded)
    capsys.readouterr()
    exported_with(monkeypatch, workspace, "--video-size", "96", "--threshold", "auto")
    assert (
        "the run's export options: resolution 40, threshold 12.5 → auto, formats ply, "
        "video_size 64 → 96 (flags override them)"
    ) in capsys.readouterr().err


def test_export_mesh_exports_the_mesh_files_without_the_turntable(tmp_path, monkeypatch):
    """``--mesh`` was "accepted for compatibility" and changed nothing, so a run whose own
    export made a turntable made one again. It is --no-video's option now, nothing else."""
    workspace = recorded_run(tmp_path, {"resolution": 40, "video": True})
    with_mesh = exported_with(monkeypatch, workspace, "--mesh")
    assert with_mesh.video is False
    no_video = exported_with(monkeypatch, workspace, "--no-video")
    assert dataclasses.asdict(with_mesh) == dataclasses.asdict(no_video)


@pytest.mark.parametrize("order", [["--mesh", "--video"], ["--video", "--mesh"]])
def test_export_mesh_with_video_is_refused_in_either_order(tmp_path, capsys, order):
    """`export --mesh --video` made a turntable and `--video --mesh` none, without a word: the
    later flag won. Asking for both is one line, before anything loads or is written."""
    from dreamtext.cli import main

    workspace = recorded_run(tmp_path, {"resolution": 40})
    before = sorted(p.name for p in workspace.rglob("*"))
    assert main(["export", "--workspace", str(workspace), *order]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "dreamtext: error: give --mesh (no turntable) or --video, not both"
    ]
    assert sorted(p.name for p in workspace.rglob("*")) == before


@pytest.mark.parametrize("text", ["{ not json", "[1, 2]", "null"])
def test_a_run_without_a_readable_config_exports_with_the_defaults(
    tmp_path, monkeypatch, capsys, text
):
    """... and says so when the file is there: the run's own settings may have been others.
    JSON of another shape than an object (of export options) was an AttributeError or
    TypeError traceback."""
    workspace = recorded_run(tmp_path, {"resolution": 40})
    (workspace / "config.json").write_text(text)
    defaults = ExportOptions(device=str(resolve_device("auto")))
    assert dataclasses.asdict(exported_with(monkeypatch, workspace)) == dataclasses.asdict(defaults)
    err = capsys.readouterr().err
    assert "config.json is unreadable; exporting with the default export settings" in err
    (workspace / "config.json").unlink()
    assert export_module.recorded_options(workspace) == ExportOptions()
    assert "unreadable" not in capsys.readouterr().err


def test_a_builtin_runs_export_options_that_is_no_mapping_names_what_deleting_it_gives(
    tmp_path, capsys
):
    """The line said that deleting the section exported with the default export settings; a
    builtin:shapes run's is filled from its preset then (a 96³ mesh, not the default 256³)."""
    from dreamtext.cli import main

    workspace = make_run(tmp_path, "run", 1_000_000)
    config = workspace / "config.json"
    saved = {"prompt": "a red cube", "presets": ["builtin-shapes"], "export_options": None}
    config.write_text(json.dumps(saved))
    assert main(["export", "--workspace", str(workspace)]) == 2
    err = capsys.readouterr().err
    assert "delete the section to export with the settings of the run's preset" in err
    del saved["export_options"]
    config.write_text(json.dumps(saved))
    assert export_module.recorded_options(workspace).resolution == 96
    assert ExportOptions().resolution == 256


@pytest.mark.parametrize(
    ("section", "shown"),
    [
        ("5", "5"),
        ('"x"', '"x"'),
        ("[1]", "[1]"),
        ("null", "null"),
        ("0", "0"),
        ("[]", "[]"),
        (f'"{"y" * 50}"', f'"{"y" * 38}…'),
    ],
)
def test_a_recorded_export_options_that_is_no_mapping_is_refused_naming_the_file(
    tmp_path, capsys, section, shown
):
    """`export_options: 5` in a run's config.json exported with the defaults (a 256³ mesh and
    a 1024² texture over a builtin:shapes run's 96³ and 256²), replacing its mesh, under a
    warning that the file was unreadable; a resume or `--config` of the same file, and a bad
    value inside the section, are refused. So is this, before anything is written; `null`, `0`
    and `[]` too, which were taken for an empty section."""
    from dreamtext.cli import main

    workspace = recorded_run(tmp_path, {"resolution": 40})
    config = workspace / "config.json"
    config.write_text(f'{{"prompt": "a ball", "export_options": {section}}}')
    before = sorted(p.name for p in workspace.rglob("*"))
    assert main(["export", "--workspace", str(workspace)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"dreamtext: error: config section 'export_options' in {config} must be a mapping, "
        f"got {shown}: fix it, or delete the section to export with the settings of the run's "
        "preset (the defaults where it had none)"
    ]
    assert sorted(p.name for p in workspace.rglob("*")) == before


@pytest.mark.parametrize(
    ("recorded", "line", "flag"),
    [
        ({"decimate": 2}, "'export_options.decimate' (in {}) must be at least 4", "0"),
        ({"threshold": -3}, "'export_options.threshold' (in {}) must be a positive density", "5.0"),
        ({"formats": ["GLB"]}, "'export_options.formats' (in {}) has unknown formats GLB", "ply"),
    ],
)
def test_a_bad_value_the_run_recorded_is_named_as_its_config_json(
    tmp_path, monkeypatch, capsys, recorded, line, flag
):
    """A run's config.json with export_options.decimate 2 (an older dreamtext's, a hand edit)
    was "--decimate must be at least 4 …" to a user who typed no --decimate. A flag that
    replaces the value exports with the flag's."""
    from dreamtext.cli import main

    workspace = recorded_run(tmp_path, recorded)
    assert main(["export", "--workspace", str(workspace)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    config = workspace / "config.json"
    assert err[-1].startswith(f"dreamtext: error: config field {line.format(config)}"), err
    name = next(iter(recorded))
    options = exported_with(monkeypatch, workspace, f"--{name}", flag)
    assert str(getattr(options, name)).strip("(),'") == flag


@pytest.mark.parametrize("threshold", ["0", "-3", "dense"])
def test_a_bad_threshold_flag_is_one_line_and_exit_2(tmp_path, threshold):
    workspace = recorded_run(tmp_path, {})
    done = subprocess.run(
        ["dreamtext", "export", "--workspace", str(workspace), "--threshold", threshold],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) <= 2  # argparse: usage line + the error
    assert "--threshold" in done.stderr and "Traceback" not in done.stderr
    assert sorted(p.name for p in workspace.iterdir()) == ["checkpoints", "config.json"]


def test_decimate_0_keeps_every_face_as_in_a_config(tmp_path, monkeypatch, capsys):
    """``export_options.decimate: 0`` in a config keeps every face; ``--decimate 0`` was refused
    ("must be positive") though it is the same setting."""
    from dreamtext.cli import main

    workspace = recorded_run(tmp_path, {"resolution": 40, "threshold": 50.0, "texture_size": 64})
    stub_run(monkeypatch, SphereField(), SphereTracer())

    def faces(*flags):
        assert main(["export", "--workspace", str(workspace), "--no-video", *flags]) == 0
        return json.loads((workspace / "mesh" / "mesh.json").read_text())["faces"]

    every, fewer = faces("--decimate", "0"), faces("--decimate", "300")
    assert fewer <= 300 < every
    with pytest.raises(SystemExit) as bad:
        main(["export", "--workspace", str(workspace), "--decimate", "-1"])
    assert bad.value.code == 2
    assert "--decimate: expected a face count (0 keeps every face), got '-1'" in (
        capsys.readouterr().err
    )
    with pytest.raises(DreamtextError, match=r"export_options\.decimate"):
        ExportOptions(decimate=-1).validate("c.yaml")
    # Under a closed mesh's 4 faces: kept every face, blaming "a non-manifold mesh".
    with pytest.raises(SystemExit):
        main(["export", "--workspace", str(workspace), "--decimate", "2"])
    assert "--decimate: a closed mesh has at least 4 faces (0 keeps every face), got '2'" in (
        capsys.readouterr().err
    )
    with pytest.raises(DreamtextError, match=r"export_options\.decimate.* must be at least 4"):
        ExportOptions(decimate=3).validate("c.yaml")


def test_a_decimation_that_stops_above_its_target_says_so_in_one_line(
    tmp_path, monkeypatch, capsys
):
    """``--decimate 3`` gave a trained cube of 32 faces without a word. The decimation's floor
    is the mesh code's (fast-simplification, the manifold repair); here it is stood in for by a
    decimation that stops at 200 faces, so the line is checked whatever that floor is."""
    from dreamtext.cli import main

    workspace = recorded_run(tmp_path, {"resolution": 40, "threshold": 50.0, "texture_size": 64})
    stub_run(monkeypatch, SphereField(), SphereTracer())
    real_decimate = export_module.decimate
    monkeypatch.setattr(export_module, "decimate", lambda mesh, target: real_decimate(mesh, 200))
    flags = ["--no-video", "--formats", "ply"]
    assert main(["export", "--workspace", str(workspace), *flags, "--decimate", "10"]) == 0
    faces = json.loads((workspace / "mesh" / "mesh.json").read_text())["faces"]
    assert faces == 200
    notes = [line for line in capsys.readouterr().err.splitlines() if "decimated" in line]
    assert notes == [
        "dreamtext: decimated to 200 faces, above decimate's target of 10: on this surface the "
        "decimation, which keeps it closed and manifold, stops there"
    ]
    # A target reached: no note.
    assert main(["export", "--workspace", str(workspace), *flags, "--decimate", "300"]) == 0
    assert "above decimate's target" not in capsys.readouterr().err
    # Every face kept (a decimation that failed says why itself): no second line.
    monkeypatch.setattr(export_module, "decimate", lambda mesh, target: mesh)
    assert main(["export", "--workspace", str(workspace), *flags, "--decimate", "10"]) == 0
    assert "decimate" not in capsys.readouterr().err


def test_an_export_not_decimated_does_not_say_decimated(tmp_path, monkeypatch, capsys):
    """``--decimate 0`` and a target over the face count logged "decimated to N faces" for the
    N faces marching cubes made."""
    from dreamtext.cli import main

    workspace = recorded_run(tmp_path, {"resolution": 40, "threshold": 50.0, "texture_size": 64})
    stub_run(monkeypatch, SphereField(), SphereTracer())
    flags = ["--workspace", str(workspace), "--no-video", "--formats", "ply", "--decimate"]
    assert main(["export", *flags, "0"]) == 0
    faces = json.loads((workspace / "mesh" / "mesh.json").read_text())["faces"]
    lines = capsys.readouterr().err.splitlines()
    assert f"dreamtext: marching cubes: {faces} faces" in lines
    assert f"dreamtext: decimation off (decimate 0): all {faces} faces kept" in lines
    assert main(["export", *flags, str(faces)]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert f"dreamtext: {faces} faces, within decimate's target of {faces}: not decimated" in lines
    assert not any("decimated to" in line for line in lines)
    assert main(["export", *flags, str(faces // 2)]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert any(line.startswith("dreamtext: decimated to ") for line in lines)


def test_an_export_says_what_runs_before_marching_cubes_and_the_uv_unwrap(
    tmp_path, monkeypatch, capsys
):
    """Marching cubes (after the density grid's bar) and xatlas's UV unwrap (one call, 10.6 s of
    CPU for 50,000 faces) showed nothing while they ran: their lines came only after each ended.
    A line now comes before each (on stderr before the work starts), one each where stderr is a
    file."""
    from dreamtext import mesh as mesh_module
    from dreamtext.cli import main

    def marked(name, work):
        def run(*args, **kwargs):
            sys.stderr.write(f"<{name} runs>\n")
            return work(*args, **kwargs)

        return run

    monkeypatch.setattr(mesh_module, "solid_surface", marked("mcubes", mesh_module.solid_surface))
    monkeypatch.setattr(export_module, "unwrap_uv", marked("xatlas", export_module.unwrap_uv))
    workspace = recorded_run(tmp_path, {"resolution": 40, "threshold": 50.0, "texture_size": 64})
    stub_run(monkeypatch, SphereField(), SphereTracer())
    flags = ["--workspace", str(workspace), "--no-video", "--formats", "glb", "--decimate", "0"]
    assert main(["export", *flags]) == 0
    lines = capsys.readouterr().err.splitlines()
    faces = json.loads((workspace / "mesh" / "mesh.json").read_text())["faces"]
    start = lines.index("dreamtext: marching cubes on the 40^3 grid")
    assert lines[start - 1].startswith("density grid: 100%|")
    assert lines[start + 1] == "<mcubes runs>"
    assert lines[start + 2] == f"dreamtext: marching cubes: {faces} faces"
    unwrap = lines.index(f"dreamtext: UV unwrapping {faces} faces with xatlas")
    assert lines[unwrap + 1] == "<xatlas runs>"
    assert lines[unwrap + 2].startswith("dreamtext: UV atlas: ")
    assert sum("marching cubes on" in line for line in lines) == 1
    assert sum("UV unwrapping" in line for line in lines) == 1


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--formats", "xyz"], "--formats: has unknown formats xyz: use a subset of glb,obj,ply"),
        (["--resolution", "4"], "--resolution"),
        # Both were taken as glb,obj without a word: a format lost in editing went unnoticed.
        (["--formats", "glb,,obj"], "--formats: has an empty entry in 'glb,,obj'"),
        (["--formats", "glb,"], "--formats: has an empty entry in 'glb,'"),
    ],
)
def test_a_bad_export_flag_is_the_only_line_on_stderr(tmp_path, capsys, flags, fragment):
    from dreamtext.cli import main

    workspace = recorded_run(tmp_path, {"resolution": 40})
    try:
        code = main(["export", "--workspace", str(workspace), *flags])
    except SystemExit as parser_exit:  # refused by the parser, before the export's imports
        code = parser_exit.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], err


@pytest.mark.parametrize("formats", ["stl", "glb,STL", ",,"])
def test_every_bad_formats_list_is_refused_by_the_parser_in_its_one_form(capsys, formats):
    """``--formats stl`` was ``dreamtext: error: unknown --formats stl …``, said after the
    export's imports, where ``--formats ,,`` was the parser's ``argument --formats:`` line."""
    from dreamtext.cli import main

    with pytest.raises(SystemExit) as refused:
        main(["export", "--workspace", "no-such-run", "--formats", formats])
    assert refused.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("dreamtext export: argument --formats: has "), line
    assert line.endswith("(see dreamtext export --help)"), line


class UntouchableField(SphereField):
    def density(self, x):
        pytest.fail("the field was sampled")


def test_an_export_bigger_than_the_memory_is_refused_before_the_work(tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "available_memory", lambda: 8 * 10**9, raising=False)
    options = small_options(resolution=1024)  # 1024^3 cells: about 34 GB
    with pytest.raises(DreamtextError, match=r"needs about 34\.4 GB .* 8\.0 GB is available"):
        export_field(UntouchableField(), tmp_path, options, SphereTracer())
    with pytest.raises(DreamtextError, match="--texture-size"):  # 16384^2 texels: 46 GB
        export_field(UntouchableField(), tmp_path, small_options(texture_size=16384))
    assert list(tmp_path.iterdir()) == []


def test_a_turntable_bigger_than_the_memory_is_refused_before_the_work(tmp_path, monkeypatch):
    """`--video-size 100000` was let through: the export meshed and baked for minutes, then ran
    out of memory at the turntable and named --resolution and --texture-size as the fixes."""
    monkeypatch.setattr(export_module, "available_memory", lambda: 8 * 10**9)
    options = small_options(video_size=100_000)  # 60 frames × 10^10 pixels × 32 B
    with pytest.raises(DreamtextError) as raised:
        export_field(UntouchableField(), tmp_path, options, SphereTracer())
    assert str(raised.value) == (
        "a turntable of 60 frames at 100000 px needs about 19,200 GB of memory and 8.0 GB "
        "is available: lower --video-size (half of it needs a quarter of the memory) or "
        "--frames, or pass --no-video"
    )
    with pytest.raises(DreamtextError, match="--frames"):  # 10^8 frames at 256 px: 210,000 GB
        export_module.check_memory(small_options(frames=10**8, video_size=256))
    with pytest.raises(DreamtextError, match=r"lower export_options\.video_size or frames in a"):
        export_module.check_memory(options, after_training=True)
    export_module.check_memory(small_options(video_size=100_000, video=False))  # no turntable
    assert list(tmp_path.iterdir()) == []


def test_the_turntable_keeps_its_frames_in_bytes_not_floats():
    """The turntable kept float32 RGB, depth panel and their concatenation of every frame until
    the last was rendered: 137 bytes a pixel, 2.2 GB for 60 frames at 512 px. Now the RGB is
    kept as bytes, depth and opacity as float32, and the frames are made a chunk at a time:
    what numpy holds at once stays under BYTES_PER_TURNTABLE_PIXEL a pixel."""
    import tracemalloc

    frames, size = 60, 64
    tracemalloc.start()
    try:
        images = render_turntable(SphereField(), frames, size, SphereTracer())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(images) == frames and images[0].shape == (size, 2 * size, 3)
    assert images[0].dtype == np.uint8
    assert peak < export_module.BYTES_PER_TURNTABLE_PIXEL * frames * size**2


def test_a_hopeless_export_size_is_written_in_whole_gigabytes(monkeypatch):
    """`--resolution 100000` was refused as needing "about 32000000.0 GB"."""
    monkeypatch.setattr(export_module, "available_memory", lambda: 8 * 10**9)
    with pytest.raises(DreamtextError, match=r"needs about 32,000,000 GB of memory and 8\.0 GB"):
        export_module.check_memory(ExportOptions(resolution=100_000))


def test_the_default_export_fits_in_a_small_machine(monkeypatch):
    monkeypatch.setattr(export_module, "available_memory", lambda: 2 * 10**9)
    export_module.check_memory(ExportOptions())  # 256^3 grid, 1024 px texture: 0.6 GB
    # A texture only costs memory when a format carries one.
    export_module.check_memory(ExportOptions(texture_size=8192, formats=("ply",)))
    monkeypatch.setattr(export_module, "available_memory", lambda: None)  # unknown: no check
    export_module.check_memory(ExportOptions(resolution=4096))


def test_dreamtext_export_too_big_for_the_memory_is_one_line_and_exit_2(
    tmp_path, monkeypatch, capsys
):
    from dreamtext.cli import main

    workspace = recorded_run(tmp_path, {})
    monkeypatch.setattr(export_module, "available_memory", lambda: 8 * 10**9, raising=False)
    monkeypatch.setattr(
        export_module, "read_run_checkpoint", lambda *a: pytest.fail("the run was loaded")
    )
    assert main(["export", "--workspace", str(workspace), "--resolution", "1024"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--resolution 1024" in err[0] and "lower --resolution" in err[0]
    assert sorted(p.name for p in workspace.iterdir()) == ["checkpoints", "config.json"]


def test_sigterm_while_dreamtext_export_writes_is_exit_130_and_leaves_no_temp_file(
    tmp_path, monkeypatch, capsys
):
    import signal

    from dreamtext.cli import main

    options = {**SMALL, "video_size": 32}
    workspace = recorded_run(tmp_path, options)
    stub_run(monkeypatch, SphereField(), SphereTracer())

    def terminated_while_encoding(images, path):
        path.write_bytes(b"half a video")
        signal.raise_signal(signal.SIGTERM)  # a batch scheduler's stop, or `kill`

    monkeypatch.setattr(export_module, "_write_mp4", terminated_while_encoding)
    assert main(["export", "--workspace", str(workspace)]) == 130
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == "dreamtext export: interrupted; run the same command again"
    assert sorted(p.name for p in workspace.iterdir()) == ["checkpoints", "config.json"]


def test_a_re_export_removes_the_formats_of_the_export_before(tmp_path):
    """mesh.json describes this export's mesh: another resolution's PLY must not stay beside it."""
    export_field(SphereField(), tmp_path, small_options(video=False, formats=("ply", "obj")))
    export_field(SphereField(), tmp_path, small_options(video=False, formats=("glb",)))
    assert sorted(p.name for p in (tmp_path / "mesh").iterdir()) == ["mesh.glb", "mesh.json"]


def test_exporting_a_run_in_a_folder_it_cannot_write_is_one_line_before_the_work(
    tmp_path, monkeypatch, capsys
):
    from dreamtext.cli import main

    workspace = recorded_run(tmp_path, {})
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda path, mode: Path(path) != workspace and real_access(path, mode)
    )
    monkeypatch.setattr(
        export_module, "read_run_checkpoint", lambda *a: pytest.fail("the run was loaded")
    )
    assert main(["export", "--workspace", str(workspace)]) == 2
    assert capsys.readouterr().err == (
        f"dreamtext: error: cannot write in {workspace} (permission denied); copy the run to a "
        "folder you can write and export it there\n"
    )


class Killed(BaseException):
    """A SIGKILL, simulated: nothing after it runs, no handler cleans up."""


def kill_at_rename(monkeypatch, n: int) -> None:
    """Make the ``n``-th rename of a file or folder from now, or removal of a folder
    (``os.rename``, ``os.replace``, ``shutil.rmtree``, counted together), kill the process
    instead. The renames of the export's progress record (for the viewer) are not counted."""
    from dreamtext.exportprogress import PROGRESS_FILE

    count = [0]
    for module, name in ((os, "rename"), (os, "replace"), (shutil, "rmtree")):
        real = getattr(module, name)

        def renamed(*args, _real=real, **kwargs):
            if len(args) > 1 and os.path.basename(args[1]) == PROGRESS_FILE:
                return _real(*args, **kwargs)
            count[0] += 1
            if count[0] == n:
                raise Killed
            return _real(*args, **kwargs)

        monkeypatch.setattr(module, name, renamed)


def mesh_set(workspace: Path) -> tuple[int, list[str]] | None:
    """(mesh.json's resolution, the files of mesh/) after checking that mesh/ holds what its
    mesh.json describes: the files of its formats, each of its face count; ``None`` without
    mesh/."""
    folder = workspace / "mesh"
    if not folder.exists():
        return None
    report = json.loads((folder / "mesh.json").read_text())
    per_format = {"glb": ["mesh.glb"], "obj": ["albedo.png", "mesh.mtl", "mesh.obj"]}
    per_format["ply"] = ["mesh.ply"]
    files = sorted(["mesh.json"] + [n for f in report["options"]["formats"] for n in per_format[f]])
    assert sorted(p.name for p in folder.iterdir()) == files
    if "ply" in report["options"]["formats"]:
        assert len(trimesh.load(folder / "mesh.ply", process=False).faces) == report["faces"]
    if "glb" in report["options"]["formats"]:
        glb = trimesh.load(folder / "mesh.glb", process=False)
        assert sum(len(g.faces) for g in glb.geometry.values()) == report["faces"]
    return report["resolution"], files


def test_a_kill_at_any_rename_of_a_re_export_leaves_the_old_set_or_the_new_one(
    tmp_path, monkeypatch
):
    """SIGKILL (the OOM killer, a scheduler) while a re-export renamed its files into mesh/ one
    at a time left the new GLB and PLY beside the old OBJ and a mesh.json of the old mesh. Now
    mesh/ holds the old export's files or the new one's (or, between the two renames of the
    swap, is absent for a moment), and the next export finishes what the kill cut short."""
    old_export = tmp_path / "old"  # every face kept: the two meshes differ in their counts
    export_field(SphereField(), old_export, small_options(video=False, resolution=32, decimate=0))
    new_options = small_options(video=False, resolution=40, decimate=0, formats=("glb", "ply"))
    seen = []
    for n in range(1, 10):
        workspace = tmp_path / f"kill{n}"
        shutil.copytree(old_export, workspace)
        with monkeypatch.context() as patch:
            kill_at_rename(patch, n)
            try:
                export_field(SphereField(), workspace, new_options)
            except Killed:
                pass
            else:
                break  # the export renamed fewer than n times
        state = mesh_set(workspace)
        assert state is None or state[0] in (32, 40), state
        seen.append((workspace, None if state is None else state[0]))
    states = [state for _, state in seen]
    assert states[0] == 32 and None in states and states[-1] == 40  # before, within, after
    recovered = []
    for workspace, _ in seen:
        export_module.finish_replacements(workspace, export_module.REPLACED_OUTPUTS)
        recovered.append(mesh_set(workspace)[0])
        assert not [p.name for p in workspace.iterdir() if p.name.startswith(".")]
    # The first rename makes the staged files the ones to swap in: a kill before it keeps the
    # old export, one after it ends, at the next export, in the new one.
    assert recovered == [32] + [40] * (len(seen) - 1)


def test_the_next_export_finishes_the_swap_a_kill_cut_short(tmp_path, monkeypatch):
    export_field(SphereField(), tmp_path, small_options(video=False, resolution=32))
    with monkeypatch.context() as patch:
        kill_at_rename(patch, 3)  # staging folder committed, mesh/ moved aside, new one in
        with pytest.raises(Killed):
            export_field(SphereField(), tmp_path, small_options(video=False, resolution=40))
    assert mesh_set(tmp_path) is None
    stub_run(monkeypatch, SphereField(), SphereTracer())
    (tmp_path / "checkpoints").mkdir()
    torch.save({"step": 0}, tmp_path / "checkpoints" / "last.pt")
    export_workspace(tmp_path, small_options(video=False, resolution=36, formats=("ply",)))
    assert mesh_set(tmp_path)[0] == 36
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints", "mesh"]


def test_a_re_export_replaces_mesh_and_video_and_keeps_a_users_own_files(tmp_path):
    export_field(SphereField(), tmp_path, small_options(), renderer=SphereTracer())
    (tmp_path / "mesh" / "notes.txt").write_text("mine")
    (tmp_path / "mesh" / ".notes").write_text("mine too")  # hidden, and a user's
    (tmp_path / "mesh" / ".nfs000000001").write_text("NFS: a removed file a reader holds")
    # Named as the export's files are, but not one of them: a mesh editor's "save as"
    # (mesh.stl), a backup, a conversion of the turntable. A glob (mesh.*) deleted them.
    for name in ("mesh.stl", "mesh.blend", "mesh.glb.orig"):
        (tmp_path / "mesh" / name).write_text("mine")
    (tmp_path / "video" / "turntable.webm").write_text("mine")
    (tmp_path / "video" / "shots").mkdir()
    (tmp_path / "mesh").chmod(0o775)
    export_field(SphereField(), tmp_path, small_options(formats=("ply",)), renderer=SphereTracer())
    assert sorted(p.name for p in (tmp_path / "mesh").iterdir()) == [
        ".notes",
        "mesh.blend",
        "mesh.glb.orig",
        "mesh.json",
        "mesh.ply",
        "mesh.stl",
        "notes.txt",
    ]
    assert (tmp_path / "mesh" / ".notes").read_text() == "mine too"
    assert (tmp_path / "mesh" / "notes.txt").read_text() == "mine"
    assert (tmp_path / "mesh" / "mesh.stl").read_text() == "mine"
    assert sorted(p.name for p in (tmp_path / "video").iterdir()) == [
        "shots",
        "turntable.gif",
        "turntable.mp4",
        "turntable.webm",
    ]
    assert (tmp_path / "mesh").stat().st_mode & 0o777 == 0o775
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mesh", "video"]


@pytest.fixture
def owner_permissions(monkeypatch, tmp_path):
    """Folder permissions as the kernel applies them to a folder's owner, for the renames and
    the ``os.access`` checks of an export, where this process would bypass them (root): a folder
    without its owner's write bit takes no entry in and gives none up, and one moved to another
    folder needs that bit too (its ``..`` changes). Elsewhere the kernel's own apply."""
    probe = tmp_path / "probe"
    probe.mkdir(mode=0o555)
    try:
        (probe / "entry").mkdir()
    except PermissionError:
        return
    finally:
        shutil.rmtree(probe)

    def writable(path) -> bool:
        return bool(os.stat(path).st_mode & stat.S_IWUSR)

    real_access = os.access

    def access(path, mode, **kwargs):
        if mode & os.W_OK and os.path.isdir(path) and not writable(path):
            return False
        return real_access(path, mode, **kwargs)

    def refusing(real):
        def rename(src, dst, **kwargs):
            src_parent, dst_parent = (os.path.dirname(os.path.abspath(p)) for p in (src, dst))
            moved = os.path.isdir(src) and not os.path.samefile(src_parent, dst_parent)
            if not (writable(src_parent) and writable(dst_parent)) or (moved and not writable(src)):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), src, None, dst)
            return real(src, dst, **kwargs)

        return rename

    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(os, "rename", refusing(os.rename))
    monkeypatch.setattr(os, "replace", refusing(os.replace))


# A mesh-only export that takes a second.
SMALL_FLAGS = ["--formats", "ply", "--resolution", "32", "--decimate", "2000"]


@pytest.mark.parametrize(
    ("when", "line"),
    [
        (
            "before",
            "cannot write in {video} (permission denied); a --no-video export removes a "
            "turntable of another step from it: make it writable, or copy the run to a folder "
            "you can write and export it there",
        ),
        (
            "while meshing",
            "Permission denied ({video}); copy the run to a disk with room (or one you can "
            "write) and export it there",
        ),
    ],
)
def test_a_no_video_export_that_cannot_empty_video_is_one_line_and_leaves_the_run_as_it_was(
    tmp_path, monkeypatch, capsys, owner_permissions, when, line
):
    """A --no-video export of step 20 removes the turntable of step 10 from video/ (a user's
    files stay): in a video/ it cannot write, the swap moved video/ aside and stopped with a
    traceback, leaving it in .export-old-video and the export's files in .export-ready-*. It is
    refused instead, before the work or (video/ made read-only meanwhile) at the swap, with one
    line, and video/, mesh/ and the run are as they were."""
    from dreamtext.cli import main

    workspace = make_run(tmp_path, "run", 1_000_000, run_id="a1")
    export_field(SphereField(), workspace, small_options(formats=("ply",)), SphereTracer(), 10)
    video = workspace / "video"
    (video / "notes.txt").write_text("mine")
    stub_run(monkeypatch, SphereField(), None)
    state = {"step": 20, "run_id": "a1"}
    monkeypatch.setattr(export_module, "read_run_checkpoint", lambda workspace: state)
    before = files_under(workspace)
    meshing = export_module.extract_mesh

    def read_only_meanwhile(*args, **kwargs):
        video.chmod(0o555)
        return meshing(*args, **kwargs)

    if when == "before":
        video.chmod(0o555)
    else:
        monkeypatch.setattr(export_module, "extract_mesh", read_only_meanwhile)
    try:
        code = main(["export", "--workspace", str(workspace), "--no-video", *SMALL_FLAGS])
    finally:
        if video.exists():
            video.chmod(0o755)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.splitlines()[-1] == "dreamtext: error: " + line.format(video=video)
    assert files_under(workspace) == before


@pytest.fixture
def owner_removals(monkeypatch, owner_permissions, tmp_path):
    """``owner_permissions``, and removals as the kernel refuses them to a folder's owner: an
    entry of a folder without its owner's write bit cannot be removed (``shutil.rmtree`` of it
    leaves it, quietly with ``ignore_errors``)."""
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "entry").mkdir()
    probe.chmod(0o555)
    try:
        (probe / "entry").rmdir()
    except PermissionError:
        return
    finally:
        probe.chmod(0o755)
        shutil.rmtree(probe)

    def refusing(real):
        def remove(path, *, dir_fd=None):
            parent = os.fstat(dir_fd) if dir_fd is not None else os.stat(os.path.dirname(path))
            if not parent.st_mode & stat.S_IWUSR:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
            return real(path, dir_fd=dir_fd)

        return remove

    monkeypatch.setattr(os, "unlink", refusing(os.unlink))
    monkeypatch.setattr(os, "rmdir", refusing(os.rmdir))


def test_an_export_refused_at_a_read_only_mesh_folder_leaves_no_staged_copy(
    tmp_path, owner_removals
):
    """A mesh/ the user may not write (made read-only, or another user's) refused the swap with
    one line, but the staging folder, whose mesh/ had taken that folder's read-only mode, could
    not be emptied: a hidden .export-partial-* copy of every exported file stayed in the run,
    and the next export could not remove it either."""
    mesh = tmp_path / "mesh"
    mesh.mkdir()
    (mesh / "mesh.ply").write_bytes(b"old")
    mesh.chmod(0o555)
    try:
        with pytest.raises(PermissionError):
            write_all_atomically({mesh / "mesh.ply": b"new", mesh / "mesh.json": b"{}"})
    finally:
        mesh.chmod(0o755)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mesh"]
    assert (mesh / "mesh.ply").read_bytes() == b"old"


def test_a_staging_folder_of_a_live_export_is_left_and_a_killed_ones_removed(tmp_path):
    """Two exports of one run may overlap (`dreamtext export` while its training exports): one
    must not remove the files the other is still writing."""
    from dreamtext.processes import this_process

    live, dead = tmp_path / ".export-partial-live0001", tmp_path / ".export-partial-dead0001"
    for folder, record in ((live, this_process()), (dead, {**this_process(), "pid": 2**22 + 7})):
        (folder / "mesh").mkdir(parents=True)
        (folder / export_module.RECORD_FILE).write_text(json.dumps(record))
    export_field(SphereField(), tmp_path, small_options(video=False, formats=("ply",)))
    assert live.is_dir() and not dead.exists()


# An export on another machine: it stages one file and waits there, until it is killed.
EXPORT_ELSEWHERE = """
import sys, time
from pathlib import Path
from dreamtext import processes
processes.HOST = "another-machine"
from dreamtext.export import write_all_atomically

def wait(path):
    path.write_bytes(b"half")
    print("staged", flush=True)
    time.sleep(600)

write_all_atomically({Path(sys.argv[1]) / "mesh" / "mesh.json": wait})
"""


def test_a_staging_folder_of_another_machines_export_is_removed_once_it_was_killed(tmp_path):
    """A staging folder left by an export killed on another machine of a shared file system
    was never removed: its process cannot be checked from here. The lock its writer holds on
    its record while it writes (dropped when the writer ends, however it ends) tells, and the
    record's age: where locks are local to each machine, a live writer's looks free."""
    writer = subprocess.Popen(
        [sys.executable, "-c", EXPORT_ELSEWHERE, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
    )
    try:
        assert writer.stdout.readline() == "staged\n"
        (staging,) = tmp_path.glob(".export-partial-*")
        record = json.loads((staging / export_module.RECORD_FILE).read_text())
        assert record["host"] == "another-machine" and record["locked"] is True
        export_module.finish_replacements(tmp_path)  # while it writes: left alone
        assert (staging / "mesh" / "mesh.json").read_bytes() == b"half"
    finally:
        writer.kill()
        writer.wait()
        writer.stdout.close()
    export_module.finish_replacements(tmp_path)  # killed a moment ago: its lock could be local
    assert staging.is_dir()
    an_hour_ago = time.time() - export_module.ELSEWHERE_GRACE_S - 1
    os.utime(staging / export_module.RECORD_FILE, (an_hour_ago, an_hour_ago))
    export_field(SphereField(), tmp_path, small_options(video=False, formats=("ply",)))
    assert not staging.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mesh"]


def test_a_staging_folder_of_this_machine_whose_lock_is_free_is_removed(tmp_path):
    """Its writer held the lock from before its record said so until it committed the folder:
    a free lock is a writer gone, even where the pid it names runs (another process by now, or
    a writer in another pid namespace under the same host name)."""
    from dreamtext.processes import this_process, write_held_record

    staging = tmp_path / ".export-partial-here0001"
    (staging / "mesh").mkdir(parents=True)
    write_held_record(staging / export_module.RECORD_FILE, this_process()).close()
    export_module.finish_replacements(tmp_path)
    assert not staging.exists()


def test_a_staging_folder_of_another_machine_without_a_lock_is_left_alone(tmp_path):
    """Where its writer took no lock (a file system without locks, or a dreamtext from before
    the lock), nothing here can tell whether it still writes."""
    staging = tmp_path / ".export-partial-other001"
    (staging / "mesh").mkdir(parents=True)
    record = {"host": "another-machine", "pid": 12, "pid_start": 3, "folders": ["mesh"]}
    (staging / export_module.RECORD_FILE).write_text(json.dumps(record))
    export_field(SphereField(), tmp_path, small_options(video=False, formats=("ply",)))
    assert (staging / "mesh").is_dir()


@pytest.mark.skipif(
    not os.path.exists("/proc/sys/kernel/random/boot_id"), reason="no boot_id: not Linux"
)
def test_a_staging_folder_a_reboot_of_this_machine_left_without_a_lock_is_removed_in_time(
    tmp_path, monkeypatch
):
    """An export killed by a reboot of this machine, on a file system without locks, left its
    staging folder (a hidden copy of every file it had written) for good: its record's boot_id
    is not this boot's, so it was taken for a twin machine's, which nothing here can check. The
    record now says when it was written (``updated``, as status.json does); one written before
    this boot is an earlier boot's once it is ELSEWHERE_GRACE_S old (as long as a twin's
    export may still be writing one), and removed. A twin's, written since, is left."""
    import uuid
    from datetime import datetime, timezone

    from dreamtext import processes
    from dreamtext.processes import iso_timestamp, this_process

    records = []

    def staged(path):
        records.append(json.loads((path.parent.parent / export_module.RECORD_FILE).read_text()))
        path.write_bytes(b"{}")

    export_module.write_all_atomically({tmp_path / "mesh" / "mesh.json": staged})
    assert abs(iso_timestamp(records[0]["updated"]) - time.time()) < 60

    monkeypatch.setattr(processes, "BOOT_TIME", time.time() - 600)  # rebooted 10 min ago
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()

    def left(name, seconds_ago):
        staging = tmp_path / f".export-partial-{name}"
        (staging / "mesh").mkdir(parents=True)
        written = datetime.fromtimestamp(time.time() - seconds_ago, timezone.utc).isoformat()
        record = {**this_process(), "pid": dead.pid, "boot_id": str(uuid.uuid4())}
        record |= {"folders": ["mesh"], "updated": written}
        (staging / export_module.RECORD_FILE).write_text(json.dumps(record))
        return staging

    rebooted = left("reboot01", 2 * export_module.ELSEWHERE_GRACE_S)
    within = left("within01", 1200)  # before this boot, but a twin's export may still write it
    twin = left("twin0001", 60)  # since this boot: a twin machine's
    export_module.finish_replacements(tmp_path)
    assert not rebooted.exists()
    assert within.is_dir() and twin.is_dir()


@pytest.mark.parametrize("file_system", ["ext4", "nfs4"])
def test_a_locked_staging_folder_a_reboot_left_on_a_local_disk_is_removed_at_once(
    tmp_path, monkeypatch, file_system
):
    """An export killed by a reboot of this machine left its staging folder, whose record's lock
    the reboot dropped; its record's boot_id is not this boot's, so it was kept for an hour
    (ELSEWHERE_GRACE_S), as a twin machine's (this one's name) live export looks where locks do
    not reach across machines (NFS mounted local_lock=flock). On a local disk every writer is of
    this kernel, whose locks this one sees: a free lock is a writer gone, removed at once. On a
    shared file system it is left for the hour, as before."""
    import uuid

    from dreamtext import processes
    from dreamtext.processes import now_iso, this_process, write_held_record

    monkeypatch.setattr(processes, "file_system_type", lambda path: file_system, raising=False)
    staging = tmp_path / ".export-partial-reboot02"
    (staging / "mesh").mkdir(parents=True)
    record = {**this_process(), "boot_id": str(uuid.uuid4()), "updated": now_iso()}
    write_held_record(staging / export_module.RECORD_FILE, record).close()  # the reboot
    export_module.finish_replacements(tmp_path)
    assert staging.exists() is (file_system == "nfs4")


def test_a_mesh_folder_that_is_a_link_stays_a_link(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "mesh.obj").write_text("an older export's")
    workspace = tmp_path / "run"
    workspace.mkdir()
    (workspace / "mesh").symlink_to(elsewhere)
    export_field(SphereField(), workspace, small_options(video=False, formats=("ply",)))
    assert (workspace / "mesh").is_symlink()
    assert sorted(p.name for p in elsewhere.iterdir()) == ["mesh.json", "mesh.ply"]
    assert sorted(p.name for p in workspace.iterdir()) == ["mesh"]


def test_an_older_builtin_run_exports_with_its_presets_settings_it_did_not_record(tmp_path):
    """A builtin:shapes run whose checkpoint and config.json predate ``field.density_activation``
    and ``export_options`` was rebuilt with the defaults (softplus density, a 256³ mesh), not its
    preset's (exp, 96³) that it trained and exported with: ``export`` made another mesh (a 30-step
    red cube: volume 0.10 and 50,000 faces instead of 0.47 and 8,000)."""
    from test_trainer import tiny_config

    from dreamtext.checkpoint import load_run

    cfg = tiny_config(tmp_path, "builtin:shapes", iters=1, preview_every=0)
    workspace = train(cfg)
    path = workspace / "checkpoints" / "last.pt"
    state = load_checkpoint(path)
    saved = json.loads((workspace / "config.json").read_text())
    for config in (state["config"], saved):
        config.pop("presets", None)
        config.pop("export_options", None)
        del config["field"]["density_activation"], config["render"]["recompute_field"]
    del state["field_config"]["density_activation"]
    torch.save(state, path)
    (workspace / "config.json").write_text(json.dumps(saved))
    field, renderer, config = load_run(workspace)
    assert field.cfg.density_activation == "exp"
    assert config["render"]["recompute_field"] is renderer.cfg.recompute_field is False
    assert export_module.recorded_options(workspace).resolution == 96


# ------------------------------------------------------------------ the progress of an export


def watch_progress(monkeypatch, workspace: Path, tracer) -> list[dict | None]:
    """The progress record of ``workspace`` (``None``: no file) as each stage of its export
    starts (decimation, UV unwrapping, texture baking, vertex colours) and at each turntable
    chunk; every record written (not one a second)."""
    import dreamtext.exportprogress as progress_module

    monkeypatch.setattr(progress_module, "WRITE_EVERY_S", 0.0)
    seen: list[dict | None] = []
    for stage in ("decimate", "unwrap_uv", "bake_texture", "query_surface_albedo"):
        original = getattr(export_module, stage)

        def noting(*args, _original=original, **kwargs):
            seen.append(progress_module.read_progress(workspace))
            return _original(*args, **kwargs)

        monkeypatch.setattr(export_module, stage, noting)
    render = tracer.render

    def rendering(*args, **kwargs):
        seen.append(progress_module.read_progress(workspace))
        return render(*args, **kwargs)

    tracer.render = rendering
    return seen


def test_an_export_records_its_stage_beside_the_run_and_removes_the_record_at_its_end(
    tmp_path, monkeypatch
):
    """`dreamtext export` of a finished run left status.json `finished` (as it must) and said
    nowhere that it worked: the viewer showed a finished run for minutes of meshing and
    turntable. Its stage is in W/.export-progress.json while it works, and gone after."""
    from dreamtext.cli import main
    from dreamtext.processes import HOST

    workspace = make_run(tmp_path, "run", 1_000_000)
    status = b'{\n  "state": "finished",\n  "step": 7\n}\n'
    (workspace / "status.json").write_bytes(status)
    tracer = SphereTracer()
    stub_run(monkeypatch, SphereField(), tracer)
    seen = watch_progress(monkeypatch, workspace, tracer)
    code = main(["export", "--workspace", str(workspace), "--resolution", "40"])
    assert code == 0
    stages = [(r["stage"], r["done"], r["total"]) for r in seen]
    chunks = 15  # 60 frames, 4 a chunk
    assert stages == [
        ("decimating", None, None),
        ("UV unwrapping", None, None),
        ("texture baking", None, None),
        ("vertex colours", None, None),
        *[("turntable", k, chunks) for k in range(chunks)],
    ]
    record = seen[-1]
    assert (record["host"], record["pid"], record["step"]) == (HOST, os.getpid(), 7)
    assert record["started"] <= record["updated"]
    assert (workspace / "status.json").read_bytes() == status
    assert not list(workspace.glob(".export-progress*"))


@pytest.mark.parametrize(
    "stop",
    [
        DreamtextError("the field is empty"),
        RuntimeError("a bug"),
        KeyboardInterrupt(),
        OSError(errno.ENOSPC, "No space left on device"),
    ],
    ids=["refused", "bug", "ctrl-c", "disk-full"],
)
def test_an_export_that_stops_removes_its_progress_record(tmp_path, monkeypatch, stop):
    workspace = make_run(tmp_path, "run", 1_000_000)
    tracer = SphereTracer()
    stub_run(monkeypatch, SphereField(), tracer)
    seen = watch_progress(monkeypatch, workspace, tracer)
    bake = export_module.bake_texture

    def stopped(*args, **kwargs):
        bake(*args, **kwargs)
        raise stop

    monkeypatch.setattr(export_module, "bake_texture", stopped)
    with pytest.raises(type(stop)):
        export_workspace(workspace, small_options())
    assert seen[-1]["stage"] == "texture baking"
    assert not list(workspace.glob(".export-progress*"))


def test_the_export_at_the_end_of_training_records_its_stage_too(tmp_path, monkeypatch):
    """export_field (the trainer's export, `text`, `image`, `batch`) records it as the standalone
    export does, with the step it was given."""
    tracer = SphereTracer()
    seen = watch_progress(monkeypatch, tmp_path, tracer)
    export_field(SphereField(), tmp_path, small_options(), tracer, step=12)
    assert [r["stage"] for r in seen][:2] == ["decimating", "UV unwrapping"]
    assert seen[-1]["stage"] == "turntable" and seen[-1]["step"] == 12
    assert not list(tmp_path.glob(".export-progress*"))


def test_the_viewer_shows_marching_cubes_once_the_density_grid_is_sampled(tmp_path, monkeypatch):
    """Marching cubes (the solid found, meshed and cleaned) ran with the progress record still
    at the density grid's last count written, at most one a second: the viewer showed
    "exporting · meshing 62/64", a grid two chunks short, for the 16 s of marching cubes at
    256^3 after the grid was done; and "decimating" through the mesh's measures after it.
    The record names each stage as it begins."""
    import dreamtext.mesh as mesh_module
    from dreamtext.cli import main
    from dreamtext.view import Catalog, read_run

    workspace = make_run(tmp_path, "run", 1_000_000)
    (workspace / "status.json").write_text('{"state": "finished", "step": 7}')
    (workspace / "config.json").write_text('{"prompt": "a sphere"}')
    tracer = SphereTracer()
    stub_run(monkeypatch, SphereField(), tracer)
    shown = []

    def looking(stage):
        """``stage``, with what the viewer shows of the run as it begins."""

        def look(*args, **kwargs):
            [run] = Catalog([tmp_path]).runs()
            shown.append(read_run(run).status["activity"])
            return stage(*args, **kwargs)

        return look

    monkeypatch.setattr(mesh_module, "solid_surface", looking(mesh_module.solid_surface))
    # And the mesh's measures (its IoU: voxelized at the grid's size) showed "decimating".
    monkeypatch.setattr(export_module, "mesh_stats", looking(export_module.mesh_stats))
    assert main(["export", "--workspace", str(workspace), "--resolution", "40"]) == 0
    assert shown == ["exporting · marching cubes", "exporting · measuring the mesh"]


def test_the_density_grid_reports_its_chunks_about_once_a_second(monkeypatch):
    """`meshing k/N`: the chunks done of the density grid, at most once in CHECK_EVERY_S."""
    import dreamtext.mesh as mesh_module

    clock = {"now": 0.0}

    class Ticking(SphereField):
        def density(self, x):
            clock["now"] += 0.5
            return super().density(x)

    monkeypatch.setattr(mesh_module, "time", SimpleNamespace(monotonic=lambda: clock["now"]))
    reported = []
    mesh_module.sample_density_grid(
        Ticking(), 8, 1.0, chunk=64, progress=lambda done, total: reported.append((done, total))
    )
    assert reported == [(0, 8), (2, 8), (4, 8), (6, 8)]


@pytest.mark.parametrize(
    ("during", "not_reached"),
    [
        ("decimate", "unwrap_uv"),
        ("unwrap_uv", "bake_texture"),
        ("bake_texture", "query_surface_albedo"),
    ],
)
def test_an_export_of_a_run_replaced_during_a_mesh_stage_stops_before_the_next(
    tmp_path, monkeypatch, during, not_reached
):
    """Decimation, UV unwrapping and texture baking ran unchecked: a run replaced while one
    of them ran (minutes each on a 50,000-face mesh at a 2048 px texture) went on through the
    others and the turntable before the swap refused it. Each is followed by the check."""
    workspace = make_run(tmp_path, "run", 1_000_000, run_id="a1")
    tracer = SphereTracer()
    stub_run(monkeypatch, SphereField(), tracer)
    monkeypatch.setattr(export_module, "read_run_checkpoint", lambda w: {"step": 7, "run_id": "a1"})
    original = getattr(export_module, during)

    def replaced_meanwhile(*args, **kwargs):
        out = original(*args, **kwargs)
        shutil.rmtree(workspace / "checkpoints")
        save_checkpoint(workspace, {"step": 3, "run_id": "b2"}, keep=1)
        return out

    monkeypatch.setattr(export_module, during, replaced_meanwhile)
    later = counted(monkeypatch, not_reached)
    with pytest.raises(DreamtextError, match="run was replaced by a new run while exporting"):
        export_workspace(workspace, small_options())
    assert later == [] and tracer.calls == []
    assert not (workspace / "mesh").exists() and not list(workspace.glob(".export-*"))


def test_a_file_the_export_cannot_open_is_named_in_the_run_not_in_its_staging_folder(
    tmp_path, monkeypatch, capsys
):
    """An open() refused in the staging folder (a full disk of inodes, a quota) said
    'No space left on device (RUN/.export-partial-k2j4x9ab/mesh/mesh.glb)': a folder the user
    never saw, removed by the time the line is read. It names RUN/mesh/mesh.glb."""
    from dreamtext.cli import main

    workspace = make_run(tmp_path, "run", 1_000_000)
    stub_run(monkeypatch, SphereField(), SphereTracer())
    write_bytes = Path.write_bytes

    def refused(self, data):
        if self.name == "mesh.glb":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", refused)
    code = main(["export", "--workspace", str(workspace), "--no-video", "--resolution", "32"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith(
        f"dreamtext: error: {os.strerror(errno.ENOSPC)} ({workspace / 'mesh' / 'mesh.glb'}); "
    )
    assert sorted(p.name for p in workspace.iterdir()) == ["checkpoints"]


def test_the_turntable_of_a_run_stopped_before_its_first_grid_refresh_uses_a_refreshed_copy(
    tmp_path, monkeypatch
):
    """Until the occupancy grid's first refresh (step ``grid_update_every``) every cell counts
    as occupied: the turntable of a 3-step run marched and queried the whole scene (a 3-step
    tiny-sd run's default field, 60 frames at 32 px: 9.9 million field queries, 219 s on 2
    loaded cores; with a refreshed grid 2.2 million, 66 s). The export that ends the run and
    ``dreamtext export`` of it now render through a copy of the renderer whose grid is
    refreshed once; the checkpoint keeps the run's grid."""
    from dreamtext.checkpoint import run_from_state
    from dreamtext.field import NeRFField

    queries = {"n": 0}
    real_forward, real_density = NeRFField.forward, NeRFField.density

    def forward(self, x, *args, **kwargs):
        queries["n"] += x.reshape(-1, 3).shape[0]
        return real_forward(self, x, *args, **kwargs)

    def density(self, x, *args, **kwargs):
        queries["n"] += x.reshape(-1, 3).shape[0]
        return real_density(self, x, *args, **kwargs)

    monkeypatch.setattr(NeRFField, "forward", forward)
    monkeypatch.setattr(NeRFField, "density", density)
    turntables = []
    real_turntable = export_module.render_turntable

    def turntable(field, frames, size, renderer=None, poses=None, **kwargs):
        before = queries["n"]
        frames_out = real_turntable(field, frames, size, renderer, poses, **kwargs)
        turntables.append((field, renderer, poses, queries["n"] - before))
        return frames_out

    monkeypatch.setattr(export_module, "render_turntable", turntable)
    options = {**SMALL, "threshold": None, "formats": ["ply"], "video_size": 16}
    overrides = {
        "prompt": "a red cube",
        "guidance": {"model": "builtin:shapes"},
        "iters": 3,
        "seed": 0,
        "workspace": str(tmp_path / "run"),
        "preview_every": 0,
        "export_options": options,
    }
    workspace = train(resolve_config(overrides))
    export_workspace(workspace)
    state = load_checkpoint(workspace / "checkpoints" / "last.pt")
    assert state["step"] == 3 and state["renderer"]["grid.occupied"].all()
    _, own, _ = run_from_state(state)  # the run's renderer: its grid never refreshed
    assert len(turntables) == 2  # the run's export, then dreamtext export
    for field, renderer, poses, used in turntables:
        assert not renderer.grid.occupied.all()
        before = queries["n"]
        real_turntable(field, 60, 16, own, poses)
        assert used < (queries["n"] - before) / 2


@pytest.fixture
def gone_pid():
    """The pid of a process of this machine that has ended (and been reaped)."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(done.stdout)


@pytest.mark.parametrize(
    ("state", "phase", "whose", "finished"),
    [
        ("interrupted", "export", "gone", True),  # Ctrl-C or SIGTERM in the export at its end
        ("running", "export", "gone", True),  # SIGKILL there
        ("running", "export", "alive", False),  # still exporting
        ("running", "export", "elsewhere", False),  # another node's: not known here
        ("interrupted", "train", "gone", False),  # stopped in training: steps are missing
        ("failed", "export", "gone", False),
    ],
)
def test_an_export_that_completes_a_runs_cut_short_export_finishes_the_run(
    tmp_path, monkeypatch, gone_pid, state, phase, whose, finished
):
    """README: "`--resume` (or `dreamtext export`) finishes it". A run whose export at its end
    was cut short stayed interrupted (or running, its process gone) after `dreamtext export`
    made its mesh: the viewer showed it interrupted in its export, and a batch rerun exported
    it all over again."""
    from dreamtext.cli import main
    from dreamtext.processes import HOST
    from dreamtext.runstatus import run_finished

    workspace = recorded_run(tmp_path, {**SMALL, "video": False, "formats": ["ply"]})
    pid = gone_pid
    if whose == "alive":  # a live process that is not this one
        sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        pid = sleeper.pid
    status = {
        "state": state,
        "phase": phase,
        "step": 7,
        "iters": 7,
        "seconds": 12.5,
        "host": HOST if whose != "elsewhere" else "another-node",
        "pid": pid,
    }
    (workspace / "status.json").write_text(json.dumps(status))
    stub_run(monkeypatch, SphereField(), SphereTracer(), step=7)
    try:
        assert main(["export", "--workspace", str(workspace)]) == 0
    finally:
        if whose == "alive":
            sleeper.kill()
            sleeper.wait()
    after = json.loads((workspace / "status.json").read_text())
    assert (after["state"] == "finished") == finished
    assert run_finished(workspace, 7, needs_mesh=True) == finished
    if finished:
        assert after["error"] is None and after["seconds"] == 12.5
    else:
        assert after == status


def test_an_export_command_checks_memory_and_ffmpeg_once(tmp_path, monkeypatch):
    """`dreamtext export RUN` checked the memory and ran `ffmpeg -version` twice: before it
    read the run (export_workspace) and again as export_field began."""
    from dreamtext.cli import main

    run = tmp_path / "run"
    overrides = {"prompt": "a red cube", "guidance": {"model": "builtin:shapes"}, "iters": 2}
    train(resolve_config({**overrides, **TINY_SIZES, "workspace": str(run), "export": False}))
    memory_checks, versions = [], []
    check_memory, run_process = export_module.check_memory, subprocess.run

    def counted_check_memory(*args, **kwargs):
        memory_checks.append(args)
        return check_memory(*args, **kwargs)

    def counted_run(command, *args, **kwargs):
        if list(command)[1:] == ["-version"]:
            versions.append(command)
        return run_process(command, *args, **kwargs)

    monkeypatch.setattr(export_module, "check_memory", counted_check_memory)
    monkeypatch.setattr(subprocess, "run", counted_run)
    flags = ["--resolution", "32", "--video-size", "32"]
    assert main(["export", "--workspace", str(run), *flags]) == 0
    assert (run / "video" / "turntable.mp4").is_file()
    assert (len(memory_checks), len(versions)) == (1, 1)


def test_an_export_refused_for_memory_after_training_names_dreamtext_export(tmp_path, monkeypatch):
    """Memory that other work took during the training refuses the export at the run's end:
    the line named --resolution and --texture-size, flags `dreamtext text` does not take, and
    did not say that the run is trained and saved."""
    free = iter([10**12])  # at the run's start; 1 GB when its export begins
    monkeypatch.setattr(export_module, "available_memory", lambda: next(free, 10**9))
    run = tmp_path / "run"
    overrides = {"prompt": "a red cube", "guidance": {"model": "builtin:shapes"}, "iters": 2}
    overrides.update(TINY_SIZES)  # the refusal is of the export's grid, not of the field
    options = {"resolution": 1024, "video": False}  # a 1024^3 grid: about 43 GB
    with pytest.raises(DreamtextError) as refused:
        train(resolve_config({**overrides, "workspace": str(run), "export_options": options}))
    assert str(refused.value).startswith("an export at --resolution 1024 with a ")
    assert str(refused.value).endswith(
        f"; the run trained to step 2 and is saved ({run / 'checkpoints' / 'last.pt'}): export "
        f"it with those flags of `dreamtext export --workspace {shlex.quote(str(run))}`"
    )
    assert not (run / "mesh").exists()


@pytest.mark.parametrize("name", ["video/turntable.mp4", "video/turntable.gif", "mesh/mesh.glb"])
@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_every_output_name_held_by_a_non_file_is_refused(tmp_path, name, kind):
    """The check covers video/ as mesh/ (a folder video/turntable.mp4/ was dropped by the swap
    as an earlier export's video) and a non-file that is no folder (a FIFO), each by name."""
    from dreamtext.export import check_output_names

    path = tmp_path / name
    path.parent.mkdir(parents=True)
    path.mkdir() if kind == "folder" else os.mkfifo(path)
    with pytest.raises(DreamtextError) as raised:
        check_output_names(tmp_path)
    what = "a folder" if kind == "folder" else "a FIFO"
    assert str(raised.value).startswith(f"{path} is {what}, not a file of an export")
    assert path.exists()


def test_a_killed_exports_staging_folder_with_a_read_only_mesh_is_removed(tmp_path, owner_removals):
    """A staging folder left by a killed export whose mesh/ took a read-only mode: the next
    export's clean-up (``finish_replacements``) left it, a hidden copy of every file, for good."""
    from dreamtext.processes import this_process

    dead = tmp_path / ".export-partial-dead0001"
    (dead / "mesh").mkdir(parents=True)
    (dead / "mesh" / "mesh.ply").write_bytes(b"staged")
    (dead / export_module.RECORD_FILE).write_text(json.dumps({**this_process(), "pid": 2**22 + 7}))
    (dead / "mesh").chmod(0o555)
    export_field(SphereField(), tmp_path, small_options(video=False, formats=("ply",)))
    assert not dead.exists()


def test_a_linked_mesh_folder_whose_disk_fills_mid_swap_keeps_its_old_set_whole(
    tmp_path, monkeypatch
):
    """A ``mesh/`` that links to a folder cannot be renamed as a set: each file was copied over
    its namesake on its own, so a disk that filled at the 2nd copy left a mix (the 5th of 6 in
    a real run: a new mesh.json and OBJ beside the old GLB and PLY). Every file is copied
    beside its namesake first and renamed over it only once all are there: the old set stays
    whole, with no temp file, and the next export swaps in the new set."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    old = ("mesh.json", "mesh.obj", "mesh.ply")
    for name in old:
        (elsewhere / name).write_text("an older export's")
    workspace = tmp_path / "run"
    workspace.mkdir()
    (workspace / "mesh").symlink_to(elsewhere)
    real_copy = export_module.copy_file
    copies = []

    def full_at_the_second(source, target, *args, **kwargs):
        copies.append(target)
        if len(copies) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
        return real_copy(source, target, *args, **kwargs)

    monkeypatch.setattr(export_module, "copy_file", full_at_the_second)
    options = small_options(video=False, formats=("obj", "ply"))
    with pytest.raises(OSError) as caught:
        export_field(SphereField(), workspace, options)
    assert caught.value.errno == errno.ENOSPC
    assert sorted(p.name for p in elsewhere.iterdir()) == sorted(old)
    assert all((elsewhere / name).read_text() == "an older export's" for name in old)
    monkeypatch.setattr(export_module, "copy_file", real_copy)  # space freed
    export_field(SphereField(), workspace, options)
    assert json.loads((elsewhere / "mesh.json").read_text())["faces"] > 0
    assert not any(p.name.endswith(".tmp") for p in elsewhere.iterdir())


def test_a_linked_mesh_folder_on_a_full_disk_is_named_and_keeps_no_part_of_a_file(
    tmp_path, monkeypatch
):
    """An export into a ``mesh/`` that links to a folder on another disk, which filled up: the
    error named the staged copy in the run's own folder (``RUN/.export-ready-…/mesh/mesh.ply``,
    on the disk with room), and the part of the file copied so far stayed in the linked folder
    as ``.mesh.ply.XXXX.tmp``, taking up the space."""

    def full_after_a_little(out_fd, in_fd, offset, count):
        if offset:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return os.write(out_fd, os.pread(in_fd, 10, 0))

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "mesh.ply").write_text("an older export's")
    workspace = tmp_path / "run"
    workspace.mkdir()
    (workspace / "mesh").symlink_to(elsewhere)
    monkeypatch.setattr(os, "sendfile", full_after_a_little)
    with pytest.raises(OSError) as caught:
        export_field(SphereField(), workspace, small_options(video=False, formats=("ply",)))
    assert caught.value.errno == errno.ENOSPC
    assert Path(caught.value.filename).parent == elsewhere  # the file it was replacing there
    assert sorted(p.name for p in elsewhere.iterdir()) == ["mesh.ply"]
    assert (elsewhere / "mesh.ply").read_text() == "an older export's"
