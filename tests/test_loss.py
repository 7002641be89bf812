"""AAM-softmax + loss gate + label correction, checked against hand computations (docs/method.md §4).

The reference values come from angles and ``math`` only: every embedding and class weight lives in
2-D at a known angle, so cos(theta) to a class is cos(angle difference) whatever the vector norms.
"""
import math

import pytest
import torch

from loss.aamsoftmax import LossFunction

TAU = 2 * math.pi
CLASS_ANGLES = [0.0, TAU / 3, 2 * TAU / 3]
CLASS_NORMS = [2.0, 0.5, 3.0]
MARGIN, SCALE = 0.5, 4.0


def polar(angle, radius=1.0):
    return [radius * math.cos(angle), radius * math.sin(angle)]


def make_loss(**options):
    """A 3-class, 2-D loss in float64 whose weight rows sit at CLASS_ANGLES with CLASS_NORMS."""
    loss = LossFunction(nOut=2, nClasses=3, margin=MARGIN, scale=SCALE, **options).double()
    with torch.no_grad():
        rows = [polar(a, r) for a, r in zip(CLASS_ANGLES, CLASS_NORMS)]
        loss.weight.copy_(torch.tensor(rows, dtype=torch.float64))
    return loss


def hand_logits(theta, margin_class, margin=MARGIN, scale=SCALE, easy_margin=False):
    """s*cos to every class, with cos(theta_c + m) (or the fallback) at ``margin_class``."""
    logits = []
    for c, alpha in enumerate(CLASS_ANGLES):
        cos = math.cos(theta - alpha)
        if c == margin_class:
            angle = math.acos(cos)
            if easy_margin:
                cos = math.cos(angle + margin) if cos > 0 else cos
            elif angle < math.pi - margin:
                cos = math.cos(angle + margin)
            else:
                cos = cos - math.sin(math.pi - margin) * margin
        logits.append(scale * cos)
    return logits


def hand_ce(logits, target):
    top = max(logits)
    return top + math.log(sum(math.exp(v - top) for v in logits)) - logits[target]


def argmax(values):
    return max(range(len(values)), key=values.__getitem__)


# Four samples: (angle of the augmented embedding, its norm, pseudo-label).
# Sample 1 is 2.9 rad from class 0 (> pi - m): the margin takes the linear fallback.
# Sample 2 is labelled 2 but nearest to class 0: once gated out, it scores a "hit" against class 0.
SAMPLES = [(0.3, 1.7, 0), (2.9, 0.8, 0), (0.5, 2.5, 2), (-0.1, 1.0, 0)]


def batch():
    x = torch.tensor([polar(a, r) for a, r, _ in SAMPLES], dtype=torch.float64)
    label = torch.tensor([lab for _, _, lab in SAMPLES])
    return x, label


def hand_sample_ces():
    return [hand_ce(hand_logits(a, lab), lab) for a, _, lab in SAMPLES]


def test_aam_logits_and_ce_match_hand_computation_including_fallback():
    loss = make_loss()
    x, label = batch()
    assert math.cos(2.9) <= math.cos(math.pi - MARGIN)  # sample 1 exercises the fallback branch
    expected_logits = torch.tensor([hand_logits(a, lab) for a, _, lab in SAMPLES], dtype=torch.float64)
    torch.testing.assert_close(loss.margin_logits(x, label), expected_logits, rtol=0, atol=1e-12)

    value, prec1, ce = loss(x, None, label, 1)
    torch.testing.assert_close(ce, torch.tensor(hand_sample_ces(), dtype=torch.float64), rtol=0, atol=1e-12)
    assert ce.requires_grad  # returned with its graph, as the original
    assert value.item() == pytest.approx(sum(hand_sample_ces()) / 4, abs=1e-12)  # gate open
    hits = [argmax(hand_logits(a, lab)) == lab for a, _, lab in SAMPLES]
    assert prec1.item() == pytest.approx(100.0 * sum(hits) / 4)


def test_easy_margin_keeps_plain_cosine_when_it_is_negative():
    loss = make_loss(easy_margin=True)
    x, label = batch()
    rows = [hand_logits(a, lab, easy_margin=True) for a, _, lab in SAMPLES]
    expected = torch.tensor(rows, dtype=torch.float64)
    torch.testing.assert_close(loss.margin_logits(x, label), expected, rtol=0, atol=1e-12)
    assert expected[1, 0].item() == pytest.approx(SCALE * math.cos(2.9))  # cos < 0: no margin


def test_weight_init_is_xavier_normal_gain_1():
    torch.manual_seed(0)
    loss = LossFunction(nOut=256, nClasses=2000)
    assert loss.weight.shape == (2000, 256) and loss.lgl_threshold == 1e6
    expected_std = math.sqrt(2.0 / (256 + 2000))
    assert loss.weight.std().item() == pytest.approx(expected_std, rel=0.01)
    kurtosis = (loss.weight ** 4).mean().item() / loss.weight.var().item() ** 2
    assert kurtosis == pytest.approx(3.0, abs=0.1)  # normal (a uniform init gives 1.8)
    assert abs(loss.weight.mean().item()) < 3 * expected_std / math.sqrt(loss.weight.numel())


