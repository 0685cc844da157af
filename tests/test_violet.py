"""VIOLET: MVM predicts the frozen tokenizer's ids at hidden patches only, the block mask is whole
space-time cuboids in exact counts, hidden patches reach the encoder as the mask embedding alone,
VTM negatives are real mismatches, and each loss term reads only what it may."""

import math

import pytest
import torch
import torch.nn.functional as F

from unmask.layout import Layout
from unmask.masking.spacetime_block import SpaceTimeBlockMask, cuboid_cells
from unmask.nn.image_tokenizer import ImageTokenizer, ImageTokenizerConfig
from unmask.objectives.violet import (
    VIOLET,
    VideoTextConfig,
    VIOLETModel,
    caption_scores,
    match_scores,
    recover_words,
)

CFG = VideoTextConfig(frames=2, image_size=16, channels=1, patch=4, vocab_size=10, text_length=5, dim=12, depth=1,
                      heads=2)  # 2 frames x 4 x 4 patches = 32 video tokens


def _tokenizer(seed=0):
    torch.manual_seed(seed)
    return ImageTokenizer(ImageTokenizerConfig(image_size=16, channels=1, width=8, downsample=4, codes=16, code_dim=4))


def _objective(target="tokens", seed=0, **kw):
    tok = _tokenizer() if target == "tokens" else None
    torch.manual_seed(seed)
    return VIOLET(VIOLETModel(CFG), tok, mvm_target=target, **kw)


def _batch(b=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, CFG.text_length + 1, (b,), generator=g)
    tokens = torch.randint(2, CFG.vocab_size, (b, CFG.text_length), generator=g)
    tokens = tokens.masked_fill(torch.arange(CFG.text_length) >= lengths.unsqueeze(1), 0)
    tokens[:, 0] = torch.arange(b) + 2  # every caption differs from every other
    return {"videos": torch.rand(b, 2, 1, 16, 16, generator=g), "tokens": tokens, "lengths": lengths}


def _draw(obj, batch, seed=1):
    return obj.draw(batch["tokens"], batch["lengths"], torch.Generator().manual_seed(seed))


def _components(mask: torch.Tensor) -> int:
    """6-connected components of a Bool[t, h, w] mask, by flood fill."""
    left, count = {tuple(p) for p in mask.nonzero().tolist()}, 0
    while left:
        count += 1
        stack = [left.pop()]
        while stack:
            t, y, x = stack.pop()
            for d in ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)):
                q = (t + d[0], y + d[1], x + d[2])
                if q in left:
                    left.remove(q)
                    stack.append(q)
    return count


def test_mvm_targets_are_the_frozen_tokenizers_ids_per_patch_per_frame():
    obj, batch = _objective(), _batch()
    ids = obj.targets(batch["videos"])
    for b in range(2):
        for t in range(CFG.frames):
            grid = obj.tokenizer.encode(batch["videos"][b, t : t + 1])[0]  # [4, 4]: frame t alone
            assert torch.equal(ids[b, t * 16 : (t + 1) * 16], grid.flatten())  # row-major (frame, row, column)


def test_mvm_loss_is_cross_entropy_to_tokenizer_ids_at_hidden_matched_patches_and_tokenizer_gets_no_grad():
    obj, batch = _objective(), _batch()
    obj.train()
    draw = _draw(obj, batch)
    out = obj.losses(batch, draw)
    out.loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in obj.tokenizer.parameters())
    assert obj.model.mask_embedding.grad is not None and obj.mvm_head.weight.grad is not None
    # brute force, place by place
    ids = obj.targets(batch["videos"])
    with torch.no_grad():
        h = obj.model(obj.model.patches(batch["videos"]), draw.shown.masked_fill(draw.words, CFG.vocab_size),
                      draw.lengths, draw.video)
        terms = [F.cross_entropy(obj.mvm_head(h[b, 1 + i]), ids[b, i]) for b in range(8) for i in range(32)
                 if draw.video[b, i] and draw.matched[b]]
        words = [F.cross_entropy(obj.model.word_head(h[b, 1 + 32 + j]), draw.shown[b, j]) for b in range(8)
                 for j in range(CFG.text_length) if draw.words[b, j] and draw.matched[b]]
        vtm = F.cross_entropy(obj.model.match_head(h[:, 0]), draw.matched.long())
    assert len(terms) == 5 * int(draw.matched.sum())  # round(0.15 * 32) = 5 per matched row
    assert torch.allclose(out.metrics["mvm"], torch.stack(terms).mean(), atol=1e-5)
    assert torch.allclose(out.metrics["mlm"], torch.stack(words).mean(), atol=1e-5)
    assert torch.allclose(out.metrics["vtm"], vtm, atol=1e-5)
    assert torch.allclose(out.loss, torch.stack(terms).mean() + torch.stack(words).mean() + vtm, atol=1e-5)
    # precomputed ids in the batch give the same loss as the tokenizer run in the step
    again = obj.losses({**batch, "visual_tokens": ids}, draw)
    assert torch.allclose(again.loss, out.loss)


