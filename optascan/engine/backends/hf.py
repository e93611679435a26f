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
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.generation.streamers import BaseStreamer
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

from ...errors import InvalidRequest, ModelLoadError, OptascanError, VisionNotSupported
from ...images.tokens import ProcessorLimits, processor_limits
from ...models.estimate import kv_bytes_per_token
from ..cancel import CancelledRun, CancelToken
from ..conversation import Conversation
from ..memory import cache_limit_bytes, looks_like_oom, out_of_memory
from . import torch_device
from .base import OnToken, Prepared, Sampling
from .torch_sampling import choose_token

log = logging.getLogger(__name__)
_VISION_TOWERS = ("vision_tower", "visual", "vision_model")
_LANGUAGE_MODELS = ("language_model", "text_model")


class HFBackend:
    name = "hf"

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
        self.image_processor_config = _image_processor_config(self.processor)
        self.image_limits = _image_limits(self.model_type, self.image_processor_config)
        self.eos_token_ids = frozenset(_eos_ids(self.model, self.tokenizer))
        self.image_token_id = _image_token_id(self.model.config)
        self.weight_bytes = sum(p.numel() * p.element_size() for p in self.model.parameters())
        text_config = getattr(self.model.config, "text_config", None) or self.model.config
        self.kv_bytes_per_token = kv_bytes_per_token(text_config.to_dict(), torch.finfo(self.dtype).bits // 8)
        self.memory_fraction = memory_fraction
        self._grammars: dict[str, Any] = {}  # compiled JSON-schema grammars, by schema text
        self.cache_limit = cache_limit_bytes(self.weight_bytes)
        self._cancel: CancelToken | None = None
        self._stage = "preprocessing"  # where an error happened, for OOM messages
        self._language_calls = 0
        self._install_stage_hooks()

    # --- preprocessing -------------------------------------------------------------------------------
    def prepare(self, conversation: Conversation, images: Sequence[Any]) -> Prepared:
        self._stage = "preprocessing"
        if images and not self.supports_images:
            raise VisionNotSupported("this model is text-only and cannot take images")
        try:
            if self.processor is not None:
                text = self._template(self.processor, list(conversation.messages))
                encoded = self.processor(text=[text], images=list(images) or None, return_tensors="pt",
                                         add_special_tokens=False)
            else:
                text = self._template(self.tokenizer, conversation.as_text_messages())
                encoded = self.tokenizer([text], return_tensors="pt", add_special_tokens=False)
        except (ValueError, TypeError) as err:
            raise InvalidRequest(f"the model's processor rejected the request: {err}") from err
        inputs = {k: self._to_device(v) for k, v in encoded.items()}
        ids = inputs["input_ids"][0]
        image_tokens = int((ids == self.image_token_id).sum()) if self.image_token_id is not None else 0
        return Prepared(inputs=inputs, prompt_tokens=int(ids.shape[0]), image_tokens=image_tokens,
                        prompt_tail=tuple(ids[-8:].tolist()))

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
        import xgrammar
        from xgrammar.contrib.hf import LogitsProcessor as GrammarProcessor

        if schema_text not in self._grammars:
            if "compiler" not in self._grammars:
                vocab = self.model.get_output_embeddings().weight.shape[0]
                info = xgrammar.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=vocab)
                self._grammars["compiler"] = xgrammar.GrammarCompiler(info)
            try:  # compact JSON: free whitespace would let a weak model wander forever between tokens
                self._grammars[schema_text] = self._grammars["compiler"].compile_json_schema(
                    schema_text, any_whitespace=False)
            except Exception as err:  # noqa: BLE001 - xgrammar raises several types for unsupported schemas
                raise InvalidRequest(f"the JSON schema cannot be compiled: {err}", field="json_schema") from err
        return GrammarProcessor(self._grammars[schema_text])

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True)

    # --- generation ----------------------------------------------------------------------------------
    def generate(self, prepared: Prepared, sampling: Sampling, cancel: CancelToken, on_token: OnToken) -> None:
        generator = torch.Generator(device=self.device).manual_seed(sampling.seed)
        banned = sorted(self.eos_token_ids) if sampling.ignore_eos else None
        stopper = _Stopper(cancel)
        # ignore_eos works by banning the eos ids in _Chooser: generate() would refill an unset
        # eos_token_id from the model's generation_config anyway.
        config = GenerationConfig(
            max_new_tokens=sampling.max_tokens, do_sample=False, num_beams=1,
            eos_token_id=sorted(self.eos_token_ids) or None,
            pad_token_id=self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None
            else next(iter(self.eos_token_ids), 0),
        )
        self._cancel, self._stage, self._language_calls = cancel, "prefill", 0
        try:
            with torch.inference_mode():
                self.model.generate(
                    **prepared.inputs, generation_config=config,
                    logits_processor=LogitsProcessorList(
                        ([self._grammar_processor(sampling.json_schema)] if sampling.json_schema else [])
                        + [_Chooser(sampling, generator, banned)]),
                    stopping_criteria=StoppingCriteriaList([stopper]),
                    streamer=_Streamer(on_token, stopper),
                )
        finally:
            self._cancel = None

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
        torch_device.release_after_oom(self.device)
        where = self._stage if stage == "generation" else stage
        return out_of_memory(str(error), device=self.device, free_bytes=torch_device.free_bytes(self.device),
                             stage=where)

    def request_budget_bytes(self) -> int | None:
        free = torch_device.free_bytes(self.device)
        return None if free is None else int(free * self.memory_fraction)

    def after_request(self) -> None:
        torch_device.trim_cache(self.device, self.cache_limit)

    def close(self) -> None:
        # Every reference to the weights goes, the hooked submodules too, or device memory never comes back.
        self.model = self.vision_tower = self.language_model = None  # type: ignore[assignment]
        gc.collect()
        torch_device.release_after_oom(self.device)


