import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from latentlit.data import (
    END_LATENT,
    EOS,
    LATENT,
    LATENT_TOKENS,
    PAD,
    START_LATENT,
    UNK,
    build_bpe_tokenizer,
    build_word_tokenizer,
    generate_problems,
    problem_corpus,
    require_latent_tokens,
)


@pytest.fixture(scope="module")
def problems():
    return generate_problems(200, seed=0)


@pytest.fixture(scope="module")
def word_tok(problems):
    return build_word_tokenizer(problem_corpus(problems))


def _full_text(p):
    return " ".join([p.question, *p.steps, "###", p.answer])


def test_problem_corpus(problems):
    texts = list(problem_corpus(problems[:1]))
    p = problems[0]
    assert texts == [p.question, *p.steps, f"### {p.answer}"]


def test_word_tokenizer_roundtrip(word_tok, problems):
    p = problems[1]
    text = _full_text(p)
    ids = word_tok.encode(text)
    assert len(ids) == len(text.split())  # one id per word, no BOS/EOS added
    assert word_tok.unk_token_id not in ids
    assert word_tok.decode(ids) == text
    assert word_tok.decode(word_tok.encode("### 19")) == "### 19"
    assert word_tok.convert_ids_to_tokens(word_tok.encode("<< 10 + 9 = 19 >>")) == ["<<", "10", "+", "9", "=", "19", ">>"]
    assert word_tok.encode("zebra") == [word_tok.unk_token_id]


def test_special_tokens(word_tok):
    assert (word_tok.pad_token, word_tok.eos_token, word_tok.unk_token) == (PAD, EOS, UNK)
    assert word_tok.bos_token is None
    assert word_tok.convert_ids_to_tokens([0, 1, 2, 3, 4, 5]) == [PAD, EOS, UNK, START_LATENT, LATENT, END_LATENT]
    assert list(word_tok.extra_special_tokens) == list(LATENT_TOKENS)
    latent = f"{START_LATENT}{LATENT}{LATENT} {END_LATENT}"
    assert word_tok.encode(latent) == [3, 4, 4, 5]
    assert require_latent_tokens(word_tok, "mem") == {START_LATENT: 3, LATENT: 4, END_LATENT: 5}
    # The answer marker is an ordinary token: it survives skip_special_tokens.
    assert word_tok.decode(word_tok.encode(f"### 7 {EOS}"), skip_special_tokens=True) == "### 7"


def test_marker_always_in_vocab():
    tok = build_word_tokenizer(["a b c"], min_frequency=2)
    assert "###" in tok.get_vocab()
    assert "a" not in tok.get_vocab()


def test_save_load_identity(word_tok, problems, tmp_path):
    word_tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    texts = [_full_text(p) for p in problems[:20]] + [f"{START_LATENT}{LATENT}{END_LATENT} ### 5 {EOS} zebra"]
    for text in texts:
        assert loaded.encode(text) == word_tok.encode(text)
        assert loaded.decode(loaded.encode(text)) == word_tok.decode(word_tok.encode(text))
    assert (loaded.pad_token, loaded.eos_token, loaded.unk_token, loaded.bos_token) == (PAD, EOS, UNK, None)
    assert list(loaded.extra_special_tokens) == list(LATENT_TOKENS)
    assert require_latent_tokens(loaded, str(tmp_path)) == {START_LATENT: 3, LATENT: 4, END_LATENT: 5}


def test_bpe_tokenizer(tmp_path):
    corpus = ["Natalia sold 48/2 = <<48/2=24>>24 clips in May.", "#### 72", "She has $12 an hour."] * 20
    tok = build_bpe_tokenizer(corpus, vocab_size=300)
    text = f"Natalia sold <<48/2=24>> clips. {START_LATENT}{LATENT}{END_LATENT} #### 72{EOS}"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert require_latent_tokens(tok, "bpe") == {START_LATENT: 3, LATENT: 4, END_LATENT: 5}
    assert tok.pad_token_id == 0 and tok.eos_token_id == 1
    tok.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path).encode(text) == ids
    with pytest.raises(ValueError, match="vocab_size"):
        build_bpe_tokenizer(corpus, vocab_size=100)


def test_require_latent_tokens_missing():
    backend = Tokenizer(models.WordLevel({UNK: 0, "<|latent|>": 1, "a": 2}, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    plain = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token=UNK)
    with pytest.raises(ValueError) as info:
        require_latent_tokens(plain, "/models/plain-tok")
    message = str(info.value)
    assert "/models/plain-tok" in message
    assert START_LATENT in message and END_LATENT in message
    assert f"'{LATENT}'" not in message  # present as a single, known id


def test_require_latent_tokens_rejects_split_tokens():
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.train_from_iterator(["<|latent|> plain text"] * 5, trainers.BpeTrainer(vocab_size=280))
    plain = PreTrainedTokenizerFast(tokenizer_object=backend)
    assert len(plain.encode(START_LATENT, add_special_tokens=False)) > 1
    with pytest.raises(ValueError, match=r"bpe-dir.*<\|start-latent\|>"):
        require_latent_tokens(plain, "bpe-dir")
