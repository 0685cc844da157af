"""`model.init=PATH`: mlm-code (model.arch=bert) starts from a BertForMaskedLM folder and mae-digits
(model.cls_token=true) from a ViTMAEForPreTraining folder, before the first step and never over a
resumed checkpoint; folders that do not fit, and pickled weights, are refused in one line."""

from __future__ import annotations

import shutil

import pytest
import torch

from conftest import merged

transformers = pytest.importorskip("transformers")

import export_runs as er  # noqa: E402
from unmask import UnmaskError  # noqa: E402
from unmask.export import export_run  # noqa: E402
from unmask.nn.embedding import sincos_1d  # noqa: E402
from unmask.recipes import Run, get  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("init")
    bert = export_run(er.mlm_run(root / "bert", "model.arch=bert", seed=5), "hf", root / "bert-hf")
    mae = export_run(er.mae_run(root / "mae", "model.cls_token=true", seed=6), "hf", root / "mae-hf")
    return {"bert": bert, "mae": mae, "tokenizer": root / "bert" / "tokenizer.json"}


def prepared(name: str, folder, overrides, tokenizer=None):
    """(recipe, objective after `prepare`, run) of a fresh run in `folder`, as `Recipe.train` has them
    before the first step."""
    recipe = get(name)().with_overrides(merged(er.MLM if name == "mlm-code" else er.MAE, *overrides))
    run = Run(folder, progress=False)
    if tokenizer is not None:  # what `training_data` leaves in the run folder
        run.folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tokenizer, run.file("tokenizer.json"))
    objective = recipe.objective()
    recipe.prepare(run, objective, {})
    return recipe, objective, run


def test_bert_init_gives_the_folders_logits_before_the_first_step(exported, tmp_path):
    _, objective, _ = prepared("mlm-code", tmp_path / "run", ["model.arch=bert", f"model.init={exported['bert']}"],
                               exported["tokenizer"])
    _, seeded, _ = prepared("mlm-code", tmp_path / "fresh", ["model.arch=bert"], exported["tokenizer"])
    theirs = transformers.BertForMaskedLM.from_pretrained(exported["bert"]).eval()
    x = torch.randint(0, er.V + 1, (3, er.N), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, want = objective.model(x), theirs(input_ids=x).logits[..., : er.V]
        assert (ours - want).abs().max().item() < 1e-4
        assert (seeded.model(x) - want).abs().max().item() > 0.1  # without init: the seed's weights


def test_vitmae_init_gives_the_folders_loss_before_the_first_step(exported, tmp_path):
    overrides = ["model.cls_token=true", f"model.init={exported['mae']}"]
    _, objective, _ = prepared("mae-digits", tmp_path / "run", overrides)
    theirs = transformers.ViTMAEForPreTraining.from_pretrained(exported["mae"]).eval()
    g = torch.Generator().manual_seed(2)
    x = er.digits(6)
    mask = objective.draw_mask(6, g)
    with torch.no_grad():
        loss = objective.reconstruction(x, mask)[0].item()
        assert abs(theirs(pixel_values=x, noise=er.noise_for(mask, g)).loss.item() - loss) < 1e-5


def test_a_vitmae_made_by_transformers_starts_a_run_with_its_own_numbers(tmp_path):
    """A ViTMAE with ViTMAE's own position order ([sin w | cos w | sin h | cos h], set here by hand)
    and random weights: our MAE started from it computes its loss, which only holds if the feature
    halves are exchanged throughout (and the class row of the positions folded into the token)."""
    from unmask.nn.vitmae import vitmae_config_kwargs

    recipe = get("mae-digits")().with_overrides([*er.MAE, "model.cls_token=true"])
    kwargs = vitmae_config_kwargs(recipe.model_config(), mask_ratio=0.75, norm_pix=True)
    torch.manual_seed(0)
    vitmae = transformers.ViTMAEForPreTraining(transformers.ViTMAEConfig(**kwargs)).eval()
    er.scramble(vitmae, 7)
    rows, cols = torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij")
    with torch.no_grad():
        for pos, width in ((vitmae.vit.embeddings.position_embeddings, 16), (vitmae.decoder.decoder_pos_embed, 8)):
            pos[0, 1:] = torch.cat([sincos_1d(cols.flatten(), width // 2), sincos_1d(rows.flatten(), width // 2)], 1)
        vitmae.decoder.decoder_pos_embed[0, 0] = 0
        vitmae.vit.embeddings.position_embeddings[0, 0] = torch.randn(16)  # ViTMAE adds it to the class token
    vitmae.save_pretrained(tmp_path / "hf")
    overrides = ["model.cls_token=true", f"model.init={tmp_path / 'hf'}"]
    _, objective, _ = prepared("mae-digits", tmp_path / "run", overrides)
    g = torch.Generator().manual_seed(3)
    x = er.digits(4)
    mask = objective.draw_mask(4, g)
    with torch.no_grad():
        want = vitmae(pixel_values=x, noise=er.noise_for(mask, g)).loss.item()
        assert abs(objective.reconstruction(x, mask)[0].item() - want) < 1e-5


def test_a_resumed_run_keeps_its_checkpoint_and_does_not_read_init_again(exported, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(exported["bert"], folder)
    overrides = ["model.arch=bert", f"model.init={folder}"]
    recipe, objective, run = prepared("mlm-code", tmp_path / "run", overrides, exported["tokenizer"])
    recipe.fit(run, objective, {"tokens": torch.randint(0, er.V, (8, er.N))})  # one step, a checkpoint
    shutil.rmtree(folder)  # re-reading it now would fail
    recipe, again, run = prepared("mlm-code", tmp_path / "run", overrides)
    fresh = recipe.objective()
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), fresh.state_dict().values(), strict=True))
    recipe.fit(run, again, {"tokens": torch.randint(0, er.V, (8, er.N))})  # resumes: the checkpoint's weights
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), objective.state_dict().values(),
                                                strict=True))


