"""Data layer: problems, answer handling, loaders, synthetic task, tokenizers."""

from latentlit.data.answers import ANSWER_FORMATS, answers_match, extract_answer, normalize_answer, parse_number
from latentlit.data.loaders import (
    DataFormatError,
    exclude_questions,
    load_coconut_json,
    load_gsm8k_jsonl,
    load_problems,
    save_problems_jsonl,
)
from latentlit.data.problem import Problem
from latentlit.data.sources import NoProblemsError, ProblemFile, ProblemSource, SyntheticProblems
from latentlit.data.synthetic import generate_problems, synthetic_splits
from latentlit.data.tokenizer import (
    END_LATENT,
    EOS,
    LATENT,
    LATENT_TOKENS,
    PAD,
    START_LATENT,
    UNK,
    build_bpe_tokenizer,
    build_word_tokenizer,
    problem_corpus,
    require_latent_tokens,
)

__all__ = [
    "NoProblemsError",
    "ProblemFile",
    "ProblemSource",
    "SyntheticProblems",
    "ANSWER_FORMATS",
    "END_LATENT",
    "EOS",
    "LATENT",
    "LATENT_TOKENS",
    "PAD",
    "START_LATENT",
    "UNK",
    "DataFormatError",
    "Problem",
    "answers_match",
    "build_bpe_tokenizer",
    "build_word_tokenizer",
    "exclude_questions",
    "extract_answer",
    "generate_problems",
    "load_coconut_json",
    "load_gsm8k_jsonl",
    "load_problems",
    "normalize_answer",
    "parse_number",
    "problem_corpus",
    "require_latent_tokens",
    "save_problems_jsonl",
    "synthetic_splits",
]
