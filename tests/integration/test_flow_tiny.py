"""The Opta session on a real (random-weight) checkpoint: the real chat template takes the two-turn conversation
with the image, and a reply that is not JSON becomes a typed ParseError rather than a crash."""

import pytest
from PIL import Image

from optascan.errors import ParseError
from optascan.flow.session import OptaSession


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_random_weights_give_a_parse_error_holding_the_raw_reply(tiny_engine, family):
    session = OptaSession(tiny_engine(family), "cheapest item", images=[Image.new("RGB", (320, 240))],
                          depth_name="quick", seed=0)
    with pytest.raises(ParseError) as info:
        session.analyze()
    assert info.value.raw == session.generations[0].text
    assert session.generations[0].usage.image_tokens > 0
