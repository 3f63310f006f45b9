"""The reference side of parity: Hugging Face transformers itself, never a re-implementation.

The engine once shipped a RoPE convention bug that its unit tests could not see, because their
"reference" was hand-written and shared the bug. So here every reference value is produced by
transformers' own modules, run in fp32 with eager attention, and read out with hooks:

* module outputs (forward hooks): ``ln1``, ``q``/``k``/``v``, ``q_norm``/``k_norm`` (Qwen3),
  ``wo``, ``ln2``, ``gate``/``up``/``down`` = the modules owning those roles' weights (Llama:
  input_layernorm, q_proj/k_proj/v_proj, q_norm/k_norm, o_proj, post_attention_layernorm, the
  MLP projections), ``out`` = the decoder layer, ``final_norm`` = the final norm (model.norm);
* module inputs (forward pre-hooks): ``attn`` = wo's module's input, ``resid1`` = ln2's module's
  input, ``swiglu`` = w2's module's input (Llama: o_proj, post_attention_layernorm, down_proj);
* attention internals: the model runs with a registered attention function
  (:data:`TAP_ATTENTION`) that calls the model file's own ``eager_attention_forward`` unchanged
  and records what it was given and what it returned: ``q_rope``/``k_rope`` are its query and
  key arguments (after HF's ``apply_rotary_pos_emb``), ``probs`` is its returned attention
  weights. The mask comes from transformers' own ``eager_mask``, registered under the same name.

Which module owns a role's weight is the model family's (the architecture registry's tensor
names, through :func:`bumpconv.format.stages.stage_module`), so every family is tapped at its
own modules: Gemma's ``ln2`` is its pre_feedforward_layernorm, never its post-attention norm.

One value is derived rather than captured, because HF never materialises it: ``scores`` =
``query @ repeat_kv(key)^T * scaling`` - the exact first line of ``eager_attention_forward``,
computed from the same HF tensors with the model file's own ``repeat_kv`` - with ``-inf`` where
HF's additive mask is non-zero (outside the causal or sliding window).

Hidden states come from ``output_hidden_states``. transformers 5.x (``capture_outputs`` with
``tie_last_hidden_states``) replaces the last entry with ``last_hidden_state``, i.e. the output
*after* the final norm; the last decoder layer's own output is therefore taken from a hook on
that layer, so entry ``i`` of :attr:`ReferenceRun.hidden_states` is always "after layer i-1".

Token ids come from the source's tokenizer through ``AutoTokenizer``; the ids the runtime side
produces (``bumpconv run``'s own loader, :func:`bumpconv.run.tokenizer.load_tokenizer`: the
``tokenizers`` library reading tokenizer.json) are recorded beside them, so a tokenizer mismatch
is reported as such instead of masquerading as a weight bug.

This module imports torch and transformers lazily: the converter never needs them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..files.checkpoint import resolve_source_dir
from ..files.extras import install_command
from ..format.errors import ConfigError, ReferenceSetupError
from ..format.spec import ModelSpec
from ..files.checkpoint import load_spec
from ..conversion.gguf_source import is_gguf, open_gguf
from ..format.stages import FINAL_NORM, STAGES, stage_module, stages_for
from ..run.tokenizer import encode_text, load_tokenizer
from .reference_data import PromptTokens, ReferenceRun

if TYPE_CHECKING:
    import torch

#: Name under which the tapping attention function (and HF's eager mask) are registered.
TAP_ATTENTION = "bumpconv_tap"

#: The fixed prompts. The first is well over 64 tokens for every tokenizer of the supported
#: families, because RoPE convention bugs grow with position and vanish at position 0.
DEFAULT_PROMPTS: tuple[str, ...] = (
    "In the spring of 1887, a young engineer named Clara Whitfield arrived in the small mountain "
    "town of Ashford with a trunk full of drawings and a plan to build a railway bridge across "
    "the gorge. The townspeople doubted her, but she spent every morning measuring the rock, "
    "testing the wind, and counting the cost of iron and timber. By the first snow of winter, "
    "the foundations were set and even the mayor had stopped laughing.",
    "The capital of France is",
)
#: When the source has no tokenizer (the tiny random test models): one synthetic sequence per
#: default prompt, of these lengths, drawn with a fixed seed so every run uses the same ids.
SYNTHETIC_LENGTHS: tuple[int, ...] = (80, 6)
SYNTHETIC_SEED = 0

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def source_root(src: str) -> Path:
    """The checkpoint directory of ``src`` (a directory or a cached repo id); a GGUF source is
    its file, which :meth:`Reference.load` and :func:`source_spec` accept as such."""
    return Path(src) if is_gguf(src) else resolve_source_dir(src)[0]


def source_spec(root: Path) -> ModelSpec:
    """The spec of a :func:`source_root`: its config.json, or a GGUF file's keys."""
    if is_gguf(str(root)):
        with open_gguf(str(root)) as gguf:
            return gguf.spec
    return load_spec(root / "config.json")


