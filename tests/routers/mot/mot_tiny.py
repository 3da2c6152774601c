"""Two tiny randomly initialised experts of different architectures, widths, depths and
tokenizers, built here from configs (no downloads):

* `llama`: LlamaForCausalLM, hidden 32, 4 layers, a character-level tokenizer (plus merged
  " A" ... " D" tokens, so that the answer letters are single tokens as in real tokenizers);
* `gemma`: Gemma3ForCausalLM, hidden 48, 6 layers (sliding + global attention), a word-level
  tokenizer (whitespace/punctuation pre-tokenizer) that prepends <bos>.

`tiny_examples()` gives a few four-option questions in the shared prompt format.
"""

from __future__ import annotations

import string

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from routers.mot.data import Example, mmlu_prompt
from routers.mot.experts import FrozenExpert
from routers.mot.model import MoTConfig, MoTFusion

WORDS = ("question what is the capital of france paris answer options a b c d cat dog sat on mat "
         "which enzyme unwinds dna helicase Question Answer Options A B C D").split()
OPTION_LETTERS = "ABCD"
INPUTS = ["input_ids", "attention_mask"]  # no token_type_ids: generate() refuses them for these models


def char_tokenizer() -> PreTrainedTokenizerFast:
    chars = list(dict.fromkeys(string.ascii_letters + string.digits + string.punctuation + " \n"))
    vocab = {"<unk>": 0, "<eos>": 1, **{c: i + 2 for i, c in enumerate(chars)}}
    for letter in OPTION_LETTERS:
        vocab[f" {letter}"] = len(vocab)
    merges = [(" ", letter) for letter in OPTION_LETTERS]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>", model_input_names=INPUTS)


def word_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"<unk>": 0, "<bos>": 1, "<eos>": 2, **{w: i + 3 for i, w in enumerate(dict.fromkeys(WORDS + list(string.punctuation)))}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<bos>", eos_token="<eos>", model_input_names=INPUTS)


def tiny_experts(n_stacks: int = 2) -> list[FrozenExpert]:
    torch.manual_seed(0)
    t1, t2 = char_tokenizer(), word_tokenizer()
    llama = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(t1), hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, eos_token_id=t1.eos_token_id, pad_token_id=t1.eos_token_id,
    ))
    gemma = Gemma3ForCausalLM(Gemma3TextConfig(
        vocab_size=len(t2), hidden_size=48, intermediate_size=96, num_hidden_layers=6, num_attention_heads=2,
        num_key_value_heads=1, head_dim=24, max_position_embeddings=512, sliding_window=8,
        eos_token_id=t2.eos_token_id, pad_token_id=t2.eos_token_id, bos_token_id=1,
    ))
    return [FrozenExpert("tiny-llama-char", llama, t1, n_stacks), FrozenExpert("tiny-gemma-word", gemma, t2, n_stacks)]


QUESTIONS = [
    ("t1", "what is the capital of france", ["paris", "dog", "cat", "mat"], "A"),
    ("t2", "which enzyme unwinds dna", ["cat", "helicase", "dog", "mat"], "B"),
    ("t3", "what sat on the mat", ["paris", "dna", "cat", "dog"], "C"),
    ("t4", "what is the capital", ["dog", "cat", "mat", "paris"], "D"),
    ("t5", "which dog sat on the mat", ["dog", "cat", "paris", "dna"], "A"),
    ("t6", "what unwinds dna", ["mat", "helicase", "paris", "cat"], "B"),
]


def tiny_examples() -> list[Example]:
    return [Example(id=qid, prompt=mmlu_prompt(q, opts), options=opts, answer=ans) for qid, q, opts, ans in QUESTIONS]


def tiny_fusion(experts: list[FrozenExpert], *, out_init_std: float = 0.5, embed_dim: int = 8) -> MoTFusion:
    torch.manual_seed(1)
    cfg = MoTConfig(
        experts=[e.name for e in experts], hidden_sizes=[e.hidden_size for e in experts], n_stacks=len(experts[0].meeting_layers),
        top_k=2, d_shared=16, n_heads=2, router_hidden=16, embed_dim=embed_dim, dropout=0.0, out_init_std=out_init_std,
    )
    return MoTFusion(cfg).eval()




# Fixtures: test modules import them by name (no conftest here, so that `conftest` stays the
# tests/ one for helpers that import it).
@pytest.fixture(scope="module")
def experts() -> list[FrozenExpert]:
    return tiny_experts()


@pytest.fixture
def fusion(experts: list[FrozenExpert]) -> MoTFusion:
    # A large back-projection init so the interaction visibly changes the primary's logits.
    return tiny_fusion(experts)