class _Chooser(LogitsProcessor):
    """Makes the token choice itself and leaves generate() a one-hot row, so its greedy pick is ours.

    Plain greedy decoding needs no choice of ours (generate's argmax is the same argmax), so that path only
    masks banned ids in place: no extra kernels, no host round trip per token.
    """

    def __init__(self, sampling: Sampling, generator: torch.Generator, banned: list[int] | None) -> None:
        self.sampling, self.generator, self.banned = sampling, generator, banned
        self.plain_greedy = sampling.temperature == 0.0 and sampling.repetition_penalty == 1.0
        self._banned_ids: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.plain_greedy:
            if self.banned:
                if self._banned_ids is None:  # built once per request, on the scores' device
                    self._banned_ids = torch.tensor(self.banned, device=scores.device)
                scores.index_fill_(1, self._banned_ids, -float("inf"))
            return scores
        chosen = choose_token(scores, input_ids, self.sampling, self.generator, self.banned)
        one_hot = torch.full_like(scores, -float("inf"))
        return one_hot.scatter_(1, chosen[:, None], 0.0)


class _Stopper(StoppingCriteria):
    def __init__(self, cancel: CancelToken) -> None:
        self.cancel = cancel
        self.stop = False

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        done = self.stop or self.cancel.cancelled
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


class _Streamer(BaseStreamer):
    def __init__(self, on_token: OnToken, stopper: _Stopper) -> None:
        self.on_token, self.stopper = on_token, stopper
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate() first hands over the prompt
            self.prompt_seen = True
            return
        for token_id in value.reshape(-1).tolist():
            if not self.stopper.stop and not self.on_token(int(token_id)):
                self.stopper.stop = True

    def end(self) -> None:
        pass


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return ids


def _image_processor_config(processor: Any) -> dict | None:
    """The image processor's settings plus the processor-level keys that decide the image token count."""
    image_processor = getattr(processor, "image_processor", None)
    if image_processor is None:
        return None
    merged = dict(image_processor.to_dict())
    for key in ("patch_size", "vision_feature_select_strategy", "num_additional_image_tokens", "image_seq_len",
                "image_seq_length"):
        if getattr(processor, key, None) is not None:
            merged[key] = getattr(processor, key)
    return merged


def _image_limits(model_type: str, config: dict | None) -> ProcessorLimits | None:
    if config is None:
        return None
    try:
        return processor_limits(model_type, config)
    except OptascanError:  # a family the table does not know: the tier alone sizes its images
        log.info("no processor limits known for %s", model_type)
        return None


def _image_token_id(config: Any) -> int | None:
    for key in ("image_token_id", "image_token_index"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return None