def tokenize_prompts(root: Path, texts: Sequence[str] | None, vocab_size: int,
                     runtime_side: Any = None) -> list[PromptTokens]:
    """Token ids for ``texts`` (default: :data:`DEFAULT_PROMPTS`) from the source's tokenizer.

    The ids the reference runs on come from transformers' ``AutoTokenizer``; ``runtime_ids`` are
    what ``bumpconv run`` would feed the C runtime: ``runtime_side`` (the tokenizer the blob
    carries), else the source's tokenizer.json. Without any tokenizer files, default prompts
    become fixed synthetic ids; explicit texts then are an error, since they cannot be
    tokenized. A GGUF's tokenizer is its ``tokenizer.ggml.*`` keys, read by transformers' GGUF
    loader on the reference side.
    """
    gguf_doc = None
    if root.is_file():
        with open_gguf(str(root)) as source:
            gguf_doc = source.tokenizer_document() if source.has_tokenizer else None
    if gguf_doc is None and not any((root / name).exists() for name in _TOKENIZER_FILES):
        if texts is not None:
            raise ConfigError(f"{root}: has no tokenizer, so --prompt cannot be tokenized")
        rng = np.random.default_rng(SYNTHETIC_SEED)
        return [PromptTokens(None, tuple(int(i) for i in rng.integers(0, vocab_size, n)), None)
                for n in SYNTHETIC_LENGTHS]
    if gguf_doc is None and not (root / "tokenizer.json").is_file():
        raise ConfigError(f"{root}: has tokenizer files but no tokenizer.json, which the runtime "
                          "side tokenizes with")
    if runtime_side is None and gguf_doc is not None:
        from tokenizers import Tokenizer
        runtime_side = Tokenizer.from_str(json.dumps(gguf_doc))
    if runtime_side is None:
        runtime_side = load_tokenizer(root / "tokenizer.json")
    _, transformers = _import_reference_libs()
    hf = (transformers.AutoTokenizer.from_pretrained(root) if gguf_doc is None else
          transformers.AutoTokenizer.from_pretrained(root.parent, gguf_file=root.name))
    out = []
    for text in DEFAULT_PROMPTS if texts is None else texts:
        if not text:
            raise ConfigError("a prompt must not be empty")
        runtime_ids = tuple(encode_text(runtime_side, text, "--prompt"))
        ids = tuple(int(i) for i in hf(text)["input_ids"])
        if not ids:
            raise ConfigError(f"prompt {text[:40]!r} tokenizes to no tokens")
        out.append(PromptTokens(text, ids, runtime_ids))
    return out


#: Per-layer recorders of the active forward pass (layer index -> stage -> tensor).
_ACTIVE: ContextVar[dict[int, dict[str, Any]] | None] = ContextVar("bumpconv_taps", default=None)