@pytest.mark.parametrize("target", ["tokens", "pixels"])
def test_mvm_loss_reads_hidden_matched_places_only(target):
    obj, batch = _objective(target), _batch()
    draw = _draw(obj, batch)
    targets = obj.targets(batch["videos"]) if target == "tokens" else obj.model.patches(batch["videos"])
    base = obj.losses(batch, draw, targets).metrics["mvm"]
    ignored = ~(draw.video & draw.matched.unsqueeze(1))  # visible, or hidden in a mismatched row
    assert ignored.any() and (~ignored).any()
    changed = targets.clone()
    if target == "tokens":
        changed[ignored] = (changed[ignored] + 3) % 16
    else:
        changed[ignored] = torch.rand_like(changed[ignored])
    assert torch.allclose(obj.losses(batch, draw, changed).metrics["mvm"], base)
    b, i = (~ignored).nonzero()[0].tolist()
    changed = targets.clone()
    changed[b, i] = (changed[b, i] + 3) % 16 if target == "tokens" else 1.0 - changed[b, i]
    assert not torch.allclose(obj.losses(batch, draw, changed).metrics["mvm"], base)


def test_hidden_patches_reach_the_encoder_as_the_mask_embedding_only():
    obj, batch = _objective("pixels"), _batch()
    draw = _draw(obj, batch)
    model = obj.model.eval()
    patches = model.patches(batch["videos"])
    tokens = draw.shown.masked_fill(draw.words, CFG.vocab_size)
    h = model(patches, tokens, draw.lengths, draw.video)
    noisy = torch.where(draw.video.unsqueeze(-1), torch.rand_like(patches), patches)
    assert torch.allclose(model(noisy, tokens, draw.lengths, draw.video), h, atol=1e-6)
    assert not torch.allclose(model(noisy, tokens, draw.lengths), model(patches, tokens, draw.lengths))


def test_exact_counts_and_pads_never_hidden():
    batch = _batch(10)
    for ratio in (0.1, 0.15, 0.5, 1.0):
        obj = _objective("pixels", video_ratio=ratio, word_ratio=0.5)
        draw = _draw(obj, batch)
        assert (draw.video.sum(1) == round(ratio * 32)).all()
        words = torch.clamp(torch.round(draw.lengths.double() * 0.5).long(), min=1)
        assert torch.equal(draw.words.sum(1), words)
        assert not (draw.words & (torch.arange(CFG.text_length) >= draw.lengths.unsqueeze(1))).any()
    assert not _draw(_objective(None), batch).video.any()  # no MVM: the video whole


@pytest.mark.parametrize("ratio", [0.05, 0.15, 0.4, 0.9])
def test_block_mask_is_whole_cuboids_plus_one_raster_prefix(ratio):
    t, h, w = 3, 4, 5  # unequal sides: a stride mix-up breaks the cuboids
    layout, masker = Layout.video(t, h, w), SpaceTimeBlockMask()
    count = round(ratio * t * h * w)
    for seed in range(12):
        mask = masker(layout, 1, ratio=ratio, generator=torch.Generator().manual_seed(seed))[0]
        g = torch.Generator().manual_seed(seed)
        torch.rand(1, t * h * w, generator=g, dtype=torch.float64)  # the masker's top-up noise comes first
        blocks = masker.blocks(t, h, w, count, g)
        assert int(mask.sum()) == count
        for t0, y0, x0, dt, dh, dw in blocks:
            assert 1 <= dt <= t - 1 and 1 <= dh <= 2 * h // 3 and 1 <= dw <= 2 * w // 3
            assert t0 + dt <= t and y0 + dh <= h and x0 + dw <= w
        earlier = torch.zeros(t * h * w, dtype=torch.bool)
        for block in blocks[:-1]:
            earlier[cuboid_cells(block, h, w)] = True
        assert not (earlier & ~mask).any()  # every earlier cuboid whole
        last = cuboid_cells(blocks[-1], h, w)
        rest = mask & ~earlier
        assert not (rest & ~torch.isin(torch.arange(t * h * w), last)).any()  # nothing outside the cuboids
        new = last[~earlier[last]]
        assert torch.equal(rest[new], torch.arange(len(new)) < int(rest.sum()))  # a raster prefix
        assert _components(mask.view(t, h, w)) <= len(blocks)


