"""Tokenizers for models trained from scratch, with the latent-reasoning tokens.

Both builders return a ``transformers.PreTrainedTokenizerFast`` (an alias of
``TokenizersBackend`` in transformers 5) that survives ``save_pretrained`` /
``AutoTokenizer.from_pretrained`` unchanged. No BOS token is added; EOS must
be appended by the caller where a sequence should end.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import chain, repeat
from os import PathLike

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from latentlit.data.problem import Problem

START_LATENT = "<|start-latent|>"
LATENT = "<|latent|>"
END_LATENT = "<|end-latent|>"
PAD = "<|pad|>"
EOS = "<|endoftext|>"
UNK = "<|unk|>"
LATENT_TOKENS: tuple[str, ...] = (START_LATENT, LATENT, END_LATENT)
# Fixed order so PAD=0, EOS=1, UNK=2, then the latent tokens, in every tokenizer.
SPECIAL_TOKENS: tuple[str, ...] = (PAD, EOS, UNK, *LATENT_TOKENS)
# The answer marker must be a token even when the corpus never contains it.
ANSWER_MARKER = "###"


def _wrap(backend: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        eos_token=EOS,
        unk_token=UNK,
        # transformers 5 name for what 4.x called additional_special_tokens.
        extra_special_tokens=list(LATENT_TOKENS),
        # The default clean-up glues " ." / " ?" to the previous word, which
        # would corrupt the space-separated synthetic format on decode.
        clean_up_tokenization_spaces=False,
    )


def build_word_tokenizer(corpus: Iterable[str], *, min_frequency: int = 1) -> PreTrainedTokenizerFast:
    """Build a word-level tokenizer over whitespace-separated words.

    Every whitespace-delimited word (``"<<"``, ``"19"``, ``">>"``, ``"###"``)
    is one token; decoding joins tokens with single spaces, so
    ``decode(encode("### 19"))`` is ``"### 19"``. Unknown words map to
    :data:`UNK`.

    Args:
        corpus: Texts to collect the vocabulary from (e.g. :func:`problem_corpus`).
        min_frequency: Words seen fewer times are left out of the vocabulary.

    Returns:
        A tokenizer with ids 0..5 for PAD, EOS, UNK and the three latent
        tokens (latent tokens registered as ``extra_special_tokens``), then
        ``"###"`` and the corpus words as ordinary tokens.

    Raises:
        ValueError: ``min_frequency`` < 1.
    """
    if min_frequency < 1:
        raise ValueError(f"min_frequency must be >= 1, got {min_frequency}")
    backend = Tokenizer(models.WordLevel(unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # No decoder on purpose: the tokenizers library then joins tokens with
    # single spaces, which is exactly the inverse of WhitespaceSplit here.
    trainer = trainers.WordLevelTrainer(vocab_size=10**9, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS))
    # Fed as ordinary text (not a special token) so the marker survives
    # decode(skip_special_tokens=True) and always clears min_frequency.
    backend.train_from_iterator(chain(corpus, repeat(ANSWER_MARKER, min_frequency)), trainer=trainer)
    return _wrap(backend)


def build_bpe_tokenizer(corpus: Iterable[str], *, vocab_size: int = 4096) -> PreTrainedTokenizerFast:
    """Build a byte-level BPE tokenizer (for GSM8K-style text from scratch).

    Args:
        corpus: Training texts.
        vocab_size: Target vocabulary size including the 6 special tokens and
            the 256 byte symbols.

    Returns:
        A tokenizer with the same special tokens and ids 0..5 as
        :func:`build_word_tokenizer`; decoding restores the original text.

    Raises:
        ValueError: ``vocab_size`` too small to hold the bytes and special tokens.
    """
    minimum = 256 + len(SPECIAL_TOKENS)
    if vocab_size < minimum:
        raise ValueError(f"vocab_size must be >= {minimum}, got {vocab_size}")
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(corpus, trainer=trainer)
    return _wrap(backend)


def require_latent_tokens(tokenizer: PreTrainedTokenizerBase, source: str | PathLike[str],
                          tokens: Iterable[str] = LATENT_TOKENS) -> dict[str, int]:
    """Return the ids of the three latent tokens (or of ``tokens``), or fail loudly.

    A token counts as missing if it encodes to anything other than exactly one
    id, or to the unknown-token id.

    Args:
        tokenizer: Any Hugging Face tokenizer.
        source: Where the tokenizer came from (a path), for the error message.

    Returns:
        ``{START_LATENT: id, LATENT: id, END_LATENT: id}`` (the ids of ``tokens``).

    Raises:
        ValueError: Naming ``source`` and every missing token.
    """
    ids: dict[str, int] = {}
    missing: list[str] = []
    for token in tokens:
        encoded = tokenizer.encode(token, add_special_tokens=False)
        if len(encoded) != 1 or (tokenizer.unk_token_id is not None and encoded[0] == tokenizer.unk_token_id):
            missing.append(token)
        else:
            ids[token] = encoded[0]
    if missing:
        raise ValueError(
            f"tokenizer from {source} lacks latent token(s) {missing}; "
            f"build it with latentlit.data.build_word_tokenizer/build_bpe_tokenizer or add them as special tokens"
        )
    return ids


def problem_corpus(problems: Iterable[Problem]) -> Iterator[str]:
    """Yield the texts a tokenizer should cover for ``problems``.

    For each problem: its question, each step, then ``"### <answer>"``.

    Args:
        problems: Problems to read.

    Yields:
        Text strings, in that order.
    """
    for problem in problems:
        yield problem.question
        yield from problem.steps
        yield f"{ANSWER_MARKER} {problem.answer}"


def check_questions(tokenizer, questions: list[str], ids: list[str] | None = None) -> None:
    """The input check of every entry point that tokenizes questions (the backbone's prompts, the
    LatentRM's, predict, labelling, the Python API): refuse a question that is empty, or that the
    tokenizer reads with its unknown token (a word a word-level tokenizer never saw: the model
    would read ``<unk>`` in its place and its answer would measure that, not the question).

    Questions are tokenized without special tokens, as the prompt template embeds them. A
    tokenizer without an unknown token, or whose unknown token is also its EOS/BOS/PAD token
    (GPT-2's byte-level BPE names ``<|endoftext|>`` as unk and never produces it from text), has
    no unknown words to find.

    Args:
        questions: (Q,) question texts. ids: (Q,) their ids, named in the error (default: the
            question's own text, shortened).

    Raises:
        ValueError: naming the first empty question, or the first question with unknown words,
            the words, the tokenizer, and how many questions have one.
    """
    names = list(ids) if ids is not None else [q if len(q) <= 60 else q[:57] + "..." for q in questions]
    empty = [names[i] for i, q in enumerate(questions) if not q.strip()]
    if empty:
        raise ValueError(f"question {empty[0]!r} is empty ({len(empty)} of {len(questions)} questions): there is "
                         "nothing to reason about; leave it out")
    unk = getattr(tokenizer, "unk_token_id", None)
    shared = {getattr(tokenizer, f"{k}_token_id", None) for k in ("eos", "bos", "pad")}
    if unk is None or unk in shared or not questions:
        return
    encoded = tokenizer(list(questions), add_special_tokens=False, return_offsets_mapping=True)
    bad = [(i, [questions[i][a:b] for t, (a, b) in zip(row, offsets) if t == unk])
           for i, (row, offsets) in enumerate(zip(encoded["input_ids"], encoded["offset_mapping"])) if unk in row]
    if bad:
        first, words = bad[0]
        raise ValueError(f"question {names[first]!r} has words the tokenizer {type(tokenizer).__name__} "
                         f"({getattr(tokenizer, 'name_or_path', '') or 'unnamed'}) reads as its unknown token "
                         f"{tokenizer.unk_token!r}: {words[:5]!r} ({len(bad)} of {len(questions)} questions have "
                         "such words); the model cannot read them: use a model whose tokenizer covers this data")
