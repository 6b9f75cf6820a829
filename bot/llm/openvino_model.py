"""Preparing a GGUF model for OpenVINO GenAI, once: an OpenVINO IR folder (model, tokenizer, detokenizer).

OpenVINO GenAI 2026.4 builds a model straight from a GGUF file, but only from F16, Q8_0, Q4_0, Q4_1, Q4_K and Q6_K
tensors, and the bundled Qwen2.5-Coder-0.5B is mostly Q5_0. Its weights in those GGUF formats also decode slower
than OpenVINO's own weight compression: the group-of-32 scales cost more than they save (bench/README.md). So every
quantized tensor is first written out as F16 (gguf's own dequantization, no torch), GenAI builds the model from
that file, and NNCF compresses its weights to the format asked for: int8 (per channel; the default, as it answers
as the original does) or int4 (symmetric, groups of 128; the embedding and output layers stay int8, NNCF's
default). Only the compressed IR is kept. The folder appears complete or not at all (built under `.partial`, then
renamed), and a manifest names its source and format.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from tqdm import tqdm

from bot.llm.base import ModelError

_log = logging.getLogger(__name__)

IR_FILE = "openvino_model.xml"
MANIFEST = "memorybot-openvino.json"
WEIGHT_FORMATS = ("int4", "int8")


def is_prepared(ir_dir: Path) -> bool:
    """Whether `ir_dir` holds a whole IR folder (model, tokenizer, detokenizer)."""
    return all((ir_dir / name).is_file() for name in (IR_FILE, "openvino_tokenizer.xml", "openvino_detokenizer.xml"))


def is_prepared_from(ir_dir: Path, gguf_path: Path, weights: str) -> bool:
    """Whether `ir_dir` was prepared by `prepare_ir` from this very file (by name and size) in this format."""
    try:
        manifest = json.loads((ir_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    wanted = {"source": gguf_path.name, "source_bytes": gguf_path.stat().st_size, "weights": weights}
    return is_prepared(ir_dir) and all(manifest.get(key) == value for key, value in wanted.items())


def prepare_ir(gguf_path: Path, ir_dir: Path, *, weights: str, threads: int) -> None:
    """Build the IR of `gguf_path` with `weights` ("int4" or "int8") in `ir_dir` (first start only: about a minute
    and 3 GB of memory for the 0.5B model)."""
    import openvino as ov
    import openvino_genai as ov_genai

    if weights not in WEIGHT_FORMATS:
        raise ModelError(f"unknown OpenVINO weight format {weights!r}; use one of {', '.join(WEIGHT_FORMATS)}")
    partial = ir_dir.with_name(ir_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)  # an earlier attempt that was interrupted
    full = partial / "f16"
    full.mkdir(parents=True)
    _log.info("preparing %s for OpenVINO with %s weights (once, about a minute)", gguf_path.name, weights)
    try:
        write_as_f16(gguf_path, full / "model.gguf")
        # enable_save_ov_model writes the IR (and the tokenizers) next to the GGUF it reads
        ov_genai.LLMPipeline(str(full / "model.gguf"), "CPU", INFERENCE_NUM_THREADS=threads,
                             enable_save_ov_model=True)
        model = compress_weights(ov.Core().read_model(str(full / IR_FILE)), weights)
        ov.save_model(model, str(partial / IR_FILE), compress_to_fp16=False)
    except Exception as exc:  # gguf, GenAI and NNCF each have their own errors; the .partial folder is redone
        raise ModelError(f"cannot prepare {gguf_path.name} for OpenVINO: {exc}") from exc
    for tokenizer in full.glob("openvino_*tokenizer.*"):
        tokenizer.rename(partial / tokenizer.name)
    shutil.rmtree(full)
    manifest = {"source": gguf_path.name, "source_bytes": gguf_path.stat().st_size, "weights": weights,
                "openvino": ov.get_version()}
    (partial / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(ir_dir, ignore_errors=True)  # one from another source or format, replaced as a whole
    partial.rename(ir_dir)
    _log.info("OpenVINO model ready in %s", ir_dir)


def compress_weights(model: Any, weights: str) -> Any:
    """The model with its weights compressed by NNCF (data-free): int4 symmetric in groups of 128, or int8."""
    # NNCF sends usage telemetry unless this variable is set (read at its import; it gates nothing else).
    os.environ.setdefault("NNCF_CI", "1")
    import nncf

    if weights == "int4":
        return nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT4_SYM, group_size=128, ratio=1.0)
    return nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM)


def write_as_f16(gguf_path: Path, target: Path) -> None:
    """Write `gguf_path` to `target` with every quantized tensor dequantized to F16 (metadata unchanged), one
    tensor in memory at a time."""
    import gguf
    import numpy as np
    from gguf.quants import dequantize, quant_shape_from_byte_shape

    plain = (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16)
    reader = gguf.GGUFReader(gguf_path)
    writer = gguf.GGUFWriter(target, arch=reader.get_field("general.architecture").contents())
    for field in reader.fields.values():
        if field.name == "general.architecture" or field.name.startswith("GGUF."):
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)
    for tensor in reader.tensors:
        if tensor.tensor_type in plain:
            data = np.asarray(tensor.data)
            writer.add_tensor_info(tensor.name, data.shape, data.dtype, data.nbytes, raw_dtype=tensor.tensor_type)
        else:
            shape = quant_shape_from_byte_shape(np.asarray(tensor.data).shape, tensor.tensor_type)
            writer.add_tensor_info(tensor.name, shape, np.dtype(np.float16), int(np.prod(shape)) * 2,
                                   raw_dtype=gguf.GGMLQuantizationType.F16)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in tqdm(reader.tensors, desc=f"Preparing {gguf_path.name} for OpenVINO", unit="tensor"):
        data = np.asarray(tensor.data)
        if tensor.tensor_type not in plain:
            data = dequantize(data, tensor.tensor_type).astype(np.float16)
        writer.write_tensor_data(data)
    writer.close()
