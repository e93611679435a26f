"""The catalog of supported models, as data: one row per model, no per-model code.

Sizes are the bf16/fp32 safetensors a pull downloads, rounded; ``memory_bytes`` is what loading needs in
bf16 with a working margin (weights × 1.25), before the KV cache a request adds (issue #6 budgets it).
``revision`` None means "the repo's main branch at pull time"; the pull records the commit it got, so an
install is pinned from then on. (Exact commit pins need a look at the hub, which these machines cannot
reach; filling them in is a follow-up.)
"""

from __future__ import annotations

from dataclasses import dataclass

GB = 1000**3


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    repo_id: str | None  # None: shipped inside the package
    revision: str | None
    download_bytes: int
    params: int
    vision: bool
    licence: str
    gated: bool
    description: str

    @property
    def memory_bytes(self) -> int:
        return int(self.download_bytes * 1.25)


CATALOG: tuple[CatalogEntry, ...] = (
    CatalogEntry("demo", None, None, 10_815_048, 5_400_896, True, "Apache-2.0", False,
                 "tiny shapes-and-colours demo, shipped in the package (see its model card)"),
    CatalogEntry("smolvlm-256m", "HuggingFaceTB/SmolVLM-256M-Instruct", None, int(0.51 * GB), 256_000_000, True,
                 "Apache-2.0", False, "smallest useful VLM; phones and laptops"),
    CatalogEntry("smolvlm-500m", "HuggingFaceTB/SmolVLM-500M-Instruct", None, int(1.02 * GB), 507_000_000, True,
                 "Apache-2.0", False, "small VLM, better OCR than 256M"),
    CatalogEntry("smolvlm-2.2b", "HuggingFaceTB/SmolVLM-Instruct", None, int(4.5 * GB), 2_250_000_000, True,
                 "Apache-2.0", False, "SmolVLM 2.2B"),
    CatalogEntry("qwen2-vl-2b", "Qwen/Qwen2-VL-2B-Instruct", None, int(4.4 * GB), 2_210_000_000, True,
                 "Apache-2.0", False, "Qwen2-VL 2B: strong OCR and documents for its size"),
    CatalogEntry("qwen2.5-vl-3b", "Qwen/Qwen2.5-VL-3B-Instruct", None, int(7.5 * GB), 3_750_000_000, True,
                 "Qwen Research License", False, "Qwen2.5-VL 3B (non-commercial licence)"),
    CatalogEntry("qwen2.5-vl-7b", "Qwen/Qwen2.5-VL-7B-Instruct", None, int(16.6 * GB), 8_290_000_000, True,
                 "Apache-2.0", False, "Qwen2.5-VL 7B: best quality in the catalog that fits 24 GB"),
    CatalogEntry("llama-3.2-11b-vision", "meta-llama/Llama-3.2-11B-Vision-Instruct", None, int(21.4 * GB),
                 10_700_000_000, True, "Llama 3.2 Community License", True,
                 "Llama 3.2 Vision 11B (gated: accept the licence on the hub, set HF_TOKEN)"),
    CatalogEntry("gemma-3-4b", "google/gemma-3-4b-it", None, int(8.6 * GB), 4_300_000_000, True, "Gemma", True,
                 "Gemma 3 4B (gated: accept the licence on the hub, set HF_TOKEN)"),
)
BY_NAME = {entry.name: entry for entry in CATALOG}


def lookup(name: str) -> CatalogEntry | None:
    return BY_NAME.get(name.lower())
