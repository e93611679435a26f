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


def test_the_noise_is_finite_at_the_extremes_and_over_a_real_vocabulary():
    from optascan.engine.backends.torch_sampling import _MASK, gumbel_noise, token_hashes

    # the largest and smallest hash values a draw can see map strictly inside (0, 1)
    extremes = torch.tensor([0, _MASK], dtype=torch.long)
    uniform = ((extremes >> 9).float() + 0.5) / 8388608.0
    assert float(uniform.min()) > 0.0 and float(uniform.max()) < 1.0
    hashes = token_hashes(151_936, "cpu")  # Qwen2's vocabulary: ~1 in 110 steps hit 1.0 with 24 bits
    for step in range(300):
        noise = gumbel_noise(torch.tensor([3]), torch.tensor([step]), hashes)
        assert torch.isfinite(noise).all(), step


def test_a_masked_token_is_never_drawn_over_a_real_vocabulary():
    scores = torch.full((1, 151_936), -float("inf"))
    scores[0, 42], scores[0, 7] = 5.0, 4.0
    s = Sampling(max_tokens=1, temperature=1.0, seed=0)
    drawn = {int(choose_token(scores, torch.zeros(1, 0, dtype=torch.long), s, step)) for step in range(400)}
    assert drawn == {42, 7}


def test_neighbouring_seeds_do_not_replay_each_others_draws():
    flat = torch.zeros(1, 1000)
    none = torch.zeros(1, 0, dtype=torch.long)

    def draws(seed):
        return [int(choose_token(flat, none, Sampling(max_tokens=1, temperature=1.0, seed=seed), i))
                for i in range(8)]

    # 1253158107 hashes to 1 (and 0 to 0): when the step was XORed in unhashed, this seed replayed seed 0's
    # draws with neighbouring steps swapped
    assert sorted(draws(0)) != sorted(draws(1253158107))
    seeds = [draws(seed) for seed in range(200)]
    assert len({tuple(sorted(d)) for d in seeds}) == len(seeds)
