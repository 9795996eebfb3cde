"""The blocks and the policy model: shapes, padding invariance, gradient to every parameter.

    python -m pytest tests/test_model.py -q
"""

import torch

from navi_model.model import EncoderConfig, PolicyModel, RMSNorm, count_params
from navi_model.vocab import encode_encoder_batch


def small_policy(seq_len=24, n_intents=5) -> PolicyModel:
    torch.manual_seed(0)
    return PolicyModel(EncoderConfig(seq_len=seq_len, d_model=32, n_layers=2, n_heads=4), n_intents)


def test_policy_logits_shape():
    model = small_policy()
    ids, valid = encode_encoder_batch(["build it", "run the tests please"], 24)
    assert model(ids, valid).shape == (2, 5)


def test_left_padding_does_not_change_the_answer():
    # rope sees relative positions and pads are masked, so more left padding changes nothing
    model = small_policy(seq_len=40).eval()
    short = model(*encode_encoder_batch(["check the build"], 16))
    long = model(*encode_encoder_batch(["check the build"], 40))
    torch.testing.assert_close(short, long, rtol=1e-4, atol=1e-5)


def test_every_parameter_gets_a_finite_nonzero_gradient():
    # M-032: a norm or softmax that cuts the graph leaves upstream parameters without gradient
    model = small_policy()
    ids, valid = encode_encoder_batch(["check the build", "hi", "show disk usage now"], 24)
    loss = torch.nn.functional.cross_entropy(model(ids, valid), torch.tensor([0, 1, 2]))
    loss.backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
            or p.grad.abs().sum() == 0]
    # the embedding rows of unused bytes get zero gradient, but the table as a whole must not
    assert dead == []


def test_rmsnorm_normalises():
    norm = RMSNorm(8)
    y = norm(torch.randn(4, 8) * 10)
    torch.testing.assert_close(y.pow(2).mean(-1), torch.ones(4), rtol=1e-3, atol=1e-3)


def test_count_params():
    assert count_params(small_policy()) > 10_000


def test_dropping_the_shared_left_padding_changes_no_answer():
    # the CPU trainers drop the columns that are padding in every row of a batch
    from navi_model.config import PlannerConfig
    from navi_model.planner import PlannerModel
    from navi_model.vocab import drop_shared_left_padding

    model = small_policy(seq_len=40).eval()
    ids, valid = encode_encoder_batch(["check the build", "run the tests please", "hi"], 40)
    short_ids, short_valid = drop_shared_left_padding(ids, valid)
    assert short_ids.shape == (3, len("run the tests please")) and bool(short_valid[1].all())
    torch.testing.assert_close(model(short_ids, short_valid), model(ids, valid), rtol=1e-4, atol=1e-5)

    torch.manual_seed(0)
    planner = PlannerModel(PlannerConfig(encoder=EncoderConfig(seq_len=40, d_model=32, n_layers=1, n_heads=4),
                                         step_layers=1, plan_len=6), 10).eval()
    short, full = planner(short_ids, short_valid), planner(ids, valid)
    torch.testing.assert_close(short.frames[short_valid], full.frames[:, -short_ids.shape[1]:][short_valid],
                               rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(short.counts, full.counts, rtol=1e-4, atol=1e-5)
