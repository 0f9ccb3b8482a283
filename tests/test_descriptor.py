"""Descriptor training (ch. 5.2.2, eq. 5.4) and its augmentations (ch. 6.1.9)."""

import itertools
import json
from dataclasses import replace

import pytest
import torch
from PIL import Image
from torch.amp import GradScaler

from dreamtext import descriptor
from dreamtext.augment import AugmentConfig, ImageAugmentation, image_to_tensor
from dreamtext.descriptor import (
    DESCRIPTOR_TOKEN,
    DescriptorOptions,
    DescriptorTrainer,
    check_sentence_to_learn,
    descriptor_loss,
    learned_embeds_path,
    train_descriptor,
)
from dreamtext.errors import DreamtextError
from dreamtext.guidance import GuidanceConfig
from dreamtext.models import load_stable_diffusion

# "shiny" is not in the tiny tokenizer's vocabulary: it splits into 5 pieces; "red" is one.
WORDS = ["red", "shiny"]
N_PIECES = 6


def _image() -> Image.Image:
    pixels = torch.ones(48, 40, 3)
    pixels[10:40, 8:30] = torch.tensor([0.8, 0.1, 0.1])
    return Image.fromarray((pixels * 255).byte().numpy())


def _trainer(model_path, words=WORDS, **options) -> DescriptorTrainer:
    models = load_stable_diffusion(str(model_path))
    return DescriptorTrainer(models, "a", list(words), "cube", DescriptorOptions(**options))


# --- augmentations -----------------------------------------------------------------------------


def test_same_seed_same_augmentation_and_global_rng_untouched(monkeypatch):
    augment = ImageAugmentation(32)
    image = torch.rand(1, 3, 40, 40)
    reseeded = []  # the GPUs' generators: torch.manual_seed would reseed them all
    monkeypatch.setattr(torch.cuda, "manual_seed_all", reseeded.append)
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a, b = augment(image, seed=5), augment(image, seed=5)
    assert torch.equal(a, b)
    assert torch.equal(torch.rand(3), before)
    assert reseeded == [123, 123]  # the test's own calls, none by the augmentation
    assert a.shape == (1, 3, 32, 32) and a.min() >= 0 and a.max() <= 1


def test_different_seeds_give_different_copies():
    augment = ImageAugmentation(32)
    image = torch.rand(1, 3, 32, 32)
    copies = [augment(image, seed=s) for s in range(6)]
    assert len({c.sum().item() for c in copies}) == 6


def _only(**kwargs) -> AugmentConfig:
    off = dict(flip_p=0, rotation_p=0, blur_p=0, crop_p=0, grayscale_p=0, jitter_p=0)
    return AugmentConfig(**{**off, **kwargs})


def test_rotation_fills_the_corners_white():
    augment = ImageAugmentation(32, _only(rotation_p=1.0, rotation_degrees=10.0))
    rotated = [augment(torch.zeros(1, 3, 32, 32), seed=s) for s in range(8)]
    # A rotation by more than a degree or two uncovers a corner, which must be white, not black.
    white_corners = [r[0, :, [0, 0, -1, -1], [0, -1, 0, -1]].max() > 0.3 for r in rotated]
    assert sum(white_corners) >= 6


def test_rotation_is_kornias_rotation_with_a_white_fill():
    K = pytest.importorskip("kornia.augmentation")
    try:
        white = K.RandomAffine(degrees=10.0, padding_mode="fill", fill_value=torch.ones(3), p=1.0)
    except TypeError:
        pytest.skip("this kornia has no fill_value (it came in 0.8.3)")
    augment = ImageAugmentation(32, _only(rotation_p=1.0, rotation_degrees=10.0))
    images = torch.rand(4, 3, 32, 32)
    torch.manual_seed(3)
    ours = augment.rotate(images)
    torch.manual_seed(3)
    expected = white(images)
    assert (ours - images).abs().amax() > 0.1  # rotated
    assert torch.allclose(ours, expected, atol=1e-5)


def test_augmentation_runs_on_a_kornia_without_fill_value(monkeypatch):
    # kornia < 0.8.3 (the newest on Python 3.10) has no fill_value: white fill must not need it.
    import kornia.augmentation as K

    real = K.RandomAffine

    def affine_without_fill_value(*args, **kwargs):
        if "fill_value" in kwargs:
            raise TypeError("RandomAffine.__init__() got an unexpected keyword argument")
        return real(*args, **kwargs)

    monkeypatch.setattr(K, "RandomAffine", affine_without_fill_value)
    augment = ImageAugmentation(32, _only(rotation_p=1.0, rotation_degrees=10.0))
    out = augment(torch.zeros(1, 3, 32, 32), seed=1)
    assert out[0, :, [0, 0, -1, -1], [0, -1, 0, -1]].max() > 0.3  # a white corner


def test_crop_keeps_the_size_and_magnifies():
    augment = ImageAugmentation(40, _only(crop_p=1.0, crop_fraction=0.8))
    image = torch.zeros(1, 3, 40, 40)
    image[..., 18:22, 18:22] = 1.0  # a 4-pixel square in the middle
    out = augment(image, seed=0)
    assert out.shape == image.shape
    assert (out > 0.5).sum() > (image > 0.5).sum()


def test_grayscale_makes_channels_equal():
    augment = ImageAugmentation(16, _only(grayscale_p=1.0))
    out = augment(torch.rand(1, 3, 16, 16), seed=0)
    assert torch.allclose(out[:, 0], out[:, 1], atol=1e-6)


def test_image_to_tensor_pads_to_square_with_white():
    image = Image.new("RGB", (20, 10), (0, 0, 0))
    x = image_to_tensor(image, 20)
    assert x.shape == (1, 3, 20, 20)
    assert x[..., :3, :].min() > 0.99 and x[..., 8:12, :].max() < 0.01


# --- the loss ----------------------------------------------------------------------------------


def test_descriptor_defaults_are_the_thesis_training():
    """Ch. 6.1.10: Adam at 3e-4 with torch's defaults; ch. 6.3.3: around 10,000 iterations."""
    options = DescriptorOptions()
    assert (options.iters, options.lr, options.batch_size) == (10_000, 3e-4, 1)


def test_descriptor_loss_is_both_mean_squared_errors():
    pred_full, pred_base, target = (
        torch.ones(1, 4, 2, 2),
        torch.zeros(1, 4, 2, 2),
        torch.full((1, 4, 2, 2), 3.0),
    )
    loss, info = descriptor_loss(pred_full, pred_base, target)
    assert float(loss) == pytest.approx((1 - 3) ** 2 + 1**2)
    assert {name: float(value) for name, value in info.items()} == {
        "loss_real": 4.0,
        "loss_base": 1.0,
    }


# --- placeholders ------------------------------------------------------------------------------


def test_placeholders_start_as_the_words_they_replace(tiny_sd_path):
    trainer = _trainer(tiny_sd_path)
    assert trainer.n_vectors == N_PIECES
    assert trainer.trained_sentence == f"An image of a {DESCRIPTOR_TOKEN} cube"
    ids = trainer.token_ids(trainer.full_prompt)[0].tolist()
    first = len(trainer.tokenizer) - N_PIECES
    assert [i for i in ids if i >= first] == list(range(first, first + N_PIECES))
    with torch.no_grad():
        untrained = trainer.encode(trainer.full_prompt)
        original = trainer.encode("An image of a red shiny cube")
    assert torch.equal(untrained, original)


