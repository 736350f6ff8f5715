from pathlib import Path

import pytest
import torch

# transformers' log handler writes to the sys.stderr of its first import: made here, at the real stderr, not inside
# a test whose captured stream is closed afterwards (the command imports it only past its quick answers)
import latentlit.cli.lightning_cli  # noqa: F401

# The reference data sets live next to the repository (../shared/data), never inside it.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data folder {SHARED_DATA} is absent (expected at ../shared/data from the repo root)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_backbone_dir(tmp_path_factory) -> Path:
    """A random 2-layer GPT-2 latent backbone (T=3) saved in latentlit's format."""
    from latentlit.testing.tiny import write_tiny_backbone

    return write_tiny_backbone(tmp_path_factory.mktemp("tiny") / "backbone")


@pytest.fixture(scope="session")
def tiny_llama_backbone_dir(tmp_path_factory) -> Path:
    """A random 2-layer Llama latent backbone with a dynamic stop (1..4 latents) in latentlit's format."""
    from latentlit.testing.tiny import write_tiny_llama_backbone

    return write_tiny_llama_backbone(tmp_path_factory.mktemp("tiny_llama") / "backbone")


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # the tests run tiny matrices: one thread is as fast, and far faster when the cores are busy
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _cli_raises(monkeypatch):
    # main() turns input errors into one line and exit 2; tests assert the exception itself.
    # The tests of that one-line report delete this variable.
    monkeypatch.setenv("LATENTLIT_DEBUG", "1")