def _tap_attention(module: Any, query: "torch.Tensor", key: "torch.Tensor", value: "torch.Tensor",
                   attention_mask: "torch.Tensor | None", scaling: float, dropout: float = 0.0,
                   **kwargs: Any) -> tuple["torch.Tensor", "torch.Tensor"]:
    """HF's own eager attention, unchanged, plus a record of its inputs and weights."""
    modeling = sys.modules[type(module).__module__]
    output, weights = modeling.eager_attention_forward(
        module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    active = _ACTIVE.get()
    if active is not None and module.layer_idx in active:
        rec = active[module.layer_idx]
        rec["q_rope"] = query.transpose(1, 2)  # [1, H, n, D] -> [1, n, H, D]
        rec["k_rope"] = key.transpose(1, 2)
        rec["probs"] = weights
        keys = modeling.repeat_kv(key, module.num_key_value_groups)
        scores = query @ keys.transpose(2, 3) * scaling
        if attention_mask is not None:
            scores = scores.masked_fill(attention_mask != 0, float("-inf"))
        rec["scores"] = scores
    return output, weights


def _import_reference_libs() -> tuple[Any, Any]:
    """(torch, transformers), or a one-line error naming what to install."""
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise ReferenceSetupError(
            f"parity needs the reference extra ({exc.name} is not installed): "
            f"{install_command('reference')}") from None
    return torch, transformers


def _register_tap(transformers: Any) -> None:
    """Register the tapping attention and HF's eager mask under :data:`TAP_ATTENTION`."""
    from transformers.masking_utils import AttentionMaskInterface, eager_mask
    transformers.AttentionInterface.register(TAP_ATTENTION, _tap_attention)
    AttentionMaskInterface.register(TAP_ATTENTION, eager_mask)


def _submodule(module: Any, path: str) -> Any:
    """``module.a.b`` for ``path`` "a.b" (``module`` itself for "")."""
    for part in filter(None, path.split(".")):
        module = getattr(module, part)
    return module


def _array(t: "torch.Tensor") -> np.ndarray:
    return t.detach().float().cpu().numpy().copy()


class Reference:
    """A Hugging Face checkpoint loaded by transformers (fp32, eager attention with taps)."""

    def __init__(self, root: Path, spec: ModelSpec, model: Any) -> None:
        self.root, self.spec, self.model = root, spec, model

    @classmethod
    def load(cls, src: str, threads: int | None = 2) -> "Reference":
        """Load ``src`` (a directory or a cached repo id) in fp32, whatever its stored dtype.

        A bf16 checkpoint is upcast exactly (bf16 -> fp32 is a 16-bit shift), matching the
        blob's exact fp32 copies. A checkpoint missing a weight is refused: transformers would
        silently initialise it at random and the reference would be meaningless.
        """
        root = source_root(src)
        spec = source_spec(root)
        torch, transformers = _import_reference_libs()
        if threads:
            torch.set_num_threads(threads)
        _register_tap(transformers)
        transformers.utils.logging.disable_progress_bar()
        # a GGUF: transformers dequantizes it and undoes llama.cpp's Q/K permutation itself
        where = {"gguf_file": root.name} if root.is_file() else {}
        try:
            model, info = transformers.AutoModelForCausalLM.from_pretrained(
                root.parent if where else root, **where, dtype=torch.float32,
                attn_implementation=TAP_ATTENTION, output_loading_info=True)
        except (RuntimeError, ValueError, KeyError) as exc:
            if not where:
                raise
            raise ReferenceSetupError(f"{root}: transformers' GGUF loader cannot load it ("
                                      f"{str(exc).splitlines()[0]})") from None
        missing = sorted(info.get("missing_keys") or ())
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise ReferenceSetupError(f"{root}: transformers found no weights for "
                                      f"{missing[0]!r}{more}; it would initialise them at random")
        model.eval()
        return cls(root, spec, model)

    @property
    def layers(self) -> Any:
        """The decoder layers (where the family's registry entry puts them)."""
        return _submodule(self.model, self.spec.family.layers_module)

    def run(self, ids: Sequence[int], layers: Iterable[int] = ()) -> ReferenceRun:
        """One forward pass from position 0 over ``ids``; stage taps for ``layers``."""
        import torch
        wanted = sorted(set(layers))
        n_layers = len(self.layers)
        for layer in wanted:
            if not 0 <= layer < n_layers:
                raise ConfigError(f"layer {layer} is out of range "
                                  f"(the model has {n_layers} layers)")
        records: dict[int, dict[str, Any]] = {layer: {} for layer in wanted}
        extra: dict[str, Any] = {}
        with self._hooks(records, extra):
            token = _ACTIVE.set(records)
            try:
                with torch.no_grad():
                    out = self.model(torch.tensor([list(ids)], dtype=torch.long),
                                     output_hidden_states=True, use_cache=False)
            finally:
                _ACTIVE.reset(token)
        hidden = [_array(h[0]) for h in out.hidden_states[:n_layers]] + [_array(extra["last"][0])]
        return ReferenceRun(
            logits=_array(out.logits[0]),
            hidden_states=np.stack(hidden),
            final_norm=_array(extra[FINAL_NORM.key][0]),
            stages={layer: self._shaped(rec, len(ids)) for layer, rec in records.items()},
        )

    def _shaped(self, rec: dict[str, Any], n: int) -> dict[str, np.ndarray]:
        """Drop the batch axis and give every stage its shape from the stage table (e.g.
        projections viewed per head)."""
        dims = self.spec.dims()
        head_major = set(self.spec.family.head_major)  # [H, n, D] in HF: to [n, H, D]
        return {s.key: (_array(rec[s.key][0]).swapaxes(0, 1) if s.of in head_major
                        else _array(rec[s.key][0])).reshape(s.dims(dims, n))
                for s in STAGES if s.key in rec}

    @contextmanager
    def _hooks(self, records: dict[int, dict[str, Any]], extra: dict[str, Any]) -> Iterator[None]:
        """Install forward (pre-)hooks for the requested layers, the last layer and the final
        norm; remove them all afterwards whatever happens."""
        handles: list[Any] = []

        def output(module: Any, rec: dict[str, Any], name: str) -> None:
            def hook(_m: Any, _args: Any, result: Any) -> None:
                rec[name] = result[0] if isinstance(result, tuple) else result
            handles.append(module.register_forward_hook(hook))

        def first_input(module: Any, rec: dict[str, Any], name: str) -> None:
            def hook(_m: Any, args: tuple[Any, ...]) -> None:
                rec[name] = args[0]
            handles.append(module.register_forward_pre_hook(hook))

        install = {"output": output, "input": first_input}
        family = self.spec.family
        try:
            for layer, rec in records.items():
                block = self.layers[layer]
                for stage in stages_for(self.spec.flags()):
                    if stage.hook in install:  # "attention" stages come from _tap_attention
                        install[stage.hook](_submodule(block, stage_module(stage, family)), rec,
                                            stage.key)
            output(self.layers[len(self.layers) - 1], extra, "last")
            output(_submodule(self.model, stage_module(FINAL_NORM, family)), extra,
                   FINAL_NORM.key)
            yield
        finally:
            for h in handles:
                h.remove()
