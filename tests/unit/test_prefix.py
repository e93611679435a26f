from optascan.engine.prefix import reusable_length

IMG = 9


def test_a_follow_up_reuses_the_whole_previous_conversation_but_its_last_token():
    first = [1, 2, IMG, IMG, 3, 4, 5, 6]  # prompt + the reply the cache holds
    follow_up = first + [7, 8, 10]
    assert reusable_length(first, follow_up, IMG) == len(first)
    assert reusable_length(first, first, IMG) == len(first) - 1  # one token must still run


def test_it_stops_where_the_prompts_diverge():
    assert reusable_length([1, 2, 3, 4], [1, 2, 5, 6], None) == 2
    assert reusable_length([], [1, 2], None) == 0
    assert reusable_length([1, 2], [3, 4], None) == 0


def test_no_reuse_unless_every_image_token_is_inside_the_shared_prefix():
    # a different image after a shared system prompt: its tokens must be encoded afresh
    assert reusable_length([1, 2, IMG, IMG, 3], [1, 2, IMG, IMG, 4, 5], IMG) == 4
    assert reusable_length([1, 2, 3, IMG, IMG], [1, 2, 4, IMG, IMG], IMG) == 0
    # the cached request had an image the new one lacks: cached position offsets would be stale
    assert reusable_length([1, 2, IMG, IMG, 3], [1, 2, 5, 6], IMG) == 0
    assert reusable_length([1, 2, 3], [1, 2, 4], IMG) == 2
