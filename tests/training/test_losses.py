"""Property tests of the distillation divergences, the diversity reward and REINFORCE/RLOO."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicdistill.training.losses import (
    DIVERGENCES,
    combined_loss,
    group_normalized,
    leave_one_out_advantages,
    pairwise_distances,
    pairwise_diversity_reward,
    policy_entropy,
    reinforce_loss,
    sequence_logprob,
    token_divergence,
)

N, K, T, V = 3, 2, 5, 7


def _logits(seed: int, scale: float = 2.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, K, T, V, generator=g) * scale


def _np_log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _np_kl(logp: np.ndarray, logq: np.ndarray) -> np.ndarray:
    return (np.exp(logp) * (logp - logq)).sum(-1)


def _np_divergence(s: np.ndarray, t: np.ndarray, kind: str, beta: float, temperature: float) -> np.ndarray:
    """Brute force, per position, float64, one formula per kind written independently of the code."""
    ls, lt = _np_log_softmax(s / temperature), _np_log_softmax(t / temperature)
    if kind == "reverse_kl":
        return _np_kl(ls, lt)
    if kind == "forward_kl":
        return _np_kl(lt, ls)
    if kind == "jeffreys":
        return (1 - beta) * _np_kl(ls, lt) + beta * _np_kl(lt, ls)
    if beta == 0:
        return _np_kl(lt, ls)
    if beta == 1:
        return _np_kl(ls, lt)
    m = np.log(beta * np.exp(lt) + (1 - beta) * np.exp(ls))
    return beta * _np_kl(lt, m) + (1 - beta) * _np_kl(ls, m)


@pytest.mark.parametrize("kind", DIVERGENCES)
def test_divergence_of_equal_distributions_is_zero(kind: str) -> None:
    s = _logits(0)
    loss, per_seq = token_divergence(s, s.clone(), kind=kind, beta=0.3)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert torch.allclose(per_seq, torch.zeros(N), atol=1e-5)


@pytest.mark.parametrize("kind", DIVERGENCES)
@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_divergence_matches_bruteforce(kind: str, beta: float, temperature: float) -> None:
    s, t = _logits(1), _logits(2)
    mask = torch.rand(N, K, T, generator=torch.Generator().manual_seed(3)) > 0.3
    loss, per_seq = token_divergence(s, t, mask, kind=kind, beta=beta, temperature=temperature)
    ref = _np_divergence(s.double().numpy(), t.double().numpy(), kind, beta, temperature)  # [N, K, T]
    m = mask.numpy()
    assert (ref[m] >= 0).all() and loss.item() >= 0
    assert loss.item() == pytest.approx(ref[m].sum() / m.sum(), rel=1e-5)
    np.testing.assert_allclose(per_seq.numpy(), (ref * m).sum(axis=(1, 2)), rtol=1e-5, atol=1e-6)


def test_reverse_and_forward_kl_differ() -> None:
    s, t = _logits(4), _logits(5, scale=4.0)
    rev, _ = token_divergence(s, t, kind="reverse_kl")
    fwd, _ = token_divergence(s, t, kind="forward_kl")
    swapped, _ = token_divergence(t, s, kind="reverse_kl")
    assert abs(rev.item() - fwd.item()) > 1e-2
    assert fwd.item() == pytest.approx(swapped.item(), rel=1e-5)


def test_gjsd_endpoints_are_forward_and_reverse_kl() -> None:
    s, t = _logits(6), _logits(7)
    fwd, _ = token_divergence(s, t, kind="forward_kl")
    rev, _ = token_divergence(s, t, kind="reverse_kl")
    assert token_divergence(s, t, kind="gjsd", beta=0.0)[0].item() == pytest.approx(fwd.item(), rel=1e-6)
    assert token_divergence(s, t, kind="gjsd", beta=1.0)[0].item() == pytest.approx(rev.item(), rel=1e-6)
    # Near the ends the mixture tends to beta·forward and (1-beta)·reverse (TRL's scale jump).
    eps = 1e-4
    near0 = token_divergence(s, t, kind="gjsd", beta=eps)[0].item()
    near1 = token_divergence(s, t, kind="gjsd", beta=1 - eps)[0].item()
    assert near0 / eps == pytest.approx(fwd.item(), rel=1e-2)
    assert near1 / eps == pytest.approx(rev.item(), rel=1e-2)


def test_jeffreys_mixes_reverse_and_forward() -> None:
    s, t = _logits(8), _logits(9)
    fwd = token_divergence(s, t, kind="forward_kl")[0].item()
    rev = token_divergence(s, t, kind="reverse_kl")[0].item()
    mixed = token_divergence(s, t, kind="jeffreys", beta=0.25)[0].item()
    assert mixed == pytest.approx(0.75 * rev + 0.25 * fwd, rel=1e-6)


@pytest.mark.parametrize("kind", DIVERGENCES)
def test_masked_positions_do_not_change_the_loss(kind: str) -> None:
    s, t = _logits(10), _logits(11)
    mask = torch.ones(K, T, dtype=torch.bool)
    mask[0, :2] = False  # delay padding of codebook 0
    mask[1, -1] = False
    loss, per_seq = token_divergence(s, t, mask, kind=kind)
    s2, t2 = s.clone(), t.clone()
    s2[:, ~mask] = torch.randn(N, int((~mask).sum()), V) * 50
    t2[:, ~mask] = float("nan")
    loss2, per_seq2 = token_divergence(s2, t2, mask, kind=kind)
    assert torch.equal(loss, loss2) and torch.equal(per_seq, per_seq2)
    # ... while a valid position does change it, and the loss is normalised by the 3*(10-3) valid tokens
    full = token_divergence(s, t, kind=kind)[1]
    assert not torch.allclose(full, per_seq)
    assert loss.item() == pytest.approx(per_seq.sum().item() / (N * (K * T - 3)), rel=1e-6)


def test_no_valid_token_gives_zero_loss() -> None:
    s, t = _logits(12), _logits(13)
    loss, per_seq = token_divergence(s, t, torch.zeros(K, T, dtype=torch.bool))
    assert loss.item() == 0.0 and torch.equal(per_seq, torch.zeros(N))


def test_gradient_flows_into_student_only_and_in_float32() -> None:
    s = _logits(14).to(torch.bfloat16).requires_grad_(True)
    t = _logits(15).requires_grad_(True)
    loss, _ = token_divergence(s, t, kind="gjsd", beta=0.5)
    assert loss.dtype == torch.float32
    loss.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_teacher_zero_probabilities_give_finite_forward_kl_and_gradients() -> None:
    s = _logits(16).requires_grad_(True)
    t = _logits(17)
    t[..., :3] = float("-inf")  # e.g. a top-k filtered teacher
    for kind, beta in [("forward_kl", 0.5), ("gjsd", 0.0), ("gjsd", 0.5), ("jeffreys", 1.0)]:
        loss, _ = token_divergence(s, t, kind=kind, beta=beta)
        (grad,) = torch.autograd.grad(loss, s)
        assert torch.isfinite(loss) and torch.isfinite(grad).all(), (kind, beta)
    # the student putting mass where the teacher has none is infinitely bad under reverse KL
    assert torch.isinf(token_divergence(s, t, kind="reverse_kl")[0])


def test_reverse_kl_gradient_descent_moves_student_to_teacher() -> None:
    t = _logits(18)
    s = torch.zeros_like(t, requires_grad=True)
    opt = torch.optim.SGD([s], lr=5.0)
    first = None
    for _ in range(20):
        loss, _ = token_divergence(s, t)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first


def test_divergence_rejects_bad_arguments() -> None:
    s = _logits(0)
    with pytest.raises(ValueError, match="kind"):
        token_divergence(s, s, kind="kl")
    with pytest.raises(ValueError, match="beta"):
        token_divergence(s, s, kind="gjsd", beta=1.5)
    with pytest.raises(ValueError, match="shape"):
        token_divergence(s, s[:, :, :-1])
    with pytest.raises(ValueError, match="mask"):
        token_divergence(s, s, torch.ones(T, K, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        token_divergence(s, s, torch.ones(K, T))
    with pytest.raises(ValueError, match="temperature"):
        token_divergence(s, s, temperature=0.0)


# --------------------------------------------------------------------------------------------
# Diversity reward, RLOO, REINFORCE
# --------------------------------------------------------------------------------------------


def test_identical_embeddings_give_zero_reward_and_orthogonal_give_one() -> None:
    e = torch.eye(4)  # group 0: e0, e1 (orthogonal); group 1: e2, e2 (identical)
    emb = torch.stack([e[0], e[1], e[2], e[2], 3 * e[3], e[3]])
    r = pairwise_diversity_reward(emb[:4], group_size=2)
    assert torch.allclose(r, torch.tensor([1.0, 1.0, 0.0, 0.0]), atol=1e-6)
    # scale does not matter (cosine); opposite vectors are at distance 2
    assert torch.allclose(pairwise_diversity_reward(emb[4:], 2), torch.zeros(2), atol=1e-6)
    assert torch.allclose(pairwise_diversity_reward(torch.stack([e[0], -e[0]]), 2), torch.full((2,), 2.0))


def test_reward_is_mean_distance_to_siblings_in_consecutive_groups() -> None:
    emb = torch.nn.functional.normalize(torch.randn(6, 5, generator=torch.Generator().manual_seed(0)), dim=-1)
    r = pairwise_diversity_reward(emb, group_size=3)
    for i in range(6):
        g = i // 3
        sib = [j for j in range(3 * g, 3 * g + 3) if j != i]
        expected = np.mean([1 - float(emb[i] @ emb[j]) for j in sib])
        assert r[i].item() == pytest.approx(expected, abs=1e-6)


def test_reward_and_advantages_validate_group_size() -> None:
    with pytest.raises(ValueError, match="group_size"):
        pairwise_diversity_reward(torch.randn(4, 3), group_size=1)
    with pytest.raises(ValueError, match="multiple"):
        pairwise_diversity_reward(torch.randn(5, 3), group_size=2)
    with pytest.raises(ValueError, match="group_size"):
        leave_one_out_advantages(torch.zeros(2, 1, 1))
    with pytest.raises(ValueError, match="multiple"):
        pairwise_distances(torch.randn(7, 3), group_size=3)


def _random_distances(groups: int, g: int, seed: int = 1) -> torch.Tensor:
    emb = torch.randn(groups * g, 5, generator=torch.Generator().manual_seed(seed))
    return pairwise_distances(emb, g)


def test_leave_one_out_advantages_sum_to_zero_and_leave_the_sample_out() -> None:
    d = _random_distances(3, 4)
    adv = leave_one_out_advantages(d)
    assert torch.allclose(adv.view(3, 4).sum(-1), torch.zeros(3), atol=1e-6)
    # sample 1 of group 0: its reward minus the mean distance among samples 0, 2, 3
    reward = (d[0, 1, 0] + d[0, 1, 2] + d[0, 1, 3]) / 3
    baseline = (d[0, 0, 2] + d[0, 0, 3] + d[0, 2, 3]) / 3
    assert adv[1].item() == pytest.approx((reward - baseline).item(), abs=1e-6)


def test_baseline_of_a_sample_does_not_depend_on_that_sample() -> None:
    """Moving sample i changes its advantage only through its own reward (the baseline is fixed)."""

    def baseline(e: torch.Tensor) -> torch.Tensor:
        return pairwise_diversity_reward(e, 4) - leave_one_out_advantages(pairwise_distances(e, 4))

    emb = torch.randn(8, 5, generator=torch.Generator().manual_seed(3))
    moved = emb.clone()
    moved[2] = torch.randn(5, generator=torch.Generator().manual_seed(4))
    assert baseline(moved)[2].item() == pytest.approx(baseline(emb)[2].item(), abs=1e-6)
    assert not torch.allclose(baseline(moved)[:4], baseline(emb)[:4])  # the siblings' baselines do move


def test_two_samples_per_prompt_still_carry_a_signal() -> None:
    """G = 2: both samples share one distance; the baseline is the other prompts' mean reward."""
    e = torch.eye(4)
    emb = torch.stack([e[0], e[1], e[2], e[2], e[3], e[3]])  # distances 1, 0, 0
    adv = leave_one_out_advantages(pairwise_distances(emb, 2))
    assert torch.allclose(adv, torch.tensor([1.0, 1.0, -0.5, -0.5, -0.5, -0.5]), atol=1e-6)
    single = leave_one_out_advantages(pairwise_distances(emb[:2], 2))
    assert torch.allclose(single, torch.ones(2), atol=1e-6)