def gate_between(ces, kept):
    """A log-loss threshold that keeps exactly the samples in ``kept``."""
    low = max(ces[i] for i in kept)
    high = min(ces[i] for i in range(len(ces)) if i not in kept)
    assert low < high
    return math.log((low + high) / 2)


def test_gate_drops_high_loss_samples_and_averages_the_rest():
    loss = make_loss()
    x, label = batch()
    ces = hand_sample_ces()
    loss.lgl_threshold = gate_between(ces, kept={0, 3})
    value, prec1, _ = loss(x, None, label, 4)
    assert value.item() == pytest.approx((ces[0] + ces[3]) / 2, abs=1e-12)
    # prec1 target: the label where kept, class 0 (as the original) where dropped.
    assert [argmax(hand_logits(a, lab)) for a, _, lab in SAMPLES] == [0, 1, 0, 0]
    assert prec1.item() == pytest.approx(75.0)  # 50.0 if dropped samples were scored on their label

    _, _, ce = loss(x, None, label, 4)
    loss.lgl_threshold = float(torch.log(ce.detach()[[0, 3]]).max())  # log(ce) equal to the threshold is kept
    assert loss(x, None, label, 4)[0].item() == pytest.approx((ces[0] + ces[3]) / 2, abs=1e-12)

    loss.lgl_threshold = math.log(min(ces)) - 1.0  # everything dropped: 0 / max(1, 0)
    value, _, _ = loss(x, None, label, 4)
    assert value.item() == 0.0


def lc_case():
    """Kept: 0 and 3. Dropped: 1 (clean view confidently class 2) and 2 (clean view uninformative)."""
    loss = make_loss()
    x, label = batch()
    ces = hand_sample_ces()
    loss.lgl_threshold = gate_between(ces, kept={0, 3})
    x_clean = torch.tensor([polar(0.3), polar(2 * TAU / 3), [0.0, 0.0], polar(2.0)], dtype=torch.float64)
    return loss, x, x_clean, label, ces


def hand_clean_probs(clean_angle):
    logits = [r * math.cos(clean_angle - a) / 0.1 for a, r in zip(CLASS_ANGLES, CLASS_NORMS)]
    total = sum(math.exp(v - max(logits)) for v in logits)
    return [math.exp(v - max(logits)) / total for v in logits]


def test_label_correction_keeps_margin_at_original_label_by_default():
    loss, x, x_clean, label, ces = lc_case()
    probs = hand_clean_probs(2 * TAU / 3)
    assert argmax(probs) == 2 and probs[2] > 0.5  # recovered as class 2
    ce_lc_quirk = hand_ce(hand_logits(2.9, margin_class=0), 2)
    ce_lc_fixed = hand_ce(hand_logits(2.9, margin_class=2), 2)
    assert abs(ce_lc_quirk - ce_lc_fixed) > 0.1  # the two behaviours are distinguishable here

    value, prec1, ce = loss(x, x_clean, label, 9)
    assert value.item() == pytest.approx((ces[0] + ces[3] + ce_lc_quirk) / 4, abs=1e-12)
    torch.testing.assert_close(ce, torch.tensor(ces, dtype=torch.float64), rtol=0, atol=1e-12)
    # targets [0, 2, 0, 0]: kept label, corrected label, class 0 for the unrecovered drop, kept label
    assert [argmax(hand_logits(a, lab)) for a, _, lab in SAMPLES] == [0, 1, 0, 0]
    assert prec1.item() == pytest.approx(75.0)

    label_lc, confident = loss.corrected_labels(x_clean)
    assert label_lc[1].item() == 2 and confident.tolist() == [True, True, False, True]


@pytest.mark.parametrize("angle, radius, temperature", [
    (math.pi / 3, 1.0, 0.1),  # unnormalised weight: class 0 (norm 2) wins; normalised it would tie 0/1
    (math.pi / 3, 0.3, 0.1),
    (math.pi / 3, 0.3, 1.0),  # same logits, softer: no longer confident
    (2.0, 0.05, 0.1),
    (4.0, 1.0, 0.5),
])
def test_corrected_labels_use_unnormalised_weight_and_temperature(angle, radius, temperature):
    loss = make_loss(lc_temperature=temperature)
    logits = [r * radius * math.cos(angle - a) / temperature for a, r in zip(CLASS_ANGLES, CLASS_NORMS)]
    probs = [math.exp(v - max(logits)) for v in logits]
    probs = [p / sum(probs) for p in probs]
    label_lc, confident = loss.corrected_labels(torch.tensor([polar(angle, radius)], dtype=torch.float64))
    assert label_lc.item() == argmax(probs)
    assert confident.item() == (max(probs) > 0.5)


