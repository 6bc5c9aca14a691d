"""Typed load options (issue 12): each runtime's dataclass, unknown or inapplicable keys refused with the valid
ones listed, capability flags consulted before a feature is used. Pure Python: milliseconds."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from edgellm.errors import OptionError
from edgellm.loading import _backend_options
from edgellm.runtimes.base import Capabilities, LoadOptions, register_runtime, runtime_capabilities
from edgellm.runtimes.options import LlamaCppOptions, OnnxOptions, parse_options


def test_keywords_become_the_runtimes_dataclass() -> None:
    opts = parse_options("llama.cpp", {"speculative": "prompt-lookup", "num_pred_tokens": 4, "n_batch": 64})
    assert opts == LlamaCppOptions(speculative="prompt-lookup", num_pred_tokens=4, n_batch=64)
    assert opts.llama_kwargs() == {"n_batch": 64, "swa_full": True}    # speculative keeps the full SWA cache
    assert parse_options("onnxruntime", {"prefill_chunk": 32}) == OnnxOptions(prefill_chunk=32)


def test_another_backends_key_names_that_backend_and_lists_the_valid_ones() -> None:
    with pytest.raises(OptionError) as err:
        parse_options("onnxruntime", {"speculative": "prompt-lookup"})
    assert "llama.cpp option" in err.value.message and "runs on onnxruntime" in err.value.message
    assert "prefill_chunk, allow_spinning, session_config" in err.value.hint
    with pytest.raises(OptionError) as err:
        parse_options("llama.cpp", {"prefil_chunk": 3})
    assert "prefil_chunk" in err.value.message and "speculative" in err.value.hint


@pytest.mark.parametrize("bad", [{"speculative": "medusa"}, {"n_batch": 0}, {"flash_attn": "yes"},
                                 {"num_pred_tokens": True}])
def test_bad_values_are_option_errors(bad: dict[str, object]) -> None:
    with pytest.raises(OptionError):
        parse_options("llama.cpp", bad)


def test_load_options_typed_parses_extra_once() -> None:
    assert LoadOptions(extra={"cache_prompt": False}).typed(LlamaCppOptions).cache_prompt is False
    given = OnnxOptions(prefill_chunk=8)
    assert LoadOptions(backend=given).typed(OnnxOptions) is given
    with pytest.raises(OptionError):
        LoadOptions(extra={"speculative": "prompt-lookup"}).typed(OnnxOptions)


@dataclass(frozen=True)
class _PluginOptions:
    speculative: str | None = None


def test_capabilities_are_consulted_before_a_feature_is_used() -> None:
    register_runtime("test-plugin-nospec", lambda p, o: None, ("test-nospec",),  # type: ignore[arg-type, return-value]  # never opened here
                     capabilities=Capabilities(), options=_PluginOptions)
    assert runtime_capabilities("test-plugin-nospec") == Capabilities()
    assert runtime_capabilities("llama.cpp").speculative  # type: ignore[union-attr]  # registered with flags
    with pytest.raises(OptionError, match="cannot do speculative decoding"):
        _backend_options("test-plugin-nospec", None, {"speculative": "draft"})
    assert _backend_options("test-plugin-nospec", None, {}) == _PluginOptions()
    assert _backend_options("llama.cpp", None, {"speculative": "prompt-lookup"}).speculative == "prompt-lookup"


def test_options_object_and_keywords_do_not_mix(tmp_path: Path) -> None:
    with pytest.raises(OptionError, match="not both"):
        _backend_options("llama.cpp", LlamaCppOptions(), {"n_batch": 8})