def test_the_search_training_and_text_to_3d_read_one_sentence_token_for_token(
    tiny_sd_path, tmp_path
):
    """The sentence is "An image of <q> <w1> … <wk> <noun>", single spaces, no commas (the
    thesis's "<word1>, <word2>, · · · , <wordn>, <noun>" is notation; its code joins with
    spaces). The descriptor's prompt is that sentence's token ids with each word piece, a
    repeated word's too, replaced by a placeholder of its own; the base sentence is the
    sentence without its words; text→3D's prompt, from the saved file, is the same ids."""
    from safetensors.torch import save_file

    from dreamtext.describe import make_sentence
    from dreamtext.prompts import encode_texts, expand_tokens

    words = ["red", "shiny", "red"]
    sentence = make_sentence("a", words, "cube")
    assert sentence == "An image of a red shiny red cube"
    trainer = _trainer(tiny_sd_path, words=words)
    tokenizer = trainer.tokenizer
    searched = tokenizer(sentence)["input_ids"]
    start, noun = tokenizer("An image of a")["input_ids"][:-1], tokenizer("cube")["input_ids"][1:]
    n = N_PIECES + 1  # "red" is one piece, twice
    assert searched[len(start) : -len(noun)] == [
        i for w in words for i in tokenizer(w, add_special_tokens=False)["input_ids"]
    ]
    first = len(tokenizer) - n
    trained = tokenizer(trainer.full_prompt)["input_ids"]
    assert trained == [*start, *range(first, first + n), *noun]
    assert tokenizer(trainer.base_prompt)["input_ids"] == [*start, *noun]
    assert trainer.base_prompt == "An image of a cube"
    assert trainer.trained_sentence == f"An image of a {DESCRIPTOR_TOKEN} cube"
    with torch.no_grad():
        trainer.placeholders.vectors.add_(torch.randn(trainer.placeholders.vectors.shape))
        tau = trainer.encode(trainer.full_prompt)[0]
    save_file(trainer.learned_embeds(), tmp_path / "learned_embeds.safetensors")
    side = trainer.models.text_side(tmp_path / "learned_embeds.safetensors")
    prompt = expand_tokens(trainer.trained_sentence, side.expansions)
    assert side.tokenizer(prompt)["input_ids"] == trained
    assert torch.equal(encode_texts(side.tokenizer, side.text_encoder, [prompt])[0], tau)


def test_no_words_trains_a_descriptor_initialised_from_the_noun(tiny_sd_path):
    trainer = _trainer(tiny_sd_path, words=[])
    with torch.no_grad():
        assert torch.equal(
            trainer.encode(trainer.full_prompt), trainer.encode("An image of a cube cube")
        )


def test_only_placeholder_rows_change_during_training(tiny_sd_path):
    trainer = _trainer(tiny_sd_path, lr=1e-2)
    frozen = {
        name: p.detach().clone()
        for module in (trainer.text_encoder, trainer.models.unet, trainer.models.vae)
        for name, p in module.named_parameters()
    }
    start = trainer.placeholders.vectors.detach().clone()
    image = image_to_tensor(_image(), trainer.models.resolution)
    for _ in range(3):
        trainer.train_step(image)
    trainer.placeholders.write_to_table()
    table = trainer.text_encoder.get_input_embeddings().weight
    first = len(trainer.tokenizer) - N_PIECES
    for module in (trainer.text_encoder, trainer.models.unet, trainer.models.vae):
        for name, p in module.named_parameters():
            if p is table:
                assert torch.equal(p[:first], frozen[name][:first])
                assert not torch.equal(p[first:], start)
            else:
                assert torch.equal(p, frozen[name]), name
    assert not torch.equal(trainer.placeholders.vectors, start)


def test_loss_scaling_is_on_for_fp16_only_and_leaves_the_updates_unchanged(
    tiny_sd_path, monkeypatch
):
    """``--fp16`` descriptor training scales its loss (``devices.fp16_loss_scaler``); scaling
    by a power of two and unscaling before Adam is exact in float32, so the trained vectors
    must be bit-identical to an unscaled run's, and the scale is logged and checkpointed."""
    from dreamtext import descriptor

    cpu = torch.device("cpu")
    assert descriptor.fp16_loss_scaler(torch.float16, cpu).is_enabled()
    assert not descriptor.fp16_loss_scaler(torch.bfloat16, cpu).is_enabled()
    assert not descriptor.fp16_loss_scaler(torch.float32, cpu).is_enabled()

    def train(**options) -> tuple[DescriptorTrainer, list[dict]]:
        trainer = _trainer(tiny_sd_path, lr=1e-2, **options)
        image = image_to_tensor(_image(), trainer.models.resolution)
        return trainer, [trainer.train_step(image) for _ in range(3)]

    plain, plain_info = train()
    monkeypatch.setattr(descriptor, "fp16_loss_scaler", lambda dtype, device: GradScaler("cpu"))
    scaled, scaled_info = train()
    assert scaled.scaler.is_enabled() and not plain.scaler.is_enabled()
    assert torch.equal(scaled.placeholders.vectors, plain.placeholders.vectors)
    assert [i["loss_scale"] for i in scaled_info] == [2.0**16] * 3
    assert "loss_scale" not in plain_info[0]
    assert scaled.state()["loss_scaler"]["scale"] == 2.0**16


def test_loss_falls_on_a_fixed_batch(tiny_sd_path):
    trainer = _trainer(tiny_sd_path, lr=2e-2)
    batch = trainer.noisy_batch(image_to_tensor(_image(), trainer.models.resolution), step=1)
    losses = []
    for _ in range(6):
        loss, _ = trainer.loss(*batch)
        trainer.optimizer.zero_grad()
        loss.backward()
        trainer.optimizer.step()
        losses.append(loss.item())
    # The random tiny U-Net barely listens to the text, so most of the loss is out of reach of
    # the descriptor; the part within reach (a few 1e-3) must still go down, step after step.
    assert all(b < a for a, b in itertools.pairwise(losses))
    assert losses[-1] < losses[0] - 2e-3


def test_v_prediction_model_targets_v(tiny_sd_v_path):
    trainer = _trainer(tiny_sd_v_path)
    x0, noise, x_t, t = trainer.noisy_batch(image_to_tensor(_image(), 64), step=1)
    _, info = trainer.loss(x0, noise, x_t, t)
    with torch.no_grad():
        tau = trainer.encode(trainer.full_prompt)
        pred = trainer.models.unet(x_t, t, encoder_hidden_states=tau)
    ab = trainer.models.alphas_cumprod[t].view(-1, 1, 1, 1)
    v = ab.sqrt() * noise - (1 - ab).sqrt() * x0
    assert info["loss_real"] == pytest.approx(float(((pred.sample - v) ** 2).mean()), rel=1e-5)
    assert info["loss_real"] != pytest.approx(float(((pred.sample - noise) ** 2).mean()), rel=1e-3)


# --- the whole training run --------------------------------------------------------------------


def _workspace(tmp_path, words=WORDS):
    (tmp_path / "ws" / "descriptor").mkdir(parents=True)
    image_path = tmp_path / "cube.png"
    _image().save(image_path)
    record = {"sentence": "...", "quantifier": "a", "noun": "cube", "words": list(words)}
    (tmp_path / "ws" / "descriptor" / "sentence.json").write_text(json.dumps(record))
    return image_path, tmp_path / "ws"


