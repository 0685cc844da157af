"""`unmask export`: runs leave as Hugging Face folders that compute our numbers (BertForMaskedLM and its
tokenizer, ViTMAEForPreTraining, ViTModel), or as safetensors + config.json that `unmask.load` reads
back; what has no exact form, and an OUT in the way, is refused in one line. Any transformers masked
LM serves every sampler. Offline, tiny runs (`export_runs.py`)."""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

import export_runs as er  # noqa: E402
from unmask import load  # noqa: E402
from unmask.export import export_run  # noqa: E402
from unmask.nn.embedding import sincos_1d  # noqa: E402
from unmask.nn.hf import HFDenoiser  # noqa: E402
from unmask.recipes import Run, get, load_run  # noqa: E402
from unmask.sampling import generate  # noqa: E402
from unmask.sampling.named import NAMES, named_sampler  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Trained runs (bert and prenorm mlm-code, mae-digits with a class token) and their exports."""
    root = tmp_path_factory.mktemp("export")
    bert = er.mlm_run(root / "bert", "model.arch=bert")
    mae = er.mae_run(root / "mae", "model.cls_token=true")
    export_run(bert, "hf", root / "bert-hf")
    export_run(mae, "hf", root / "mae-hf")
    return {"bert": bert, "mae": mae, "bert-hf": root / "bert-hf", "mae-hf": root / "mae-hf", "root": root}


# BERT ---------------------------------------------------------------------------------------------
def test_exported_bert_gives_our_logits_at_the_same_ids(runs):
    """Catches a transposed or misplaced weight, a shifted id (our i must be the model's i, our mask V
    its <|mask|>), a lost LayerNorm or head transform: every weight was drawn at random."""
    ours = load_run(runs["bert"], progress=False).objective.model
    theirs = transformers.AutoModelForMaskedLM.from_pretrained(runs["bert-hf"]).eval()
    assert type(theirs).__name__ == "BertForMaskedLM" and theirs.config.vocab_size == er.V + 1
    x = torch.randint(0, er.V + 1, (4, er.N), generator=torch.Generator().manual_seed(0))  # mask id V included
    x[:, :3] = er.V
    with torch.no_grad():
        a, b = ours(x), theirs(input_ids=x).logits  # [4, N, V], [4, N, V + 1]
    diff = (a - b[..., : er.V]).abs().max().item()
    assert diff < 1e-4, diff
    probs = b.softmax(-1)
    assert probs[..., er.V].max().item() == 0.0  # BERT cannot predict the mask, as ours cannot
    assert torch.allclose(probs[..., : er.V], a.softmax(-1), atol=1e-5)
    record = json.loads((runs["bert-hf"] / "export.json").read_text())
    assert record["data_ids"] == [0, er.V] and record["mask_token_id"] == er.V == record["mask_id"]


def test_exported_tokenizer_gives_our_ids_and_our_mask(runs):
    """AutoTokenizer reads the folder: the same ids as our tokenizer, decoding back to the text, and
    its mask token at id V, the id the model was trained to read as hidden (a mask at V + 1 or at
    the end of BERT's usual specials would be caught)."""
    from unmask.data.code import CodeTokenizer

    ours = CodeTokenizer.load(runs["bert"] / "tokenizer.json")
    theirs = transformers.AutoTokenizer.from_pretrained(runs["bert-hf"])
    assert theirs.mask_token == "<|mask|>" and theirs.mask_token_id == er.V and len(theirs) == er.V + 1
    text = "def add(a, b):\n    return  a+b  # sum, é\n\tx = {'k': [1, 2.5]}\n"
    ids = theirs(text)["input_ids"]
    assert ids == ours.encode(text)  # data ids map one to one
    assert theirs.decode(ids) == text == ours.decode(ids)
    masked = theirs("x = <|mask|> + 1")["input_ids"]
    assert masked.count(er.V) == 1 and masked == ours.encode("x = ") + [er.V] + ours.encode(" + 1")


# MAE ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("norm_pix", [True, False])
def test_exported_vitmae_gives_our_loss_for_our_mask(runs, tmp_path, norm_pix):
    """Same mask (through ViTMAE's noise), same loss and predictions: catches a wrong patch kernel
    layout, swapped q/k/v, positions in the wrong order or at the class token, a lost final norm."""
    run = runs["mae"] if norm_pix else er.mae_run(tmp_path / "run", "model.cls_token=true", "objective.norm_pix=false")
    folder = runs["mae-hf"] if norm_pix else export_run(run, "hf", tmp_path / "hf")
    ours = load_run(run, progress=False).objective
    theirs = transformers.ViTMAEForPreTraining.from_pretrained(folder).eval()
    assert theirs.config.norm_pix_loss is norm_pix and theirs.config.mask_ratio == 0.75
    g = torch.Generator().manual_seed(1)
    x = er.digits(6)
    mask = ours.draw_mask(6, g)
    with torch.no_grad():
        out = theirs(pixel_values=x, noise=er.noise_for(mask, g))
        loss, _, pred = ours.reconstruction(x, mask)
    assert torch.equal(out.mask.bool(), mask)
    assert abs(out.loss.item() - loss.item()) < 1e-5, (out.loss.item(), loss.item())
    hidden = pred.encoded.index.ids_hidden
    at_hidden = out.logits.gather(1, hidden[..., None].expand(-1, -1, out.logits.shape[-1]))
    assert (at_hidden - pred.pred).abs().max().item() < 1e-5


def test_exported_vit_encoder_gives_our_features(runs):
    ours = load_run(runs["mae"], progress=False).objective.model.encoder
    vit = transformers.ViTModel.from_pretrained(runs["mae-hf"] / "encoder", add_pooling_layer=False).eval()
    x = er.digits(5)
    with torch.no_grad():
        diff = (vit(pixel_values=x).last_hidden_state - ours(x).tokens).abs().max().item()  # [5, 1 + 16, D]
    assert diff < 1e-5, diff


def test_exported_vitmae_positions_are_vitmaes_own(runs):
    """ViTMAE's fixed positions, computed here by hand: [sin w | cos w | sin h | cos h] per patch (MAE's
    order, columns first), a zero row for the class token; ours are [rows | columns]."""
    theirs = transformers.ViTMAEForPreTraining.from_pretrained(runs["mae-hf"])
    for pos, width in ((theirs.vit.embeddings.position_embeddings, 16), (theirs.decoder.decoder_pos_embed, 8)):
        rows, cols = torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij")
        want = torch.cat([sincos_1d(cols.flatten(), width // 2), sincos_1d(rows.flatten(), width // 2)], dim=1)
        assert torch.allclose(pos[0, 1:], want, atol=1e-6) and not pos[0, 0].any()


def test_mae_without_class_token_or_another_variant_is_refused(tmp_path, cli):
    plain = er.mae_run(tmp_path / "plain")
    ran = cli("export", plain, "--to", "hf", tmp_path / "out")
    assert ran.code == 2 and ran.err.count("\n") == 1 and "model.cls_token=true" in ran.err
    hpm = er.mae_run(tmp_path / "hpm", "model.cls_token=true", "objective.variant=hpm")
    ran = cli("export", hpm, "--to", "hf", tmp_path / "out")
    assert ran.code == 2 and "objective.variant='hpm' has no ViTMAE form" in ran.err
    assert not (tmp_path / "out").exists()


# refusals, the folder, --to unmask --------------------------------------------------------------
def test_prenorm_mlm_and_recipes_without_a_hf_form_are_refused_in_one_line(runs, tmp_path, cli):
    prenorm = er.mlm_run(tmp_path / "prenorm")
    ran = cli("export", prenorm, "--to", "hf", tmp_path / "out")
    assert ran.code == 2 and ran.err.count("\n") == 1 and "model.arch=bert" in ran.err
    recipe = get("ar-code")().with_overrides(er.MLM)
    er.tokenizer_file(tmp_path / "ar")
    recipe.fit(Run(tmp_path / "ar", progress=False), recipe.objective(), {"tokens": torch.randint(0, er.V, (8, er.N))})
    ran = cli("export", tmp_path / "ar", "--to", "hf", tmp_path / "out")
    assert ran.code == 2 and ran.err.count("\n") == 1
    assert "'ar-code' has no Hugging Face form" in ran.err and "mlm-code" in ran.err and "--to unmask" in ran.err
    assert not (tmp_path / "out").exists()


def test_a_non_empty_out_is_refused_unless_forced_and_nothing_half_written_is_left(runs, tmp_path, cli, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    ran = cli("export", runs["bert"], "--to", "hf", out)
    assert ran.code == 2 and "not empty" in ran.err and "--force" in ran.err and (out / "keep.txt").exists()
    ran = cli("export", runs["bert"], "--to", "hf", out, "--force")
    assert ran.code == 0, ran.err
    assert not (out / "keep.txt").exists() and (out / "config.json").is_file()
    from unmask.export import hf_mlm

    def crash(loaded, folder):
        (folder / "config.json").write_text("{}")
        raise OSError(28, "No space left on device", str(folder))

    monkeypatch.setattr(hf_mlm, "write", crash)
    ran = cli("export", runs["bert"], "--to", "hf", tmp_path / "new")
    assert ran.code == 2 and "No space left" in ran.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no half folder, no temporary one


def test_any_run_leaves_as_safetensors_and_config_that_load_reads_back(runs, tmp_path, cli):
    """`--to unmask` for a run with no HF form: the same weights, the same outputs, the tokenizer kept."""
    prenorm = er.mlm_run(tmp_path / "prenorm", seed=3)
    ran = cli("export", prenorm, "--to", "unmask", tmp_path / "out")
    assert ran.code == 0, ran.err
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["config.json", "model.safetensors", "tokenizer.json"]
    back, ours = load(tmp_path / "out"), load_run(prenorm, progress=False).objective
    assert type(back) is type(ours) and not back.training
    a, b = back.state_dict(), ours.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randint(0, er.V + 1, (2, er.N))
    assert torch.equal(back.model(x), ours.model(x))
    assert json.loads((tmp_path / "out" / "config.json").read_text())["step"] == 1


def test_load_refuses_a_folder_without_weights_in_one_line(tmp_path):
    from unmask import UnmaskError

    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(UnmaskError, match="holds no model.safetensors"):
        load(tmp_path)


# any HF masked LM as a denoiser -----------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_a_saved_and_loaded_bert_serves_every_sampler(name, tmp_path):
    """A random BertForMaskedLM through save_pretrained / from_pretrained and `HFDenoiser`: every
    sampler keeps the fixed places and leaves no mask (nor a special token) behind."""
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=16)
    transformers.BertForMaskedLM(cfg).save_pretrained(tmp_path)
    bert = transformers.BertForMaskedLM.from_pretrained(tmp_path, use_safetensors=True).eval()
    den = HFDenoiser(bert, mask_token_id=4, exclude=(0, 1, 2, 3))  # 35 data ids, our mask id 35
    canvas = torch.randint(0, 35, (2, 12), generator=torch.Generator().manual_seed(1))
    canvas[:, 2:10] = 35
    with torch.no_grad():
        out = generate(den, canvas, named_sampler(name, 4, 1.0, 1.0), mask_id=35,
                       generator=torch.Generator().manual_seed(2))
    assert (out.tokens < 35).all() and (out.tokens >= 0).all()
    assert torch.equal(out.tokens[:, :2], canvas[:, :2]) and torch.equal(out.tokens[:, 10:], canvas[:, 10:])
