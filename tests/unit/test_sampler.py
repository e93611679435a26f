"""The sampler every path shares (Gumbel-max with counter-based noise): it draws from the right distribution."""

import pytest

torch = pytest.importorskip("torch")

from optascan.engine.backends.base import Sampling  # noqa: E402
from optascan.engine.backends.torch_sampling import choose_token  # noqa: E402

LOGITS = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0]])
DRAWS = 6000


def frequencies(sampling: Sampling, seeds: range, steps: range = range(1)) -> torch.Tensor:
    counts = torch.zeros(LOGITS.shape[-1])
    for seed in seeds:
        s = Sampling(max_tokens=1, temperature=sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p,
                     seed=seed)
        for step in steps:
            counts[int(choose_token(LOGITS, torch.zeros(1, 0, dtype=torch.long), s, step))] += 1
    return counts / counts.sum()


def test_draws_follow_the_softmax_at_the_temperature():
    for temperature in (1.0, 0.5):
        expected = (LOGITS[0] / temperature).softmax(-1)
        got = frequencies(Sampling(max_tokens=1, temperature=temperature), range(DRAWS))
        assert (got - expected).abs().max() < 0.02, (temperature, got, expected)


def test_steps_of_one_seed_are_independent_draws_too():
    expected = LOGITS[0].softmax(-1)
    got = frequencies(Sampling(max_tokens=1, temperature=1.0), range(60), range(100))
    assert (got - expected).abs().max() < 0.02


def test_top_k_and_top_p_cut_the_tail_and_renormalise():
    top_k = frequencies(Sampling(max_tokens=1, temperature=1.0, top_k=2), range(DRAWS))
    assert top_k[2:].sum() == 0
    assert abs(float(top_k[0]) - float(LOGITS[0, :2].softmax(-1)[0])) < 0.02
    probs = LOGITS[0].softmax(-1)  # 0.56, 0.21, 0.13, ...: top_p 0.7 keeps the first two (0.56 < 0.7 ≤ 0.77)
    top_p = frequencies(Sampling(max_tokens=1, temperature=1.0, top_p=0.7), range(DRAWS))
    assert top_p[2:].sum() == 0 and abs(float(top_p[0]) - float(probs[0] / probs[:2].sum())) < 0.02


def test_a_seed_and_step_fix_the_draw_and_other_seeds_differ():
    s = Sampling(max_tokens=1, temperature=1.0, seed=7)
    none = torch.zeros(1, 0, dtype=torch.long)
    flat = torch.zeros(1, 1000)
    assert [int(choose_token(flat, none, s, i)) for i in range(20)] == [int(choose_token(flat, none, s, i))
                                                                         for i in range(20)]
    other = Sampling(max_tokens=1, temperature=1.0, seed=8)
    assert [int(choose_token(flat, none, s, i)) for i in range(20)] != [int(choose_token(flat, none, other, i))
                                                                         for i in range(20)]
    big = Sampling(max_tokens=1, temperature=1.0, seed=2**63 - 1)  # the largest seed a request takes
    assert 0 <= int(choose_token(flat, none, big, 0)) < 1000
