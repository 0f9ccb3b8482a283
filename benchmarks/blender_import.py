"""What Blender shows of dreamtext's exported files: run BY Blender's own Python.

    blender -b --factory-startup --python benchmarks/blender_import.py -- \
        [--render DIR] [--json OUT.json] FILE...

Each FILE (``mesh.glb``, ``mesh.obj``, ``mesh.ply`` of a run's ``mesh/`` folder) is imported into
an empty scene by Blender's own importer, as a user does with File > Import and its defaults: the
glTF importer (``import_scene.gltf``), both OBJ importers of Blender 3.x (the Python one,
``import_scene.obj``, and the C++ one, ``wm.obj_import``, the only one from 4.0), and the PLY
importer (``import_mesh.ply`` before 3.6, ``wm.ply_import`` after). For each import it reports

* what the importer printed (warnings, errors) and whether it failed;
* the objects, their names and their meshes' vertex and face counts, beside the run's
  ``mesh.json`` (``vertices``, ``faces``, ``textured_vertices``) when it sits next to FILE;
* the world-space bounding box and size in metres, and where the file's axes land: dreamtext's
  files are +y up, front +z (the training frame), so an upright import maps file +y to Blender's
  +Z (its up) and file +z to Blender's -Y (its front view looks along +Y). The map is found by
  matching the sorted coordinates of each Blender axis against each signed file axis, which
  any vertex order preserves (a cube's axes differ in their noise, not only in their range);
* materials: the Principled BSDF's Base Color and what feeds it (an image texture, its size in
  pixels, whether its pixels loaded, its colour space), metallic, roughness, specular; and
  whether the texture lands where it should: the texel under each corner's UV against the
  colour the run's ``mesh.ply`` gives that vertex (both baked from the field);
* UV layers and colour attributes (the PLY's vertex colours) with their mean colour;
* custom properties of the object, its mesh and the scene (the GLB's ``extras``);
* orientation: the signed volume (positive when the faces wind counter-clockwise seen from
  outside, so their normals point out: V = Σ_f (a·(b×c))/6 over triangles (a, b, c)), the share
  of faces whose normal points away from the centroid, and whether the split (shading) normals
  agree with the faces;
* edges as Blender's bmesh sees them: non-manifold and boundary edges, the same with the
  vertices at one position welded (what closes a GLB's UV seams) and after Merge by Distance
  at its default 0.1 mm; for a PLY imported lying down, where the file's axes land after
  rotating it +90° about X;
* with ``--render DIR``, a 256 px render from the front-right, 25° above, to
  ``DIR/<run>_<format>_<importer>_<engine>.png``: Workbench (studio light, texture or vertex
  colours as the object carries them), or with ``--engine cycles`` the imported materials as a
  final render shows them (a black or missing material shows there, not in Workbench).

A plain-text table goes to stdout at the end; ``--json`` writes every report. The script needs
nothing but Blender 3.4 or later and the numpy its glTF importer needs too (inside Blender's own
builds; Debian's ``blender`` package needs ``apt-get install python3-numpy``)::

    blender -b --factory-startup --python benchmarks/blender_import.py -- \
        --render /tmp/renders --json /tmp/blender.json workspace/a_red_cube/mesh/mesh.*[bjy]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import struct
import sys
import tempfile
from pathlib import Path

import bmesh
import bpy
import numpy as np
from mathutils import Vector

# Debian 12's blender (3.4.1) runs on the system's numpy 1.24, which removed ``np.bool``; its
# glTF importer still uses it (Shading "Auto Smooth", the default), so every GLB fails there with
# AttributeError. Blender's own builds bundle an older numpy. The alias lets the default import run.
NUMPY_BOOL_SHIM = "bool" not in np.__dict__
if NUMPY_BOOL_SHIM:
    np.bool = bool

# dreamtext's frame: +y up, +z front. Blender's: +Z up, front view from -Y (looking along +Y).
FILE_AXES = ("+x", "-x", "+y", "-y", "+z", "-z")
BLENDER_AXES = ("X", "Y", "Z")
UPRIGHT = {"+y": "+Z", "+z": "-Y"}
MERGE_DISTANCE = 1e-4


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="blender -b --python blender_import.py --")
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--render", type=Path, help="folder for a 256 px PNG per import")
    parser.add_argument("--json", type=Path, help="write every report to this file")
    parser.add_argument("--size", type=int, default=256, help="render size in pixels")
    parser.add_argument(
        "--engine",
        choices=("workbench", "cycles"),
        default="workbench",
        help="workbench: the viewport's look, texture or colours flat-lit; cycles: the material "
        "as a final render shows it (CPU, 16 samples, grey sky and a sun)",
    )
    args = parser.parse_args(argv)
    reports = []
    for path in args.files:
        for importer in importers_for(path):
            report = import_and_inspect(
                path.resolve(), importer, args.render, args.size, args.engine
            )
            reports.append(report)
            print("BLENDER_IMPORT " + json.dumps(report), flush=True)
    print(table(reports), flush=True)
    if args.json:
        args.json.write_text(json.dumps(reports, indent=2) + "\n")
    return 0


def importers_for(path: Path) -> list[str]:
    """The importers a Blender user has for ``path``'s format, by the operator that runs each,
    with its defaults; ``import_scene.gltf merge_vertices`` is the glTF importer with its Merge
    Vertices option ticked (a GLB's vertices are split at UV seams)."""
    suffix = path.suffix.lower()
    if suffix in (".glb", ".gltf"):
        return ["import_scene.gltf", "import_scene.gltf merge_vertices"]
    if suffix == ".obj":
        found = [name for name in ("import_scene.obj", "wm.obj_import") if has_operator(name)]
        return found
    if suffix == ".ply":
        return ["wm.ply_import" if has_operator("wm.ply_import") else "import_mesh.ply"]
    print(f"blender_import.py: {path}: not a .glb, .obj or .ply file", file=sys.stderr)
    raise SystemExit(2)


def has_operator(name: str) -> bool:
    group, op = name.split(".")
    try:
        getattr(getattr(bpy.ops, group), op).get_rna_type()
    except (AttributeError, KeyError):
        return False
    return True


@contextlib.contextmanager
def captured_output():
    """What the importer writes to stdout and stderr, C and Python alike (file descriptors 1, 2)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    result = {"text": ""}
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield result
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            sink.seek(0)
            result["text"] = sink.read().decode("utf-8", "replace")


def run_importer(importer: str, path: Path) -> tuple[list[str], str | None]:
    """Import ``path`` with ``importer``'s defaults; the lines it printed, and its error if any."""
    operator_name, *flags = importer.split()
    group, name = operator_name.split(".")
    operator = getattr(getattr(bpy.ops, group), name)
    error = None
    with captured_output() as output:
        try:
            result = operator(filepath=str(path), **{flag: True for flag in flags})
            if "FINISHED" not in result:
                error = f"returned {sorted(result)}"
        except RuntimeError as exc:  # an operator's error report
            error = str(exc).strip()
    lines = [line for line in output["text"].splitlines() if line.strip()]
    return lines, error


def import_and_inspect(
    path: Path, importer: str, render_dir: Path | None, size: int, engine: str = "workbench"
) -> dict:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    lines, error = run_importer(importer, path)
    notable = [
        line
        for line in lines
        if any(word in line.lower() for word in ("warn", "error", "fail", "cannot", "invalid"))
    ]
    report: dict = {
        "file": str(path),
        "importer": importer,
        "blender": bpy.app.version_string,
        "numpy_bool_shim": NUMPY_BOOL_SHIM,
        "error": error,
        "warnings": notable,
        "printed": lines[:20],
        "unit_system": bpy.context.scene.unit_settings.system,
        "unit_scale": bpy.context.scene.unit_settings.scale_length,
        "scene_properties": custom_properties(bpy.context.scene),
    }
    expected = expected_counts(path)
    if expected:
        report["mesh_json"] = expected
    objects = [obj for obj in bpy.context.scene.objects if obj.type == "MESH"]
    report["objects"] = [obj.name for obj in bpy.context.scene.objects]
    report["meshes"] = [inspect_object(obj, path) for obj in objects]
    if render_dir is not None and objects:
        render_dir.mkdir(parents=True, exist_ok=True)
        run = path.parent.parent.name if path.parent.name == "mesh" else path.stem
        label = importer.replace(".", "_").replace(" ", "_")
        out = render_dir / f"{run}_{path.suffix.lstrip('.')}_{label}_{engine}.png"
        report["render"] = str(render(objects, out, size, engine))
    return report


def expected_counts(path: Path) -> dict | None:
    """The run's ``mesh.json`` figures that Blender's counts can be held against."""
    report = path.parent / "mesh.json"
    if not report.is_file():
        return None
    data = json.loads(report.read_text())
    return {key: data.get(key) for key in ("vertices", "faces", "textured_vertices", "volume")}


def custom_properties(owner) -> dict:
    out = {}
    for key, value in owner.items():
        if key.startswith("_") or key in ("cycles",):
            continue
        out[key] = value.to_dict() if hasattr(value, "to_dict") else jsonable(value)
    return out


def jsonable(value):
    if value is None:  # Blender keeps a Python None as an ID pointer: an empty data-block field
        return "None (an empty data-block field)"
    if hasattr(value, "to_list"):
        return value.to_list()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def world_vertices(obj) -> np.ndarray:
    """``[V, 3]`` vertex positions in world space."""
    mesh = obj.data
    co = np.empty(len(mesh.vertices) * 3, dtype=np.float64)
    mesh.vertices.foreach_get("co", co)
    co = co.reshape(-1, 3)
    matrix = np.array(obj.matrix_world)
    return co @ matrix[:3, :3].T + matrix[:3, 3]


def inspect_object(obj, path: Path) -> dict:
    mesh = obj.data
    mesh.calc_loop_triangles()
    world = world_vertices(obj)
    low, high = world.min(axis=0), world.max(axis=0)
    info: dict = {
        "object": obj.name,
        "mesh": mesh.name,
        "vertices": len(mesh.vertices),
        "faces": len(mesh.polygons),
        "triangles": len(mesh.loop_triangles),
        "bbox_min": [round(float(v), 4) for v in low],
        "bbox_max": [round(float(v), 4) for v in high],
        "size_m": [round(float(v), 4) for v in high - low],
        "rotation_euler_deg": [round(math.degrees(a), 2) for a in obj.rotation_euler],
        "object_properties": custom_properties(obj),
        "mesh_properties": custom_properties(mesh),
        "uv_layers": [layer.name for layer in mesh.uv_layers],
        "smooth_faces": sum(p.use_smooth for p in mesh.polygons),
        "custom_normals": bool(mesh.has_custom_normals),
    }
    if mesh.uv_layers:
        uv = np.empty(len(mesh.loops) * 2, dtype=np.float64)
        mesh.uv_layers.active.data.foreach_get("uv", uv)
        uv = uv.reshape(-1, 2)
        info["uv_range"] = [round(float(uv.min()), 4), round(float(uv.max()), 4)]
    info["color_attributes"] = colour_attributes(mesh)
    info["materials"] = [inspect_material(slot.material) for slot in obj.material_slots]
    info["axes"] = axis_map(world, file_positions(path))
    info["upright"] = all(info["axes"].get(axis) == want for axis, want in UPRIGHT.items())
    info["texture_vs_ply"] = texture_against_ply(obj, info["axes"], path)
    if not info["upright"] and obj.rotation_euler.x == 0.0:
        # What the README tells a user of an importer without axis options: rotate +90° about X.
        obj.rotation_euler.x = math.radians(90)
        bpy.context.view_layer.update()
        rotated = axis_map(world_vertices(obj), file_positions(path))
        info["axes_rotated_x_plus_90"] = rotated
        info["upright_rotated_x_plus_90"] = all(rotated.get(a) == w for a, w in UPRIGHT.items())
        obj.rotation_euler.x = 0.0
        bpy.context.view_layer.update()
    info.update(orientation(obj, world))
    info.update(edges(obj))
    return info


def colour_attributes(mesh) -> list[dict]:
    out = []
    for attribute in mesh.color_attributes:
        values = np.empty(len(attribute.data) * 4, dtype=np.float64)
        attribute.data.foreach_get("color", values)
        mean = values.reshape(-1, 4).mean(axis=0)
        out.append(
            {
                "name": attribute.name,
                "domain": attribute.domain,
                "type": attribute.data_type,
                "mean_rgba": [round(float(v), 3) for v in mean],
            }
        )
    return out


def inspect_material(material) -> dict:
    if material is None:
        return {"name": None}
    info: dict = {"name": material.name, "use_nodes": material.use_nodes}
    if not material.use_nodes:
        info["diffuse_color"] = list(material.diffuse_color)
        return info
    bsdfs = [n for n in material.node_tree.nodes if n.type == "BSDF_PRINCIPLED"]
    info["shader"] = bsdfs[0].type if bsdfs else [n.type for n in material.node_tree.nodes]
    if not bsdfs:
        return info
    bsdf = bsdfs[0]
    for socket in ("Metallic", "Roughness", "Specular", "Alpha"):
        value = bsdf.inputs[socket]
        info[socket.lower()] = (
            f"linked from {value.links[0].from_node.type}"
            if value.is_linked
            else round(float(value.default_value), 3)
        )
    base = bsdf.inputs["Base Color"]
    if not base.is_linked:
        info["base_color"] = [round(float(v), 3) for v in base.default_value]
        return info
    chain, node = [], base.links[0].from_node
    while True:
        chain.append(node.type)
        if node.type == "TEX_IMAGE":
            break
        linked = [s for s in node.inputs if s.is_linked]
        if not linked:
            break
        node = linked[0].links[0].from_node
    info["base_color"] = " <- ".join(chain)
    if node.type == "TEX_IMAGE" and node.image is not None:
        image = node.image
        pixels = image.size[0] * image.size[1]
        mean = None
        if pixels:
            values = np.empty(pixels * image.channels, dtype=np.float32)
            image.pixels.foreach_get(values)
            mean = [round(float(v), 3) for v in values.reshape(-1, image.channels).mean(axis=0)]
        info["image"] = {
            "name": image.name,
            "size": list(image.size),
            "loaded": bool(image.has_data),
            "packed": image.packed_file is not None,
            "filepath": image.filepath,
            "colorspace": image.colorspace_settings.name,
            "mean_rgba_linear": mean,
        }
    return info


def file_positions(path: Path) -> np.ndarray | None:
    """``[V, 3]`` vertex positions as the file stores them (no importer's axis conversion)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".glb":
            return glb_positions(path)
        if suffix == ".obj":
            rows = [line.split()[1:4] for line in path.open() if line.startswith("v ")]
            return np.array(rows, dtype=np.float64)
        if suffix == ".ply":
            return ply_positions(path)
    except (OSError, ValueError, KeyError, struct.error):
        return None
    return None


def glb_positions(path: Path) -> np.ndarray:
    data = path.read_bytes()
    length = struct.unpack_from("<I", data, 12)[0]
    tree = json.loads(data[20 : 20 + length])
    binary = data[20 + length + 8 :]
    out = []
    for mesh in tree["meshes"]:
        for primitive in mesh["primitives"]:
            accessor = tree["accessors"][primitive["attributes"]["POSITION"]]
            view = tree["bufferViews"][accessor["bufferView"]]
            start = view.get("byteOffset", 0) + accessor.get("byteOffset", 0)
            values = np.frombuffer(binary, "<f4", accessor["count"] * 3, start)
            out.append(values.reshape(-1, 3))
    return np.concatenate(out).astype(np.float64)


def ply_positions(path: Path) -> np.ndarray:
    vertices = ply_vertices(path)
    return np.stack([vertices[a] for a in ("x", "y", "z")], axis=1).astype(np.float64)


def ply_vertices(path: Path) -> np.ndarray:
    """The vertex element of a binary little-endian PLY, a structured array by property name."""
    types = {"float": "<f4", "double": "<f8", "uchar": "u1", "int": "<i4", "uint": "<u4"}
    with path.open("rb") as f:
        header = []
        while True:
            line = f.readline().decode("ascii").strip()
            header.append(line)
            if line == "end_header":
                break
        if "format binary_little_endian 1.0" not in header:
            raise ValueError("only binary little-endian PLY")
        count, fields, in_vertex = 0, [], False
        for line in header:
            words = line.split()
            if words[:2] == ["element", "vertex"]:
                count, in_vertex = int(words[2]), True
            elif words[:1] == ["element"]:
                in_vertex = False
            elif in_vertex and words[:1] == ["property"]:
                fields.append((words[2], types[words[1]]))
        return np.frombuffer(f.read(count * np.dtype(fields).itemsize), np.dtype(fields))


def texture_against_ply(obj, axes: dict, path: Path) -> dict | None:
    """How far the texture Blender shows is from the run's PLY colours, which the export bakes
    from the same field at the vertices: for every corner, the texel under its UV (nearest;
    Blender's UV v = 0 is the image's bottom row, as ``image.pixels`` starts) against the PLY
    colour of the vertex at that position, both sRGB in [0, 1]; mean absolute difference over
    the RGB channels of the corners whose position the PLY has. A V or U flipped, or a texture
    of another mesh, gives differences of the size of the colours' spread."""
    ply_path = path.parent / "mesh.ply"
    mesh = obj.data
    images = [m.get("image") for m in (inspect_material(s.material) for s in obj.material_slots)]
    if not ply_path.is_file() or not mesh.uv_layers or not images or not images[0]:
        return None
    image = bpy.data.images[images[0]["name"]]
    width, height = image.size
    channels = image.channels
    pixels = np.empty(width * height * channels, dtype=np.float32)
    image.pixels.foreach_get(pixels)
    pixels = pixels.reshape(height, width, channels)[..., :3]
    ply = ply_vertices(ply_path)
    colours = np.stack([ply[c] for c in ("red", "green", "blue")], axis=1) / 255.0
    stored = np.stack([ply[a] for a in ("x", "y", "z")], axis=1).astype(np.float64)
    # Blender's world positions back in the file's frame, by the axis map.
    world = world_vertices(obj)
    in_file = np.empty_like(world)
    for file_axis, blender_axis in axes.items():
        if file_axis in ("+x", "+y", "+z"):
            sign = 1.0 if blender_axis.startswith("+") else -1.0
            in_file[:, "xyz".index(file_axis[1])] = sign * world[:, "XYZ".index(blender_axis[1])]
    key = {tuple(p): i for i, p in enumerate(np.round(stored, 4).tolist())}
    ply_index = np.array([key.get(tuple(p), -1) for p in np.round(in_file, 4).tolist()])
    loops = np.empty(len(mesh.loops), dtype=np.int64)
    mesh.loops.foreach_get("vertex_index", loops)
    uv = np.empty(len(mesh.loops) * 2, dtype=np.float64)
    mesh.uv_layers.active.data.foreach_get("uv", uv)
    uv = uv.reshape(-1, 2)
    cols = np.clip((uv[:, 0] * width).astype(int), 0, width - 1)
    rows = np.clip((uv[:, 1] * height).astype(int), 0, height - 1)
    matched = ply_index[loops] >= 0
    texels = pixels[rows[matched], cols[matched]]
    expected = colours[ply_index[loops][matched]]
    return {
        "corners_matched": round(float(matched.mean()), 4),
        "mean_abs_diff": round(float(np.abs(texels - expected).mean()), 4),
        "ply_colour_spread": round(float(expected.std(axis=0).mean()), 4),
    }


def axis_map(world: np.ndarray, stored: np.ndarray | None) -> dict:
    """Where each file axis lands in Blender: ``{"+y": "+Z", ...}``, with the worst coordinate
    mismatch of the chosen matches (``fit_m``) and of the next-best (``runner_up_m``).

    Column j of the imported positions, sorted, equals file column i, sorted and times the sign,
    when the importer maps file axis ±i onto Blender axis j (any vertex order keeps this)."""
    if stored is None or len(stored) == 0:
        return {}
    blender = np.unique(np.round(world, 6), axis=0)
    stored = np.unique(np.round(stored, 6), axis=0)
    if len(blender) != len(stored):
        return {"unmatched": f"{len(blender)} positions in Blender, {len(stored)} in the file"}
    out: dict = {}
    fits, runners = [], []
    for j, name in enumerate(BLENDER_AXES):
        target = np.sort(blender[:, j])
        scores = []
        for i in range(3):
            for sign in (1, -1):
                error = float(np.abs(np.sort(sign * stored[:, i]) - target).max())
                scores.append((error, i, sign))
        scores.sort()
        error, i, sign = scores[0]
        fits.append(error)
        runners.append(scores[1][0])
        file_axis = ("+" if sign > 0 else "-") + "xyz"[i]
        blender_axis = "+" + name
        if file_axis.startswith("-"):
            file_axis, blender_axis = "+" + file_axis[1:], "-" + name
        out[file_axis] = blender_axis
    out["fit_m"] = max(fits)
    out["runner_up_m"] = min(runners)
    return out


def orientation(obj, world: np.ndarray) -> dict:
    """Signed volume (Σ a·(b×c)/6 over the triangles, world space), the share of faces whose
    normal points away from the centroid, and of corners whose shading normal agrees with its
    face's (dot > 0)."""
    mesh = obj.data
    tris = np.empty(len(mesh.loop_triangles) * 3, dtype=np.int64)
    mesh.loop_triangles.foreach_get("vertices", tris)
    a, b, c = (world[tris.reshape(-1, 3)[:, k]] for k in range(3))
    cross = np.cross(b - a, c - a)
    volume = float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)
    centres = (a + b + c) / 3.0
    outward = np.einsum("ij,ij->i", cross, centres - world.mean(axis=0)) > 0
    mesh.calc_normals_split()
    loop_normals = np.empty(len(mesh.loops) * 3, dtype=np.float64)
    mesh.loops.foreach_get("normal", loop_normals)
    loop_normals = loop_normals.reshape(-1, 3)
    face_normals = np.empty(len(mesh.polygons) * 3, dtype=np.float64)
    mesh.polygons.foreach_get("normal", face_normals)
    face_normals = face_normals.reshape(-1, 3)
    loop_face = np.empty(len(mesh.loops), dtype=np.int64)
    starts = np.empty(len(mesh.polygons), dtype=np.int64)
    totals = np.empty(len(mesh.polygons), dtype=np.int64)
    mesh.polygons.foreach_get("loop_start", starts)
    mesh.polygons.foreach_get("loop_total", totals)
    for face, (start, total) in enumerate(zip(starts, totals, strict=True)):
        loop_face[start : start + total] = face
    agree = np.einsum("ij,ij->i", loop_normals, face_normals[loop_face]) > 0
    return {
        "signed_volume_m3": round(volume, 5),
        "faces_outward": round(float(outward.mean()), 4),
        "corner_normals_agree": round(float(agree.mean()), 4),
    }