def test_block_mask_needs_a_video_segment():
    with pytest.raises(ValueError, match="video segment"):
        SpaceTimeBlockMask()(Layout.grid(4, 4), 2, ratio=0.3)


def test_vtm_negatives_are_real_mismatches_in_half_the_rows():
    obj, batch = _objective(None), _batch(9)
    draw = _draw(obj, batch)
    changed = (draw.shown != batch["tokens"]).any(1)
    assert torch.equal(changed, ~draw.matched)
    assert int((~draw.matched).sum()) == math.ceil(9 / 2)
    assert torch.equal(draw.lengths[draw.matched], batch["lengths"][draw.matched])
    # one caption repeated: no different caption exists, so no row is labelled a mismatch
    same = {**batch, "tokens": batch["tokens"][:1].expand(9, -1).clone(), "lengths": batch["lengths"][:1].expand(9)}
    assert _draw(obj, same).matched.all()


def test_scoring_helpers_read_the_whole_video():
    obj, batch = _objective(None), _batch()
    scores = match_scores(obj, batch["videos"], batch["tokens"][:3], batch["lengths"][:3], chunk=3)
    assert scores.shape == (8, 3)
    h = obj.model(obj.model.patches(batch["videos"]), batch["tokens"][1].expand(8, -1), batch["lengths"][1].expand(8))
    logits = obj.model.match_head(h[:, 0])
    assert torch.allclose(scores[:, 1], logits[:, 1] - logits[:, 0], atol=1e-5)
    hide = torch.zeros_like(batch["tokens"], dtype=torch.bool)
    hide[:, 1] = True
    right = recover_words(obj, batch["videos"], batch["tokens"], batch["lengths"], hide)
    assert not (right & ~hide).any()
    # masked-LM scores: candidates 0 and 1 read alike (slots 1 and 2 hidden, one length), 2 differs
    cands = torch.tensor([[2, 3, 4, 5, 0], [2, 6, 7, 5, 0], [2, 3, 4, 9, 0]])
    lens, hide = torch.tensor([4, 4, 4]), torch.zeros(3, 5, dtype=torch.bool)
    hide[:, 1:3] = True
    scores = caption_scores(obj, batch["videos"], cands, lens, hide)
    for k in range(3):
        h = obj.model(obj.model.patches(batch["videos"]), cands[k].masked_fill(hide[k], 10).expand(8, -1),
                      lens[k].expand(8))
        logp = obj.model.word_head(h[:, 1 + 32 :]).log_softmax(-1)
        assert torch.allclose(scores[:, k], logp[:, 1, cands[k, 1]] + logp[:, 2, cands[k, 2]], atol=1e-5)


def test_bad_input_raises():
    with pytest.raises(ValueError, match="mvm_target"):
        _objective("rgb")
    with pytest.raises(ValueError, match="needs a tokenizer"):
        VIOLET(VIOLETModel(CFG), None, mvm_target="tokens")
    torch.manual_seed(0)
    coarse = ImageTokenizer(ImageTokenizerConfig(image_size=16, channels=1, width=8, downsample=8, codes=16))
    with pytest.raises(ValueError, match="grid"):
        VIOLET(VIOLETModel(CFG), coarse)
    with pytest.raises(ValueError, match="ratio"):
        _objective(None, video_ratio=0.0)
    obj, batch = _objective(), _batch()
    with pytest.raises(ValueError, match="videos must be"):
        obj({**batch, "videos": batch["videos"][:, :1]})
    with pytest.raises(ValueError, match="tokens must be"):
        obj({**batch, "tokens": batch["tokens"][:, :3]})
    with pytest.raises(ValueError, match="by 6"):
        VideoTextConfig(dim=16, heads=4)