def test_saved_embeddings_load_through_diffusers(tiny_sd_path, tmp_path):
    from diffusers import StableDiffusionPipeline

    image_path, workspace = _workspace(tmp_path)
    options = DescriptorOptions(iters=2, checkpoint_every=0, preview_every=0)
    path = train_descriptor(image_path, workspace, GuidanceConfig(model=str(tiny_sd_path)), options)
    assert path == learned_embeds_path(workspace)
    record = json.loads((workspace / "descriptor" / "sentence.json").read_text())
    assert record["trained_sentence"] == f"An image of a {DESCRIPTOR_TOKEN} cube"

    from safetensors.torch import load_file

    saved = load_file(str(path))[DESCRIPTOR_TOKEN]
    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_sd_path), safety_checker=None)
    pipe.load_textual_inversion(str(path))
    names = [DESCRIPTOR_TOKEN] + [f"{DESCRIPTOR_TOKEN}_{i}" for i in range(1, N_PIECES)]
    ids = pipe.tokenizer.convert_tokens_to_ids(names)
    table = pipe.text_encoder.get_input_embeddings().weight
    assert torch.equal(table[ids], saved)
    prompt = pipe.maybe_convert_prompt(record["trained_sentence"], pipe.tokenizer)
    assert prompt == f"An image of a {' '.join(names)} cube"


def test_zero_steps_save_the_words_own_embeddings(tiny_sd_path, tmp_path):
    """``--descriptor-iters 0``: text→3D then runs on the sentence's own words."""
    from safetensors.torch import load_file

    image_path, workspace = _workspace(tmp_path)
    options = DescriptorOptions(iters=0, preview_every=0)
    path = train_descriptor(image_path, workspace, GuidanceConfig(model=str(tiny_sd_path)), options)
    record = json.loads((workspace / "descriptor" / "sentence.json").read_text())
    assert record["descriptor_iters"] == 0
    assert record["trained_sentence"] == "An image of a red shiny cube"
    assert torch.equal(
        load_file(str(path))[DESCRIPTOR_TOKEN], _trainer(tiny_sd_path).placeholders.vectors
    )


def test_zero_steps_of_a_sentence_without_words_run_on_the_sentence_itself(tiny_sd_path, tmp_path):
    """A search that found no words trains one placeholder started from the noun, put before
    it; untrained, that sentence said the noun twice ("An image of a <descriptor> cube" encodes
    as "An image of a cube cube"), where --descriptor-iters 0 promises the sentence's own."""
    image_path, workspace = _workspace(tmp_path, words=[])
    options = DescriptorOptions(iters=0, preview_every=0)
    train_descriptor(image_path, workspace, GuidanceConfig(model=str(tiny_sd_path)), options)
    record = json.loads((workspace / "descriptor" / "sentence.json").read_text())
    assert record["trained_sentence"] == "An image of a cube"
    train_descriptor(
        image_path, workspace, GuidanceConfig(model=str(tiny_sd_path)), replace(options, iters=1)
    )
    record = json.loads((workspace / "descriptor" / "sentence.json").read_text())
    assert record["trained_sentence"] == f"An image of a {DESCRIPTOR_TOKEN} cube"


def test_a_sentence_too_long_with_its_pieces_and_view_label_is_refused_before_training(
    tiny_sd_path, tmp_path
):
    """A long --noun and no words: the search let the bare sentence through (under 77 tokens),
    the descriptor trained on it silently cut (its prompt holds the noun's pieces twice), and
    text→3D refused it afterwards for its view label."""
    image_path, workspace = _workspace(tmp_path, words=[])
    record_path = workspace / "descriptor" / "sentence.json"
    record = json.loads(record_path.read_text())
    noun = " ".join(["cube"] * 36)  # 36 tokens: the bare sentence is 42, the prompt 78
    record_path.write_text(json.dumps({**record, "noun": noun}))
    guidance = GuidanceConfig(model=str(tiny_sd_path))
    with pytest.raises(DreamtextError, match=r"is 8[0-9] tokens with its view label.*--noun"):
        train_descriptor(image_path, workspace, guidance, DescriptorOptions(iters=2))
    assert not (workspace / "descriptor" / "log.jsonl").exists()
    assert not learned_embeds_path(workspace).exists()


@pytest.mark.parametrize(
    ("quantifier", "tokens"), [("q" * 51, 77), ("q" * 52, 78)], ids=["77", "78"]
)
def test_a_sentence_to_learn_is_refused_early_at_the_count_the_descriptor_refuses(
    tiny_sd_path, quantifier, tokens
):
    """`image mug.png --quantifier Q` without --noun: the sentence to learn is known once the
    search has found its noun and words, and one too long was refused after the loads and the
    search. Before them it is counted at its least, the shortest noun of the list (here its
    only one, 17 pieces in the tiny tokenizer, its plural 18) and the fewest placeholders a
    word of the lists makes (one: "red"), with the template's own words and view labels: that
    count is the descriptor's own (DescriptorTrainer.check_length) at 77 tokens, accepted by
    both, and one token more, refused by both."""
    models = load_stable_diffusion(str(tiny_sd_path))
    labels = GuidanceConfig().views.labels
    noun = "apartment building"
    words = [noun, "red"]  # the search's vocabulary: its nouns and adjectives
    trainer = DescriptorTrainer(models, quantifier, ["red"], noun, DescriptorOptions())
    assert trainer.n_vectors == 1
    if tokens <= 77:
        trainer.check_length(labels)
        check_sentence_to_learn(models.tokenizer, None, quantifier, [noun], words, 15, labels)
        return
    with pytest.raises(DreamtextError, match=f"is {tokens} tokens with its view label"):
        trainer.check_length(labels)
    with pytest.raises(DreamtextError) as early:
        check_sentence_to_learn(models.tokenizer, None, quantifier, [noun], words, 15, labels)
    assert str(early.value).startswith(
        f"the sentence to learn, 'An image of {quantifier} <descriptor> <noun>', is at least "
        f"{tokens} tokens with its view label whatever noun the search finds"
    )


def test_resumed_training_equals_an_uninterrupted_run(tiny_sd_path, tmp_path):
    from safetensors.torch import load_file

    guidance = GuidanceConfig(model=str(tiny_sd_path))
    straight_image, straight = _workspace(tmp_path / "a")
    train_descriptor(straight_image, straight, guidance, DescriptorOptions(iters=4))
    image_path, resumed = _workspace(tmp_path / "b")
    train_descriptor(image_path, resumed, guidance, DescriptorOptions(iters=2, checkpoint_every=1))
    train_descriptor(image_path, resumed, guidance, DescriptorOptions(iters=4))
    a = load_file(str(learned_embeds_path(straight)))[DESCRIPTOR_TOKEN]
    b = load_file(str(learned_embeds_path(resumed)))[DESCRIPTOR_TOKEN]
    assert torch.equal(a, b)
    log = (resumed / "descriptor" / "log.jsonl").read_text()
    steps = [json.loads(line)["step"] for line in log.splitlines()]
    assert steps == [2, 4]