def edges(obj) -> dict:
    """bmesh's view of the surface: as imported, welded (vertices at one position merged, 1 µm)
    and after Mesh > Clean Up > Merge by Distance at its default 0.1 mm (``MERGE_DISTANCE``),
    which also merges distinct vertices closer than that; shortest edge in metres."""
    out: dict = {}
    for label, distance in (("", None), ("welded_", 1e-6), ("merged_", MERGE_DISTANCE)):
        bm = bmesh.new()
        bm.from_mesh(obj.data)
        if distance is not None:
            bmesh.ops.remove_doubles(bm, verts=bm.verts, dist=distance)
            out[label + "vertices"] = len(bm.verts)
        out[label + "non_manifold_edges"] = sum(not e.is_manifold for e in bm.edges)
        out[label + "boundary_edges"] = sum(e.is_boundary for e in bm.edges)
        if distance is None:
            out["shortest_edge_m"] = float(min(e.calc_length() for e in bm.edges))
        bm.free()
    return out


def render(objects: list, out: Path, size: int, engine: str = "workbench") -> Path:
    """A picture of ``objects`` from the front-right (from -Y turned 35° towards +X), 25° up,
    framing the bounding box. Workbench: studio light, the texture where a UV map and an image
    are there, else the colour attribute, else the material colour. Cycles (CPU): the materials
    as imported, lit by a uniform grey sky and a sun from above the camera's side."""
    scene = bpy.context.scene
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.render.resolution_percentage = 100
    scene.render.image_settings.file_format = "PNG"
    if scene.world is None:
        scene.world = bpy.data.worlds.new("World")
    if engine == "cycles":
        scene.render.engine = "CYCLES"
        scene.cycles.device = "CPU"
        scene.cycles.samples = 16
        scene.cycles.use_denoising = False
        scene.world.use_nodes = True
        sky = scene.world.node_tree.nodes["Background"]
        sky.inputs["Color"].default_value = (0.5, 0.5, 0.5, 1.0)
        sun_data = bpy.data.lights.new("sun", type="SUN")
        sun_data.energy = 3.0
        sun = bpy.data.objects.new("sun", sun_data)
        sun.rotation_euler = (math.radians(40), 0.0, math.radians(30))
        scene.collection.objects.link(sun)
    else:
        scene.render.engine = "BLENDER_WORKBENCH"
        scene.display.shading.light = "STUDIO"
        has_colours = any(obj.data.color_attributes for obj in objects)
        has_texture = any(obj.data.uv_layers and obj.material_slots for obj in objects)
        scene.display.shading.color_type = (
            "TEXTURE" if has_texture else "VERTEX" if has_colours else "MATERIAL"
        )
    points = np.concatenate([world_vertices(obj) for obj in objects])
    centre = Vector(((points.min(axis=0) + points.max(axis=0)) / 2).tolist())
    radius = float(np.linalg.norm(points - np.array(centre), axis=1).max())
    azimuth, elevation = math.radians(35), math.radians(25)
    direction = Vector(
        (
            math.sin(azimuth) * math.cos(elevation),
            -math.cos(azimuth) * math.cos(elevation),
            math.sin(elevation),
        )
    )
    camera_data = bpy.data.cameras.new("camera")
    camera_data.lens = 50
    camera = bpy.data.objects.new("camera", camera_data)
    scene.collection.objects.link(camera)
    fov = camera_data.angle
    camera.location = centre + direction * (radius / math.sin(fov / 2) * 1.05)
    camera.rotation_euler = (-direction).to_track_quat("-Z", "Y").to_euler()
    scene.camera = camera
    scene.render.filepath = str(out)
    with captured_output():
        bpy.ops.render.render(write_still=True)
    return out


