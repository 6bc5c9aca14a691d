"""Issue 12's surprises, on the FakeRuntime (milliseconds): the error a caller gets names what they did wrong."""
from __future__ import annotations

from typing import Callable

import pytest

import edgellm
from edgellm.errors import ContextOverflowError, InvalidInputError, OptionError
from edgellm.model import Model
from edgellm.runtimes.base import TokenizerInfo
from tests.fakes import BOS, BYTE_BASE, FakeRuntime, model_over


def test_empty_prompt_is_invalid_input_not_context_overflow(fake_model: Callable[..., Model]) -> None:
    model = fake_model([b"a"])
    for prompt in ("", []):
        with pytest.raises(InvalidInputError) as err:
            model.stream(prompt)            # raised at the call, not at the first step
        assert not isinstance(err.value, ContextOverflowError) and "empty" in err.value.message
        with pytest.raises(InvalidInputError):
            model.generate(prompt)
    assert model.generate("x", max_tokens=1).text == "a"   # the model is still usable


@pytest.mark.parametrize("threads", ["x", "4", 0, -1, 2.5, True])
def test_bad_threads_is_an_option_error(threads: object) -> None:
    with pytest.raises(OptionError) as err:          # checked before the path is even read
        edgellm.load("/nonexistent/model.gguf", threads=threads)  # type: ignore[arg-type]  # the wrong type is the test
    assert "threads" in err.value.message


def test_add_special_none_follows_the_artifact_true_adds_bos_false_never(fake_model: Callable[..., Model]) -> None:
    model = fake_model([b"a"])                        # the fake's artifact says add_bos=False
    hi = [BYTE_BASE + ord("h"), BYTE_BASE + ord("i")]
    assert model.tokenize("hi") == hi                 # default: the artifact's rule
    assert model.tokenize("hi", add_special=None) == hi
    assert model.tokenize("hi", add_special=True) == [BOS, *hi]   # honoured, not ANDed with add_bos
    assert model.tokenize("hi", add_special=False) == hi
    with pytest.raises(OptionError):
        model.tokenize("hi", add_special="yes")      # type: ignore[arg-type]  # the wrong type is the test


class _BosByDefault(FakeRuntime):
    @property
    def tokenizer_info(self) -> TokenizerInfo:
        return TokenizerInfo(bos_id=BOS, eos_ids=(2,), bos_text="<s>", eos_text="</s>", add_bos=True,
                             chat_template=None)


class _NoBos(FakeRuntime):
    @property
    def tokenizer_info(self) -> TokenizerInfo:
        return TokenizerInfo(bos_id=None, eos_ids=(2,), bos_text="", eos_text="</s>", add_bos=False,
                             chat_template=None)


def test_add_special_on_a_model_that_adds_bos_and_one_without_bos() -> None:
    with model_over(_BosByDefault([b"a"])) as model:
        assert model.tokenize("h") == [BOS, BYTE_BASE + ord("h")]
        assert model.tokenize("h", add_special=False) == [BYTE_BASE + ord("h")]
        assert model.tokenize("h", add_special=True) == [BOS, BYTE_BASE + ord("h")]   # one BOS, not two
    with model_over(_NoBos([b"a"])) as model:
        assert model.tokenize("h") == [BYTE_BASE + ord("h")]
        with pytest.raises(OptionError) as err:
            model.tokenize("h", add_special=True)
        assert "no BOS" in err.value.message