def test_identical_samples_within_every_group_give_zero_advantage() -> None:
    e = torch.eye(3)
    emb = torch.stack([e[0]] * 3 + [e[1]] * 3)
    assert torch.equal(leave_one_out_advantages(pairwise_distances(emb, 3)), torch.zeros(6))


def test_group_normalized_advantages_have_unit_spread_per_group_and_keep_signs() -> None:
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(12, 5, generator=g)
    raw = leave_one_out_advantages(pairwise_distances(emb, 4))
    raw[4:8] *= 10.0  # a prompt whose samples differ ten times more
    norm = group_normalized(raw, 4).view(3, 4)
    assert torch.allclose(norm.std(dim=-1, unbiased=False), torch.ones(3), atol=1e-4)
    assert torch.equal(torch.sign(norm), torch.sign(raw.view(3, 4)))
    assert torch.allclose(norm.sum(-1), torch.zeros(3), atol=1e-5)


def test_group_normalized_keeps_an_all_equal_group_at_zero_and_checks_shapes() -> None:
    assert torch.equal(group_normalized(torch.zeros(6), 3), torch.zeros(6))
    with pytest.raises(ValueError, match="divisible|group"):
        group_normalized(torch.zeros(7), 3)
    with pytest.raises(ValueError, match=r"\[B\*G\]"):
        group_normalized(torch.zeros(2, 3), 3)


