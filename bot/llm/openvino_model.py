"""Preparing a GGUF model for OpenVINO GenAI, once: an OpenVINO IR folder (model, tokenizer, detokenizer).

OpenVINO GenAI 2026.4 builds a model straight from a GGUF file, but only from F16, Q8_0, Q4_0, Q4_1, Q4_K and Q6_K
tensors. The bundled Qwen2.5-Coder-0.5B is mostly Q5_0 (its 896-wide rows rule out the K-quants), so its Q5_0
tensors are first rewritten as Q8_0: exactly the same values (same scale, q8 = q5 - 16), no torch involved. The
pipeline then saves what it built as IR, which later starts load in seconds. The folder appears complete or not
at all (built under `.partial`, then renamed).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from bot.llm.base import ModelError

_log = logging.getLogger(__name__)

IR_FILE = "openvino_model.xml"


def is_prepared(ir_dir: Path) -> bool:
    return (ir_dir / IR_FILE).is_file() and (ir_dir / "openvino_tokenizer.xml").is_file()


def prepare_ir(gguf_path: Path, ir_dir: Path, threads: int) -> None:
    """Build the IR of `gguf_path` in `ir_dir` (first start only: about 40 s and 2 GB of memory)."""
    import openvino_genai as ov_genai

    partial = ir_dir.with_name(ir_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)  # an earlier attempt that was interrupted
    partial.mkdir(parents=True)
    converted = partial / "model.gguf"
    _log.info("preparing %s for OpenVINO (once, about a minute)", gguf_path.name)
    rewrite_q5_0(gguf_path, converted)
    try:  # enable_save_ov_model writes the IR next to the GGUF it reads
        ov_genai.LLMPipeline(str(converted), "CPU", INFERENCE_NUM_THREADS=threads, enable_save_ov_model=True)
    except RuntimeError as exc:
        raise ModelError(f"OpenVINO cannot build {gguf_path.name}: {exc}") from exc
    converted.unlink()
    partial.rename(ir_dir)


def rewrite_q5_0(gguf_path: Path, target: Path) -> None:
    """Write `gguf_path` to `target` with every Q5_0 tensor as Q8_0 (other tensors and metadata unchanged)."""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(gguf_path)
    writer = gguf.GGUFWriter(target, arch=reader.get_field("general.architecture").contents())
    for field in reader.fields.values():
        if field.name == "general.architecture" or field.name.startswith("GGUF."):
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)
    tensors = []
    for tensor in reader.tensors:
        data, kind = np.asarray(tensor.data), tensor.tensor_type
        if kind == gguf.GGMLQuantizationType.Q5_0:
            data, kind = q5_0_as_q8_0(data), gguf.GGMLQuantizationType.Q8_0
        tensors.append(data)
        writer.add_tensor_info(tensor.name, data.shape, data.dtype, data.nbytes, raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for data in tensors:
        writer.write_tensor_data(data)
    writer.close()


def q5_0_as_q8_0(raw: Any) -> Any:
    """Q5_0 blocks (f16 scale, 32 high bits, 16 bytes of low nibbles) as Q8_0 blocks (f16 scale, 32 int8)."""
    import numpy as np

    blocks = raw.reshape(-1, 22)
    high = blocks[:, 2:6].copy().view("<u4")[:, 0]
    low = blocks[:, 6:22]
    values = np.concatenate([low & 0x0F, low >> 4], axis=1).astype(np.int16)
    values |= ((high[:, None] >> np.arange(32, dtype=np.uint32)) & 1).astype(np.int16) << 4
    out = np.empty((blocks.shape[0], 34), dtype=np.uint8)
    out[:, 0:2] = blocks[:, 0:2]
    out[:, 2:] = (values - 16).astype(np.int8).view(np.uint8)
    return out.reshape(raw.shape[0], -1)
