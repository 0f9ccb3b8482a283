"""Values of the CLIP encoder's refusals (describe.ClipEncoder): each is one DreamtextError line
that names what is wrong, never a traceback."""

import pytest

from dreamtext.describe import ClipEncoder
from dreamtext.errors import DreamtextError


def _failing(error):
    def load(*args, **kwargs):
        raise error

    return load


def test_a_relative_clip_folder_that_does_not_exist_is_named_a_missing_folder(
    tmp_path, monkeypatch
):
    """``--clip ./clip`` is a folder (``.`` first), not a hub id: refused before any load."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DreamtextError, match=r"^CLIP folder \./no_such_clip does not exist"):
        ClipEncoder("./no_such_clip", "cpu")


def _offline(monkeypatch, value: str = "1") -> None:
    """HF_HUB_OFFLINE as the hub read it at import (its constants), and in the environment."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def test_offline_as_the_hub_reads_it_says_offline_for_true_too(monkeypatch):
    """huggingface_hub takes "1", "true", "yes" and "on" as offline; the CLIP line checked for
    "1" alone, so HF_HUB_OFFLINE=true got "not available from the hub or disk"."""
    from transformers import CLIPProcessor

    _offline(monkeypatch, "true")
    monkeypatch.setattr(CLIPProcessor, "from_pretrained", _failing(OSError("not cached")))
    with pytest.raises(DreamtextError, match=r"is not available offline \(OSError\)"):
        ClipEncoder("someone/some-clip", "cpu")


def test_offline_a_clip_hub_id_not_in_the_cache_says_offline(tmp_path, monkeypatch):
    from transformers import CLIPProcessor

    _offline(monkeypatch)
    monkeypatch.setattr(CLIPProcessor, "from_pretrained", _failing(OSError("not cached")))
    with pytest.raises(DreamtextError) as refusal:
        ClipEncoder("someone/some-clip", "cpu")
    assert str(refusal.value).startswith(
        "CLIP model 'someone/some-clip' is not available offline (OSError); "
    )


def test_offline_a_missing_clip_is_not_blamed_on_an_unreachable_hub(monkeypatch):
    """With HF_HUB_OFFLINE=1 every uncached file is a LocalEntryNotFoundError: the hub was never
    asked, so the line must say offline, not that the hub could not be reached."""
    from huggingface_hub.errors import LocalEntryNotFoundError
    from transformers import CLIPProcessor

    try:
        try:
            raise LocalEntryNotFoundError("outgoing traffic has been disabled")
        except LocalEntryNotFoundError as missing:
            raise OSError("does not appear to have a file named preprocessor_config.json") from (
                missing
            )
    except OSError as error:
        failure = error
    _offline(monkeypatch)
    monkeypatch.setattr(CLIPProcessor, "from_pretrained", _failing(failure))
    with pytest.raises(DreamtextError) as refusal:
        ClipEncoder("someone/some-clip", "cpu")
    assert "is not available offline (OSError)" in str(refusal.value)
    assert "could not be reached" not in str(refusal.value)


def test_a_clip_that_transformers_refuses_with_a_value_error_is_one_line(monkeypatch):
    """transformers raises ValueError for a config it cannot read ("Unrecognized model")."""
    from transformers import CLIPProcessor

    _offline(monkeypatch)
    monkeypatch.setattr(CLIPProcessor, "from_pretrained", _failing(ValueError("Unrecognized")))
    with pytest.raises(DreamtextError, match=r"is not available offline \(ValueError\)"):
        ClipEncoder("someone/some-clip", "cpu")
