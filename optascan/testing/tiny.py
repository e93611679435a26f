"""Tiny random-weight checkpoints of real architectures, for tests.

``build_tiny_checkpoint(family, path)`` writes a directory that loads through the normal transformers
``from_pretrained`` path (AutoConfig / AutoProcessor / AutoTokenizer / AutoModel*) exactly like a real
model: config.json, generation_config.json, model.safetensors (float32 by default), tokenizer.json +
tokenizer_config.json, chat_template.jinja and, for the VLMs, processor_config.json (transformers 5 nests
the image-processor config inside it). Weights are random (seeded) so outputs are gibberish, but the
code paths -- chat template, image placeholder expansion, vision tower, M-RoPE, generate(), streaming
decode -- are the real ones.
Same seed -> byte-identical files. Builds take ~0.1 s after `import transformers`.

For benchmarks, ``text_size`` (or a ``TEXT_SIZES`` preset) makes the language model bigger -- the vision
tower stays tiny and the vocab stays the ~600-token BPE, so per-token decode cost is that of a real LM of
that shape -- and ``dtype="bfloat16"`` halves the file. The "qwen2-vl-2b" preset (1.3B params) builds in
~20-30 s on CPU, mostly drawing the random numbers.

    python -m optascan.testing.tiny DIR --family qwen2_vl [--seed 0] [--size small] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import functools
import os
import pathlib

FAMILIES = ("llava", "qwen2_vl", "qwen2_5_vl", "idefics3", "llama_text")

# Language-model dims for `text_size` (head_dim defaults to hidden_size // num_attention_heads).
TEXT_SIZES = {
    "tiny": None,  # the test default: hidden 64, 2 layers, ~0.1M params
    # ~27M params: 10-30 ms/token in float32 on a 2-core CPU.
    "small": dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=8,
                  num_key_value_heads=4),
    # Qwen2-VL-2B's language model (1.3B params here: the vocab is 600, not 151k).
    "qwen2-vl-2b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                        num_key_value_heads=2),
}

# Small, fixed training corpus. Multi-byte text appears only a few times on purpose: with min_frequency=2
# BPE merges some of its byte pairs but not all, so characters like "🙂" or "語" stay split over several
# byte-level tokens -- exactly what streaming tests need to prove deltas never cut a character in half.
_CORPUS = [
    "The quick brown fox jumps over the lazy dog. A photo of a cat sitting on a red chair.",
    "What is in this image? Describe the picture in one sentence, please. Answer briefly.",
    "The image shows a small kitchen with a white table, two chairs and a window on the left.",
    "In the picture there is a man holding an umbrella while walking his dog in the rain.",
    "This is a screenshot of a web page with a search box, a button and a list of results.",
    "The receipt lists bread, milk, eggs, cheese and coffee; the total is printed at the bottom.",
    "A street sign reads MAIN ST and another one says STOP. Cars are parked along the road.",
    "Please read the text in the document and summarize it. The title is written in bold.",
    "How many people are there? I can see three people: two adults and one child playing.",
    "Colors: red, green, blue, yellow, orange, purple, black, white, gray and brown.",
    "There are 3 apples, 12 bananas and 2,048 grapes on the table; total: 2063 (approx. 2.1k).",
    "The sign says: OPEN 9:00-17:30, Mon-Fri. Call +1 (555) 010-4477 or email info@example.com!",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000 3.14159 -42 1e-3 x=y+z*2/7 (a) [b] {c} <d>.",
    "I'd like a café au lait, s'il vous plaît. Le café est très bon; l'été, c'est génial.",
    "日本 is Japan. 日本語 means Japanese. 日本の写真です。",
    "A camera 📷 and a smile 🙂 -- \"quotes\", #hash, 50% off, $9.99, a_b, path/to/file.txt",
    "user assistant system image picture photo text answer question yes no maybe",
    "Line one\nLine two\n\tTabbed line\n  two spaces, trailing space ",
]

_BOS, _PAD = "<s>", "<pad>"
_IM_START, _IM_END = "<|im_start|>", "<|im_end|>"

# Per family: extra special tokens, named ones (become `tokenizer.image_token` / `.image_token_id`, which
# the processors read), the end-of-turn (= eos) token, and what the chat template emits for an image part
# (the placeholder that family's processor looks for and expands to the right number of image tokens).
_SPECIALS = {
    "llava": dict(extra=["<image>"], named={"image_token": "<image>"}, eot=_IM_END, image="<image>"),
    "qwen2_vl": dict(
        extra=[
            "<|endoftext|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
            "<|image_pad|>", "<|video_pad|>",
        ],
        named={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
        eot=_IM_END,
        image="<|vision_start|><|image_pad|><|vision_end|>",
    ),
    # Idefics3Processor expands "<image>" to <fake_token_around_image><global-img><image>*N<fake...>;
    # SmolVLM ends turns with <end_of_utterance>, which is also its eos.
    "idefics3": dict(
        extra=["<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>"],
        named={"image_token": "<image>"},
        eot="<end_of_utterance>",
        image="<image>",
    ),
    "llama_text": dict(extra=[], named={}, eot=_IM_END, image=None),
}
_SPECIALS["qwen2_5_vl"] = _SPECIALS["qwen2_vl"]  # the same tokenizer and template as Qwen2-VL

# ChatML-like template. `content` may be a string or a list of {"type": "text"|"image"} parts.
_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{- part['text'] -}}"
    "{%- elif part['type'] == 'image' -%}{{- '@IMAGE@' -}}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{- '@EOT@' + '\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def _chat_template(family: str) -> str:
    spec = _SPECIALS[family]
    template = _TEMPLATE.replace("@EOT@", spec["eot"])
    if spec["image"] is None:  # text-only model: an image part is an error, not silently dropped
        return template.replace("{{- '@IMAGE@' -}}", "{{- raise_exception('text-only model') -}}")
    return template.replace("@IMAGE@", spec["image"])


def _build_tokenizer(family: str):
    """Byte-level BPE trained on _CORPUS; every byte is in the base alphabet, so any string round-trips."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    spec = _SPECIALS[family]
    specials = [_BOS, _PAD, _IM_START, _IM_END] + [t for t in spec["extra"] if t != _IM_END]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        min_frequency=2,
        special_tokens=specials,  # ids 0..len(specials)-1, in this order
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=_BOS,
        eos_token=spec["eot"],
        pad_token=_PAD,
        extra_special_tokens=[t for t in specials if t not in (_BOS, _PAD, spec["eot"])],
        **spec["named"],
        chat_template=_chat_template(family),
        clean_up_tokenization_spaces=False,
        model_max_length=4096,
    )


