"""The fast engine's compact decoder against transformers on CPU (fp32): same logits, same greedy tokens."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import optascan
from optascan import CancelToken, FinishReason, InvalidRequest
from optascan.engine.backends.fast import elementwise
from optascan.testing.agreement import with_generated

FAMILIES = ["llava", "qwen2_vl", "qwen2_5_vl", "idefics3", "llama_text"]
PHOTO = Image.new("RGB", (300, 200), (200, 60, 30))


def request_for(family: str, **kw) -> dict:
    images = [] if family == "llama_text" else [PHOTO]
    return dict(prompt="Describe the picture in detail.", images=images, **kw)


@pytest.fixture(scope="module")
def fast(tiny_dir):
    engines = {}

    def get(family):
        if family not in engines:
            engines[family] = optascan.load(tiny_dir(family), device="cpu", engine="fast")
        return engines[family]

    yield get
    for engine in engines.values():
        engine.close()


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_match_transformers_for_prefill_and_every_decode_step(fast, family):
    backend = fast(family).backend
    assert backend.name == "fast"
    from optascan.engine.conversation import to_conversation
    from optascan.types import Request

    prepared = backend.prepare(to_conversation(Request(**request_for(family))), request_for(family)["images"])
    ids = prepared.inputs["input_ids"]
    with torch.inference_mode():
        embeds, positions = backend._prefill_inputs(prepared.inputs)
        decoder = backend.decoder
        ours = decoder(embeds, 0, *decoder.rotary(positions), all_logits=True)
        reference = backend.model(**prepared.inputs).logits
        assert torch.allclose(ours, reference, atol=1e-4, rtol=1e-4), (ours - reference).abs().max()
        # decode 8 more tokens one at a time; transformers recomputes the whole sequence each time
        generated, n = [], ids.shape[1]
        for step in range(8):
            token = ours[:, -1].argmax(-1)
            generated.append(int(token))
            position = torch.tensor([int(positions.max()) + 1 + step])
            ours = decoder(decoder.embed(token.view(1, 1)), n + step, *decoder.rotary(position))
            reference = backend.model(**with_generated(prepared.inputs, generated)).logits[:, -1:]
            assert torch.allclose(ours, reference, atol=1e-4, rtol=1e-4), (step, (ours - reference).abs().max())


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_output_is_token_identical_to_the_transformers_engine_for_64_tokens(fast, tiny_engine, family):
    expected = tiny_engine(family).generate(**request_for(family, max_tokens=64, ignore_eos=True))
    got = fast(family).generate(**request_for(family, max_tokens=64, ignore_eos=True))
    assert got.usage == expected.usage and got.usage.completion_tokens == 64
    assert got.text == expected.text


@pytest.mark.parametrize("family", ["qwen2_vl", "llava"])
@pytest.mark.parametrize("extra", [{}, {"repetition_penalty": 1.3}], ids=["decode-loop", "eager-penalty"])
def test_sampling_with_a_seed_matches_the_transformers_engine(fast, tiny_engine, family, extra):
    kw = request_for(family, max_tokens=24, ignore_eos=True, temperature=0.9, top_p=0.9, top_k=40, seed=11, **extra)
    got = fast(family).generate(**kw).text
    assert got == tiny_engine(family).generate(**kw).text
    assert got != fast(family).generate(**{**kw, "seed": 12}).text  # the seed matters


def test_same_events_and_cancel_within_one_step(fast):
    engine = fast("qwen2_vl")
    token = CancelToken()
    seen = []

    def on_event(event):
        seen.append(event)
        if event.tokens == 5:
            token.cancel("enough")

    result = engine.generate(**request_for("qwen2_vl", max_tokens=200, ignore_eos=True), cancel=token,
                             on_event=on_event)
    # events reach this thread asynchronously: the worker may finish one more step before the cancel lands
    assert result.finish_reason is FinishReason.CANCELLED and 5 <= result.usage.completion_tokens <= 6
    assert [e.state.value for e in seen][:2] == ["queued", "preprocessing"]


SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                           "n": {"type": "integer"}, "tags": {"type": "array", "items": {
                                               "enum": ["red", "green"]}, "maxItems": 3}},
          "required": ["name", "n", "tags"], "additionalProperties": False}


@pytest.mark.parametrize("family", ["qwen2_vl", "llava"])
@pytest.mark.parametrize("sampling", [{}, {"temperature": 1.0, "seed": 2}, {"repetition_penalty": 1.3}],
                         ids=["greedy", "seeded", "penalty"])
def test_json_schema_runs_on_our_decoder_with_the_same_tokens_as_transformers(fast, tiny_engine, family,
                                                                              sampling):
    import json

    request = request_for(family, json_schema=SCHEMA, max_tokens=120, **sampling)
    got = fast(family).generate(**request)
    assert got.text == tiny_engine(family).generate(**request).text
    if got.finish_reason is FinishReason.STOP:  # random weights may run out of tokens mid-string
        assert set(json.loads(got.text)) == {"name", "n", "tags"}


def test_the_opta_flow_on_the_fast_engine_matches_transformers(tiny_engine):
    # both turns under the flow's schemas, on the demo model: the same analysis and answer on both engines
    from optascan.demo.eval import run_flow_eval, session_flow

    with optascan.load("demo", device="cpu", engine="fast") as fast, optascan.load("demo", device="cpu") as hf:
        ours, theirs = (run_flow_eval(session_flow(e), scenes=4, first_seed=2000) for e in (fast, hf))
    assert ours == theirs


def test_engine_choice(tiny_dir):
    with pytest.raises(InvalidRequest):
        optascan.load(tiny_dir("llava"), device="cpu", engine="turbo")
    with optascan.load(tiny_dir("llava"), device="cpu") as engine:
        assert engine.info.backend == "hf"  # auto picks the fast engine on CUDA only


def test_the_demo_model_answers_the_same_on_the_fast_engine(tiny_engine):
    # real answers that end at EOS: the greedy loop's one-step lag must never leak a token past the stop
    from optascan.demo.eval import run_eval

    with optascan.load("demo", device="cpu", engine="fast") as fast_engine, \
            optascan.load("demo", device="cpu", engine="hf") as hf_engine:
        answers = {}

        def ask(engine, name):
            def go(image, question):
                text = engine.generate(prompt=question, images=[image], max_tokens=8).text
                answers.setdefault(name, []).append(text)
                return text
            return go

        fast_report = run_eval(ask(fast_engine, "fast"), scenes=15)
        run_eval(ask(hf_engine, "hf"), scenes=15)
    assert answers["fast"] == answers["hf"]
    assert min(fast_report["accuracy"].values()) >= 0.9


@pytest.mark.parametrize("family", ["qwen2_vl", "llama_text"])
@pytest.mark.parametrize("sampling", [{}, {"temperature": 0.8, "top_p": 0.9, "seed": 3}], ids=["greedy", "seeded"])
def test_tokens_stay_identical_across_cache_buckets(fast, tiny_engine, family, sampling):
    # a prompt just under a bucket's end and a reply that runs past it: the step switches from one bucket's
    # graph to the next mid-reply (Qwen2-VL: with an image, so rope positions differ from cache slots too)
    loop = fast(family).backend.decode_loop
    request = request_for(family, max_tokens=48, ignore_eos=True, **sampling)

    def prompt_tokens(words):
        request["prompt"] = " ".join(["red green blue"] * words)
        return tiny_engine(family).generate(**{**request, "max_tokens": 1}).usage.prompt_tokens

    base = prompt_tokens(1)
    per_group = prompt_tokens(11) - base  # tokens added by ten more "red green blue"
    end = loop.bucket(base + 40)
    used = prompt_tokens(1 + 10 * (end - 20 - base) // per_group)
    assert end - 40 <= used < end and loop.bucket(used + 47) > end, (base, per_group, used, end)
    expected = tiny_engine(family).generate(**request)
    got = fast(family).generate(**request)
    assert got.text == expected.text and got.usage.completion_tokens == 48


@pytest.mark.parametrize("family", ["qwen2_vl", "llava"])
def test_a_step_over_its_bucket_equals_a_step_over_the_whole_cache(fast, family):
    backend = fast(family).backend
    decoder, loop = backend.decoder, backend.decode_loop
    torch.manual_seed(0)
    with torch.inference_mode():
        decoder.k_cache.normal_()
        decoder.v_cache.normal_()
        for index in (0, 254, 255, 256, 300, 511, 512):
            args = (torch.tensor([[5]]), torch.tensor([index]), torch.tensor([index + 7]))
            bucketed = decoder.step(*args, loop.bucket(index))
            whole = decoder.step(*args)
            assert loop.bucket(index) < decoder.max_tokens
            assert torch.allclose(bucketed, whole, atol=1e-5), index


def test_decode_capture_puts_back_what_its_warm_steps_wrote_into_the_cache(fast, monkeypatch):
    """The decode graphs' warm-up runs real steps from cache slot 0 before each capture; the loop keeps and puts
    back only the slots those steps write (not a copy of the whole cache: LLaVA's would be 2 GB at its peak).
    CPU has no graphs: the capture's warm part runs as on the GPU, the capture itself is left out."""
    from optascan.engine.backends.fast import graphs

    backend = fast("llava").backend
    decoder, loop = backend.decoder, backend.decode_loop
    after_warm = []

    def warm_only(keys, run, names, *, before_warm=None, warm_runs=1):
        for key in keys:
            before_warm(key)
            for _ in range(warm_runs):
                run(key)
        after_warm.append(decoder.k_cache.clone())
        return {}, {}

    monkeypatch.setattr(graphs, "warm_and_capture", warm_only)
    torch.manual_seed(1)
    with torch.inference_mode():
        decoder.k_cache.normal_()
        decoder.v_cache.normal_()
        before = decoder.k_cache.clone(), decoder.v_cache.clone()
        loop._capture()
    assert torch.equal(decoder.k_cache, before[0]) and torch.equal(decoder.v_cache, before[1])
    # the warm steps wrote the slots that were kept, and only those
    written = (after_warm[0] != before[0]).flatten(0, 2).any(-1).any(0)  # per slot
    assert written[:graphs.WARM_STEPS].all() and not written[graphs.WARM_STEPS:].any()


@pytest.mark.parametrize("family", ["qwen2_vl", "llava"])
def test_the_agreement_report_finds_no_divergence_here_and_explains_a_forced_one(fast, tiny_engine, family):
    from optascan.testing.agreement import first_divergence, greedy_ids

    request = request_for(family)
    prepared, reference = greedy_ids(tiny_engine(family), request, 16)
    _, ours = greedy_ids(fast(family), request, 16)
    assert first_divergence(tiny_engine(family), prepared, reference, ours) == {"equal_tokens": 16,
                                                                                 "diverged": False}
    forced = reference[:5] + [reference[5] + 1] + reference[6:]
    report = first_divergence(tiny_engine(family), prepared, reference, forced)
    # the recomputed logits are the ones greedy chose from: the reference token is their maximum
    assert report["equal_tokens"] == 5 and report["our_token"] == reference[5] + 1
    assert report["gap"] > 0 and report["reference_logit"] >= report["our_token_logit"]
    # the reference's own KV-cached logits at that step, decoded along the forced prefix: in fp32 they agree
    # with its full forward, so the drift that could excuse a bf16 divergence is ~0 and this one is no tie
    assert report["reference_drift"] is not None and report["reference_drift"] < 1e-3
    assert abs(report["reference_incremental_gap"] - report["gap"]) < 1e-3
    assert report["tie"] == (report["gap"] <= 2 * report["bf16_spacing"])


def test_float32_check_of_a_divergence_measures_both_engines_errors(fast, tiny_dir, tiny_engine):
    # here both engines run float32: their logits along the prefix equal the float32 reload's, and the forced
    # token is genuinely worse, so it is no tie
    from optascan.testing.agreement import against_float32, fast_logits_along, greedy_ids

    request = request_for("qwen2_vl")
    prepared, reference = greedy_ids(tiny_engine("qwen2_vl"), request, 8)
    ours = fast_logits_along(fast("qwen2_vl").backend, prepared, reference[:5])
    assert int(ours.argmax()) == reference[5]
    report = against_float32(fast("qwen2_vl"), str(tiny_dir("qwen2_vl")), prepared, reference[:5],
                             (reference[5], reference[5] + 1))
    assert report["transformers_bf16_error"] < 1e-4 and report["ours_bf16_error"] < 1e-4, report
    assert report["float32_gap"] > 0 and report["float32_prefers"] == "reference" and not report["bf16_tie"]


def test_the_compiled_one_token_step_gives_the_same_logits_and_tokens(tiny_dir, tiny_engine):
    # torch.compile (inductor) on CPU here; on CUDA the same compiled parts are captured in the step's graphs
    from optascan.engine.backends.fast.backend import FastBackend

    backend = FastBackend(tiny_dir("qwen2_vl"), device="cpu", compile_step=True)
    try:
        assert backend.decoder.compiled
        decoder = backend.decoder
        with torch.inference_mode():
            decoder.k_cache.normal_()
            decoder.v_cache.normal_()
            args = (torch.tensor([[5]]), torch.tensor([40]), torch.tensor([47]))
            compiled = decoder.step(*args, 256)
            decoder._use(elementwise.TORCH)  # plain: F.linear, torch's elementwise code, uncompiled
            plain = decoder.step(*args, 256)
        assert torch.allclose(compiled, plain, atol=1e-5, rtol=1e-5)
    finally:
        backend.close()


@pytest.mark.parametrize("engine_name", ["hf", "fast"])
def test_the_image_placeholder_is_never_generated(tiny_dir, engine_name):
    # a model that prefers the image token above all (a hook on the head): both engines still never emit it;
    # sent back in a later turn it would stand for an image that is not there
    with optascan.load(tiny_dir("llava"), device="cpu", engine=engine_name) as engine:
        backend = engine.backend
        image_id = backend.image_token_id
        hook = backend.model.lm_head.register_forward_hook(lambda m, i, out: out.index_add(
            -1, torch.tensor([image_id]), torch.full((*out.shape[:-1], 1), 1e4, dtype=out.dtype)))
        try:
            from optascan.testing.agreement import greedy_ids

            _, ids = greedy_ids(engine, request_for("llava"), 8)
        finally:
            hook.remove()
    assert len(ids) == 8 and image_id not in ids


@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava", "llama_text"])
def test_a_prompt_padded_to_its_prefill_bucket_gives_the_same_logits_and_tokens(fast, tiny_engine, family):
    """The prefill graphs' padding, run eagerly here (CUDA captures the same body): the last real token's
    logits equal the unpadded prefill's, and decoding over a cache whose slots after the prompt hold the
    padding's keys and values gives transformers' 32 greedy tokens."""
    from optascan.engine.backends.fast.prefill import PrefillGraphs
    from optascan.testing.agreement import greedy_ids

    backend = fast(family).backend
    graphs = PrefillGraphs(backend.decoder, "cpu", capture=False)
    prepared = greedy_ids(fast(family), request_for(family), 1)[0]
    with torch.inference_mode():
        embeds, positions = backend._prefill_inputs(prepared.inputs)
        plain = backend.decoder(embeds, 0, *backend.decoder.rotary(positions))
        padded = graphs.run(embeds, positions)
    assert graphs.buckets[0] > embeds.shape[1] + 50  # real padding
    assert (padded - plain).abs().max().item() < 1e-4
    expected = tiny_engine(family).generate(**request_for(family, max_tokens=32, ignore_eos=True))
    backend.prefill_graphs = graphs
    try:
        got = fast(family).generate(**request_for(family, max_tokens=32, ignore_eos=True))
    finally:
        backend.prefill_graphs = None
    assert got.text == expected.text and got.usage.completion_tokens == 32


def test_a_prompt_longer_than_the_prefill_buckets_runs_without_a_graph(fast):
    """Past the last bucket (2,048 tokens) the graphs decline and the prefill runs the decoder directly: the same
    logits as the decoder's own pass, through FastBackend.prefill with graphs attached."""
    from optascan.engine.backends.fast.prefill import PrefillGraphs

    backend = fast("llama_text").backend
    graphs = PrefillGraphs(backend.decoder, "cpu", capture=False)
    n = graphs.buckets[-1] + 1
    assert n < backend.decoder.max_tokens
    ids = torch.randint(5, backend.decoder.embed.weight.shape[0], (1, n))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with torch.inference_mode():
        embeds, positions = backend._prefill_inputs(inputs)
        assert graphs.run(embeds, positions) is None
        direct = backend.decoder(embeds, 0, *backend.decoder.rotary(positions))
        backend.prefill_graphs = graphs
        try:
            logits, length, next_position = backend.prefill(inputs)
        finally:
            backend.prefill_graphs = None
    assert (length, next_position) == (n, n)
    assert (logits - direct).abs().max().item() < 1e-5


def test_only_the_fast_engine_processes_images_on_its_gpu(tiny_dir):
    """The fast engine asks transformers' torchvision image processor to work on the model's GPU; the
    transformers engine, the reference path, keeps the CPU (the GPU run itself is in the device checks)."""
    for engine, expected in (("fast", True), ("hf", False)):
        with optascan.load(tiny_dir("qwen2_5_vl"), device="cpu", engine=engine) as loaded:
            backend = loaded.backend
            assert not backend._processes_on_device()  # a CPU model: nothing to move
            backend.device = "cuda"  # the predicate alone: nothing runs on it here
            assert backend._processes_on_device() is expected
            backend.device = "cpu"


@pytest.mark.parametrize("family", ["llava", "qwen2_5_vl", "idefics3"])
def test_photo_handed_over_as_device_pixels_gives_the_processor_the_same_inputs(tiny_dir, family):
    """Where the fast engine processes images on its GPU it hands transformers' processor the photo as a
    [3, H, W] uint8 tensor already on the device (torch_device.pixels_on): every processor output must be exactly
    what the photo itself gives (on the CPU here; the GPU's own run is in the benchmark's agreement)."""
    from transformers import AutoProcessor

    from optascan.engine.backends.torch_device import pixels_on

    processor = AutoProcessor.from_pretrained(tiny_dir(family))
    photo = Image.effect_noise((301, 203), 80).convert("RGB")
    tensor = pixels_on("cpu", photo)
    assert tensor.shape == (3, 203, 301) and tensor.dtype == torch.uint8
    if hasattr(photo, "__arrow_c_array__"):  # Pillow 11.2+: the zero-copy path (images/pixels.py) is the one taken
        from optascan.images.pixels import rgbx_view

        assert rgbx_view(photo) is not None and tensor.stride() == (1, 301 * 4, 4)
    image = processor.image_token if family != "idefics3" else "<image>"
    text = f"{image} What is this?"
    expected = processor(text=[text], images=[photo], return_tensors="pt")
    got = processor(text=[text], images=[tensor], return_tensors="pt")
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    grey = photo.convert("L")
    assert pixels_on("cpu", grey) is grey  # other modes go as they are: the processor converts them


def test_warm_up_builds_compiled_kernels_in_process_unless_the_user_chose(monkeypatch):
    """The fast engine's warm-up compiles with one compile thread (no worker pool: shorter cold warm-ups,
    bench/fast_warmup.py), only while it warms up, and leaves TORCHINDUCTOR_COMPILE_THREADS to decide where set."""
    from torch._inductor import config

    from optascan.engine.backends.fast.backend import compiling_in_process

    monkeypatch.delenv("TORCHINDUCTOR_COMPILE_THREADS", raising=False)
    with config.patch(compile_threads=8):  # torch's config module restores itself (monkeypatch would break it)
        with compiling_in_process():
            assert config.compile_threads == 1
        assert config.compile_threads == 8
        monkeypatch.setenv("TORCHINDUCTOR_COMPILE_THREADS", "4")
        with compiling_in_process():
            assert config.compile_threads == 8


def test_close_frees_the_weights_and_cache_while_the_engine_object_lives_on(tiny_dir):
    """``with load(...) as engine:`` leaves ``engine`` bound: closing must still let the weights, the decoder's
    views of them and its KV cache go (a second model loaded after it would otherwise hold two copies)."""
    import weakref

    engine = optascan.load(tiny_dir("qwen2_vl"), device="cpu", engine="fast")
    engine.generate(**request_for("qwen2_vl", max_tokens=4))
    cache = weakref.ref(engine.backend.decoder.k_cache)
    weight = weakref.ref(engine.backend.decoder.qkv_weight[0])
    parameter = weakref.ref(next(engine.backend.model.parameters()))
    engine.close()
    assert cache() is None and weight() is None and parameter() is None


def test_the_compiled_prompt_pass_compiles_one_graph_per_function(tiny_dir, monkeypatch):
    """The prompt's pass compiles each half of a layer once, for every bucket: the prefill buffers are inference
    tensors like everything the layers make, since compiled code is guarded on the kind (an ordinary buffer gave
    the first layer a second compiled graph of the attention half), and the final norm runs uncompiled on the rows
    wanted only. Each dynamic graph is seconds of a cold warm-up on the GPU machine."""
    from torch._dynamo.utils import counters

    from optascan.engine.backends.fast.prefill import PrefillGraphs

    monkeypatch.setenv("OPTASCAN_FAST_COMPILE", "1")
    engine = optascan.load(tiny_dir("llava"), device="cpu", engine="fast")
    try:
        torch._dynamo.reset()  # what the load compiled is forgotten: this counts from nothing
        graphs = PrefillGraphs(engine.backend.decoder, "cpu", capture=False)
        before = counters["stats"]["unique_graphs"]
        with torch.inference_mode():
            for bucket in graphs.buckets[:2]:
                graphs._body(bucket)
        assert counters["stats"]["unique_graphs"] - before == 2  # before / after attention (the final norm: eager)
    finally:
        engine.close()
        torch._dynamo.reset()
