"""Compression methods. Importing this package registers every built-in method."""

from squeezebench.methods.base import (  # noqa: F401
    METHODS,
    ExportResult,
    Method,
    apply_chain,
    MethodConfig,
    MethodContext,
    chain_from_links,
    chain_spec,
    parse_chain,
    parse_method,
    register_export,
    register_runtime_choice,
    register_method,
)
from squeezebench.methods import precision  # noqa: F401  (registers original, fp16, bf16)
from squeezebench.methods import prune_unstructured, prune_structured, prune_2of4  # noqa: F401  (prune-*)
from squeezebench.methods import clustering  # noqa: F401  (cluster-kmeans)
from squeezebench.methods import export_onnx  # noqa: F401  (onnx, onnx-int8-dynamic, onnx-int8-static)
from squeezebench.methods import export_gguf  # noqa: F401  (gguf, gguf-q4_0, gguf-q4_k_m, gguf-q8_0: llama.cpp)
from squeezebench.methods import export_ct2  # noqa: F401  (ct2, ct2-int8, ct2-int8-float32: CTranslate2)
from squeezebench.methods import export_openvino, export_torchscript, torch_compile  # noqa: F401  (openvino*, torchscript, torch-compile)
from squeezebench.methods import weight_only  # noqa: F401  (int8-weight-only, int4-weight-only)
from squeezebench.methods import quantization  # noqa: F401  (int8-dynamic, int8-static)
from squeezebench.methods import bnb  # noqa: F401  (bnb-int8, bnb-nf4; CUDA only)
from squeezebench.methods import gptq, awq  # noqa: F401  (gptq, awq: calibrated 4-bit weight-only)
from squeezebench.methods import distillation  # noqa: F401, E402  (distill: fine-tune towards the original)
from squeezebench.methods import student  # noqa: F401, E402  (student: a smaller model trained on the teacher)
