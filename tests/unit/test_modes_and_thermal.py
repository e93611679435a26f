"""Performance modes and the thermal check, with a fake NVML reading (the seam) and the scripted backend."""

import pytest
from PIL import Image

from optascan import Engine, InvalidRequest, ThermalThrottled
from optascan.engine.modes import MODES, ThermalReading, apply_thermal_policy, mode
from optascan.testing.scripted import ScriptedBackend, byte_tokens

HOT = ThermalReading("cuda:0", 91.0, 87.0, False)
BRAKING = ThermalReading("cuda:0", 70.0, 87.0, True)
COOL = ThermalReading("cuda:0", 55.0, 87.0, False)
PHOTO = Image.new("RGB", (3000, 2000))


def engine_with(reading, **kw):
    ids, decode = byte_tokens("ok")
    sensor = [reading]  # tests change the reading while the engine runs
    engine = Engine(ScriptedBackend(ids, decode), name="scripted", thermal_reader=lambda device: sensor[0], **kw)
    engine.sensor = sensor
    return engine


def test_modes_set_the_default_image_tier_and_a_request_can_override_it():
    assert {m: MODES[m].image_tier for m in MODES} == {"saver": "battery", "balanced": "balanced",
                                                     "performance": "quality"}
    assert MODES["saver"].cpu_threads <= MODES["performance"].cpu_threads
    with pytest.raises(InvalidRequest):
        mode("turbo")
    for name, tier in (("saver", "battery"), ("performance", "quality")):
        with engine_with(None, mode=name) as engine:
            assert engine.generate(prompt="x", images=[PHOTO]).metadata["images"][0]["tier"] == tier
            assert engine.generate(prompt="x", images=[PHOTO], image_tier="balanced").metadata["images"][0][
                "tier"] == "balanced"


def test_modes_set_the_default_reply_length_and_a_request_can_override_it():
    for name, default in (("saver", 128), ("balanced", 256), ("performance", 512)):
        with Engine(ScriptedBackend(*byte_tokens("x" * 600)), name="scripted", mode=name) as engine:
            assert engine.generate(prompt="x").usage.completion_tokens == default
            assert engine.generate(prompt="x", max_tokens=7).usage.completion_tokens == 7


def test_thermal_policy_unit():
    assert apply_thermal_policy(None, "quality", "refuse") == "quality"  # nothing read, nothing claimed
    assert apply_thermal_policy(COOL, "quality", "step_down") == "quality"
    assert apply_thermal_policy(HOT, "quality", "step_down") == "battery"
    assert apply_thermal_policy(BRAKING, "balanced", "step_down") == "battery"
    with pytest.raises(ThermalThrottled) as info:
        apply_thermal_policy(HOT, "quality", "refuse")
    assert info.value.recoverable and info.value.temperature_c == 91.0 and "87" in str(info.value)


def test_a_hot_gpu_steps_the_request_down_or_refuses_it_and_the_engine_keeps_serving():
    with engine_with(HOT, mode="performance") as engine:
        result = engine.generate(prompt="x", images=[PHOTO])
        assert result.metadata["thermal_step_down"] == {"from_tier": "quality", "to_tier": "battery"}
        assert result.metadata["images"][0]["tier"] == "battery" and result.text == "ok"
    with engine_with(HOT, thermal_policy="refuse") as engine:
        with pytest.raises(ThermalThrottled):
            engine.generate(prompt="x", images=[PHOTO])
        with pytest.raises(ThermalThrottled):
            engine.generate(prompt="text only too: the GPU is hot whatever the input")
        engine.sensor[0] = COOL
        assert engine.generate(prompt="x", images=[PHOTO]).text == "ok"  # cooled down: serving again
    with engine_with(HOT, thermal_policy="off") as engine:
        assert "thermal_step_down" not in engine.generate(prompt="x", images=[PHOTO]).metadata
    with pytest.raises(InvalidRequest):
        engine_with(HOT, thermal_policy="melt")
