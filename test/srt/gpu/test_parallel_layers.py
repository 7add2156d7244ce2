"""The tensor-parallel layers on two real gloo ranks (two processes) against the same
layers unsplit: column/row-parallel linears, vocab-parallel embedding and a tied LM head
over a vocabulary that does not divide evenly, and the sharded MoE."""
from __future__ import annotations

import torch
import torch.multiprocessing as mp

from sglang.srt.distributed import free_port

VOCAB, HIDDEN, INTER = 11, 8, 12


def _weights() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"emb": torch.randn(VOCAB, HIDDEN, generator=g), "q": torch.randn(INTER, HIDDEN, generator=g),
            "k": torch.randn(INTER, HIDDEN, generator=g), "qb": torch.randn(INTER, generator=g),
            "kb": torch.randn(INTER, generator=g), "o": torch.randn(HIDDEN, INTER, generator=g),
            "gate": torch.randn(4, HIDDEN, generator=g),
            "experts": [(torch.randn(INTER, HIDDEN, generator=g), torch.randn(INTER, HIDDEN, generator=g),
                         torch.randn(HIDDEN, INTER, generator=g)) for _ in range(4)]}


def _forward(w: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Build the layers for the current tp rank/size, load full weights, run them."""
    from sglang.srt.layers.linear import MergedLinear, RowParallelLinear
    from sglang.srt.layers.moe import SparseMoE
    from sglang.srt.layers.vocab_parallel import ParallelLMHead, VocabParallelEmbedding

    emb, head = VocabParallelEmbedding(VOCAB, HIDDEN), ParallelLMHead(VOCAB, HIDDEN)
    emb.load_full("weight", w["emb"])
    head.weight = emb.weight  # tied, as LlamaForCausalLM does
    col = MergedLinear(HIDDEN, {"q": INTER, "k": INTER}, bias=True)  # like gate_up_proj
    for n, b in (("q", "qb"), ("k", "kb")):
        col.load_shard(n, "weight", w[n])
        col.load_shard(n, "bias", w[b])
    row = RowParallelLinear(INTER, HIDDEN)  # like down_proj
    row.load_full("weight", w["o"])
    moe = SparseMoE(HIDDEN, INTER, 4, 2, True)
    moe.gate.weight.data.copy_(w["gate"])
    for e, (gp, up, dp) in enumerate(w["experts"]):
        moe.load_expert(e, "gate_proj", gp)
        moe.load_expert(e, "up_proj", up)
        moe.load_expert(e, "down_proj", dp)
    ids = torch.tensor([0, 3, 5, 6, 10, 7])
    with torch.no_grad():
        h = emb(ids)
        # the column output is rank-local (this rank's slice of both shards), as in the MLP
        a, b = col(h).chunk(2, dim=-1)
        y = row(torch.nn.functional.silu(a) * b)
        return y, head(y), moe(y)


def _rank(rank: int, port: int, w: dict, q) -> None:
    from sglang.srt.distributed import destroy_tensor_parallel, init_tensor_parallel

    torch.set_num_threads(1)
    init_tensor_parallel(2, rank, f"tcp://127.0.0.1:{port}", torch.device("cpu"), timeout_s=60)
    try:
        # numpy arrays travel by value: a torch tensor in a torch.multiprocessing queue
        # travels as a shared-memory fd that the parent fetches from this process, which
        # races this process's exit (ConnectionResetError in CI)
        q.put((rank, [t.numpy().copy() for t in _forward(w)]))
    finally:
        destroy_tensor_parallel()


def test_tp2_layers_equal_unsplit():
    w = _weights()
    ref = _forward(w)
    assert ref[1].shape == (6, VOCAB)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_rank, args=(r, port, w, q)) for r in range(2)]
    for p in procs:
        p.start()
    got = dict(q.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    for rank in (0, 1):
        for a, b in zip(ref, got[rank]):
            torch.testing.assert_close(torch.from_numpy(b), a, atol=1e-4, rtol=1e-4)
    assert (got[0][1] == got[1][1]).all()  # all-gathered logits: the same bytes on every rank
