"""Run names that say what the command line changed in the config (latentlit.cli.naming)."""

from pathlib import Path

from jsonargparse import Namespace

from latentlit.cli.naming import MAX_LENGTH, changes, config_run_name


def _sampler(path, **args):
    return Namespace(class_path=path, init_args=Namespace(**args))


def _config(sampler, **model):
    return Namespace(model=Namespace(class_path="latentlit.lit.TTSPredictor",
                                     init_args=Namespace(sampler=sampler, **model)),
                     data=Namespace(class_path="latentlit.lit.ProblemDataModule", init_args=Namespace(
                         problems=Namespace(class_path="latentlit.data.sources.SyntheticProblems",
                                            init_args=Namespace(split="test", limit=None)), batch_size=32)))


DROPOUT = _sampler("latentlit.sampling.MCDropout", p=0.05, mask_scope="trajectory", prefill="per_sample")


def test_what_changed_is_named_in_order_and_what_does_not_decide_results_is_not():
    base = _config(DROPOUT, n_samples=64, seed=0, output_dir=None, max_trajectories=2048)
    assert changes(base, base) == ""
    agn = _sampler("latentlit.sampling.AGN", sigma=0.5, relative=True, prefill="shared", on_answer=False)
    # a new class: its short name, then its options that differ from the class's own defaults
    assert changes(base, _config(agn, n_samples=16, seed=0, output_dir=None, max_trajectories=2048)) == "agn-sigma0.5-n16"
    # an option of the same class; where outputs go, chunking, batch size and limit are left out
    other = _config(_sampler("latentlit.sampling.MCDropout", p=0.1, mask_scope="step", prefill="per_sample"),
                    n_samples=64, seed=3, output_dir="somewhere", max_trajectories=7)
    other.data.init_args.batch_size, other.data.init_args.problems.init_args.limit = 8, 50
    assert changes(base, other) == "p0.1-masks-step-seed3"
    # a data file: named by its file (the class of a problem source is not)
    files = _config(DROPOUT, n_samples=64, seed=0, output_dir=None, max_trajectories=2048)
    files.data.init_args.problems = Namespace(class_path="latentlit.data.sources.ProblemFile",
                                             init_args=Namespace(path="../shared/data/gsm_test.json", limit=None))
    assert changes(base, files) == "path-gsm_test"
    # booleans and None: the option's name
    latents = _config(DROPOUT, n_samples=64, seed=0, output_dir=None, max_trajectories=2048, save_latents=True)
    assert changes(_config(DROPOUT, n_samples=64, seed=0, output_dir=None, max_trajectories=2048, save_latents=False),
                   latents) == "save_latents"


def test_names_stay_short_and_plain():
    long = _config(_sampler("latentlit.sampling.MCDropout", p=0.123456789, targets=["*.a", "*.b"], prefill="shared"),
                   n_samples=1024, seed=123456, latent_rm="/very/long/path/to/a/latent rm directory")
    name = changes(_config(DROPOUT), long)
    assert len(name) <= MAX_LENGTH and all(c.isalnum() or c in "._-" for c in name)
    # whole words only: the ones that fit, none cut short
    assert name == "p0.123457-targets-prefill-shared-n1024", name  # seed123456 would make 49
    assert config_run_name([Path("configs/quickstart/predict_dropout.yaml")], "predict") == "quickstart_predict_dropout"
    assert config_run_name([], "predict") == "predict"
