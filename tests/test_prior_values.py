"""The built-in prior's image size and its pixel-space encoding, derived by hand from the
documented contracts (dreamtext/prior.py)."""

from __future__ import annotations

import pytest
import torch
from test_prior import CAMERAS

from dreamtext.guidance import GuidanceConfig
from dreamtext.prior import ShapesPrior, dataset_size


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("dreamtext_cache")


@pytest.fixture
def prior(cache_dir, monkeypatch):
    monkeypatch.setenv("DREAMTEXT_CACHE", str(cache_dir))
    return ShapesPrior(GuidanceConfig(model="builtin:shapes"), CAMERAS, 8, 8)


@pytest.mark.parametrize(
    ("size", "expected"),
    # 100 · 64 / 150 = 42.67 → 43 (nearest, aspect kept); 33 · 64 / 96 = 22 exactly.
    [((150, 100), (64, 43)), ((100, 150), (43, 64)), ((96, 33), (64, 22))],
)
def test_a_scaled_down_side_is_rounded_to_the_nearest_pixel(size, expected):
    assert dataset_size(*size) == expected


def test_a_render_of_a_dataset_image_encodes_to_that_image_in_minus_one_to_one(prior):
    # Renders in [0, 1] are compared with the image set in [−1, 1]: x ↦ 2x − 1.
    renders = prior.dataset.images[:3]
    expected = prior.images_of("")[:3].float().view(3, 3, 8, 8)
    torch.testing.assert_close(prior.encode_images(renders), expected)
    grey = prior.encode_images(torch.full((1, 3, 8, 8), 0.25))
    torch.testing.assert_close(grey, torch.full((1, 3, 8, 8), -0.5))


def test_a_larger_render_is_averaged_down_to_the_image_set(prior):
    # Columns alternating black and white at 24 px, compared at 8 px: each pixel of the set's
    # size spans three columns, a mix of both (near 0 in [−1, 1]), not one of them (±1).
    columns = (torch.arange(24) % 2).float()
    render = columns.expand(1, 3, 24, 24)
    x = prior.encode_images(render)
    assert x.shape == (1, 3, 8, 8)
    assert x.abs().max() < 0.5


def test_the_empty_prompt_conditions_every_view_on_every_image(prior):
    # "The empty prompt stands for every image of the dataset", view-dependent prompts or not.
    prior.set_prompt("")
    everything = prior.images_of("")
    assert prior._cond and all(torch.equal(s, everything) for s in prior._cond.values())