def test_sequence_logprob_sums_valid_token_logprobs_and_ignores_padding_ids() -> None:
    logits = _logits(20)
    tokens = torch.randint(0, V, (N, K, T), generator=torch.Generator().manual_seed(21))
    mask = torch.ones(K, T, dtype=torch.bool)
    mask[1, 0] = False
    tokens[:, 1, 0] = V  # a special (delay padding) id outside the vocabulary
    lp = sequence_logprob(logits, tokens, mask)
    ref = _np_log_softmax(logits.double().numpy())
    for n in range(N):
        expected = sum(ref[n, k, t, tokens[n, k, t]] for k in range(K) for t in range(T) if mask[k, t])
        assert lp[n].item() == pytest.approx(expected, rel=1e-5)


def test_reinforce_step_raises_logprob_of_above_average_rollout() -> None:
    """A tiny categorical policy (N=G=4 rollouts of one 1-token sequence): one SGD step on the
    REINFORCE loss with mean-baseline advantages raises the log-probability of the best-rewarded rollout and
    lowers that of the worst."""
    torch.manual_seed(0)
    logits = torch.zeros(1, 1, 1, 6, requires_grad=True)
    tokens = torch.tensor([0, 1, 2, 3]).view(4, 1, 1)
    rewards = torch.tensor([0.1, 0.9, 0.3, 0.2])

    def logprobs() -> torch.Tensor:
        return sequence_logprob(logits.expand(4, 1, 1, 6), tokens)

    before = logprobs().detach()
    loss = reinforce_loss(logprobs(), rewards - rewards.mean())
    loss.backward()
    with torch.no_grad():
        logits -= 1.0 * logits.grad
    after = logprobs().detach()
    assert after[1] > before[1]
    assert after[0] < before[0]