def test_a_resumed_descriptor_trains_at_its_own_learning_rate(tiny_sd_path, tmp_path):
    """The checkpoint's optimizer brought its learning rate back: a resume with another
    (recorded in config.json as the one used) trained on at the old one."""
    from safetensors.torch import load_file

    guidance = GuidanceConfig(model=str(tiny_sd_path))
    image_path, workspace = _workspace(tmp_path / "a")
    every = {"checkpoint_every": 1, "preview_every": 0}
    train_descriptor(image_path, workspace, guidance, DescriptorOptions(iters=2, lr=3e-4, **every))
    train_descriptor(image_path, workspace, guidance, DescriptorOptions(iters=4, lr=0.1, **every))
    state = torch.load(workspace / "descriptor" / "checkpoints" / "last.pt", weights_only=True)
    assert [group["lr"] for group in state["optimizer"]["param_groups"]] == [0.1]
    image_path, slow = _workspace(tmp_path / "b")
    train_descriptor(image_path, slow, guidance, DescriptorOptions(iters=2, lr=3e-4, **every))
    train_descriptor(image_path, slow, guidance, DescriptorOptions(iters=4, lr=3e-4, **every))
    fast = load_file(str(learned_embeds_path(workspace)))[DESCRIPTOR_TOKEN]
    assert not torch.equal(fast, load_file(str(learned_embeds_path(slow)))[DESCRIPTOR_TOKEN])


def test_a_descriptor_whose_embeddings_overflow_is_not_saved(tiny_sd_path, tmp_path):
    """At ``descriptor.lr`` 1e30 the vectors overflow in one step: the text encoder's output is
    NaN from then on, and the training saved NaN vectors as last.pt and
    learned_embeds.safetensors and finished, for text→3D to train on a NaN prompt. It stops at
    its save with one line, and last.pt stays the checkpoint of finite vectors from before."""
    guidance = GuidanceConfig(model=str(tiny_sd_path))
    image_path, workspace = _workspace(tmp_path)
    every = {"checkpoint_every": 1, "preview_every": 0}
    train_descriptor(image_path, workspace, guidance, DescriptorOptions(iters=2, **every))
    last = workspace / "descriptor" / "checkpoints" / "last.pt"
    before = last.read_bytes()
    learned_embeds_path(workspace).unlink()  # as before a rerun that trains on
    with pytest.raises(DreamtextError) as error:
        options = DescriptorOptions(iters=4, lr=1e30, **every)
        train_descriptor(image_path, workspace, guidance, options)
    message = str(error.value)
    for part in ("diverged", "step 3", f"{last} stays the checkpoint of step 2", "lr is 1e+30"):
        assert part in message, message
    assert "smaller image_to_3d.descriptor.lr" in message and "\n" not in message, message
    assert last.read_bytes() == before and not learned_embeds_path(workspace).exists()
    vectors = torch.load(last, weights_only=True)["vectors"]
    assert torch.isfinite(vectors).all()


def test_a_descriptor_whose_embeddings_overflow_stops_in_the_step_they_do(tiny_sd_path, tmp_path):
    """Checked only at its saves, a descriptor at ``lr`` 1e37 trained on with NaN losses to its
    next one (500 steps by default; every step asked for, with checkpoint_every 0) before it
    stopped. The read each step makes anyway holds the vectors' largest value: step 1's is
    1e37, past what the text encoder can take, and the training stops there, having saved
    nothing, no log line of NaN losses written."""
    guidance = GuidanceConfig(model=str(tiny_sd_path))
    image_path, workspace = _workspace(tmp_path)
    options = DescriptorOptions(iters=12, lr=1e37, log_every=1, checkpoint_every=0, preview_every=0)
    with pytest.raises(DreamtextError) as error:
        train_descriptor(image_path, workspace, guidance, options)
    message = str(error.value)
    assert message.startswith(
        "the descriptor training diverged: its token embeddings reached a "
        "value of 1e+37 in step 1 (past 10000, the most a learned token may hold"
    ), message
    assert "nothing saved" in message and "smaller image_to_3d.descriptor.lr" in message, message
    assert "\n" not in message
    status = json.loads((workspace / "status.json").read_text())
    assert (status["state"], status["step"]) == ("failed", 1), status
    assert (workspace / "descriptor" / "log.jsonl").read_text() == ""
    assert not learned_embeds_path(workspace).exists()
    assert not list((workspace / "descriptor" / "checkpoints").iterdir())


def test_a_step_whose_vectors_turn_nan_stops_the_descriptor_and_keeps_the_checkpoint(
    tiny_sd_path, tmp_path, monkeypatch
):
    """A NaN gradient makes Adam's update NaN, however small the vectors were: the line says
    so, and names the checkpoint from before."""
    guidance = GuidanceConfig(model=str(tiny_sd_path))
    image_path, workspace = _workspace(tmp_path)
    every = {"checkpoint_every": 2, "preview_every": 0}
    train_descriptor(image_path, workspace, guidance, DescriptorOptions(iters=2, **every))
    last = workspace / "descriptor" / "checkpoints" / "last.pt"
    before = last.read_bytes()
    real_loss = DescriptorTrainer.loss

    def nan_loss(self, *batch):
        loss, parts = real_loss(self, *batch)
        return loss * float("nan"), parts

    monkeypatch.setattr(DescriptorTrainer, "loss", nan_loss)
    with pytest.raises(DreamtextError) as error:
        train_descriptor(image_path, workspace, guidance, DescriptorOptions(iters=6, **every))
    message = str(error.value)
    assert "its token embeddings became NaN in step 3 (" in message, message
    assert f"{last} stays the checkpoint of step 2" in message, message
    assert last.read_bytes() == before


def _checkpoint_past_the_bound(tiny_sd_path, tmp_path, iters: int, value: float = 2e4):
    """A workspace whose descriptor checkpoint (step ``iters``) holds a vector ``value`` (2e4:
    past ``LARGEST_EMBEDDING_VALUE``), as an older dreamtext saved one that diverged."""
    guidance = GuidanceConfig(model=str(tiny_sd_path))
    image_path, workspace = _workspace(tmp_path)
    every = {"checkpoint_every": 1, "preview_every": 0}
    train_descriptor(image_path, workspace, guidance, DescriptorOptions(iters=iters, **every))
    last = workspace / "descriptor" / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    del state["digest"]
    state["vectors"][0, 0] = value
    descriptor._atomic_torch_save(state, last)
    learned_embeds_path(workspace).unlink()
    return image_path, workspace, guidance, last


@pytest.mark.parametrize(
    "more_steps, value, says",
    [
        (0, 2e4, "values up to 2e+04, past 10000, the most"),
        (2, 2e4, "values up to 2e+04, past"),
        (0, float("nan"), "NaN values: the training"),
    ],
    ids=["no-steps-left", "steps-left", "nan"],
)
def test_a_checkpoint_past_the_embedding_bound_is_refused_on_resume(
    tiny_sd_path, tmp_path, more_steps, value, says
):
    """With no steps left, the checkpoint of an older dreamtext whose vectors reached 2e4 was
    saved as learned_embeds.safetensors, which text→3D then refused; with steps left, the first
    step stopped and named that same checkpoint as the one the rerun goes on from. Its resume is
    refused, before any step, naming the folder to delete; nothing is written."""
    image_path, workspace, guidance, last = _checkpoint_past_the_bound(
        tiny_sd_path, tmp_path, 2, value
    )
    record = (workspace / "descriptor" / "sentence.json").read_bytes()
    before = last.read_bytes()
    options = DescriptorOptions(iters=2 + more_steps, checkpoint_every=1, preview_every=0)
    with pytest.raises(DreamtextError) as error:
        train_descriptor(image_path, workspace, guidance, options)
    message = str(error.value)
    assert message.startswith(f"{last} holds token embeddings with {says}"), message
    assert f"delete {last.parent} " in message and "\n" not in message, message
    assert "image_to_3d.descriptor.lr" in message, message
    assert last.read_bytes() == before and not learned_embeds_path(workspace).exists()
    assert (workspace / "descriptor" / "sentence.json").read_bytes() == record


