"""Models in a store: a Hugging Face folder committed as one unit, and the weights-only view of a checkpoint.

``push_model`` is how a base model reaches the store (``ssrl model push``): the folder is checked first
(``config.json`` with a ``model_type``, safetensors weights whose headers cover their files, a tokenizer and a
processor; pickled files refused), so a trainer never finds out on a GPU node that its model is unusable. The
commit record at the model's root is what ``resolve_model`` accepts.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from ssrl.errors import SSRLError
from ssrl.store import Store
from ssrl.store.transfer import COMMIT, commit, read_commit, upload_tree

MODEL_KIND = "hf-model"
#: Files ``torch.load`` would unpickle (arbitrary code on load): never needed, since ssrl loads safetensors only.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
#: Trainer state in a checkpoint's top level that a model does not need (optimizer, scheduler and RNG are pickles).
_TRAINING_STATE = {"trainer_state.json", COMMIT}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
_PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")


def is_weights_file(rel: str) -> bool:
    """Whether a checkpoint file belongs to the model itself: weights, config, processor, tokenizer, chat template.

    Only top-level files count: DeepSpeed's ``global_step<n>/`` optimizer shards and TensorBoard ``runs/`` stay out,
    as do optimizer, scheduler and RNG states (pickles) and the Trainer's own state.

    >>> [is_weights_file(f) for f in ("model-00001-of-00002.safetensors", "config.json", "chat_template.jinja",
    ...                                "optimizer.pt", "rng_state_1.pth", "trainer_state.json", "global_step4/x.pt")]
    [True, True, True, False, False, False, False]
    """
    if "/" in rel or rel in _TRAINING_STATE:
        return False
    name = rel.lower()
    return name.endswith((".safetensors", ".json", ".jinja", ".tiktoken")) or name in (
        "merges.txt", "vocab.txt", "tokenizer.model", "spiece.model")


def model_problems(folder: Path, *, allow_pickle: bool = False) -> list[str]:
    """Everything that keeps ``folder`` from loading with ``from_pretrained`` (safetensors only); empty when fine."""
    from safetensors import SafetensorError, safe_open

    if not folder.is_dir():
        return [f"{folder} is not a folder"]
    files = {}  # what upload_tree sends: hidden files and folders stay behind
    for path in folder.rglob("*"):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and not any(part.startswith(".") for part in rel.split("/")):
            files[rel] = path
    problems = []
    try:
        config = json.loads((folder / "config.json").read_text())
        if not isinstance(config, dict) or not config.get("model_type"):
            problems.append("config.json has no model_type (the Auto classes need it)")
    except FileNotFoundError:
        problems.append("no config.json")
    except (ValueError, UnicodeDecodeError) as e:
        problems.append(f"config.json is not valid JSON ({e})")
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weights = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError):
            weights = []
            problems.append("model.safetensors.index.json has no weight_map")
        problems += [f"{w} (named in model.safetensors.index.json) is missing" for w in weights if w not in files]
        weights = [w for w in weights if w in files]
    else:
        weights = sorted(f for f in files if f.endswith(".safetensors") and "/" not in f)
        if not weights:
            problems.append("no safetensors weights (model.safetensors or model.safetensors.index.json + shards)")
    for rel in weights:
        try:
            with safe_open(str(files[rel]), framework="numpy"):
                pass
        except (SafetensorError, OSError) as e:
            problems.append(f"{rel} is not a complete safetensors file ({e})")
    if not any(f in files for f in _TOKENIZER_FILES):
        problems.append(f"no tokenizer ({' or '.join(_TOKENIZER_FILES)})")
    if not any(f in files for f in _PROCESSOR_FILES):
        problems.append(f"no image processor ({' or '.join(_PROCESSOR_FILES)}; ssrl trains vision-language models)")
    pickles = sorted(f for f in files if PurePosixPath(f).suffix.lower() in PICKLE_SUFFIXES)
    if pickles and not allow_pickle:
        shown = ", ".join(pickles[:5]) + (f" and {len(pickles) - 5} more" if len(pickles) > 5 else "")
        problems.append(f"pickled files {shown}: loading them runs code; remove them (ssrl loads safetensors only) "
                        "or pass --allow-pickle to upload them as they are")
    return problems


def push_model(folder: str | Path, store: Store, *, allow_pickle: bool = False, workers: int = 4,
               progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Check ``folder``, upload it to ``store``'s root and commit it; returns the commit record.

    Nothing is uploaded when the folder has a problem. A model already at the URL vanishes for readers (its record
    goes first) while the new one uploads, unchanged files are not sent again, and files only the old model had are
    deleted after the new record exists.
    """
    folder = Path(folder)
    problems = model_problems(folder, allow_pickle=allow_pickle)
    if problems:
        raise SSRLError(f"{folder} is not a loadable model folder: " + "; ".join(problems))
    old = read_commit(store, "")
    if old is None and store.exists("latest"):  # resolve_model would take the model and hide the run's checkpoints
        raise SSRLError(f"{store.url} is a training run (it has a latest checkpoint pointer); push to another URL")
    if old is not None:
        if old.get("kind") != MODEL_KIND:
            raise SSRLError(f"{store.url} holds a committed folder that is not a model; push to another URL")
        store.delete(COMMIT)
    files = upload_tree(folder, store, workers=workers, progress=progress)
    config = json.loads((folder / "config.json").read_text())
    record = commit(store, "", files, kind=MODEL_KIND, model_type=config["model_type"],
                    architectures=config.get("architectures", []), source=folder.resolve().name)
    for rel in sorted(set(old["files"]) - set(files) if old else ()):
        store.delete(rel)
    return record
