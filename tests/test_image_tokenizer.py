"""Image tokenizers: the VQ-VAE quantizer (straight-through gradients, nearest codes, its loss,
dead-code restarts, also across processes), FSQ (levels, the mixed-radix index and its inverse),
the conv autoencoder around them (tokens decode to its own reconstruction, configs round-trip and
refuse bad values), its training objective and evaluation. Synthetic images only: a few coloured
rectangles on a background, made here."""

import json
import math
import os
import socket

import pytest
import torch

from conftest import threads
from host_syncs import assert_sync_budget
from unmask.eval.tokenizer import measure_tokenizer, tokenize
from unmask.nn.image_tokenizer import ImageTokenizer, ImageTokenizerConfig
from unmask.nn.quantizers import FSQ, VectorQuantizer
from unmask.objectives.image_tokenizer import TokenizerTraining, psnr
from unmask.train import TrainConfig
from unmask.train.trainer import fit

SMALL = {"image_size": 16, "width": 16, "downsample": 4, "channels": 3}


def rectangles(n: int, size: int = 16, channels: int = 3, seed: int = 0) -> torch.Tensor:
    """Uint8[n, C, size, size]: a background and two rectangles, colours from one fixed 4-colour palette."""
    g = torch.Generator().manual_seed(seed)
    palette = torch.randint(0, 256, (4, channels), generator=torch.Generator().manual_seed(99)).to(torch.uint8)
    images = palette[0].view(1, channels, 1, 1).repeat(n, 1, size, size)
    for _ in range(2):
        x0, y0 = torch.randint(0, size - 4, (2, n), generator=g).tolist()
        w, h = torch.randint(3, size // 2, (2, n), generator=g).tolist()
        colour = torch.randint(1, 4, (n,), generator=g).tolist()
        for i in range(n):
            images[i, :, y0[i] : y0[i] + h[i], x0[i] : x0[i] + w[i]] = palette[colour[i]].view(channels, 1, 1)
    return images


def vq(codes=5, dim=4, beta=0.25, restart_after=0, seed=0) -> VectorQuantizer:
    torch.manual_seed(seed)
    return VectorQuantizer(codes, dim, beta=beta, restart_after=restart_after)


# VQ-VAE --------------------------------------------------------------------------------------------
def test_straight_through_gradients_match_a_hand_computation():
    q = vq(codes=5, dim=4, beta=0.25)
    with torch.no_grad():
        q.codebook.normal_()
    z = torch.randn(2, 3, 4, requires_grad=True)
    w = torch.randn(2, 3, 4)
    out = q(z)
    (w * out.quantized).sum().add(out.loss).backward()
    e = q.codebook.detach()[out.indices]  # [2, 3, 4]
    assert torch.equal(out.quantized.detach(), e)  # the value is the code, bit for bit
    n = z.numel()
    # d/dz: the downstream gradient w straight through, plus the commitment term 2 beta (z - e) / n
    torch.testing.assert_close(z.grad, w + 2 * 0.25 * (z.detach() - e) / n)
    # d/de_k: only the codebook term 2 (e_k - z) / n over the vectors assigned to k; nothing from w
    expected = torch.zeros_like(q.codebook)
    expected.index_add_(0, out.indices.reshape(-1), (2 * (e - z.detach()) / n).reshape(-1, 4))
    torch.testing.assert_close(q.codebook.grad, expected)


def test_nearest_code_is_the_brute_force_argmin():
    q = vq(codes=64, dim=8)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        q.codebook.copy_(torch.randn(64, 8, generator=g) * torch.rand(64, 1, generator=g) * 3)  # unequal norms
    z = torch.randn(500, 8, generator=g) + 0.5
    brute = ((z[:, None, :] - q.codebook.detach()[None]) ** 2).sum(-1).argmin(1)
    assert torch.equal(q.eval()(z.view(5, 100, 8)).indices, brute.view(5, 100))


def test_codebook_loss_by_hand_on_two_codes():
    q = vq(codes=2, dim=2, beta=0.25)
    with torch.no_grad():
        q.codebook.copy_(torch.tensor([[0.0, 0.0], [2.0, 0.0]]))
    out = q(torch.tensor([[0.5, 0.0], [1.5, 1.0]]))
    # z0 -> e0: (0.5, 0)^2 = 0.25; z1 -> e1 (1.25 < 3.25): (-0.5, 1)^2 = 1.25; mean over 4 values 0.375
    assert out.indices.tolist() == [0, 1]
    assert out.loss.item() == pytest.approx(0.375 * (1 + 0.25))
    assert out.perplexity.item() == pytest.approx(2.0) and out.used_share.item() == 1.0


def _far_codebook(q: VectorQuantizer) -> None:
    """Code 0 at the data, every other code far away; every code counted as just used."""
    with torch.no_grad():
        q.codebook.copy_(torch.full_like(q.codebook, 100.0))
        q.codebook[0] = 0.0
        q.idle.zero_()


def _train_codebook(q: VectorQuantizer, passes: int, seed: int) -> torch.Tensor:
    """SGD on the VQ loss over batches of N(0, 1) vectors; restarts drawn from per-pass generators.
    Returns the last batch."""
    opt = torch.optim.SGD(q.parameters(), lr=0.1)
    q.train()
    for k in range(passes):
        z = torch.randn(64, 4, generator=torch.Generator().manual_seed(1000 + k))
        out = q(z, generator=torch.Generator().manual_seed(seed * 7919 + k))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    return z


def _used_share(q: VectorQuantizer) -> float:
    z = torch.randn(4096, 4, generator=torch.Generator().manual_seed(5))
    return q.eval()(z).used_share.item()


def test_dead_codes_are_restarted_from_the_batch_after_restart_after_idle_passes():
    q = vq(codes=16, dim=4, restart_after=3)
    _far_codebook(q)
    assert _used_share(q) == 1 / 16
    _train_codebook(q, 3, seed=0)  # idle 3 after three unused passes: not restarted yet
    assert q.idle.tolist() == [0] + [3] * 15  # code 0 is used every pass
    assert (q.codebook.detach()[1:] == 100.0).all()
    _train_codebook(q, 1, seed=0)  # the fourth pass restarts them, before quantizing
    fresh = q.codebook.detach()[1:]
    assert (fresh.abs() < 10).all()
    assert q.idle[1:].max().item() <= 1  # counted again from the restart
    _train_codebook(q, 20, seed=1)
    assert _used_share(q) > 0.5


def test_without_restarts_the_far_codes_stay_dead():
    q = vq(codes=16, dim=4, restart_after=0)
    _far_codebook(q)
    _train_codebook(q, 24, seed=0)
    assert _used_share(q) == 1 / 16  # an unused code gets no gradient: only a restart can revive it


def test_restarted_codes_are_rows_of_the_batch():
    q = vq(codes=8, dim=4, restart_after=1)
    _far_codebook(q)
    q.train()
    z = torch.randn(32, 4)
    q(z, generator=torch.Generator().manual_seed(0))  # idle 0 -> 1
    q(z, generator=torch.Generator().manual_seed(1))  # restart: 7 distinct rows of z (32 >= 8: no repeats)
    rows = {tuple(r) for r in z.tolist()}
    restarted = [tuple(c) for c in q.codebook.detach()[1:].tolist()]
    assert all(c in rows for c in restarted) and len(set(restarted)) == 7


def test_restarts_are_reproducible_with_the_same_seed():
    def trained(seed):
        q = vq(codes=16, dim=4, restart_after=2)
        _far_codebook(q)
        _train_codebook(q, 10, seed=seed)
        return q.codebook.detach().clone()

    assert torch.equal(trained(0), trained(0))
    assert not torch.equal(trained(0), trained(1))

    def own_generator(seed):  # no generator passed: the quantizer's own, seeded at construction
        torch.manual_seed(0)
        q = VectorQuantizer(16, 4, restart_after=1, seed=seed).train()
        q(torch.randn(64, 4, generator=torch.Generator().manual_seed(3)))
        return q.codebook.detach().clone()

    assert torch.equal(own_generator(4), own_generator(4))
    assert not torch.equal(own_generator(4), own_generator(5))


def test_a_fresh_codebook_starts_from_encoder_outputs():
    q = vq(codes=8, dim=4, restart_after=5)
    z = torch.randn(40, 4) * 3
    q.train()(z)
    rows = {tuple(r) for r in z.tolist()}
    assert all(tuple(c) in rows for c in q.codebook.detach().tolist())


def _spawned_restarts(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(rank)  # different initial codebooks: only the first restart makes them equal
        q = VectorQuantizer(8, 3, restart_after=2).train()
        for k in range(6):  # each rank its own data and its own generator
            z = torch.randn(16, 3, generator=torch.Generator().manual_seed(100 * rank + k)) + 3 * rank
            q(z, generator=torch.Generator().manual_seed(10 * rank + k))
        books = [torch.empty_like(q.codebook) for _ in range(world)]
        dist.all_gather(books, q.codebook.detach().contiguous())
        idles = [torch.empty_like(q.idle) for _ in range(world)]
        dist.all_gather(idles, q.idle)
        if rank == 0:
            torch.save({"books": books, "idles": idles}, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.dist
def test_restarts_give_the_same_codebook_on_every_process(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "books.pt")
    torch.multiprocessing.spawn(_spawned_restarts, args=(2, port, out), nprocs=2, join=True)
    seen = torch.load(out)
    assert torch.equal(seen["books"][0], seen["books"][1])
    assert torch.equal(seen["idles"][0], seen["idles"][1])
    first = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))  # rank 0's first batch
    assert any(tuple(c) in {tuple(r) for r in first.tolist()} for c in seen["books"][0].tolist())


# FSQ ---------------------------------------------------------------------------------------------
LEVELS = (4, 5, 2, 3)  # even levels (4, 2) and odd ones


def test_fsq_channels_take_exactly_their_levels():
    fsq = FSQ(LEVELS)
    sweep = torch.linspace(-8, 8, 40001).unsqueeze(1).repeat(1, len(LEVELS))
    codes = fsq(sweep).quantized
    for i, n in enumerate(LEVELS):
        half = n // 2
        expected = sorted(k / half for k in range(-half, n - half))  # -floor(L/2) .. ceil(L/2) - 1, over floor(L/2)
        assert codes[:, i].unique().tolist() == pytest.approx(expected, abs=0), (n, codes[:, i].unique())


def test_fsq_index_is_a_bijection_with_an_exact_inverse():
    fsq = FSQ(LEVELS)
    size = math.prod(LEVELS)
    assert fsq.codebook_size == size == 120
    every = torch.arange(size)
    codes = fsq.indices_to_codes(every)
    assert torch.equal(fsq.codes_to_indices(codes), every)
    assert len({tuple(c) for c in codes.tolist()}) == size  # distinct codes
    out = fsq(torch.randn(7, 9, len(LEVELS)) * 2)
    assert out.indices.shape == (7, 9) and out.indices.min() >= 0 and out.indices.max() < size
    assert torch.equal(fsq.indices_to_codes(fsq.codes_to_indices(out.quantized)), out.quantized)
    assert torch.equal(fsq.indices_to_codes(out.indices), out.quantized)
    assert out.loss.item() == 0.0


def test_fsq_rounds_with_a_straight_through_gradient():
    fsq = FSQ((8, 5))
    z = torch.randn(6, 2, requires_grad=True)
    w = torch.randn(6, 2)
    (w * fsq(z).quantized).sum().backward()
    # d round(f(z)) / floor(L/2) / dz = f'(z) / floor(L/2), f(z) = tanh(z + s) h - o
    levels = torch.tensor([8.0, 5.0])
    h = (levels - 1) * (1 - FSQ.EPS) / 2
    s = torch.tan(torch.tensor([0.5, 0.0]) / h)
    dfdz = h * (1 - torch.tanh(z.detach() + s) ** 2)
    torch.testing.assert_close(z.grad, w * dfdz / torch.tensor([4.0, 2.0]))


def test_fsq_refuses_bad_levels():
    for levels in [(), (1, 3), (4, 2.5)]:
        with pytest.raises(ValueError, match="levels"):
            FSQ(levels)


# the autoencoder ------------------------------------------------------------------------------------
@pytest.mark.parametrize("quantizer", ["vq", "fsq"])
def test_tokens_decode_to_the_autoencoders_own_reconstruction(quantizer):
    torch.manual_seed(0)
    tok = ImageTokenizer(ImageTokenizerConfig(**SMALL, quantizer=quantizer, codes=32, code_dim=4)).eval()
    images = rectangles(6)
    with torch.no_grad():
        out = tok(images)
        tokens = tok.encode(images)
        assert tokens.shape == (6, 4, 4) and tokens.dtype == torch.long
        assert torch.equal(out.tokens, tokens)
        assert torch.equal(tok.decode(tokens), out.reconstruction)
        assert torch.equal(tok.encode(images.float() / 255), tokens)  # uint8 is read as x / 255
        assert tok.embed(tokens).shape == (6, 4, 4, tok.config.embed_dim)
    assert torch.equal(tokenize(tok, images, batch=6), tokens)
    assert tokenize(tok, images, batch=4).shape == (6, 4, 4)


def test_bits_per_image():
    assert ImageTokenizer(ImageTokenizerConfig(**SMALL, codes=256)).bits_per_image == 16 * 8
    fsq = ImageTokenizer(ImageTokenizerConfig(**{**SMALL, "downsample": 2}, quantizer="fsq", levels=(8, 6, 5)))
    assert fsq.grid == (8, 8) and fsq.bits_per_image == pytest.approx(64 * math.log2(240))
    assert ImageTokenizerConfig().grid == (8, 8)  # 32 x 32 -> 8 x 8 by default


@pytest.mark.parametrize("quantizer", ["vq", "fsq"])
def test_config_round_trips_through_json(quantizer):
    cfg = ImageTokenizerConfig(**SMALL, quantizer=quantizer, codes=64, levels=(7, 5, 5, 5), restart_after=9)
    back = ImageTokenizerConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and isinstance(back.levels, tuple)
    torch.manual_seed(0)
    weights = ImageTokenizer(cfg).state_dict()
    ImageTokenizer(back).load_state_dict(weights)  # same shapes, same keys


@pytest.mark.parametrize("key, value", [("quantizer", "vqgan"), ("image_size", 0), ("channels", 0),
                                        ("width", 12), ("downsample", 3), ("downsample", 32), ("codes", 1),
                                        ("code_dim", 0), ("beta", -0.1), ("restart_after", -1),
                                        ("levels", (1, 4)), ("levels", ())])
def test_bad_configs_name_the_key(key, value):
    with pytest.raises(ValueError, match=key):
        ImageTokenizerConfig(**{**SMALL, key: value})


def test_unknown_config_keys_are_refused():
    with pytest.raises(ValueError, match="'code_size'"):
        ImageTokenizerConfig.from_dict({**ImageTokenizerConfig().to_dict(), "code_size": 8})


def test_images_of_the_wrong_shape_or_type_are_refused():
    tok = ImageTokenizer(ImageTokenizerConfig(**SMALL))
    with pytest.raises(ValueError, match=r"\[B, 3, 16, 16\]"):
        tok.encode(torch.zeros(2, 1, 16, 16))
    with pytest.raises(ValueError, match="uint8"):
        tok.encode(torch.zeros(2, 3, 16, 16, dtype=torch.long))


# training and evaluation --------------------------------------------------------------------------
def test_objective_metrics_are_detached_tensors_and_psnr_is_by_hand():
    assert psnr(torch.tensor(0.01)).item() == pytest.approx(20.0)
    torch.manual_seed(0)
    loss, metrics = TokenizerTraining(ImageTokenizer(ImageTokenizerConfig(**SMALL)))({"images": rectangles(4)})
    assert loss.requires_grad and loss.ndim == 0
    assert set(metrics) == {"loss", "mse", "psnr", "perplexity", "used_share"}
    assert all(m.ndim == 0 and not m.requires_grad for m in metrics.values())
    assert metrics["loss"].item() > metrics["mse"].item()  # + the VQ loss


def test_a_training_step_reads_nothing_from_the_device():
    torch.manual_seed(0)
    objective = TokenizerTraining(ImageTokenizer(ImageTokenizerConfig(**SMALL, codes=16, restart_after=1)))
    assert_sync_budget(objective, {"images": rectangles(8)}, steps=4, log_every=2)


TRAIN_STEPS = 150
MSE_FACTOR = 10  # measured on held-out rectangles: 0.353 -> 0.0134 (26x) with VQ, 0.372 -> 0.0080 (46x) with FSQ


@pytest.mark.parametrize("quantizer", ["vq", "fsq"])
def test_short_training_lowers_held_out_mse(quantizer, tmp_path):
    torch.manual_seed(0)
    tok = ImageTokenizer(ImageTokenizerConfig(**SMALL, quantizer=quantizer, codes=32, code_dim=8,
                                              restart_after=10, levels=(5, 4, 3)))
    train, held_out = rectangles(512, seed=1), rectangles(128, seed=2)
    before = measure_tokenizer(tok, held_out)
    assert tok.training  # measuring puts it back in the mode it was in
    cfg = TrainConfig(steps=TRAIN_STEPS, batch_size=32, lr=3e-3, warmup=10, weight_decay=0.0, log_every=50,
                      precision="fp32")
    with threads(1):
        fit(TokenizerTraining(tok), {"images": train}, cfg, tmp_path, {"recipe": "tokenizer-test"}, progress=False)
    after = measure_tokenizer(tok, held_out)
    print(f"{quantizer}: held-out mse {before['mse']:.4f} -> {after['mse']:.4f}, psnr {after['psnr']:.1f} dB, "
          f"used {after['codes_used']}/{after['codebook_size']}, perplexity {after['perplexity']:.1f}")
    assert after["mse"] < before["mse"] / MSE_FACTOR
    assert after["psnr"] == pytest.approx(-10 * math.log10(after["mse"]))
    assert after["bits_per_image"] == tok.bits_per_image and after["tokens_per_image"] == 16
    if quantizer == "vq":
        assert after["used_share"] > 0.5  # restarts keep the codebook in use