def test_vectors_past_the_embedding_bound_are_not_saved(tiny_sd_path, tmp_path):
    """The save's own check holds the same bound as text→3D's reading of the file: finite
    vectors of 2e4 were saved, as last.pt and learned_embeds.safetensors."""
    _, workspace = _workspace(tmp_path)
    trainer = _trainer(tiny_sd_path, iters=0, checkpoint_every=0, preview_every=0)
    with torch.no_grad():
        trainer.placeholders.vectors[0, 0] = 2e4
    folder = workspace / "descriptor"
    image = image_to_tensor(_image(), trainer.models.resolution)
    with pytest.raises(DreamtextError) as error:
        descriptor._train_loop(trainer, image, folder, trainer.options, {"step": 0})
    message = str(error.value)
    assert "reached a value of 2e+04 in step 0 (past 10000, the most" in message, message
    assert "nothing saved" in message, message
    assert not (folder / "checkpoints" / "last.pt").exists()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_an_encoder_output_that_overflows_is_named_by_the_encoders_precision(
    tiny_sd_path, tmp_path, monkeypatch, dtype
):
    """A save that finds the text encoder's output of the sentence NaN or infinite said the
    vectors "overflowed float32", also where the encoder ran in float16 (--fp16), whose 65504
    is what overflowed: the line names the encoder's precision."""
    trainer = _trainer(tiny_sd_path, iters=0, checkpoint_every=0, preview_every=0)
    trainer.text_encoder.to(dtype)  # as --fp16 loads it on a GPU
    monkeypatch.setattr(DescriptorTrainer, "saved_values", lambda self: (1.0, False))
    folder = tmp_path / "descriptor"
    (folder / "checkpoints").mkdir(parents=True)
    image = image_to_tensor(_image(), trainer.models.resolution)
    with pytest.raises(DreamtextError) as error:
        descriptor._train_loop(trainer, image, folder, trainer.options, {"step": 0})
    name = str(dtype).removeprefix("torch.")
    assert str(error.value).startswith(
        f"the descriptor training diverged: its token embeddings overflowed {name} by step 0 "
        "(the text encoder's output is NaN or infinite; image_to_3d.descriptor.lr is 0.0003)"
    ), error.value
    assert not (folder / "checkpoints" / "last.pt").exists()


def _fp16_steps_overflowing(monkeypatch, overflows) -> None:
    """Descriptor training with a loss scaler on the CPU (``--fp16``'s needs CUDA), and an
    infinite loss in the steps for which ``overflows(step)`` holds, as a U-Net that overflows
    float16 gives: their gradients are not finite and the scaler skips their update. Those
    steps skip the augmentation, the VAE and the U-Net, to keep the test short."""
    monkeypatch.setattr(descriptor, "fp16_loss_scaler", lambda dtype, device: GradScaler("cpu"))
    real_batch, real_loss = DescriptorTrainer.noisy_batch, DescriptorTrainer.loss

    def noisy_batch(self, image, step):
        return (torch.zeros(()),) * 4 if overflows(step) else real_batch(self, image, step)

    def loss(self, *batch):
        if not overflows(self.step + 1):
            return real_loss(self, *batch)
        infinite = self.placeholders.vectors.sum() * float("inf")
        return infinite, {"loss_real": infinite.detach(), "loss_base": infinite.detach()}

    monkeypatch.setattr(DescriptorTrainer, "noisy_batch", noisy_batch)
    monkeypatch.setattr(DescriptorTrainer, "loss", loss)


def test_an_fp16_descriptor_whose_updates_are_skipped_stops_and_a_rerun_goes_on(
    tiny_sd_path, tmp_path, monkeypatch
):
    """A scaler that skipped every step's update (their gradients infinite) went unnoticed: the
    training finished and saved the vectors it started from as learned. After 50 skipped steps
    it saves its checkpoint and stops with one line naming --bf16; the rerun goes on from it."""
    from safetensors.torch import load_file

    _fp16_steps_overflowing(monkeypatch, lambda step: True)
    guidance = GuidanceConfig(model=str(tiny_sd_path))
    image_path, workspace = _workspace(tmp_path)
    options = DescriptorOptions(iters=60, log_every=1, checkpoint_every=0, preview_every=0)
    with pytest.raises(DreamtextError) as error:
        train_descriptor(image_path, workspace, guidance, options)
    message = str(error.value)
    last = workspace / "descriptor" / "checkpoints" / "last.pt"
    assert message == (
        "the descriptor training diverged: its gradients were NaN or infinite in 50 of the 50 "
        "steps up to step 50, so the fp16 loss scaler skipped their updates and its token "
        f"embeddings did not train; saved {last}; run the same command again with --bf16 or "
        "--fp32 (without --fp16), and it goes on from there"
    )
    state = torch.load(last, weights_only=True)
    start = _trainer(tiny_sd_path).placeholders.vectors.detach()
    assert state["step"] == 50 and torch.equal(state["vectors"], start)
    assert state["recent_skips"] == [] and state["skipped_updates"] == 50
    lines = [json.loads(line) for line in (workspace / "descriptor" / "log.jsonl").open()]
    assert [line["step"] for line in lines] == list(range(1, 51))
    assert all(line["update_skipped"] for line in lines)
    assert [line["loss_scale"] for line in lines[:3]] == [2.0**16, 2.0**15, 2.0**14]
    status = json.loads((workspace / "status.json").read_text())
    assert (status["state"], status["step"]) == ("failed", 50), status
    assert not learned_embeds_path(workspace).exists()

    monkeypatch.undo()  # the rerun in float32, whose gradients are finite
    train_descriptor(image_path, workspace, guidance, options)
    trained = load_file(str(learned_embeds_path(workspace)))[DESCRIPTOR_TOKEN]
    assert not torch.equal(trained, start)
    assert (
        json.loads((workspace / "descriptor" / "sentence.json").read_text())["descriptor_iters"]
        == 60
    )


def test_an_fp16_descriptor_that_skips_49_updates_of_50_trains_on(
    tiny_sd_path, tmp_path, monkeypatch
):
    """The window leaves the scaler room to find its scale: 49 skipped updates, one short of
    ``DIVERGED_AFTER``, are counted, and the training finishes."""
    assert (descriptor.DIVERGED_AFTER, descriptor.DIVERGENCE_WINDOW) == (50, 100)
    _fp16_steps_overflowing(monkeypatch, lambda step: step <= 49)
    trainer = _trainer(tiny_sd_path, iters=50, log_every=0, checkpoint_every=0, preview_every=0)
    start = trainer.placeholders.vectors.detach().clone()
    folder = tmp_path / "descriptor"
    (folder / "checkpoints").mkdir(parents=True)
    image = image_to_tensor(_image(), trainer.models.resolution)
    descriptor._train_loop(trainer, image, folder, trainer.options, {"step": 0})
    assert trainer.step == 50 and trainer.skipped_updates == 49
    assert list(trainer.recent_skips) == [True] * 49 + [False]
    assert not torch.equal(trainer.placeholders.vectors, start)  # step 50 updated them


