"""Build and train the shipped demo VLM (optascan/models/demo/) on the synthetic scan dataset.

    python tools/train_demo.py init  optascan/models/demo        # tokenizer, config, processor (here)
    python tools/train_demo.py train optascan/models/demo        # weights (GPU through the device tool)

Reproducible: fixed seeds; the data is generated on the fly from scene seeds ≥ 10,000,000 (the eval uses
seeds below 100,000), so training never sees an eval scene. Writes training.json beside the weights with
the command, wall time, steps, final loss and a teacher-forced accuracy per question type.
Needs only torch, transformers, tokenizers, Pillow and numpy.
"""

from __future__ import annotations

import argparse
import datetime
import io
import itertools
import json
import math
import platform
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train_demo_flow import flow_example  # noqa: E402

from optascan.demo.scenes import COLOURS, NUMBERS, POSITIONS, SHAPES, sample  # noqa: E402
from optascan.testing.tiny import _chat_template  # noqa: E402

# 96 px in 32 px patches: a 3×3 grid whose left/right/top/bottom/centre cells are the scene's five regions, so
# each shape sits in one image token. (128 px in 16 px patches learned "where" and "shapes" far more slowly.)
IMAGE_SIZE, PATCH = 96, 32
TRAIN_SEED_BASE = 10_000_000
SPECIALS = ["<s>", "<pad>", "<|im_start|>", "<|im_end|>", "<image>"]
TEMPLATE = _chat_template("llava")  # the same ChatML-style template as the tiny test checkpoints


def corpus() -> list[str]:
    texts = []
    for seed in range(3000):
        _, _, qs = sample(TRAIN_SEED_BASE + seed)
        texts += [q.text for q in qs] + [q.answer for q in qs]
    texts += list(SHAPES) + list(COLOURS) + list(POSITIONS) + list(NUMBERS)
    texts += ["user", "assistant", "system", "What is in the picture?", "I see"]
    return texts


def init(out: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus(), trainers.BpeTrainer(
        vocab_size=512, min_frequency=2, special_tokens=SPECIALS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="<|im_end|>", pad_token="<pad>",
        extra_special_tokens=["<|im_start|>", "<image>"], image_token="<image>", chat_template=TEMPLATE,
        clean_up_tokenization_spaces=False, model_max_length=512)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    vision = CLIPVisionConfig(hidden_size=192, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
                              image_size=IMAGE_SIZE, patch_size=PATCH, projection_dim=192)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=tokenizer.convert_tokens_to_ids(
        "<image>"), image_seq_length=(IMAGE_SIZE // PATCH) ** 2, vision_feature_select_strategy="default",
        vision_feature_layer=-1, projector_hidden_act="gelu")
    # Resize the whole photo to the square input (no centre crop): "left" and "right" must stay in view.
    image_processor = CLIPImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, do_center_crop=False)
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=TEMPLATE)
    import torch

    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    print(f"initialised {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params in {out}")


def example(seed: int, processor, rng: random.Random, turns: int = 5):
    """One training example: (uint8 HWC image at the input size, ids, label mask, first question's kind).

    Up to ``turns`` questions about the same image as a multi-turn chat (shuffled): several answers per
    image forward. The first turn is exactly what inference sees: the image, one question, the answer.
    """
    image, _, qs = sample(seed)
    qs = rng.sample(qs, min(turns, len(qs)))
    pixels = input_pixels(image, rng)
    ids: list[int] = []
    labelled: list[bool] = []
    for i, q in enumerate(qs):
        prompt_ids, answer_ids = _turn_ids(processor, q.text, q.answer, first=i == 0)
        ids += prompt_ids + answer_ids
        labelled += [False] * len(prompt_ids) + [True] * len(answer_ids)
    return pixels, ids, labelled, qs[0].kind


def input_pixels(image, rng: random.Random):
    """The image at the model's input size as uint8 HWC, with the artefacts real inputs have."""
    import numpy as np
    from PIL import Image

    if rng.random() < 0.5:  # the eval's photos arrive as JPEGs: train on their artefacts too
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=rng.randint(70, 95))
        image = Image.open(buf).convert("RGB")
    resample = rng.choice([Image.Resampling.BICUBIC, Image.Resampling.BILINEAR])
    return np.asarray(image.resize((IMAGE_SIZE, IMAGE_SIZE), resample), dtype=np.uint8)


