import pytest

from optascan.errors import InsufficientDiskSpace, InvalidRequest, UnsafeFileName
from optascan.models.plan import Phase, Progress, check_disk, validate_filename, validate_repo_id, validate_revision


@pytest.mark.parametrize("name", ["../evil.txt", "/etc/passwd", "a\\b.bin", "a/../../b", "", "a//b", "./x",
                                  "C:/x", "x\x00y"])
def test_unsafe_file_names_are_refused(name):
    with pytest.raises(UnsafeFileName):
        validate_filename(name)


def test_ordinary_file_names_pass():
    for name in ["config.json", "model-00001-of-00002.safetensors", "onnx/decoder.onnx", ".gitattributes"]:
        assert validate_filename(name) == name


@pytest.mark.parametrize("repo_id", ["noslash", "a/b/c", "../x", "org/..", "org/name with space", "/org/name"])
def test_bad_repo_ids_are_refused(repo_id):
    with pytest.raises(InvalidRequest):
        validate_repo_id(repo_id)


def test_revisions_allow_branches_tags_and_commits_only():
    assert validate_revision("main") and validate_revision("a" * 40) and validate_revision("refs/pr/1")
    for bad in ["../main", "a//b", "-rf", ""]:
        with pytest.raises(InvalidRequest):
            validate_revision(bad)


def test_disk_check_needs_the_download_plus_twenty_percent():
    check_disk(1000, 1200, "/data")
    with pytest.raises(InsufficientDiskSpace) as info:
        check_disk(1000, 1199, "/data")
    assert info.value.needed_bytes == 1200 and info.value.free_bytes == 1199 and "/data" in str(info.value)


def test_progress_is_monotonic_overall_and_per_file():
    events = []
    now = [0.0]
    progress = Progress({"a": 100, "b": 300}, events.append, clock=lambda: now[0])
    progress.phase(Phase.CHECKING)
    for file, seen, t in [("a", 50, 1), ("a", 40, 2), ("a", 100, 3), ("b", 10, 4), ("b", 0, 5), ("b", 500, 6)]:
        now[0] = t
        progress.update(file, seen)
    overall = [e.bytes for e in events]
    assert overall == sorted(overall) and overall[-1] == 400 == events[-1].total
    assert [e.file_bytes for e in events if e.file == "a"] == [50, 100]
    assert events[-1].fraction == 1.0 and events[-1].eta_s == 0


def test_resumed_bytes_do_not_inflate_the_speed():
    events = []
    now = [10.0]
    progress = Progress({"a": 1000}, events.append, clock=lambda: now[0])
    progress.done["a"] = 900  # already on disk from an interrupted pull
    now[0] = 11.0
    progress.update("a", 950)
    assert events[-1].bytes_per_s == pytest.approx(50.0)