# refusals -----------------------------------------------------------------------------------------
def test_a_folder_of_other_shapes_is_refused_naming_the_parameter_and_both_shapes(exported, tmp_path):
    overrides = ["model.arch=bert", f"model.init={exported['bert']}", "model.dim=32"]
    with pytest.raises(UnmaskError) as e:
        prepared("mlm-code", tmp_path / "run", overrides, exported["tokenizer"])
    message = str(e.value)
    assert "\n" not in message and "model.init=" in message
    assert "bert.embeddings.word_embeddings.weight is [301, 16] there, the model needs [301, 32]" in message
    with pytest.raises(UnmaskError, match=r"num_attention_heads is 2 there, 4 here \(model.heads\)"):
        prepared("mlm-code", tmp_path / "run2", [*overrides[:2], "model.heads=4"], exported["tokenizer"])
    with pytest.raises(UnmaskError, match=r"decoder.mask_token is \[1, 1, 8\] there, the model needs \[1, 1, 16\]"):
        prepared("mae-digits", tmp_path / "run3", ["model.cls_token=true", f"model.init={exported['mae']}",
                                                   "model.decoder_dim=16"])


def test_a_folder_of_another_architecture_or_tokenizer_is_refused(exported, tmp_path):
    with pytest.raises(UnmaskError, match="holds a 'vit_mae' model; this takes a 'bert' one"):
        prepared("mlm-code", tmp_path / "a", ["model.arch=bert", f"model.init={exported['mae']}"],
                 exported["tokenizer"])
    other = er.tokenizer_file(tmp_path / "tok", texts=["while True:\n    yield {x: y for x, y in z}\n"] * 50)
    with pytest.raises(UnmaskError, match="its tokenizer gives other tokens"):
        prepared("mlm-code", tmp_path / "b", ["model.arch=bert", f"model.init={exported['bert']}"], other)


def test_pickled_weights_are_refused_and_never_unpickled(tmp_path, monkeypatch):
    cfg = transformers.BertConfig(**{"vocab_size": er.V + 1, "hidden_size": 16, "num_hidden_layers": 2,
                                     "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": er.N,
                                     "layer_norm_eps": 1e-12})
    cfg.save_pretrained(tmp_path / "bin")  # config.json, and the weights only as a pickle, as older code saved them
    torch.save(transformers.BertForMaskedLM(cfg).state_dict(), tmp_path / "bin" / "pytorch_model.bin")

    def never(*args, **kwargs):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", never)
    with pytest.raises(UnmaskError, match="holds only pytorch_model.bin, a pickle, which unmask never reads"):
        prepared("mlm-code", tmp_path / "run", ["model.arch=bert", f"model.init={tmp_path / 'bin'}"],
                 er.tokenizer_file(tmp_path / "tok"))


def test_settings_that_cannot_init_are_refused_on_the_command_line(cli, tmp_path):
    ran = cli("train", "mlm-code", "model.init=somewhere", "--out", tmp_path / "r")
    assert ran.code == 2 and ran.err.count("\n") == 1 and "set model.arch=bert" in ran.err
    ran = cli("train", "mae-digits", "model.init=somewhere", "--out", tmp_path / "r")
    assert ran.code == 2 and ran.err.count("\n") == 1 and "model.cls_token=true" in ran.err
    ran = cli("train", "mlm-code", "model.arch=bert", "model.emd=true", "--out", tmp_path / "r")
    assert ran.code == 2 and "model.arch=prenorm" in ran.err
    assert not (tmp_path / "r").exists()