def test_confidence_must_exceed_the_bound_strictly():
    loss = LossFunction(nOut=2, nClasses=2).double()
    with torch.no_grad():
        loss.weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64))
    _, confident = loss.corrected_labels(torch.tensor([[0.0, 1.0], [0.1, 1.0]], dtype=torch.float64))
    assert confident.tolist() == [False, True]  # p = 0.5 exactly, then p = sigmoid(2) > 0.5


def test_label_correction_with_fixed_margin_puts_margin_at_corrected_label():
    loss, x, x_clean, label, ces = lc_case()
    loss.lc_fix_margin = True
    value, _, _ = loss(x, x_clean, label, 9)
    expected = (ces[0] + ces[3] + hand_ce(hand_logits(2.9, margin_class=2), 2)) / 4
    assert value.item() == pytest.approx(expected, abs=1e-12)


def test_label_correction_starts_at_lc_start_epoch():
    loss, x, x_clean, label, ces = lc_case()
    before, _, _ = loss(x, None, label, 8)
    assert before.item() == pytest.approx((ces[0] + ces[3]) / 2, abs=1e-12)  # gate only
    after, _, _ = loss(x, x_clean, label, 9)
    assert after.item() == pytest.approx((ces[0] + ces[3] + hand_ce(hand_logits(2.9, 0), 2)) / 4, abs=1e-12)
    with pytest.raises(ValueError, match="x_clean"):
        loss(x, None, label, 9)

    early = make_loss(lc_start_epoch=3)
    early.lgl_threshold = loss.lgl_threshold
    torch.testing.assert_close(early(x, x_clean, label, 3)[0], after)


def test_gradients_reach_x_and_weight_but_not_the_clean_view():
    loss, x, x_clean, label, _ = lc_case()
    x.requires_grad_(True)
    x_clean.requires_grad_(True)
    value, _, _ = loss(x, x_clean, label, 9)
    value.backward()
    assert x_clean.grad is None
    assert loss.weight.grad is not None and loss.weight.grad.abs().sum() > 0
    norms = x.grad.norm(dim=1)
    assert norms[0] > 0 and norms[1] > 0 and norms[3] > 0  # kept, recovered, kept
    assert norms[2] == 0  # dropped and not recovered: no contribution


def test_gradient_is_the_derivative_of_the_loss():
    torch.manual_seed(1)
    loss = LossFunction(nOut=5, nClasses=4, margin=0.2, scale=30).double()
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    x_clean = torch.randn(6, 5, dtype=torch.float64)
    label = torch.tensor([0, 1, 2, 3, 1, 0])
    log_ce = torch.log(loss(x, None, label, 1)[2].detach()).sort().values
    loss.lgl_threshold = float(log_ce[2:4].mean())  # half the batch gated, far from any sample

    def total(embeddings, weight):
        return torch.func.functional_call(loss, {"weight": weight}, (embeddings, x_clean, label, 9))[0]

    weight = loss.weight.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(total, (x, weight), fast_mode=True)


def test_gate_is_refitted_from_gate_start_epoch(tmp_path):
    """The hook fits the threshold on the previous epoch's losses from gate_start_epoch on, and only then."""
    losses = tmp_path / "epoch.txt"
    values = torch.cat([torch.full((50,), 0.1), torch.full((50,), 5.0)]) * torch.linspace(0.9, 1.1, 100)
    losses.write_text("".join(f"{v:.6f} f{i}.wav\n" for i, v in enumerate(values.tolist())))
    loss = LossFunction(nOut=2, nClasses=3, gate_start_epoch=5)
    fitted = []
    for epoch in (1, 4, 5):
        loss.before_epoch(epoch, str(losses))
        fitted.append(loss.hook_state()["gate_threshold"])
    assert fitted[:2] == [1e6, 1e6]
    assert math.log(0.11) < fitted[2] < math.log(4.5)
    loss.load_hook_state({"gate_threshold": 0.25})
    assert loss.lgl_threshold == 0.25


def test_extra_options_are_ignored_and_bad_values_rejected():
    LossFunction(nOut=2, nClasses=3, max_frames=300, model="x")
    with pytest.raises(ValueError, match="margin"):
        LossFunction(nOut=2, nClasses=3, margin=-0.1)
    with pytest.raises(ValueError, match="nClasses"):
        LossFunction(nOut=2, nClasses=0)
    with pytest.raises(ValueError, match="lc_confidence"):
        LossFunction(nOut=2, nClasses=3, lc_confidence=1.5)


def test_bad_inputs_name_what_was_expected():
    loss = make_loss()
    x, label = batch()
    with pytest.raises(ValueError, match=r"x must be \(batch, 2\)"):
        loss(torch.zeros(4, 4, dtype=torch.float64), None, label, 1)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        loss(x, None, torch.tensor([0, 1, 3, 0]), 1)
    with pytest.raises(ValueError, match="label must be"):
        loss(x, None, label[:2], 1)
    with pytest.raises(ValueError, match="x_clean must have the shape"):
        loss(x, x[:2], label, 9)
