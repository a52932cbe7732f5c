import math

import torch

from squeezebench.tasks.causal_lm import perplexity_from, window_nll


class Bigram(torch.nn.Module):
    def __init__(self, vocab=11):
        super().__init__()
        torch.manual_seed(0)
        self.table = torch.nn.Parameter(torch.randn(vocab, vocab))

    def forward(self, input_ids):
        return self.table[input_ids]


def test_sliding_window_scores_every_token_once_and_matches_direct_computation():
    model = Bigram()
    ids = torch.randint(0, 11, (50,), generator=torch.Generator().manual_seed(1))
    run = lambda inputs: model(inputs["input_ids"]).detach()
    sums, counts, _ = window_nll(run, ids, window=16, stride=8)
    assert counts.sum() == len(ids) - 1
    # a bigram model needs one token of context, so the windowed NLL equals the full-sequence NLL
    logp = torch.log_softmax(model(ids[:-1]), -1)
    direct = -logp.gather(1, ids[1:, None]).sum().item()
    assert math.isclose(sums.sum(), direct, rel_tol=1e-5)
    assert math.isclose(perplexity_from(sums, counts), math.exp(direct / (len(ids) - 1)), rel_tol=1e-5)