def test_the_descriptor_stops_after_the_window_text_to_3d_stops_after():
    """README: 50 skipped steps of the last 100, "as in text→3D": both loops read the window
    from ``devices``, where the descriptor and the trainer each defined their own copy."""
    import re
    from pathlib import Path

    from dreamtext import devices, trainer

    package = Path(devices.__file__).parent
    for name in ("DIVERGED_AFTER", "DIVERGENCE_WINDOW"):
        defining = [
            path.name
            for path in sorted(package.glob("*.py"))
            if re.search(rf"^{name}\s*[:=]", path.read_text(encoding="utf-8"), re.M)
        ]
        assert defining == ["devices.py"], name
    window = (devices.DIVERGED_AFTER, devices.DIVERGENCE_WINDOW)
    assert window == (descriptor.DIVERGED_AFTER, descriptor.DIVERGENCE_WINDOW)
    assert window == (trainer.DIVERGED_AFTER, trainer.DIVERGENCE_WINDOW)


def test_previews_are_written(tiny_sd_path, tmp_path):
    image_path, workspace = _workspace(tmp_path)
    options = DescriptorOptions(
        iters=2, preview_every=2, preview_samples=2, preview_steps=2, checkpoint_every=0
    )
    train_descriptor(image_path, workspace, GuidanceConfig(model=str(tiny_sd_path)), options)
    with Image.open(workspace / "descriptor" / "previews" / "step_000002.png") as preview:
        assert preview.size == (128, 64)


def test_previews_sample_the_prompt_the_descriptor_trains(tiny_sd_path, tmp_path, monkeypatch):
    """The previews gave the pipeline the prompt with its token written out, which the pipeline
    wrote out again ("<descriptor>_1" became "<descriptor> <descriptor>_1 ..._1"): they showed
    another prompt than the one trained, for every descriptor of more than one vector."""
    import dreamtext.descriptor as descriptor

    trainers, sampled = [], []
    real_init = DescriptorTrainer.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        trainers.append(self)

    def fake_sample_grid(pipe, prompt, n, *rest, **kwargs):
        sampled.append(pipe.maybe_convert_prompt(prompt, pipe.tokenizer))
        return [Image.new("RGB", (64, 64))] * n

    monkeypatch.setattr(DescriptorTrainer, "__init__", init)
    monkeypatch.setattr(descriptor, "sample_grid", fake_sample_grid)
    image_path, workspace = _workspace(tmp_path)
    options = DescriptorOptions(iters=1, preview_every=1, preview_samples=1, checkpoint_every=0)
    train_descriptor(image_path, workspace, GuidanceConfig(model=str(tiny_sd_path)), options)
    [trainer] = trainers
    assert trainer.n_vectors > 1
    assert sampled == [trainer.full_prompt]


