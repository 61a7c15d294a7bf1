"""A tiny randomly initialised Qwen2.5-VL or Qwen3-VL, built offline, for demos and tests of the training stack.

The model is the real ``Qwen2_5_VLForConditionalGeneration`` (or ``Qwen3VLForConditionalGeneration``)
architecture, only shrunk, saved with ``save_pretrained`` next to a real processor, so
``AutoProcessor.from_pretrained`` and ``AutoModelForImageTextToText.from_pretrained`` load it through exactly
the path a real checkpoint takes: code that works on the tiny folder works on ``Qwen/Qwen2.5-VL-3B-Instruct``
or ``Qwen/Qwen3-VL-4B-Instruct``. Nothing is downloaded: the byte-level BPE tokenizer is trained here on text
shaped like our task prompts and responses.

torch and transformers are imported lazily so the generator-only install can import ``ssrl``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ssrl.tasks.base import FORMAT_INSTRUCTION, LETTERS, SEQ_SEP

__all__ = ["ARCHITECTURES", "CHAT_TEMPLATE", "SPECIAL_TOKENS", "build_tiny_model"]

#: Qwen's special tokens, given ids 0.. in this order (the real vocabulary has them at 151643..).
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

#: The Qwen2-VL / Qwen2.5-VL chat template (as shipped with the Instruct checkpoints): one
#: ``<|vision_start|><|image_pad|><|vision_end|>`` per image part; the processor expands ``<|image_pad|>``.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

#: Images are resized to 56²..224² pixels: 4..64 patches of 14 px, 1..16 tokens after the 2x2 merge.
MIN_PIXELS = 56 * 56
MAX_PIXELS = 224 * 224


def _corpus(n_prompts: int = 400) -> list[str]:
    """Prompt- and response-like text covering the words, digits, letters and tags our tasks use.

    Uses a fixed generator, not the model seed: every tiny model shares one tokenizer.
    """
    rng = np.random.default_rng(1234)
    facing = ("facing the left side of the image", "facing the right side of the image", "facing me (the viewer)",
              "facing away from me, into the scene")
    directions = ("Left", "Right", "Front", "Back", "Left-Front", "Right-Front", "Right-Back", "Left-Back")
    words = ("the image", "region", "patch", "camera", "closest", "farthest", "rotated", "flipped", "candidate",
             "depth", "left", "right", "top", "bottom", "row", "column", "label", "marker", "mirrored", "order",
             "which", "what", "where", "when", "how", "why", "is", "are", "was", "were", "the", "a", "an", "of",
             "to", "in", "on", "and", "or", "not", "it", "this", "that", "these", "from", "with", "by", "at", "so",
             "because", "first", "second", "third", "next", "then", "last", "one", "two", "three", "four", "five",
             "number", "numbers", "corner", "edge", "centre", "middle", "upper", "lower", "near", "far", "nearer",
             "farther", "behind", "front", "back", "above", "below", "between", "object", "objects", "scene",
             "shadow", "light", "floor", "wall", "sky", "box", "sphere", "colour", "texture", "line", "lines",
             "continues", "matches", "fits", "boundary", "seems", "looks", "should", "must", "could", "answer",
             "option", "options", "letter", "degrees", "upside", "down", "horizontal", "vertical", "clockwise",
             "orientation", "position", "relation", "distance", "smaller", "larger", "bigger", "size", "grid",
             "shuffled", "restored", "original", "reading", "check", "compare", "therefore", "hence", "likely")

    def seq(k: int) -> str:
        return SEQ_SEP.join(str(int(i)) for i in rng.permutation(k))

    def opts(items: list[str]) -> str:
        return " ".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(items))

    texts: list[str] = []
    for i in range(n_prompts):
        rows, cols = int(rng.integers(2, 4)), int(rng.integers(2, 4))
        n = rows * cols
        kind = i % 6
        if kind == 0:
            body = (f"The image was cut into a grid of {rows} rows and {cols} columns of patches, and the patches "
                    f"were shuffled. Each patch carries its label (0 to {n - 1}) at its top-left corner. Restore the "
                    "original image: reading the restored image row by row, left to right and top to bottom, list "
                    "the label of the patch that belongs at each position. Write the labels separated by a comma "
                    f"and a space, for example \\boxed{{{seq(n)}}}.")
            answer = seq(n)
        elif kind == 1:
            body = (f"The image was cut into a grid of {rows} rows and {cols} columns of patches, labelled 0 to "
                    f"{n - 1} at their top-left corners in reading order. Exactly one patch has been flipped "
                    "(mirrored) in place. Which patch was flipped? Answer with its label only, for example "
                    "\\boxed{1}.")
            answer = str(int(rng.integers(n)))
        elif kind == 2:
            body = ("The first image has a square region blacked out. The next four images are candidate patches: "
                    "A. B. C. D. Which candidate exactly fills the black region? Answer with the option letter, "
                    "for example \\boxed{A}.")
            answer = LETTERS[int(rng.integers(4))]
        elif kind == 3:
            k = int(rng.integers(3, 6))
            body = (f"The image has {k} regions marked with the numbers {', '.join(map(str, range(1, k)))} and {k}. "
                    "Order them by their distance from the camera, from the closest to the farthest, and write the "
                    "marker numbers separated by a comma and a space, for example "
                    f"\\boxed{{{SEQ_SEP.join(map(str, range(1, k + 1)))}}}.")
            answer = SEQ_SEP.join(str(int(j) + 1) for j in rng.permutation(k))
        elif kind == 4:
            picks = [directions[j] for j in rng.permutation(len(directions))[:4]]
            body = (f"The image has two regions marked 1 and 2. Suppose a camera is at region "
                    f"{int(rng.integers(1, 3))}, {facing[int(rng.integers(4))]}. From the camera's point of view, "
                    f"where is region {int(rng.integers(1, 3))}? {opts(picks)}. Use cues such as depth, orientation "
                    "and 3D relations. Answer with the option letter (A, B, C or D), for example \\boxed{A}.")
            answer = LETTERS[int(rng.integers(4))]
        else:
            angles = [f"{(j * 90)} degrees" for j in rng.permutation(4)]
            body = ("This image may have been rotated counter-clockwise by 0, 90, 180 or 270 degrees. By how many "
                    f"degrees was it rotated? {opts(angles)}. Answer with the option letter, for example \\boxed{{A}}.")
            answer = LETTERS[int(rng.integers(4))]
        texts.append(body + " " + FORMAT_INSTRUCTION)
        reason = " ".join(words[int(j)] for j in rng.integers(len(words), size=int(rng.integers(4, 12))))
        texts.append(f"<think> First I look at {reason}. So the answer is {answer}. </think> \\boxed{{{answer}}}")
        texts.append(f"<think>\nWhich {words[int(rng.integers(len(words)))]} is nearer? What, where, how many, "
                     f"why: {reason}.\n</think>\n\\boxed{{{answer}}}")
    return texts


def _train_tokenizer(vocab_size: int) -> Any:
    """Train a byte-level BPE whose pipeline matches ``Qwen2Tokenizer`` and wrap it as one."""
    import transformers
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    if int(transformers.__version__.split(".")[0]) < 5:
        raise RuntimeError(f"build_tiny_model needs transformers>=5 (tokenizer API), not {transformers.__version__}")
    # Same pipeline as ``Qwen2Tokenizer``: on load it rebuilds normaliser and pre-tokeniser from its own code and
    # keeps only vocab + merges from tokenizer.json, so training with anything else would split differently later.
    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_corpus(), trainer=trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    # Build it the way ``from_pretrained`` rebuilds it (vocab + merges), so save -> load is the identity.
    tokenizer = Qwen2Tokenizer(
        vocab=model["vocab"],
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=[t for t in SPECIAL_TOKENS if t not in ("<|endoftext|>", "<|im_end|>")],
        model_max_length=32768,
        errors="replace",
        split_special_tokens=False,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


ARCHITECTURES = ("qwen2_5_vl", "qwen3_vl")


def build_tiny_model(
    out_dir: str | Path,
    *,
    arch: str = "qwen2_5_vl",
    seed: int = 0,
    vocab_size: int = 1024,
    hidden_size: int = 64,
    layers: int = 2,
    vision_depth: int = 2,
    vision_hidden: int = 32,
) -> Path:
    """Build and save a tiny random Qwen2.5-VL or Qwen3-VL (model, processor, tokenizer, chat template) into
    ``out_dir``. Same arguments -> byte-identical files. Returns ``out_dir``.
    """
    import torch
    from transformers import GenerationConfig

    if arch not in ARCHITECTURES:
        raise ValueError(f"arch must be one of {ARCHITECTURES}, got {arch!r}")
    if hidden_size % 16 or vision_hidden % 16:
        raise ValueError(f"hidden_size and vision_hidden must be multiples of 16, got {hidden_size}, {vision_hidden}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    tokenizer = _train_tokenizer(vocab_size)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    if len(tokenizer) > vocab_size:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens, more than vocab_size={vocab_size}")

    heads = hidden_size // 16  # head_dim 16: mrope_section must sum to head_dim / 2 = 8 (temporal, height, width)
    text_config = {
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": max(1, heads // 2),
        "max_position_embeddings": 4096,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "tie_word_embeddings": False,
    }
    vision_config = {
        "depth": vision_depth,
        "hidden_size": vision_hidden,
        "intermediate_size": 2 * vision_hidden,
        "num_heads": vision_hidden // 16,
        "out_hidden_size": hidden_size,  # the merger projects straight into the language model's width
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }
    tokens = {"image_token_id": ids["<|image_pad|>"], "video_token_id": ids["<|video_pad|>"],
              "vision_start_token_id": ids["<|vision_start|>"], "vision_end_token_id": ids["<|vision_end|>"]}
    build = _qwen3_vl if arch == "qwen3_vl" else _qwen2_5_vl
    with torch.random.fork_rng(devices=[]):  # seed the weights without disturbing the caller's RNG
        torch.manual_seed(seed)
        model, processor = build(text_config, vision_config, tokens, tokenizer)
    # Stop at the end of the assistant turn (or of the text); no sampling defaults: the trainer sets those.
    model.generation_config = GenerationConfig(
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        pad_token_id=ids["<|endoftext|>"],
    )
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    return out


def _qwen2_5_vl(text: dict, vision: dict, tokens: dict, tokenizer: Any) -> tuple[Any, Any]:
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    text = {**text, "max_window_layers": text["num_hidden_layers"],
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]}}
    vision = {**vision, "patch_size": 14, "window_size": 112, "fullatt_block_indexes": [vision["depth"] - 1],
              "tokens_per_second": 2}
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False, **tokens)
    size = {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}
    processor = Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(size=size), tokenizer=tokenizer,
                                    video_processor=Qwen2VLVideoProcessor(size=size), chat_template=CHAT_TEMPLATE)
    return Qwen2_5_VLForConditionalGeneration(config), processor


def _qwen3_vl(text: dict, vision: dict, tokens: dict, tokenizer: Any) -> tuple[Any, Any]:
    """Qwen3-VL: 16-px patches with learned (interpolated) position embeddings, interleaved M-RoPE, DeepStack
    features from the vision tower fed into the first language layers; same special tokens and template."""
    from transformers import (
        Qwen2VLImageProcessor,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    text = {**text, "head_dim": 16, "rope_parameters": {"rope_type": "default", "rope_theta": 5000000.0,
                                                        "mrope_section": [2, 3, 3], "mrope_interleaved": True}}
    vision = {**vision, "patch_size": 16, "num_position_embeddings": 64, "deepstack_visual_indexes": [0]}
    config = Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False, **tokens)
    size = {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}
    image_processor = Qwen2VLImageProcessor(size=size, patch_size=16, merge_size=2, image_mean=[0.5] * 3,
                                            image_std=[0.5] * 3)
    processor = Qwen3VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                 video_processor=Qwen3VLVideoProcessor(size=size, patch_size=16),
                                 chat_template=CHAT_TEMPLATE)
    return Qwen3VLForConditionalGeneration(config), processor
