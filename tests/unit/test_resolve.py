import pytest

from optascan import ModelNotFound
from optascan.models.resolve import resolve_model


def test_a_directory_with_config_resolves_to_itself(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model(tmp_path) == tmp_path.resolve()


def test_a_directory_without_config_is_not_a_model(tmp_path):
    with pytest.raises(ModelNotFound, match="no config.json"):
        resolve_model(tmp_path)


@pytest.mark.parametrize("name", ["no-such-model", "someorg/not-cached", "./missing/dir", "qwen2-vl-2b"])
def test_unknown_or_uncached_names_raise_model_not_found_with_a_hint(name):
    with pytest.raises(ModelNotFound) as info:
        resolve_model(name)
    assert not info.value.recoverable and ("optascan pull" in info.value.hint or "pull one of" in info.value.hint)