def test_reinforce_loss_sign_normalisation_and_detached_advantages() -> None:
    lp = torch.tensor([-10.0, -20.0], requires_grad=True)
    adv = torch.tensor([1.0, -1.0], requires_grad=True)
    loss = reinforce_loss(lp, adv)
    assert loss.item() == pytest.approx(-(1 * -10 + -1 * -20) / 2)
    loss.backward()
    assert adv.grad is None
    assert torch.allclose(lp.grad, torch.tensor([-0.5, 0.5]))
    per_token = reinforce_loss(lp.detach(), adv.detach(), normalize="tokens", num_tokens=20)
    assert per_token.item() == pytest.approx(loss.item() * 2 / 20)
    with pytest.raises(ValueError, match="num_tokens"):
        reinforce_loss(lp, adv, normalize="tokens")
    with pytest.raises(ValueError, match="normalize"):
        reinforce_loss(lp, adv, normalize="frames")


def test_combined_loss_sign_convention() -> None:
    kl, pg = torch.tensor(0.5), torch.tensor(-2.0)
    assert combined_loss(kl, pg, beta=0.0).item() == 0.5
    assert combined_loss(kl, pg, beta=2.0).item() == pytest.approx(0.5 - 4.0)
    with pytest.raises(ValueError, match="beta"):
        combined_loss(kl, pg, beta=-1.0)