def test_checkpoint_of_another_sentence_is_refused(tiny_sd_path, tmp_path):
    guidance = GuidanceConfig(model=str(tiny_sd_path))
    image_path, workspace = _workspace(tmp_path)
    train_descriptor(image_path, workspace, guidance, DescriptorOptions(iters=1))
    record_path = workspace / "descriptor" / "sentence.json"
    record = json.loads(record_path.read_text())
    record_path.write_text(json.dumps({**record, "words": ["blue"]}))
    with pytest.raises(DreamtextError, match="another sentence") as refused:
        train_descriptor(image_path, workspace, guidance, DescriptorOptions(iters=2))
    assert f"delete {workspace / 'descriptor' / 'checkpoints'} " in str(refused.value)


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_a_signal_saves_the_last_finished_step_and_the_rerun_continues_it(
    tiny_sd_path, tmp_path, monkeypatch, signal_name
):
    import signal

    from safetensors.torch import load_file

    from dreamtext.checkpoint import load_checkpoint
    from dreamtext.interrupts import TrainingInterrupted

    guidance = GuidanceConfig(model=str(tiny_sd_path))
    options = DescriptorOptions(iters=4, log_every=1, checkpoint_every=0, preview_every=0)
    straight_image, straight = _workspace(tmp_path / "a")
    train_descriptor(straight_image, straight, guidance, options)

    real_step = DescriptorTrainer.train_step

    def step_then_signal(self, image):
        info = real_step(self, image)
        if self.step == 2:
            signal.raise_signal(getattr(signal, signal_name))
        return info

    image_path, workspace = _workspace(tmp_path / "b")
    monkeypatch.setattr(DescriptorTrainer, "train_step", step_then_signal)
    with pytest.raises(TrainingInterrupted, match="descriptor training interrupted after step 2"):
        train_descriptor(image_path, workspace, guidance, options)
    folder = workspace / "descriptor"
    assert load_checkpoint(folder / "checkpoints" / "last.pt")["step"] == 2
    assert not learned_embeds_path(workspace).exists()
    status = json.loads((workspace / "status.json").read_text())
    assert (status["state"], status["phase"], status["step"]) == ("interrupted", "descriptor", 2)

    monkeypatch.setattr(DescriptorTrainer, "train_step", real_step)
    train_descriptor(image_path, workspace, guidance, options)
    steps = [json.loads(line)["step"] for line in (folder / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    a = load_file(str(learned_embeds_path(straight)))[DESCRIPTOR_TOKEN]
    b = load_file(str(learned_embeds_path(workspace)))[DESCRIPTOR_TOKEN]
    assert torch.equal(a, b)


def test_a_second_ctrl_c_leaves_status_json_at_the_step_of_the_saved_checkpoint(
    tiny_sd_path, tmp_path, monkeypatch
):
    """A second Ctrl-C interrupts at once, before the checkpoint of the step it cut: status.json
    said "interrupted" at the step trained (3), its checkpoint at the one before (2), and the
    rerun went on from 2. It records the step of the checkpoint a rerun goes on from."""
    import signal

    from dreamtext.checkpoint import load_checkpoint

    guidance = GuidanceConfig(model=str(tiny_sd_path))
    options = DescriptorOptions(iters=6, log_every=1, checkpoint_every=2, preview_every=0)
    real_step = DescriptorTrainer.train_step

    def step_then_two_signals(self, image):
        info = real_step(self, image)
        if self.step == 3:
            signal.raise_signal(signal.SIGINT)  # the first: stop after this step
            signal.raise_signal(signal.SIGINT)  # the second: at once
        return info

    image_path, workspace = _workspace(tmp_path)
    monkeypatch.setattr(DescriptorTrainer, "train_step", step_then_two_signals)
    with pytest.raises(KeyboardInterrupt):
        train_descriptor(image_path, workspace, guidance, options)
    saved = load_checkpoint(workspace / "descriptor" / "checkpoints" / "last.pt")["step"]
    status = json.loads((workspace / "status.json").read_text())
    assert saved == 2
    assert (status["state"], status["phase"], status["step"]) == ("interrupted", "descriptor", 2)


def test_log_lines_past_the_checkpoint_are_not_written_twice(tiny_sd_path, tmp_path):
    guidance = GuidanceConfig(model=str(tiny_sd_path))
    image_path, workspace = _workspace(tmp_path)
    train_descriptor(image_path, workspace, guidance, DescriptorOptions(iters=2, log_every=1))
    log = workspace / "descriptor" / "log.jsonl"
    # a run killed after step 3, its checkpoint still at step 2
    log.write_text(log.read_text() + json.dumps({"step": 3, "loss": 1.0}) + "\n")
    train_descriptor(image_path, workspace, guidance, DescriptorOptions(iters=4, log_every=1))
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert json.loads(log.read_text().splitlines()[2])["loss"] != 1.0


def test_descriptor_training_says_in_status_json_that_it_runs_or_failed(
    tiny_sd_path, tmp_path, monkeypatch
):
    """`dreamtext view` and `batch` read status.json: a descriptor training wrote none, so an
    image run that failed there showed as nothing, or as a text→3D run that never started."""
    guidance = GuidanceConfig(model=str(tiny_sd_path))
    options = DescriptorOptions(iters=2, log_every=1, checkpoint_every=0, preview_every=0)
    image_path, workspace = _workspace(tmp_path)
    seen = []
    real_step = DescriptorTrainer.train_step

    def step_and_look(self, image):
        seen.append(json.loads((workspace / "status.json").read_text()))
        if self.step == 1 and len(seen) > 2:
            raise RuntimeError("the GPU fell off")
        return real_step(self, image)

    monkeypatch.setattr(DescriptorTrainer, "train_step", step_and_look)
    train_descriptor(image_path, workspace, guidance, options)
    assert [(s["state"], s["phase"], s["step"], s["iters"]) for s in seen] == [
        ("running", "descriptor", 0, 2),
        ("running", "descriptor", 1, 2),
    ]
    done = json.loads((workspace / "status.json").read_text())
    assert (done["state"], done["phase"], done["step"]) == ("running", "descriptor", 2)

    # again from step 0 (no checkpoint now), failing at its second step
    (workspace / "descriptor" / "checkpoints" / "last.pt").unlink()
    with pytest.raises(RuntimeError):
        train_descriptor(image_path, workspace, guidance, options)
    failed = json.loads((workspace / "status.json").read_text())
    assert (failed["state"], failed["phase"]) == ("failed", "descriptor")
    assert failed["error"] == "RuntimeError: the GPU fell off"


# --- formulas on values: each guards a one-character change the tests above let through ---


def test_crop_windows_reach_every_offset_including_the_last():
    """Guards against ``randint(0, height - h)`` (the last offset never drawn).

    A 2 × 2 image [[0, 1], [2, 3]], crop_fraction 0.5: a 1 × 1 window at (top, left) ∈
    {0, 1}², resized back to 2 × 2, is that one pixel's value. Over 40 seeds every one of
    0, 1, 2, 3 must appear (chance of missing one by luck: 4 · 0.75^40 ≈ 4e-5); with the
    off-by-one only the window (0, 0) exists.
    """
    augment = ImageAugmentation(2, AugmentConfig(crop_p=1.0, crop_fraction=0.5))
    image = torch.tensor([[0.0, 1.0], [2.0, 3.0]]).expand(1, 1, 2, 2)
    seen = set()
    for seed in range(40):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out = augment.crop(image)
        assert torch.all(out == out.flatten()[0])
        seen.add(float(out.flatten()[0]))
    assert seen == {0.0, 1.0, 2.0, 3.0}


def _red_square(size: int) -> torch.Tensor:
    image = torch.ones(1, 3, size, size)
    image[..., size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = torch.tensor(
        [0.8, 0.1, 0.1]
    )[:, None, None]
    return image


def test_noised_latents_follow_the_forward_process(tiny_sd_path, monkeypatch):
    """Guards against ``x_t = ᾱ x0 + (1 − ᾱ) ε`` for ``√ᾱ x0 + √(1 − ᾱ) ε``.

    With ᾱ_t = 0.25 for every t: x_t = 0.5 x0 + √0.75 ε = 0.5 x0 + 0.8660254 ε (the wrong
    form gives 0.25 x0 + 0.75 ε).
    """
    trainer = _trainer(tiny_sd_path)
    models = trainer.models
    monkeypatch.setattr(models, "alphas_cumprod", torch.full_like(models.alphas_cumprod, 0.25))
    x0, noise, x_t, _ = trainer.noisy_batch(_red_square(models.resolution), step=1)
    torch.testing.assert_close(x_t, 0.5 * x0 + 0.8660254 * noise, atol=1e-5, rtol=1e-5)


def test_timesteps_are_drawn_from_the_whole_schedule(tiny_sd_path):
    """Guards against a narrowed t range: t ~ U{0, …, T − 1}. With a batch of 64
    the chance that no t reaches T/2 is 2^−64, and that none is below T/2 too."""
    trainer = _trainer(tiny_sd_path, batch_size=64)
    big = trainer.models.num_train_timesteps
    _, _, _, t = trainer.noisy_batch(_red_square(trainer.models.resolution), step=1)
    assert int(t.min()) >= 0 and int(t.max()) < big
    assert int(t.max()) >= big // 2 and int(t.min()) < big // 2


def test_timesteps_reach_both_ends_of_the_schedule(tiny_sd_path, monkeypatch):
    """Guards against a t range cut at either end (``randint(20, T)``, ``randint(0, T − 1)``):
    t ~ U{0, …, T − 1}. Of 20,000 draws, the chance that 0 (or T − 1) is missing is
    (1 − 1/T)^20000 ≈ e^−20 for T = 1000. The augmentation and the VAE are stubbed out: only
    the draw of t is under test."""
    trainer = _trainer(tiny_sd_path, batch_size=20_000)
    big = trainer.models.num_train_timesteps
    assert big <= 1000
    monkeypatch.setattr(trainer, "augment", lambda images, seed: images)
    monkeypatch.setattr(trainer.models, "encode_images", lambda images: images[:, :1, :2, :2])
    _, _, _, t = trainer.noisy_batch(torch.ones(1, 3, 4, 4), step=1)
    assert int(t.min()) == 0 and int(t.max()) == big - 1


def test_the_base_term_conditions_on_the_base_sentence(tiny_sd_path):
    """Guards against ``tau_base = encode(full_prompt)``. Eq. 5.3's τ_b is the
    sentence without descriptors, "An image of a cube"; the full one, at the start, means
    "An image of a red cube", so the two hidden states differ."""
    trainer = _trainer(tiny_sd_path)
    assert trainer.base_prompt == "An image of a cube"
    with torch.no_grad():
        base = trainer.text_encoder(trainer.token_ids("An image of a cube"))[0]
        full = trainer.encode(trainer.full_prompt)
    torch.testing.assert_close(trainer.tau_base, base)
    assert not torch.allclose(trainer.tau_base, full)


def test_two_seeds_do_not_share_batches_one_step_apart(tiny_sd_path):
    """Guards against the per-step seed ``seed + step`` for ``seed · 1000003 + step``
    : with it, seed 1's step 1 was seed 0's step 2 (same image copy, t
     and noise), so --seed 1 replayed --seed 0 one step late."""
    trainer = _trainer(tiny_sd_path)
    image = _red_square(trainer.models.resolution)
    trainer.options.seed = 0
    noise_a = trainer.noisy_batch(image, step=2)[1]
    trainer.options.seed = 1
    noise_b = trainer.noisy_batch(image, step=1)[1]
    assert not torch.equal(noise_a, noise_b)


def test_a_seed_from_before_the_seed_bound_draws_its_batches(tiny_sd_path):
    """An image run from before --seed's bound (2^32 - 1) may resume with a seed up to
    2^64 - 3: its batches' seed ``seed · 1000003 + step`` is taken modulo 2^64 (torch takes
    seeds below it), where it was a torch traceback; seeds within the bound are unchanged."""
    trainer = _trainer(tiny_sd_path)
    image = _red_square(trainer.models.resolution)
    trainer.options.seed = 2**64 - 3
    big = trainer.noisy_batch(image, step=1)
    trainer.options.seed = 0
    wrapped = ((2**64 - 3) * 1_000_003 + 1) % 2**64  # the step's seed, computed by hand
    trainer.options.seed, step = divmod(wrapped, 1_000_003)
    same = trainer.noisy_batch(image, step=step)
    for a, b in zip(big, same, strict=True):
        torch.testing.assert_close(a, b)


def test_a_sentence_of_exactly_the_limit_is_accepted(tiny_sd_path):
    """Guards against ``count >= limit``: the text encoder reads
    model_max_length tokens, start and end included, so a prompt of exactly that many is
    whole. Set the limit to the prompt's own count n: accepted; to n − 1: refused."""
    trainer = _trainer(tiny_sd_path)
    n = len(trainer.tokenizer(trainer.full_prompt, truncation=False).input_ids)
    trainer.tokenizer.model_max_length = n
    trainer.check_length(())
    trainer.tokenizer.model_max_length = n - 1
    with pytest.raises(DreamtextError):
        trainer.check_length(())


def test_the_last_step_is_logged_when_it_is_no_multiple_of_log_every(tiny_sd_path, tmp_path):
    """3 steps logged every 2: steps 2 and 3 (the end), so the log shows the final loss."""
    guidance = GuidanceConfig(model=str(tiny_sd_path))
    image_path, workspace = _workspace(tmp_path)
    options = DescriptorOptions(iters=3, log_every=2, checkpoint_every=0, preview_every=0)
    train_descriptor(image_path, workspace, guidance, options)
    log = workspace / "descriptor" / "log.jsonl"
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [2, 3]


def test_a_checkpoint_past_the_steps_asked_records_the_step_it_holds(tiny_sd_path, tmp_path):
    """Trained to step 2, then asked for 1: nothing trains and nothing is undone, so
    sentence.json says the descriptor is of step 2, the step its learned file holds."""
    guidance = GuidanceConfig(model=str(tiny_sd_path))
    image_path, workspace = _workspace(tmp_path)
    train_descriptor(image_path, workspace, guidance, DescriptorOptions(iters=2, preview_every=0))
    train_descriptor(image_path, workspace, guidance, DescriptorOptions(iters=1, preview_every=0))
    record = json.loads((workspace / "descriptor" / "sentence.json").read_text())
    assert record["descriptor_iters"] == 2


def test_a_descriptor_preview_cut_short_leaves_no_truncated_png(tmp_path, monkeypatch):
    """A descriptor preview was written in place: a process killed (or a disk filling up)
    halfway left a truncated step_XXXXXX.png, which a run resumed past its step kept for good.
    Now it is written to a temp file and renamed, and a temp a kill left is removed at the
    next preview."""
    from dreamtext import descriptor

    previews = tmp_path / "previews"
    previews.mkdir()
    stale = previews / ".step_000002.png.k2j4x9ab.tmp"  # a killed write's
    stale.write_bytes(b"\x89PNG")
    save = Image.Image.save

    def cut_short(image, fp, *args, **kwargs):  # the PNG's signature, then a full disk
        if hasattr(fp, "write"):
            fp.write(b"\x89PNG\r\n\x1a\n")
        else:  # a path: written in place
            with open(fp, "wb") as f:
                f.write(b"\x89PNG\r\n\x1a\n")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", cut_short)
    with pytest.raises(OSError):
        descriptor._save_row([Image.new("RGB", (8, 8))], previews / "step_000004.png")
    assert not (previews / "step_000004.png").exists()
    monkeypatch.setattr(Image.Image, "save", save)
    descriptor._save_row([Image.new("RGB", (8, 8))] * 2, previews / "step_000006.png")
    assert sorted(p.name for p in previews.iterdir()) == ["step_000006.png"]
    assert Image.open(previews / "step_000006.png").size == (16, 8)


def test_a_descriptor_checkpoint_save_removes_the_temp_of_a_killed_save(tmp_path):
    """A descriptor checkpoint save killed (SIGKILL) before its rename left its hidden temp file
    in descriptor/checkpoints for good; the next save removes it."""
    from dreamtext import descriptor

    stale = tmp_path / ".last.pt.k2j4x9ab.tmp"
    stale.write_bytes(b"PK")
    descriptor._atomic_torch_save({"step": 2}, tmp_path / "last.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_a_descriptor_checkpoint_that_does_not_fit_is_the_file_systems_error(tmp_path):
    """A full disk (here a file-size limit) past the first 8 KiB of a descriptor checkpoint (its
    file's buffer: a real model's embedding with Adam's moments is larger) was torch's
    RuntimeError "unexpected pos ...", a traceback, where the text→3D checkpoint's was the
    OSError naming the file, the CLI's one line. No temp file is left."""
    import subprocess
    import sys

    script = (
        "import resource, sys, torch\n"
        "from pathlib import Path\n"
        "from dreamtext.descriptor import _atomic_torch_save\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))\n"
        "state = {'step': 3, 'vectors': torch.randn(2, 50_000)}\n"  # 400 kB
        "try:\n"
        "    _atomic_torch_save(state, Path(sys.argv[1]))\n"
        "except Exception as error:\n"
        "    print(type(error).__name__, error)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "last.pt")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == f"OSError [Errno 27] File too large: '{tmp_path / 'last.pt'}'"
    assert list(tmp_path.iterdir()) == []


def test_a_rerun_stopped_twice_before_its_first_save_records_the_step_it_went_on_from(
    tiny_sd_path, tmp_path, monkeypatch
):
    """Before a rerun saves a checkpoint, the one it went on from (step 2) is what a next rerun
    goes on from: status.json's "interrupted" step is that one, not 0."""
    import signal

    guidance = GuidanceConfig(model=str(tiny_sd_path))
    image_path, workspace = _workspace(tmp_path)
    train_descriptor(image_path, workspace, guidance, DescriptorOptions(iters=2, preview_every=0))
    real_step = DescriptorTrainer.train_step

    def step_then_two_signals(self, image):
        info = real_step(self, image)
        if self.step == 3:
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
        return info

    monkeypatch.setattr(DescriptorTrainer, "train_step", step_then_two_signals)
    options = DescriptorOptions(iters=6, checkpoint_every=10, preview_every=0)
    with pytest.raises(KeyboardInterrupt):
        train_descriptor(image_path, workspace, guidance, options)
    status = json.loads((workspace / "status.json").read_text())
    assert (status["state"], status["phase"], status["step"]) == ("interrupted", "descriptor", 2)


def test_a_ctrl_c_after_last_pt_is_replaced_leaves_status_naming_its_step(
    tiny_sd_path, tmp_path, monkeypatch
):
    """A second Ctrl-C landing after the descriptor's last.pt was replaced (here in the removal
    of stale temps beside it) skipped ``saved["step"] = trainer.step``: the interrupted
    status.json named step 1 while last.pt held step 2, the step a rerun goes on from."""
    from dreamtext import descriptor
    from dreamtext.checkpoint import checkpoint_step
    from dreamtext.runfiles import read_status

    image_path, workspace = _workspace(tmp_path)
    options = DescriptorOptions(iters=2, checkpoint_every=1, preview_every=0)
    calls = []

    def ctrl_c_at_the_second_save(folder, pattern):
        calls.append(folder)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(descriptor, "remove_stale_temps", ctrl_c_at_the_second_save)
    with pytest.raises(KeyboardInterrupt):
        train_descriptor(image_path, workspace, GuidanceConfig(model=str(tiny_sd_path)), options)
    assert checkpoint_step(workspace / "descriptor" / "checkpoints" / "last.pt") == 2
    assert read_status(workspace)["state"] == "interrupted"
    assert read_status(workspace)["step"] == 2