_TURNS: dict[tuple, tuple[list[int], list[int]]] = {}


def _turn_ids(processor, question: str, answer: str, first: bool) -> tuple[list[int], list[int]]:
    """Token ids of one chat turn, cached: the question set is small and the Jinja template is slow."""
    key = (question, answer, first)
    if key not in _TURNS:
        tok = processor.tokenizer
        content = ([{"type": "image"}] if first else []) + [{"type": "text", "text": question}]
        prompt = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                               tokenize=False)
        if not first:
            prompt = "\n" + prompt[len(tok.bos_token):]  # continue the chat: no second <s>
        prompt = prompt.replace("<image>", "<image>" * (IMAGE_SIZE // PATCH) ** 2)
        _TURNS[key] = (tok(prompt, add_special_tokens=False)["input_ids"],
                       tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
    return _TURNS[key]


class Stream(torch.utils.data.IterableDataset):
    """An endless, seeded stream of examples for a DataLoader worker (question answering, or the Opta flow)."""

    def __init__(self, path: Path, seed: int, flow: bool = False) -> None:
        super().__init__()
        self.path, self.seed, self.flow = path, seed, flow

    def __iter__(self):
        from transformers import AutoProcessor

        info = torch.utils.data.get_worker_info()
        worker = info.id if info else 0
        processor = AutoProcessor.from_pretrained(self.path)
        rng = random.Random(self.seed * 1000 + worker)
        n = 0
        while True:
            seed = TRAIN_SEED_BASE + (self.seed * 1000 + worker) * 1_000_000 + n
            if self.flow:
                yield flow_example(seed + 500_000, processor, rng, (IMAGE_SIZE // PATCH) ** 2, input_pixels)
            else:
                yield example(seed, processor, rng)
            n += 1


def collate(batch):
    import numpy as np

    width = max(len(ids) for _, ids, _, _ in batch)
    ids = torch.full((len(batch), width), 1, dtype=torch.long)  # <pad> = 1
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (_, seq, labelled, _) in enumerate(batch):
        ids[row, : len(seq)] = torch.tensor(seq)
        labels[row, : len(seq)] = torch.where(torch.tensor(labelled), torch.tensor(seq), -100)
        mask[row, : len(seq)] = 1
    pixels = torch.from_numpy(np.stack([b[0] for b in batch]))
    return pixels, ids, labels, mask, [b[3] for b in batch]


def train(path: Path, steps: int, batch: int, lr: float, workers: int, max_seconds: float, data_seed: int,
          context: int, flow_every: int, flow_batch: int, eval_examples: int = 2000) -> None:
    """Train the weights in ``path`` further (a fresh ``init`` or an earlier run: runs chain, see training.json).

    ``context`` raises the positions the model is built for (RoPE: no new weights); with ``flow_every`` k > 0,
    every k-th step is a batch of ``flow_batch`` whole Opta flows (~3,200 tokens each) instead of questions.
    """
    import torch
    import transformers
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    processor = AutoProcessor.from_pretrained(path)
    ip = processor.image_processor
    mean = torch.tensor(ip.image_mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(ip.image_std, device=device).view(1, 3, 1, 1)
    model = LlavaForConditionalGeneration.from_pretrained(path, dtype=torch.float32).to(device).train()
    if context > model.config.text_config.max_position_embeddings:
        model.config.text_config.max_position_embeddings = context
        processor.tokenizer.model_max_length = context
    flow_workers = max(1, workers // 3) if flow_every and workers else 0
    loader = torch.utils.data.DataLoader(Stream(path, data_seed), batch_size=batch,
                                         num_workers=workers - flow_workers, collate_fn=collate,
                                         persistent_workers=workers > flow_workers,
                                         prefetch_factor=4 if workers > flow_workers else None)
    flows = iter(torch.utils.data.DataLoader(
        Stream(path, data_seed, flow=True), batch_size=flow_batch, num_workers=flow_workers, collate_fn=collate,
        prefetch_factor=4 if flow_workers else None)) if flow_every else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98),
                                  fused=device == "cuda")
    warmup = max(1, min(300, steps // 10))
    start, losses = time.time(), []
    questions = iter(loader)
    for step in itertools.count():
        flow_step = flows is not None and step % flow_every == 0
        pixels, ids, labels, mask, _ = next(flows) if flow_step else next(questions)
        elapsed = time.time() - start
        if step >= steps or elapsed > max_seconds:  # a safety stop inside the device's time limit
            break
        # Cosine decay over steps or over the time limit, whichever ends first, so a run cut short by the
        # device's limit still ends at a low learning rate (only runs that hit the time limit depend on speed).
        progress = min(1.0, max(step / steps, elapsed / max_seconds))
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * progress))
        pixel_values = ((pixels.to(device).permute(0, 3, 1, 2).float() / 255.0) - mean) / std
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            out = model(input_ids=ids.to(device), attention_mask=mask.to(device), pixel_values=pixel_values,
                        labels=labels.to(device))
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(out.loss.item())
        if step % 250 == 0 or step == steps - 1:
            print(f"step {step:5d} loss {sum(losses[-50:]) / len(losses[-50:]):.4f} "
                  f"{time.time() - start:6.1f} s", flush=True)
    wall = time.time() - start
    accuracy = teacher_forced_accuracy(model, processor, mean, std, device, flows is not None, eval_examples)
    model.eval().to(torch.float16).save_pretrained(path)  # fp16 on disk: half the size, loads as fp32 on CPU
    processor.save_pretrained(path)  # the tokenizer's model_max_length follows the context
    record = {
        "command": " ".join(["python", *sys.argv]), "date": datetime.datetime.now(datetime.UTC).isoformat(),
        "device": torch.cuda.get_device_name(0) if device == "cuda" else platform.processor(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "python": platform.python_version()},
        "steps": steps, "steps_run": len(losses), "batch": batch, "lr": lr, "train_wall_s": round(wall, 1),
        "final_loss": sum(losses[-100:]) / len(losses[-100:]),
        "params": sum(p.numel() for p in model.parameters()),
        "data_seed": data_seed, "context": model.config.text_config.max_position_embeddings,
        "flow_every": flow_every, "flow_batch": flow_batch, "teacher_forced_accuracy": accuracy,
    }
    previous = path / "training.json"
    if previous.is_file():  # this run continued an earlier one: keep the chain
        record["continued_from"] = json.loads(previous.read_text())
    (path / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


def teacher_forced_accuracy(model, processor, mean, std, device, flows: bool, n: int = 2000) -> dict:
    """Exact match of every answer token under teacher forcing, on held-out scene seeds (< 100,000)."""
    import torch

    rng = random.Random(1)
    examples = [example(50_000 + i, processor, rng, turns=1) for i in range(n)]
    chunks = [examples[i:i + 250] for i in range(0, n, 250)]
    if flows:  # whole flows: both JSON replies token for token
        tokens = (IMAGE_SIZE // PATCH) ** 2
        flow_examples = [flow_example(60_000 + i, processor, rng, tokens, input_pixels) for i in range(n // 10)]
        chunks += [flow_examples[i:i + 25] for i in range(0, len(flow_examples), 25)]
    right: dict[str, list[int]] = {}
    model.eval()
    with torch.no_grad():
        for chunk in chunks:
            pixels, ids, labels, mask, kinds = collate(chunk)
            pixel_values = ((pixels.to(device).permute(0, 3, 1, 2).float() / 255.0) - mean) / std
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                           pixel_values=pixel_values).logits
            predicted = logits[:, :-1].argmax(-1).cpu()
            target = labels[:, 1:]
            ok = ((predicted == target) | (target == -100)).all(dim=1)
            for kind, good in zip(kinds, ok.tolist(), strict=True):
                right.setdefault(kind, []).append(int(good))
    return {k: sum(v) / len(v) for k, v in sorted(right.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["init", "train"])
    parser.add_argument("path", type=Path)
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--workers", type=int, default=12)
    parser.add_argument("--max-seconds", type=float, default=1e9)
    parser.add_argument("--data-seed", type=int, default=0, help="a new value per continued run: new scenes")
    parser.add_argument("--context", type=int, default=512, help="positions the model is built for")
    parser.add_argument("--flow-every", type=int, default=0, help="every k-th step trains on whole Opta flows")
    parser.add_argument("--flow-batch", type=int, default=32)
    parser.add_argument("--eval-examples", type=int, default=2000, help="held-out questions (flows: a tenth)")
    args = parser.parse_args()
    if args.action == "init":
        init(args.path)
    else:
        train(args.path, args.steps, args.batch, args.lr, args.workers, args.max_seconds, args.data_seed,
              args.context, args.flow_every, args.flow_batch, args.eval_examples)


if __name__ == "__main__":
    main()
