"""GenMol's design tasks on SAFE tokens: the sampler commits one token per step, generated rows
decode to molecules or count as invalid, given fragments never change, fragment remasking edits one
fragment only; and the recipe end to end on every 24th bundled molecule: train | eval | sample,
the run's vocabulary checked, the AR baseline loaded as its own role, a wrong setting refused."""

import json

import pytest
import torch

pytest.importorskip("rdkit")
pytest.importorskip("safe")

from unmask.data import molecules  # noqa: E402
from unmask.eval import molecule_design as design  # noqa: E402
from unmask.eval import molecules as metrics  # noqa: E402
from unmask.layout import Layout  # noqa: E402
from unmask.nn import CausalTokenModel, MaskedTokenModel, ModelConfig  # noqa: E402
from unmask.sampling import generate  # noqa: E402
from unmask.sampling.genmol import GenMolSampler  # noqa: E402

LENGTH = 48


@pytest.fixture(scope="module")
def corpus():
    return molecules.build_corpus(molecules.bundled_smiles()[::12], length=LENGTH, vocab_size=48, held_out_share=0.2)


@pytest.fixture(scope="module")
def tiny(corpus):
    torch.manual_seed(0)
    cfg = ModelConfig(len(corpus.vocab), Layout.seq(LENGTH), dim=16, depth=1, heads=2)
    return MaskedTokenModel(cfg).eval(), CausalTokenModel(cfg).eval()


class Copier:
    """A denoiser that knows the answer: at every place of row b it puts almost all mass on
    targets[b, i] (rows in the order given)."""

    def __init__(self, targets: torch.Tensor, vocab: int):
        self.targets, self.mask_id = targets, vocab

    def __call__(self, tokens):
        rows = self.targets[: tokens.shape[0]]
        return torch.nn.functional.one_hot(rows, self.mask_id).float() * 30.0


def test_genmol_sampler_commits_one_token_per_step():
    mask_id, n = 7, 12
    canvas = torch.full((3, n), mask_id)
    canvas[0, 5:] = 0  # 5 hidden
    canvas[1, :] = mask_id  # 12 hidden: MaskGIT's linear schedule would commit two at step 5 (float floor)
    canvas[2, :2] = 3  # 10 hidden
    sampler = GenMolSampler.for_canvas(canvas, mask_id, temperature=1.0, randomness=0.5)
    assert sampler.steps == 12
    g = torch.Generator().manual_seed(0)
    tokens, state = canvas.clone(), sampler.start(canvas == mask_id)
    left = (canvas == mask_id).sum(1)
    for _ in range(12):
        logits = torch.randn(3, n, mask_id, generator=g)
        new, state = sampler.step(logits, tokens, state, g)
        now = (new == mask_id).sum(1)
        assert torch.equal(left - now, (left > 0).long())  # exactly one per unfinished row
        assert torch.equal(new[tokens != mask_id], tokens[tokens != mask_id])
        tokens, left = new, now
    assert not (tokens == mask_id).any()


def test_denovo_canvas_counts():
    canvas = design.denovo_canvas(torch.tensor([1, 4, 6]), 6, mask_id=9)
    assert (canvas == 9).sum(1).tolist() == [1, 4, 6]
    assert canvas[0].tolist() == [9, 0, 0, 0, 0, 0]
    with pytest.raises(ValueError):
        design.denovo_canvas(torch.tensor([7]), 6, mask_id=9)


