"""One hierarchy of errors. Every error carries a hint saying how to fix it."""
from __future__ import annotations


class EdgeLLMError(Exception):
    """Base of every error edgellm raises on purpose."""

    default_hint = ""

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint if hint is not None else self.default_hint
        super().__init__(f"{message}\n  hint: {self.hint}" if self.hint else message)


class ModelFormatError(EdgeLLMError):
    """A model file is corrupt, truncated or not what its name says."""
    default_hint = "re-download or re-export the file; edgellm validates headers before trusting sizes"


class ConfigError(EdgeLLMError):
    """config.json (or another config file) is missing keys or holds invalid values."""
    default_hint = "compare config.json with the model's original on its hub page"


class UnsupportedArchitectureError(EdgeLLMError):
    default_hint = "open an issue naming the architecture; supported ones are listed above"


class UnsafeCheckpointError(EdgeLLMError):
    default_hint = "convert the checkpoint to safetensors (e.g. with the safetensors `convert` space) and retry"


class TokenizerError(EdgeLLMError):
    default_hint = "check tokenizer.json; pass --pre-tokenizer NAME only if you know the model's pre-tokenizer"


class ConversionError(EdgeLLMError):
    default_hint = "run with --verbose for the failing tensor; the output path was left untouched"


class OutputPathError(EdgeLLMError):
    default_hint = "choose a writable output directory with enough free space"


class UnsafePathError(EdgeLLMError):
    default_hint = "artifact files must stay inside the artifact folder; rebuild the artifact"


class QuantizationError(EdgeLLMError):
    default_hint = "pick another quant type (`edgellm convert --help` lists them) or block size"


class BackendUnavailableError(EdgeLLMError):
    """A native library (llama.cpp, onnxruntime, NVML) cannot be imported."""
    default_hint = "pip install 'edgellm[onnx]' for onnxruntime; llama-cpp-python is a core dependency"


class ArtifactError(EdgeLLMError):
    default_hint = "point at a .gguf/.onnx file, an artifact folder with edgellm.json, or a bundle"


class ContextOverflowError(EdgeLLMError):
    default_hint = "shorten the prompt, lower max_tokens, or load with a larger n_ctx"


class ChatTemplateError(EdgeLLMError):
    default_hint = "fix the chat template in tokenizer_config.json or pass messages the template accepts"


class GenerationError(EdgeLLMError):
    default_hint = "check the sampling parameters"


class InvalidInputError(GenerationError):
    """A prompt the model cannot take: token ids outside the vocabulary, text that is not encodable as UTF-8."""
    default_hint = "pass token ids in [0, n_vocab) and text without lone surrogates (encode it as UTF-8 first)"


class ModelClosedError(GenerationError):
    default_hint = "the Model was closed (or its `with` block ended); load it again with edgellm.load()"


class OptionError(EdgeLLMError):
    """A load option (n_ctx, threads, n_gpu_layers) is out of range."""
    default_hint = "n_ctx >= 1, threads None or 1..1024, n_gpu_layers >= -1 (see edgellm.load's docstring)"


class DeviceError(EdgeLLMError):
    default_hint = "run `edgellm devices` to see what was detected"


class ProfileError(EdgeLLMError):
    default_hint = "run `edgellm devices --profiles` to list the known profiles"


class BudgetError(EdgeLLMError):
    """A budget string (memory, speed, quality) cannot be parsed."""
    default_hint = "write memory as e.g. 2GiB, 512MB or 1.5G; speeds as a number of tokens/s"


class InsufficientMemoryError(EdgeLLMError):
    default_hint = "pick a smaller quant, a shorter context, or a device with more memory"


class BundleError(EdgeLLMError):
    default_hint = "rebuild the bundle with `edgellm bundle`; checksums protect against partial copies"


class EvaluationError(EdgeLLMError):
    """Perplexity/KLD evaluation cannot run (text too short, vocabularies differ)."""
    default_hint = "pass a longer text (--text-file) and artifacts of the same model"


class BudgetNotMetError(EdgeLLMError):
    """No candidate (quant, pruning) meets the quality/speed budget; `table` holds what was measured."""
    default_hint = "loosen the budget (--max-kld, --max-ppl-increase, --min-tps) or try other candidates"

    def __init__(self, message: str, hint: str | None = None, table: list[dict] | None = None) -> None:
        super().__init__(message, hint)
        self.table = list(table or [])


# Optional dependency -> the extra that installs it (pyproject's [project.optional-dependencies]).
EXTRAS: dict[str, str] = {"onnx": "onnx", "onnxruntime": "onnx", "onnxruntime_genai": "onnx",
                          "starlette": "server", "uvicorn": "server", "pynvml": "cuda"}


def missing_extra(exc: ImportError, what: str) -> BackendUnavailableError:
    """The typed error for an optional package that cannot be imported: names the package and the extra."""
    name = (getattr(exc, "name", None) or "").split(".")[0]
    extra = EXTRAS.get(name)
    hint = f"pip install 'edgellm[{extra}]'" if extra else f"pip install {name or 'the missing package'}"
    return BackendUnavailableError(f"{what} needs the {name or 'missing'} package, which cannot be imported ({exc})",
                                   hint)