def table(reports: list[dict]) -> str:
    header = (
        "file | importer | error/warnings | object | verts | faces | size (m) | file +y -> | "
        "upright | base colour | image | UV | colours | custom props | volume | outward | "
        "non-manifold (welded, merged 0.1 mm)"
    )
    rows = [header]
    for report in reports:
        for mesh in report["meshes"] or [{}]:
            material = (mesh.get("materials") or [{}])[0]
            image = material.get("image") or {}
            props = sorted(mesh.get("object_properties", {}))
            rows.append(
                " | ".join(
                    str(v)
                    for v in (
                        Path(report["file"]).parent.parent.name + "/" + Path(report["file"]).name,
                        report["importer"],
                        report["error"] or len(report["warnings"]),
                        mesh.get("object"),
                        mesh.get("vertices"),
                        mesh.get("faces"),
                        mesh.get("size_m"),
                        mesh.get("axes", {}).get("+y"),
                        mesh.get("upright"),
                        material.get("base_color", "none"),
                        f"{image.get('size')} loaded={image.get('loaded')}" if image else "-",
                        mesh.get("uv_layers"),
                        [c["name"] for c in mesh.get("color_attributes", [])],
                        ",".join(props) or "-",
                        mesh.get("signed_volume_m3"),
                        mesh.get("faces_outward"),
                        f"{mesh.get('non_manifold_edges')} "
                        f"({mesh.get('welded_non_manifold_edges')}, "
                        f"{mesh.get('merged_non_manifold_edges')})",
                    )
                )
            )
    return "\n".join(rows)


if __name__ == "__main__":
    arguments = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else []
    sys.exit(main(arguments))