def test_generated_rows_decode_or_count_invalid(corpus, tiny):
    masked, causal = tiny
    texts = design.denovo(masked, corpus, 24, temperature=1.0, randomness=0.5, seed=1)
    smiles = design.ar_denovo(causal, corpus, 24, temperature=1.0, seed=1)
    for batch, decode in ((texts, metrics.decode_safe), (smiles, metrics.decode_smiles)):
        assert len(batch) == 24 and all("<pad>" not in t for t in batch)
        decoded = [decode(t) for t in batch]
        for m in decoded:
            assert m is None or molecules.canonical_smiles(m) == m
        scores = metrics.generation_metrics(decoded, [metrics.is_whole(t) for t in batch], set())
        assert scores["validity"] == sum(m is not None for m in decoded) / 24
    # a denoiser that knows a training molecule gives it back exactly, as a valid sample
    row = corpus.train.safe_tokens[:1]
    length = int(corpus.train.lengths[0])
    out, nfe = design.fill(Copier(row, len(corpus.vocab)), design.denovo_canvas(torch.tensor([length]), LENGTH,
                                                                                 len(corpus.vocab)), 1.0, 0.5)
    assert nfe == length
    assert metrics.decode_safe(corpus.vocab.decode(out[0])) == corpus.train.smiles[0]


def test_given_fragments_never_change(corpus, tiny):
    masked, _ = tiny
    cases = design.fragment_cases(corpus, 12)
    assert len(cases) == 12
    res = design.fragment_completion(masked, corpus, cases, temperature=1.2, randomness=2.0, seed=0)
    for case, canvas, row, text in zip(cases, res.canvas, res.tokens, res.texts, strict=True):
        k = len(case.given)
        assert canvas[:k].tolist() == case.given == row[:k].tolist()
        assert (canvas[k:] == masked.mask_id).sum() >= 8
        assert text.startswith(".".join(case.fragments) + ".")
    assert not (res.tokens == masked.mask_id).any()


def test_fragment_completion_by_a_knowing_denoiser_holds_the_fragments(corpus):
    cases = design.fragment_cases(corpus, 6)
    sources = {s: i for i, s in enumerate(corpus.test.smiles)}
    rows = corpus.test.safe_tokens[[sources[c.source] for c in cases]]
    totals = (rows != molecules.PAD_ID).sum(1)
    canvas = design.fragment_canvas(cases, totals, LENGTH, len(corpus.vocab), min_new=1)
    sampler = GenMolSampler.for_canvas(canvas, len(corpus.vocab), 1.2, 2.0)
    out = generate(Copier(rows, len(corpus.vocab)), canvas, sampler, mask_id=len(corpus.vocab)).tokens
    for case, row in zip(cases, out, strict=True):
        smiles = metrics.decode_safe(corpus.vocab.decode(row))
        assert smiles == case.source and metrics.holds_fragments(smiles, case.fragments)


def test_remasking_replaces_one_fragment_with_5_to_15_masks(corpus):
    vocab = corpus.vocab
    ids = vocab.encode(molecules.encode_safe("CC(=O)Oc1ccccc1C(=O)O"))  # four fragments
    spans = molecules.fragment_spans(ids, vocab.dot_id)
    g = torch.Generator().manual_seed(0)
    rows = design.remask_proposals(ids, vocab.dot_id, 40, LENGTH, 99, g)
    assert rows.shape == (40, LENGTH)
    for row in rows.tolist():
        hidden = [i for i, t in enumerate(row) if t == 99]
        lo, k = hidden[0], len(hidden)
        assert 5 <= k <= 15 and hidden == list(range(lo, lo + k))
        hi = next(h for a, h in spans if a == lo)  # the masks start where a fragment started
        assert row[:lo] == ids[:lo]
        assert row[lo + k : lo + k + len(ids) - hi] == ids[hi:]
        assert all(t == molecules.PAD_ID for t in row[lo + k + len(ids) - hi :])
    tight = design.remask_proposals(ids, vocab.dot_id, 20, len(ids) + 2, 99, g)
    assert all(1 <= (r == 99).sum() <= 15 for r in tight)


def test_lead_optimisation_keeps_similarity_and_never_lowers_qed(corpus, tiny):
    masked, _ = tiny
    starts = design.lead_starts(corpus, 3)
    assert len(starts) == 3 and all(metrics.qed(s) < 0.6 for s in starts)
    out = design.lead_optimisation(masked, corpus, starts, rounds=2, proposals=4, min_similarity=0.4,
                                   temperature=1.2, randomness=2.0)
    for t in out["trace"]:
        assert t["qed_final"] >= t["qed_start"]
        assert t["final"] == t["start"] or t["similarity"] >= 0.4
        assert t["qed_final"] == pytest.approx(metrics.qed(t["final"]))


