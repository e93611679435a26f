"""The Hugging Face transformers backend: AutoProcessor + AutoModelForImageTextToText (or a causal LM).

Decoding runs through ``model.generate`` — the public, version-stable entry point — with three small
adapters: a logits processor that makes our own seeded token choice (so sampling is identical on every
path and independent of the model's generation defaults), a stopping criterion that reads the cancel
token and the spine's stop flag after every token, and a streamer that hands each token to the spine.
Forward pre-hooks on the vision tower and the language model check the cancel token before vision
encoding, before prefill and before every decode step.
"""

from __future__ import annotations

import gc
import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
    DynamicCache,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteriaList,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

from ...errors import InvalidRequest, ModelLoadError, OptascanError, VisionNotSupported
from ...models.estimate import kv_bytes_per_token
from ..cancel import CancelledRun, CancelToken
from ..conversation import Conversation
from ..memory import cache_limit_bytes, looks_like_oom, out_of_memory
from ..prefix import reusable_length
from . import torch_device
from .base import OnToken, Prepared, Sampling
from .hf_adapters import Chooser, Stopper, Streamer
from .hf_inspect import (
    CACHE_KWARG,
    eos_ids,
    image_inputs_digest,
    image_limits,
    image_processor_config,
    image_token_id,
)

log = logging.getLogger(__name__)
_VISION_TOWERS = ("vision_tower", "visual", "vision_model")
_LANGUAGE_MODELS = ("language_model", "text_model")
# Families whose follow-ups reuse the previous request's KV cache: each is checked token-identical against a
# cold run (tests/integration/test_prefix_reuse.py). Others prefill from scratch every time.
_PREFIX_REUSE_FAMILIES = frozenset({"llava", "qwen2_vl", "qwen2_5_vl", "idefics3", "llama"})


