"""The local language model: backends chosen by name, the bundled models, and the runner that owns them."""

from __future__ import annotations

from pathlib import Path

from bot.llm.base import Backend, ModelError
from bot.llm.bundled import BUNDLED, ensure_gguf
from bot.settings import Settings


def resolve_model(settings: Settings) -> Path | str:
    """Where the transformers backend loads from: a saved model folder, or a directory / hub id as given.

    A bundled name or a `.gguf` path is converted once to `DATA_DIR/models/<name>-bf16`.
    """
    from bot.llm.transformers_backend import _is_saved_model, convert_gguf

    spec = settings.model.name
    if spec in BUNDLED:
        gguf = ensure_gguf(BUNDLED[spec], settings.model_dir)
        saved = settings.model_dir / f"{spec}-bf16"
    elif spec.endswith(".gguf"):
        gguf = Path(spec).expanduser()
        if not gguf.is_file():
            raise ModelError(f"MODEL names {gguf}, which does not exist; fix MODEL or put the file there")
        saved = settings.model_dir / f"{gguf.stem}-bf16"
    else:
        return spec
    if not _is_saved_model(saved):
        settings.model_dir.mkdir(parents=True, exist_ok=True)
        convert_gguf(gguf, saved)
    return saved


def resolve_gguf(settings: Settings) -> Path:
    """The GGUF file the llama.cpp backend loads: a bundled model's joined file, or the `.gguf` path given."""
    spec = settings.model.name
    if spec in BUNDLED:
        return ensure_gguf(BUNDLED[spec], settings.model_dir)
    gguf = Path(spec).expanduser()
    if spec.endswith(".gguf") and gguf.is_file():
        return gguf
    raise ModelError(
        f"MODEL_BACKEND={settings.model.backend} needs a GGUF model: MODEL={spec!r} is neither a bundled model "
        f"({', '.join(BUNDLED)}) nor an existing .gguf file"
    )


def resolve_openvino(settings: Settings) -> Path:
    """The OpenVINO IR folder the openvino backend loads: one given as MODEL, or the one made once from a bundled
    model or a `.gguf` file under `DATA_DIR/models/<name>-openvino-<weights>`."""
    from bot.llm.openvino_model import is_prepared, is_prepared_from, prepare_ir

    spec, weights = settings.model.name, settings.model.openvino_weights
    if is_prepared(Path(spec).expanduser()):
        return Path(spec).expanduser()
    gguf = resolve_gguf(settings)
    ir_dir = settings.model_dir / f"{spec if spec in BUNDLED else gguf.stem}-openvino-{weights}"
    if not is_prepared_from(ir_dir, gguf, weights):
        settings.model_dir.mkdir(parents=True, exist_ok=True)
        prepare_ir(gguf, ir_dir, weights=weights, threads=settings.model.threads)
    return ir_dir


def load_backend(settings: Settings) -> Backend:
    """Load the configured model with the configured backend (blocking)."""
    if settings.model.backend == "openai":
        from bot.llm.openai_backend import OpenAICompatibleBackend

        model = settings.model
        return OpenAICompatibleBackend(model.openai_base_url, model.openai_api_key.reveal(), model.name,
                                       context_tokens=model.context_tokens)
    if settings.model.backend == "llama_cpp":
        from bot.llm.llama_cpp_backend import LlamaCppBackend

        return LlamaCppBackend(
            resolve_gguf(settings), threads=settings.model.threads, context_tokens=settings.model.context_tokens
        )
    if settings.model.backend == "openvino":
        from bot.llm.openvino_backend import OpenVinoBackend

        return OpenVinoBackend(
            resolve_openvino(settings), threads=settings.model.threads, context_tokens=settings.model.context_tokens,
            activation_group=settings.model.openvino_activation_group,
        )
    if settings.model.backend == "transformers":
        from bot.llm.transformers_backend import TransformersBackend

        return TransformersBackend(
            resolve_model(settings), threads=settings.model.threads, context_tokens=settings.model.context_tokens
        )
    raise ModelError(f"unknown MODEL_BACKEND {settings.model.backend!r}")