TINY = ["train.steps=3", "train.batch_size=8", "train.warmup=1", "model.dim=16", "model.depth=1", "model.heads=2",
        "data.subsample=24", "eval.n_samples=8", "eval.fragment_cases=4", "eval.lead_starts=1", "eval.lead_rounds=1",
        "eval.lead_proposals=2"]


@pytest.fixture(scope="module")
def genmol_run(tmp_path_factory):
    from unmask.cli import main

    run = tmp_path_factory.mktemp("genmol") / "run"
    assert main(["train", "genmol", "--out", str(run), *TINY, "--no-progress"]) == 0
    return run


def test_genmol_recipe_trains_evaluates_and_samples(genmol_run, tmp_path, capsys):
    from unmask.cli import main

    run = genmol_run
    m = json.loads((run / "metrics.json").read_text())
    assert m["fragment_given_unchanged"] == 1.0 and 0 <= m["genmol_validity"] <= 1 and 0 <= m["ar_validity"] <= 1
    assert m["fragment_cases"] == 4 and m["lead_starts"] == 1
    assert (run / "ar" / "checkpoints").is_dir() and (run / "vocab.json").is_file()
    for name in ("denovo_genmol.tsv", "denovo_ar.tsv"):
        assert len((run / name).read_text().splitlines()) == 8
    assert len(json.loads((run / "lead.json").read_text())) == 1
    report = (run / "report.md").read_text()
    assert "| validity | " in report and "(ar_validity) | higher |" in report and "(ar_mean_sa) | lower |" in report
    assert main(["eval", str(run), "eval.n_samples=6", "sampler.temperature=0.5", "eval.lead_rounds=1"]) == 0
    assert len((run / "denovo_ar.tsv").read_text().splitlines()) == 6
    out = tmp_path / "elsewhere" / "s"  # nothing is looked up beside `out`; the recipe's suffix is added
    capsys.readouterr()
    assert main(["sample", str(run), "--n", "4", "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote {out.with_suffix('.tsv')}\n"
    lines = out.with_suffix(".tsv").read_text().splitlines()
    assert len(lines) == 4 and all(len(line.split("\t")) == 2 for line in lines)


def test_sample_reads_the_runs_vocabulary(genmol_run, tmp_path, capsys):
    import shutil

    from unmask.cli import main

    run = tmp_path / "copy"
    shutil.copytree(genmol_run, run)
    vocab = json.loads((run / "vocab.json").read_text())
    (run / "vocab.json").write_text(json.dumps(vocab[:-1] + ["Xx"]))
    for command in (["sample", str(run), "--n", "2"], ["eval", str(run)]):
        capsys.readouterr()
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "vocab.json differs from the vocabulary built now" in err
    (run / "vocab.json").unlink()
    assert main(["sample", str(run), "--n", "2"]) == 2
    assert "vocab.json is missing" in capsys.readouterr().err


def test_the_ar_baseline_loads_as_its_own_role_and_never_as_genmol(genmol_run):
    from unmask.errors import UnmaskError
    from unmask.objectives import MaskedDiffusion, NextTokenPrediction
    from unmask.recipes import Run, load_run
    from unmask.recipes.genmol import GenMol
    from unmask.train.checkpoint import find_checkpoint, load_checkpoint

    recipe, objective, run = load_run(genmol_run, progress=False)
    assert isinstance(recipe, GenMol) and isinstance(objective, MaskedDiffusion)
    assert not isinstance(objective.model, CausalTokenModel)
    baseline = recipe.load(run.sub("ar"), role="ar")
    assert isinstance(baseline, NextTokenPrediction) and isinstance(baseline.model, CausalTokenModel)
    tensors, _, _ = load_checkpoint(find_checkpoint(genmol_run / "ar"))
    assert torch.equal(baseline.state_dict()["model.head.proj.weight"], tensors["model"]["model.head.proj.weight"])
    with pytest.raises(UnmaskError, match=r"holds 'genmol' \(ar\), not 'genmol' \(main\)"):
        recipe.load(Run(genmol_run / "ar"))
    with pytest.raises(UnmaskError, match=r"holds 'genmol' \(main\), not 'genmol' \(ar\)"):
        recipe.load(run, role="ar")
    ckpt = find_checkpoint(genmol_run)
    tensors, config, _ = load_checkpoint(ckpt)
    older = recipe.restore(ckpt, tensors, {**config, "role": "genmol"})  # runs written before roles had names
    assert isinstance(older, MaskedDiffusion)


def test_the_flat_settings_of_an_older_run_are_upgraded_to_sections():
    from pathlib import Path

    from unmask.recipes.genmol import GenMol

    old = {"steps": 7, "batch_size": 4, "lr": 2e-3, "warmup": 1, "seed": 3, "length": 48, "vocab_size": 40,
           "dim": 16, "depth": 1, "heads": 2, "n_samples": 9, "temperature": 0.5, "randomness": 0.6,
           "ar_temperature": 0.7, "fragment_cases": 5, "fragment_temperature": 1.2, "fragment_randomness": 2.0,
           "lead_starts": 4, "lead_rounds": 2, "lead_proposals": 3, "lead_similarity": 0.5, "checkpoint_every": 6}
    with pytest.warns(UserWarning, match="upgraded to sections"):
        s = GenMol.settings_from({"recipe": "genmol", "config": old, "role": "genmol"}, Path("old"))
    assert (s.train.steps, s.train.seed, s.train.checkpoint_every, s.model.heads) == (7, 3, 6, 2)
    assert (s.data.length, s.data.vocab_size, s.data.subsample) == (48, 40, 1)
    assert (s.sampler.temperature, s.sampler.randomness, s.sampler.ar_temperature) == (0.5, 0.6, 0.7)
    assert (s.sampler.fragment_temperature, s.sampler.fragment_randomness) == (1.2, 2.0)
    assert (s.eval.n_samples, s.eval.fragment_cases, s.eval.lead_starts, s.eval.lead_rounds,
            s.eval.lead_proposals, s.eval.lead_similarity) == (9, 5, 4, 2, 3, 0.5)


@pytest.mark.parametrize("override,needle", [
    ("train.step=5", "unknown key 'train.step'; did you mean 'train.steps'?"),
    ("train.batch_size=0", "train.batch_size=0 is out of range"),
    ("train.warmup=1.5", "train.warmup='1.5' is not an integer"),
    ("model.heads=x", "model.heads='x' is not an integer"),
    ("model.dim=4", "model.dim=4 is out of range; model.dim must be >= 8"),
    ("model.layers=2", "unknown key 'model.layers'"),
    ("data.vocab=64", "unknown key 'data.vocab'; did you mean 'data.vocab_size'?"),
    ("data.length=4", "data.length=4 is out of range; data.length must be >= 8"),
    ("data.subsample=half", "data.subsample='half' is not an integer"),
    ("sampler.randomnes=1", "unknown key 'sampler.randomnes'; did you mean 'sampler.randomness'?"),
    ("sampler.temperature=-1", "sampler.temperature=-1.0 is out of range"),
    ("sampler.ar_temperature=hot", "sampler.ar_temperature='hot' is not a number"),
    ("eval.n_sample=8", "unknown key 'eval.n_sample'; did you mean 'eval.n_samples'?"),
    ("eval.lead_similarity=2", "eval.lead_similarity=2.0 is out of range; eval.lead_similarity must be in [0.0, 1.0]"),
    ("eval.fragment_cases=x", "eval.fragment_cases='x' is not an integer"),
    ("temperature=0.5", "unknown key 'temperature'; did you mean 'sampler.temperature'?"),
])
def test_a_wrong_setting_in_any_section_is_one_line_and_exit_2(override, needle, capsys):
    from unmask.cli import main

    assert main(["train", "genmol", override]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("unmask: error: ") and needle in err