class HFBackend:
    name = "hf"
    # the transformers engine is the reference path: images are processed on the CPU, as transformers does by
    # default (the fast engine processes them on its GPU: FastBackend)
    images_on_device = False

    def __init__(self, path: str | Path, *, device: str = "auto", dtype: str | None = None,
                 memory_fraction: float = 0.9) -> None:
        self.device = torch_device.choose_device(device)
        self.dtype = torch_device.choose_dtype(self.device, dtype)
        try:
            config = AutoConfig.from_pretrained(path)
            self.supports_images = config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
            model_class = AutoModelForImageTextToText if self.supports_images else AutoModelForCausalLM
            self.model = model_class.from_pretrained(path, dtype=self.dtype).to(self.device).eval()
            if self.supports_images:
                self.processor = AutoProcessor.from_pretrained(path)
                self.tokenizer = self.processor.tokenizer
            else:
                self.processor = None
                self.tokenizer = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError, KeyError, ImportError, RuntimeError) as err:
            raise ModelLoadError(f"cannot load the model in {str(path)!r}: {err}") from err
        self.model_type = config.model_type
        self.image_processor_config = image_processor_config(self.processor)
        self.image_limits = image_limits(self.model_type, self.image_processor_config)
        self.eos_token_ids = frozenset(eos_ids(self.model, self.tokenizer))
        self.image_token_id = image_token_id(self.model.config)
        self.weight_bytes = sum(p.numel() * p.element_size() for p in self.model.parameters())
        text_config = getattr(self.model.config, "text_config", None) or self.model.config
        self.kv_bytes_per_token = kv_bytes_per_token(text_config.to_dict(), torch.finfo(self.dtype).bits // 8)
        self.memory_fraction = memory_fraction
        self._grammars: dict[str, Any] = {}  # compiled JSON-schema grammars, by schema text
        self._grammar_compiler: Any = None  # built on the first schema
        self._control_tokens: list[int] | None = None  # built on the first schema
        self.cache_limit = cache_limit_bytes(self.weight_bytes)
        self._cancel: CancelToken | None = None
        self._stage = "preprocessing"  # where an error happened, for OOM messages
        self._language_calls = 0
        self._install_stage_hooks()
        self.context_length = getattr(text_config, "max_position_embeddings", None)
        self.reuses_prefix = self.model_type in _PREFIX_REUSE_FAMILIES
        self._kept_ids: list[int] = []  # the tokens whose keys and values _kept_cache holds
        self._kept_cache: DynamicCache | None = None
        self._kept_image_key = ""

    # --- preprocessing -------------------------------------------------------------------------------
    def prepare(self, conversation: Conversation, images: Sequence[Any]) -> Prepared:
        self._stage = "preprocessing"
        if images and not self.supports_images:
            raise VisionNotSupported("this model is text-only and cannot take images")
        try:
            if self.processor is not None:
                text = self._template(self.processor, list(conversation.messages))
                on_device = {"device": self.device} if images and self._processes_on_device() else {}
                pixels = [torch_device.pixels_on(self.device, image) for image in images] if on_device else images
                encoded = self.processor(text=[text], images=list(pixels) or None, return_tensors="pt",
                                         add_special_tokens=False, **on_device)
            else:
                text = self._template(self.tokenizer, conversation.as_text_messages())
                encoded = self.tokenizer([text], return_tensors="pt", add_special_tokens=False)
        except (ValueError, TypeError) as err:
            raise InvalidRequest(f"the model's processor rejected the request: {err}") from err
        image_key = image_inputs_digest(encoded, images) if self.reuses_prefix and images else ""
        inputs = {k: self._to_device(v) for k, v in encoded.items()}
        ids = inputs["input_ids"][0]
        image_tokens = int((ids == self.image_token_id).sum()) if self.image_token_id is not None else 0
        return Prepared(inputs=inputs, prompt_tokens=int(ids.shape[0]), image_tokens=image_tokens,
                        prompt_tail=tuple(ids[-8:].tolist()), image_key=image_key)

    def _processes_on_device(self) -> bool:
        """Whether images go through the image processor on the model's GPU: where the engine asks for it and
        the processor is torchvision-based (transformers' ``device`` option is for those)."""
        bases = {cls.__name__ for cls in type(getattr(self.processor, "image_processor", None)).__mro__}
        return self.images_on_device and self.device.startswith("cuda") and "TorchvisionBackend" in bases

    def _template(self, owner: Any, messages: list[dict]) -> str:
        if not getattr(owner, "chat_template", None):
            # A base model without a chat template: plain text, image placeholders where the parts were.
            image_text = getattr(owner, "image_token", "") or ""
            return "\n".join("".join(p.get("text", image_text) for p in m["content"])
                             if isinstance(m["content"], list) else m["content"] for m in messages)
        try:
            return owner.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except Exception as err:  # jinja raises its own TemplateError for e.g. unsupported roles
            raise InvalidRequest(f"the model's chat template rejected the messages: {err}",
                                 field="messages") from err

    def _to_device(self, value: Any) -> Any:
        if not isinstance(value, torch.Tensor):
            return value
        if torch.is_floating_point(value):
            return value.to(self.device, dtype=self.dtype)
        return value.to(self.device)

    @property
    def supports_json_schema(self) -> bool:
        return importlib.util.find_spec("xgrammar") is not None

    def _grammar_processor(self, schema_text: str) -> LogitsProcessor:
        """A fresh xgrammar processor (one per generation) over a grammar compiled once per schema."""
        from xgrammar.contrib.hf import LogitsProcessor as GrammarProcessor

        return GrammarProcessor(self._compiled_grammar(schema_text))

    def _compiled_grammar(self, schema_text: str) -> Any:
        """The schema's xgrammar grammar, compiled once per schema over this model's vocabulary."""
        import xgrammar

        if schema_text not in self._grammars:
            if self._grammar_compiler is None:
                vocab = self.model.get_output_embeddings().weight.shape[0]
                info = xgrammar.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=vocab)
                self._grammar_compiler = xgrammar.GrammarCompiler(info)
            try:  # compact JSON: free whitespace would let a weak model wander forever between tokens
                self._grammars[schema_text] = self._grammar_compiler.compile_json_schema(
                    schema_text, any_whitespace=False)
            except Exception as err:  # noqa: BLE001 - xgrammar raises several types for unsupported schemas
                raise InvalidRequest(f"the JSON schema cannot be compiled: {err}", field="json_schema") from err
        return self._grammars[schema_text]

    def _control_character_tokens(self) -> list[int]:
        """Ids of tokens whose text holds a control character (U+0000–U+001F): computed once, on first use."""
        if self._control_tokens is None:
            special = set(self.tokenizer.all_special_ids)
            self._control_tokens = [
                i for i in range(len(self.tokenizer)) if i not in special
                and any(ord(c) < 0x20 for c in self.tokenizer.decode([i], skip_special_tokens=True))]
        return self._control_tokens

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True)

    # --- generation ----------------------------------------------------------------------------------
    def banned_ids(self, sampling: Sampling) -> list[int] | None:
        """Token ids a request must never produce: the image placeholder (the model would have to see an image
        there when the reply is sent back in a later turn — only random-weight models ever pick it), EOS under
        ignore_eos, and under a JSON schema the tokens holding raw control characters (the grammar lets them
        into strings; strict JSON does not)."""
        vocab = self.model.get_output_embeddings().weight.shape[0]
        banned = [self.image_token_id] if self.image_token_id is not None and self.image_token_id < vocab else []
        if sampling.ignore_eos:
            banned += sorted(self.eos_token_ids)
        if sampling.json_schema:
            banned += self._control_character_tokens()
        return banned or None

    def generate(self, prepared: Prepared, sampling: Sampling, cancel: CancelToken, on_token: OnToken) -> None:
        banned = self.banned_ids(sampling)
        stopper = Stopper(cancel)
        # ignore_eos works by banning the eos ids in Chooser: generate() would refill an unset
        # eos_token_id from the model's generation_config anyway.
        config = GenerationConfig(
            max_new_tokens=sampling.max_tokens, do_sample=False, num_beams=1,
            eos_token_id=sorted(self.eos_token_ids) or None,
            pad_token_id=self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None
            else next(iter(self.eos_token_ids), 0),
        )
        self._cancel, self._stage, self._language_calls = cancel, "prefill", 0
        ids = prepared.inputs["input_ids"][0].tolist()
        inputs, cache_kwargs = self._reuse_prefix(prepared, ids)
        image_key = prepared.image_key
        generated: list[int] = []

        def collect(token_id: int) -> bool:
            generated.append(token_id)
            return on_token(token_id)

        try:
            with torch.inference_mode():
                self.model.generate(
                    **inputs, **cache_kwargs, generation_config=config,
                    logits_processor=LogitsProcessorList(
                        ([self._grammar_processor(sampling.json_schema)] if sampling.json_schema else [])
                        + [Chooser(sampling, banned)]),
                    stopping_criteria=StoppingCriteriaList([stopper]),
                    streamer=Streamer(collect, stopper),
                )
        except CancelledRun:  # raised before a forward pass: the cache is whole, keep it
            self._keep_prefix(cache_kwargs, ids + generated, image_key)
            raise
        except BaseException:  # a forward pass may have stopped half-way through the layers
            self.forget_prefix()
            raise
        else:
            self._keep_prefix(cache_kwargs, ids + generated, image_key)
        finally:
            self._cancel = None

    # --- prefix reuse (see engine/prefix.py) ---------------------------------------------------------
    def _reuse_prefix(self, prepared: Prepared, ids: list[int]) -> tuple[dict, dict]:
        """The inputs and cache argument for generate(): the kept cache cut to the shared prefix, or a fresh one."""
        if not self.reuses_prefix:
            return prepared.inputs, {}
        same_images = self._kept_cache is not None and self._kept_image_key == prepared.image_key
        shared = reusable_length(self._kept_ids, ids, self.image_token_id) if same_images else 0
        prepared.metadata["prefix_reused_tokens"] = shared
        if not shared:
            self.forget_prefix()  # before the new request allocates: its memory comes back first
            return prepared.inputs, {CACHE_KWARG: DynamicCache()}
        cache, self._kept_cache, self._kept_ids = self._kept_cache, None, []
        surplus = cache.get_seq_length() - shared
        if surplus:
            cache.crop(-surplus)  # negative: tokens to drop (5.24 refuses a length; 5.17 takes either)
        # the image's features are in the cache: no pixels, so no vision encoding
        text_only = {k: v for k, v in prepared.inputs.items() if k in ("input_ids", "attention_mask")}
        return text_only, {CACHE_KWARG: cache}

    def _keep_prefix(self, cache_kwargs: dict, tokens: list[int], image_key: str) -> None:
        cache = cache_kwargs.get(CACHE_KWARG)
        if cache is not None:
            self._kept_cache, self._kept_ids = cache, tokens[: cache.get_seq_length()]
            self._kept_image_key = image_key

    def forget_prefix(self) -> None:
        """Drop the kept KV cache (its device memory comes back on the next trim)."""
        self._kept_cache, self._kept_ids = None, []

    @property
    def kept_prefix_bytes(self) -> int:
        return len(self._kept_ids) * self.kv_bytes_per_token

    def _install_stage_hooks(self) -> None:
        inner = getattr(self.model, "model", self.model)
        # kept as attributes: the stage boundaries, and what tests and GPU checks hook to count steps
        self.vision_tower = next((getattr(inner, n) for n in _VISION_TOWERS if hasattr(inner, n)), None)
        # a text-only causal LM's decoder stack is `.model` itself
        self.language_model = next((getattr(inner, n) for n in _LANGUAGE_MODELS if hasattr(inner, n)), inner)
        vision, language = self.vision_tower, self.language_model

        def before_vision(_module: Any, _args: Any) -> None:
            self._check_cancel()
            self._stage = "vision encoding"

        def before_language_model(_module: Any, _args: Any) -> None:
            self._check_cancel()
            self._stage = "decode" if self._language_calls else "prefill"
            self._language_calls += 1

        if vision is not None:
            vision.register_forward_pre_hook(before_vision)
        language.register_forward_pre_hook(before_language_model)

    def _check_cancel(self) -> None:
        if self._cancel is not None and self._cancel.cancelled:
            raise CancelledRun(self._cancel.reason)

    # --- memory --------------------------------------------------------------------------------------
    def map_error(self, error: BaseException, stage: str) -> OptascanError | None:
        is_oom = isinstance(error, torch.OutOfMemoryError) or (
            isinstance(error, RuntimeError) and looks_like_oom(str(error)))
        if not is_oom:
            return None
        self.forget_prefix()
        torch_device.release_after_oom(self.device)
        where = self._stage if stage == "generation" else stage
        return out_of_memory(str(error), device=self.device, free_bytes=torch_device.free_bytes(self.device),
                             stage=where)

    def request_budget_bytes(self) -> int | None:
        free = torch_device.free_bytes(self.device)
        # the kept prefix cache counts as free: a request that does not reuse it drops it first
        return None if free is None else int((free + self.kept_prefix_bytes) * self.memory_fraction)

    def after_request(self) -> None:
        torch_device.trim_cache(self.device, self.cache_limit)

    def close(self) -> None:
        # Every reference to the weights goes, the hooked submodules too, or device memory never comes back.
        self.forget_prefix()
        self.model = self.vision_tower = self.language_model = None  # type: ignore[assignment]
        gc.collect()
        torch_device.release_after_oom(self.device)
