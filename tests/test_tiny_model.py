"""The tiny Qwen2.5-VL and Qwen3-VL load through the Auto classes like real checkpoints and run on CPU end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from ssrl.cli import main  # noqa: E402
from ssrl.recipes.tiny_model import SPECIAL_TOKENS, build_tiny_model  # noqa: E402

SIZES = [(56, 84), (112, 112), (84, 56), (60, 150), (30, 30)]  # (height, width); 30 px is near the 28 px minimum


def _image(h: int, w: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _messages(n_images: int, answer: str | None = None) -> list[dict]:
    content = [{"type": "image", "image": _image(h, w, i)} for i, (h, w) in enumerate(SIZES[:n_images])]
    content.append({"type": "text", "text": "Which patch was flipped? Answer in \\boxed{}."})
    messages = [{"role": "user", "content": content}]
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages


CLASSES = {"qwen2_5_vl": ("Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor"),
           "qwen3_vl": ("Qwen3VLForConditionalGeneration", "Qwen3VLProcessor")}


@pytest.fixture(scope="module", params=list(CLASSES))
def tiny_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", arch=request.param, seed=0)


def arch_of(path: Path) -> str:
    import json

    return json.loads((path / "config.json").read_text())["model_type"]


@pytest.fixture(scope="module")
def loaded(tiny_dir: Path) -> tuple:
    processor = transformers.AutoProcessor.from_pretrained(tiny_dir)
    model = transformers.AutoModelForImageTextToText.from_pretrained(tiny_dir)
    return processor, model


def _inputs(processor, n_images: int, answer: str | None = None) -> dict:
    return processor.apply_chat_template(_messages(n_images, answer), tokenize=True,
                                         add_generation_prompt=answer is None, return_dict=True, return_tensors="pt")


def test_saved_files_are_safetensors_only(tiny_dir: Path) -> None:
    names = {p.name for p in tiny_dir.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl"))]


def test_loads_as_real_qwen_vl(loaded: tuple, tiny_dir: Path) -> None:
    processor, model = loaded
    assert (type(model).__name__, type(processor).__name__) == CLASSES[arch_of(tiny_dir)]
    tok = processor.tokenizer
    assert type(tok).__name__ == "Qwen2Tokenizer"
    assert tok.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == list(range(len(SPECIAL_TOKENS)))
    cfg = model.config
    assert cfg.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>") == processor.image_token_id
    assert cfg.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
    assert cfg.text_config.vocab_size >= len(tok)
    assert set(model.generation_config.eos_token_id) == {tok.convert_tokens_to_ids("<|im_end|>"), tok.eos_token_id,
                                                         tok.convert_tokens_to_ids("<|endoftext|>")}
    assert model.generation_config.pad_token_id == tok.pad_token_id
    n_params = sum(p.numel() for p in model.parameters())
    assert 100_000 <= n_params <= 1_000_000, n_params


def test_tokenizer_roundtrips_task_text(loaded: tuple) -> None:
    tok = loaded[0].tokenizer
    text = "<think> Patch 3 is mirrored: 1, 3, 0, 2. Which? </think> \\boxed{B}<|im_end|>"
    ids = tok(text).input_ids
    assert tok.decode(ids) == text
    assert ids[-1] == tok.convert_tokens_to_ids("<|im_end|>")
    assert len(ids) < len(text) / 2  # the BPE learned real merges, not bytes


@pytest.mark.parametrize("n_images", [1, 5])
def test_image_tokens_match_features(loaded: tuple, n_images: int) -> None:
    processor, model = loaded
    inputs = _inputs(processor, n_images)
    grid = inputs["image_grid_thw"]
    assert grid.shape == (n_images, 3)
    n_features = int((grid.prod(-1) // processor.image_processor.merge_size**2).sum())
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == n_features
    text = processor.tokenizer.decode(inputs["input_ids"][0])
    assert text.count("<|vision_start|>") == n_images and text.endswith("<|im_start|>assistant\n")
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (*inputs["input_ids"].shape, model.config.text_config.vocab_size)
    assert torch.isfinite(logits).all()


def test_generate_samples_new_tokens(loaded: tuple) -> None:
    processor, model = loaded
    inputs = _inputs(processor, 5)
    torch.manual_seed(0)
    out = model.generate(**inputs, max_new_tokens=8, do_sample=True)
    new = out[0, inputs["input_ids"].shape[1]:]
    assert 1 <= len(new) <= 8
    assert isinstance(processor.decode(new), str)


def test_training_step_reaches_vision_and_language(tiny_dir: Path) -> None:
    processor = transformers.AutoProcessor.from_pretrained(tiny_dir)
    model = transformers.AutoModelForImageTextToText.from_pretrained(tiny_dir).train()
    inputs = _inputs(processor, 1, answer="<think> one </think> \\boxed{0}")
    labels = inputs["input_ids"].clone()
    labels[labels == model.config.image_token_id] = -100
    loss = model(**inputs, labels=labels).loss
    assert torch.isfinite(loss)
    loss.backward()
    for part in (model.model.visual, model.model.language_model):
        grads = [p.grad for p in part.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)


def test_same_seed_same_files(tiny_dir: Path, tmp_path: Path) -> None:
    arch = arch_of(tiny_dir)
    again = build_tiny_model(tmp_path / "again", arch=arch, seed=0)
    for name in ("model.safetensors", "tokenizer.json", "config.json", "processor_config.json"):
        assert (again / name).read_bytes() == (tiny_dir / name).read_bytes(), name
    other = build_tiny_model(tmp_path / "other", arch=arch, seed=1)
    assert (other / "model.safetensors").read_bytes() != (tiny_dir / "model.safetensors").read_bytes()
    assert (other / "tokenizer.json").read_bytes() == (tiny_dir / "tokenizer.json").read_bytes()


def test_command_writes_model(tmp_path: Path) -> None:
    assert main(["tiny-model", str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / "model.safetensors").is_file() and arch_of(tmp_path / "cli") == "qwen2_5_vl"
    assert main(["tiny-model", str(tmp_path / "cli3"), "--arch", "qwen3_vl"]) == 0
    assert arch_of(tmp_path / "cli3") == "qwen3_vl"
    assert main(["tiny-model", str(tmp_path / "bad"), "--arch", "llava"]) == 2