def _text_kwargs(tok, text_size: dict | None = None) -> dict:
    """Llama-style decoder settings shared by every family's language model, ``text_size`` overriding."""
    kwargs = dict(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    return {**kwargs, **(text_size or {})}


def _llava(tok, text, image_size: int = 32, patch: int = 8, vision_size: dict | None = None):
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    # 32 px / patch 8 -> 16 patches (+CLS, dropped by the "default" strategy) -> 16 image tokens by default;
    # benchmarks ask for LLaVA-1.5's 336 px / 14 (576 image tokens) through llava_image.
    vision = CLIPVisionConfig(**{
        **dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
               image_size=image_size, patch_size=patch, projection_dim=32),
        **(vision_size or {}),
    })
    config = LlavaConfig(
        vision_config=vision,
        text_config=LlamaConfig(**text),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_seq_length=(image_size // patch) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tok, patch_size=patch,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=tok.chat_template,
    )
    return LlavaForConditionalGeneration, config, processor


def _qwen2_vl(tok, text, version: str = "2", vision_size: dict | None = None):
    """Qwen2-VL, or with ``version="2.5"`` Qwen2.5-VL: the same language model (Qwen2 with M-RoPE) behind a
    vision tower with windowed attention, SwiGLU blocks and RMSNorm."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    ids = tok.convert_tokens_to_ids
    # M-RoPE splits the head_dim/2 rotary frequencies over (temporal, height, width), in Qwen2-VL's 1:1.5:1.5
    # ratio: head_dim 16 -> [2, 3, 3]; 128 (the real 2B/7B) -> [16, 24, 24].
    half = text["hidden_size"] // text["num_attention_heads"] // 2  # Qwen2-VL attention: head_dim = h / heads
    t = half // 4
    sections = [t, (half - t) // 2, half - t - (half - t) // 2]
    text = {**text, "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": sections}}
    if version == "2.5":  # window 56 px = 2x2 merged tokens; block 1 attends over the whole image
        config_cls, model_cls, processor_cls = Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=text["hidden_size"],
                      window_size=56, fullatt_block_indexes=[1], patch_size=14, spatial_merge_size=2,
                      temporal_patch_size=2)
    else:
        config_cls, model_cls, processor_cls = Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor
        vision = dict(depth=2, embed_dim=32, num_heads=2, mlp_ratio=2, hidden_size=text["hidden_size"],  # merger
                      patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
    vision = {**vision, **(vision_size or {})}
    config = config_cls(
        text_config=text,
        vision_config=vision,
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )
    # Real patch 14 / merge 2 (28x28 px per image token); images are resized to between 56x56 and 112x112
    # px worth of area -> 4 to 16 image tokens depending on aspect ratio (2x2 .. 4x4 for square images).
    pixels = {"shortest_edge": 56 * 56, "longest_edge": 112 * 112}
    # The real Qwen2VLProcessor, as a hub checkpoint has it: transformers 5 gives it a video processor that
    # needs torchvision, so this family (like real Qwen2-VL models) needs torchvision installed.
    processor = processor_cls(
        image_processor=Qwen2VLImageProcessor(size=pixels, patch_size=14, merge_size=2, temporal_patch_size=2),
        video_processor=Qwen2VLVideoProcessor(size=pixels, patch_size=14, merge_size=2, temporal_patch_size=2),
        tokenizer=tok, chat_template=tok.chat_template,
    )
    return model_cls, config, processor


def _idefics3(tok, text):
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    # 48 px / patch 8 -> 36 patches, pixel-shuffle scale 2 -> 9 image tokens; no image splitting.
    image_size, patch, scale = 48, 8, 2
    config = Idefics3Config(
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            image_size=image_size, patch_size=patch,
        ),
        text_config=dict(model_type="llama", **text),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        scale_factor=scale,
    )
    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=False, size={"longest_edge": image_size},
        max_image_size={"longest_edge": image_size},
    )
    processor = Idefics3Processor(
        image_processor=image_processor, tokenizer=tok,
        image_seq_len=(image_size // patch) ** 2 // scale**2, chat_template=tok.chat_template,
    )
    return Idefics3ForConditionalGeneration, config, processor


def _llama_text(tok, text):
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM, LlamaConfig(**text), None


def build_tiny_checkpoint(family: str, path: str | os.PathLike, *, seed: int = 0,
                          text_size: dict | str | None = None, dtype: str | None = None,
                          llava_image: tuple[int, int] | None = None,
                          vision_size: dict | None = None, init_device: str | None = None) -> pathlib.Path:
    """Write a tiny random checkpoint of `family` into `path` (created if needed) and return the path.

    ``text_size``: a ``TEXT_SIZES`` name or a dict of language-model dims (hidden_size, num_hidden_layers,
    num_attention_heads, num_key_value_heads, intermediate_size, head_dim). ``dtype``: e.g. "bfloat16" to
    initialise and save the weights in that dtype (default float32). ``llava_image``: (image size, patch size)
    of the LLaVA vision tower (default (32, 8): 16 image tokens). ``vision_size``: vision-config fields over the
    tiny tower's, for LLaVA and the Qwen families (benchmarks: a model card's full-size tower). ``init_device``:
    where the random weights are drawn (benchmarks: "cuda", minutes faster for a 7B; other values than the CPU's).
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
    if vision_size and family not in ("llava", "qwen2_vl", "qwen2_5_vl"):
        raise ValueError(f"vision_size is for llava and the qwen families, not {family!r}")
    if isinstance(text_size, str):
        if text_size not in TEXT_SIZES:
            raise ValueError(f"unknown size {text_size!r}; expected one of {tuple(TEXT_SIZES)}")
        text_size = TEXT_SIZES[text_size]
    import torch
    from transformers import GenerationConfig

    out = pathlib.Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tok = _build_tokenizer(family)
    builders = {"llava": _llava, "qwen2_vl": _qwen2_vl, "qwen2_5_vl": functools.partial(_qwen2_vl, version="2.5"),
                "idefics3": _idefics3, "llama_text": _llama_text}
    extra = dict(zip(("image_size", "patch"), llava_image, strict=True)) if family == "llava" and llava_image else {}
    if vision_size:
        extra["vision_size"] = vision_size
    model_cls, config, processor = builders[family](tok, _text_kwargs(tok, text_size), **extra)

    # Seed only around init, and restore the global RNG so building never perturbs the caller's state.
    where = torch.device(init_device or "cpu")
    with torch.random.fork_rng(devices=[] if where.type == "cpu" else [where]), where:
        torch.manual_seed(seed)
        if dtype is None:
            model = model_cls(config).to(torch.float32)
        else:  # initialised in `dtype` directly: no float32 copy of a big model
            model = model_cls._from_config(config, dtype=getattr(torch, dtype))
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    model.save_pretrained(out, safe_serialization=True)
    if processor is not None:
        processor.save_pretrained(out)
    else:
        tok.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir")
    parser.add_argument("--family", required=True, choices=FAMILIES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", default="tiny", choices=tuple(TEXT_SIZES), help="language-model size preset")
    parser.add_argument("--dtype", default=None, help="weight dtype, e.g. bfloat16 (default float32)")
    args = parser.parse_args(argv)
    print(build_tiny_checkpoint(args.family, args.dir, seed=args.seed, text_size=args.size, dtype=args.dtype))


if __name__ == "__main__":
    main()