def test_policy_entropy() -> None:
    uniform = torch.zeros(N, K, T, V)
    assert policy_entropy(uniform).item() == pytest.approx(np.log(V), rel=1e-6)
    peaked = torch.full((N, K, T, V), -1e4)
    peaked[..., 0] = 0.0
    mask = torch.zeros(N, K, T, dtype=torch.bool)
    mask[0] = True
    mixed = torch.where(mask[..., None], peaked, uniform)
    assert policy_entropy(mixed, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert policy_entropy(mixed, ~mask).item() == pytest.approx(np.log(V), rel=1e-6)


# --------------------------------------------------------------------------------------------
# Extra weight where the teacher is confident
# --------------------------------------------------------------------------------------------


def _confident_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Student and teacher logits ``[1, 1, 2, 3]``: the teacher is sure at t = 0 (p = 0.98), unsure at t = 1."""
    teacher = torch.tensor([[[[6.0, 1.0, 1.0], [0.3, 0.0, 0.1]]]])
    student = torch.tensor([[[[0.5, 0.2, 0.0], [0.0, 0.9, 0.1]]]], requires_grad=True)
    per_token = torch.stack(
        [token_divergence(student[:, :, t : t + 1], teacher[:, :, t : t + 1])[0] for t in range(2)]
    )
    return student, teacher, per_token


def test_confident_weight_zero_is_the_plain_loss_exactly() -> None:
    student, teacher, _ = _confident_case()
    for kind in ("reverse_kl", "forward_kl", "jeffreys", "gjsd"):
        plain = token_divergence(student, teacher, kind=kind)
        weighted = token_divergence(
            student, teacher, kind=kind, confident_weight=0.0, confident_threshold=0.9
        )
        assert torch.equal(plain[0], weighted[0]) and torch.equal(plain[1], weighted[1])


def test_confident_weight_counts_only_the_tokens_the_teacher_is_sure_of() -> None:
    student, teacher, per_token = _confident_case()
    loss, per_sequence = token_divergence(student, teacher, confident_weight=3.0, confident_threshold=0.9)
    expected = (4.0 * per_token[0] + per_token[1]) / 2  # t = 0 counts 1 + 3 times, t = 1 once
    assert torch.allclose(loss, expected) and torch.allclose(per_sequence, 2 * expected.view(1))
    everything, _ = token_divergence(student, teacher, confident_weight=3.0, confident_threshold=0.01)
    assert torch.allclose(everything, 4.0 * per_token.mean())
    (grad,) = torch.autograd.grad(loss, student)
    (plain_grad,) = torch.autograd.grad(token_divergence(student, teacher)[0], student)
    assert torch.allclose(grad[..., 1, :], plain_grad[..., 1, :])  # the unsure token's gradient is unchanged
    assert torch.allclose(grad[..., 0, :], 4.0 * plain_grad[..., 0, :])


@pytest.mark.parametrize(("weight", "threshold"), [(-1.0, 0.5), (1.0, 0.0), (1.0, 1.0)])
def test_confident_weight_refuses_bad_values(weight: float, threshold: float) -> None:
    student, teacher, _ = _confident_case()
    with pytest.raises(ValueError, match="confident_weight"):
        token_divergence(student, teacher, confident_weight=weight, confident_threshold=threshold)
