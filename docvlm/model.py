"""Loading PaliGemma 2 (hub id, local folder, or the tiny offline model) with the transfer settings.

The paper's transfer recipe differs from the Hugging Face defaults in two ways that matter:
final-logit soft-capping is off, and Gemma 2 attends globally (big_vision has no sliding window,
while the HF config slides over 4096 tokens on alternating layers, shorter than 4096 image tokens
plus text at 896 px). `load` applies both before the weights are built.
"""

from __future__ import annotations

import copy
import logging
import os
import string
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from transformers import (
    AutoConfig,
    Gemma2Config,
    GemmaTokenizer,
    PaliGemmaConfig,
    PaliGemmaForConditionalGeneration,
    PaliGemmaProcessor,
    SiglipImageProcessorPil,
    SiglipVisionConfig,
)
from transformers.utils import logging as hf_logging

from docvlm.errors import DataError

# bitsandbytes, imported by peft when it is installed, warns that it cannot fetch its AVX512-BF16 CPU kernel;
# docvlm turns that kernel off (see `load`), so the warning is only noise.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
TINY = "tiny"
GLOBAL_WINDOW = 1 << 16
MAX_IMAGE_SIZE = 4096  # pixels of an input side (PaliGemma 2 has 224, 448 and 896)
MAX_IMAGE_TOKENS = 16384  # 4x what PaliGemma 2 at 896 px has
MAX_TINY_WIDTH = 64  # the tiny model at width 64 is already larger than a test or demo needs


@dataclass
class LoraSpec:
    """LoRA adapters on the language model (peft); merged into the weights at export.

    Attributes:
        r: rank of the update matrices.
        alpha: scaling numerator (the update is scaled by alpha / r).
        dropout: dropout on the adapter input (the paper uses no dropout).
        target_modules: projection names inside the Gemma 2 decoder layers to adapt.
    """

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )

    def __post_init__(self) -> None:
        from docvlm.errors import SettingsError, check_range, check_types

        check_types(self, "model.lora")
        check_range("model.lora", "r", self.r, 1)
        if not 0 <= self.dropout < 1:
            raise SettingsError(f"model.lora: dropout must be at least 0 and below 1, not {self.dropout!r}")


@dataclass
class ModelSpec:
    """Which PaliGemma 2 to load and how to prepare it for fine-tuning.

    Attributes:
        name_or_path: hub id (`google/paligemma2-3b-pt-896`, `-10b-`, `-448`...), a local folder in
            Hugging Face format, `tiny` for the random offline model of the same classes, or a name of
            `RANDOM_ARCHITECTURES` (`random:paligemma2-3b-896`): a real architecture built from its config
            with random weights and the tiny tokenizer, for speed and memory measurements without a download.
        dtype: weights' dtype. Keep float32 with `bf16-mixed` training (fp32 master weights).
        attn_implementation: `eager`, or `flex_attention` on GPUs (same results, tested forward on the CPU;
            its backward pass needs a GPU). Gemma 2 has no SDPA path in transformers 5.
        gradient_checkpointing: recompute activations in the backward pass to save memory.
        freeze_vision: keep the SigLIP vision tower fixed.
        freeze_projector: keep the image-to-text projection fixed.
        lora: train LoRA adapters on the language model instead of all its weights.
        quantize: `nf4` loads the language model's linear layers in 4-bit NF4 (bitsandbytes, double
            quantization, bf16 compute) and trains only the LoRA adapters on top: QLoRA. Needs `lora`.
            The vision tower, projector and output head are kept in float32. Export dequantizes the
            base weights the adapters were trained on and merges them into a plain float model.
        image_size: `tiny` only: input side in pixels.
        patch_size: `tiny` only: SigLIP patch side; (image_size / patch_size)^2 image tokens.
        seed: `tiny` only: seed of the random weights.
        tiny_width: `tiny` only: multiplies the hidden and MLP sizes of both towers (1: SigLIP hidden 32,
            Gemma 2 hidden 64; the demo uses 4).
    """

    name_or_path: str = "google/paligemma2-3b-pt-896"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    attn_implementation: str = "eager"
    gradient_checkpointing: bool = False
    freeze_vision: bool = False
    freeze_projector: bool = False
    lora: LoraSpec | None = None
    quantize: Literal["nf4"] | None = None
    image_size: int = 896
    patch_size: int = 56
    seed: int = 0
    tiny_width: int = 1

    def __post_init__(self) -> None:
        """Settings from a config or a checkpoint: a wrong type or size stops here, named (a checkpoint's
        `tiny_width` of 10^6 would otherwise allocate until the machine gives up)."""
        from docvlm.errors import check_range, check_types

        check_types(self, "model")
        check_range("model", "image_size", self.image_size, 1, MAX_IMAGE_SIZE)
        check_range("model", "patch_size", self.patch_size, 1, self.image_size)
        check_range("model", "tiny_width", self.tiny_width, 1, MAX_TINY_WIDTH)
        check_range("model", "image tokens (image_size // patch_size)^2", (self.image_size // self.patch_size) ** 2,
                    1, MAX_IMAGE_TOKENS)


@contextmanager
def without_transformers_bars():
    """transformers' "Loading weights" and "Writing model shards" bars off while docvlm loads or saves a model
    (and as they were after): drawn on every load, they said nothing that docvlm's own lines do not."""
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


@without_transformers_bars()
def load(spec: ModelSpec) -> tuple[torch.nn.Module, PaliGemmaProcessor]:
    """The model (transfer settings applied, freezing and LoRA set up) and its processor."""
    if spec.quantize is not None and spec.lora is None:
        raise ValueError("quantize: 4-bit base weights stay frozen (QLoRA), so `lora` must be set too")
    if spec.name_or_path == TINY or spec.name_or_path in RANDOM_ARCHITECTURES:
        if spec.name_or_path == TINY:
            model, processor = build_tiny(
                spec.image_size, spec.patch_size, spec.seed, spec.attn_implementation, spec.tiny_width
            )
        else:
            config = RANDOM_ARCHITECTURES[spec.name_or_path]()
            model, processor = build_random(config, spec.seed, spec.attn_implementation)
        model.to(DTYPES[spec.dtype])
        if spec.quantize is not None:  # quantized as a real checkpoint is, on loading from a folder
            with tempfile.TemporaryDirectory() as folder:
                model.save_pretrained(folder)
                model = PaliGemmaForConditionalGeneration.from_pretrained(
                    folder, dtype=DTYPES[spec.dtype], attn_implementation=spec.attn_implementation,
                    trust_remote_code=False, **quantization(spec),
                )
    else:
        config = _config_without_remote_code(spec.name_or_path)
        apply_transfer_settings(config)
        model = PaliGemmaForConditionalGeneration.from_pretrained(
            spec.name_or_path,
            config=config,
            dtype=DTYPES[spec.dtype],
            attn_implementation=spec.attn_implementation,
            trust_remote_code=False,
            **quantization(spec),
        )
        processor = PaliGemmaProcessor.from_pretrained(spec.name_or_path, trust_remote_code=False)
    processor.tokenizer.padding_side = "left"  # generation needs it; training is indifferent
    if spec.quantize is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)  # freezes the base
        for module in model.modules():
            # bitsandbytes repacks 4-bit weights for its AVX512-BF16 CPU kernel on the first inference pass,
            # a layout that its dequantization (used at export) misreads: keep the standard layout
            if hasattr(module, "support_avx512bf16_for_cpu"):
                module.support_avx512bf16_for_cpu = False
    if spec.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if spec.freeze_vision:
        model.model.vision_tower.requires_grad_(False)
    if spec.freeze_projector:
        model.model.multi_modal_projector.requires_grad_(False)
    if spec.lora is not None:
        model = add_lora(model, spec.lora)
    return model, processor


class RemoteCodeError(DataError):
    """A model whose config needs Python code from its folder or repository, which docvlm never runs."""


def _config_without_remote_code(name_or_path: str):
    """The model's config, read by transformers' own classes only (`trust_remote_code=False` here and in every
    loader: no prompt, no import of a model folder's `.py` files); `RemoteCodeError` when it needs such code."""
    try:
        return AutoConfig.from_pretrained(name_or_path, trust_remote_code=False)
    except ValueError as e:
        if "trust_remote_code" not in str(e):
            raise
        raise RemoteCodeError(f"{name_or_path}: its config asks to run Python code from the model (auto_map, an "
                              f"unknown model_type); docvlm never runs a model's own code (trust_remote_code=False): "
                              f"give a PaliGemma model in Hugging Face format") from None


def model_spec(settings: ModelSpec | dict) -> ModelSpec:
    """A `ModelSpec` from itself or from the plain dict a checkpoint's hyper-parameters hold."""
    if isinstance(settings, ModelSpec):
        return settings
    fields = {k: v for k, v in settings.items() if k in ModelSpec.__dataclass_fields__}
    lora = fields.get("lora")
    if isinstance(lora, dict):
        fields["lora"] = LoraSpec(**{k: v for k, v in lora.items() if k in LoraSpec.__dataclass_fields__})
    return ModelSpec(**fields)


def quantization(spec: ModelSpec) -> dict:
    """`from_pretrained` arguments for QLoRA's 4-bit base: NF4 on the language model's linear layers,
    placed on this process's GPU (each DDP rank loads its own copy), or the CPU without one."""
    if spec.quantize is None:
        return {}
    from transformers import BitsAndBytesConfig

    config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=spec.quantize,
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
        llm_int8_skip_modules=["model.vision_tower", "model.multi_modal_projector", "lm_head"],
    )
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
    return {"quantization_config": config, "device_map": {"": device}}


def apply_transfer_settings(config: PaliGemmaConfig) -> PaliGemmaConfig:
    """Soft-capping of the final logits off; every layer attends globally.

    The window becomes `GLOBAL_WINDOW`, longer than any PaliGemma 2 sequence (4096 image tokens +
    prompt + up to 4096 target tokens), so the "sliding" layers see the whole sequence too.
    """
    text = config.text_config
    text.final_logit_softcapping = None
    if getattr(text, "sliding_window", None) is not None:
        text.sliding_window = max(text.sliding_window, GLOBAL_WINDOW)
    return config


def add_lora(model: PaliGemmaForConditionalGeneration, lora: LoraSpec) -> torch.nn.Module:
    """Wrap the model with LoRA adapters on the language model's projections only."""
    from peft import LoraConfig, get_peft_model

    names = "|".join(lora.target_modules)
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=rf".*language_model.*\.({names})",
        bias="none",
    )
    return get_peft_model(model, config)


@without_transformers_bars()
def save_pretrained(model, processor, directory, state_dict=None) -> None:
    """Weights and processor in Hugging Face format, every file readable as the umask allows.

    transformers writes the weights through a private temporary file, so `model.safetensors` came out 0600
    while the rest of the folder was 0644: a folder meant to be shared could not be read by the others."""
    model.save_pretrained(directory, state_dict=state_dict)
    processor.save_pretrained(directory)
    umask = os.umask(0)
    os.umask(umask)
    for weights in Path(directory).glob("*.safetensors"):
        weights.chmod(0o666 & ~umask)


def unwrap(model: torch.nn.Module) -> PaliGemmaForConditionalGeneration:
    """The plain transformers model, LoRA merged into a copy of the weights when present.

    A 4-bit base (QLoRA) is dequantized first: the adapters are merged into exactly the weights they
    were trained against, and the result is a float model that loads without bitsandbytes.
    """
    from peft import PeftModel, get_peft_model

    if not isinstance(model, PeftModel):
        return model
    merged = copy.deepcopy(model)
    if getattr(model.get_base_model(), "is_loaded_in_4bit", False):
        # in the dtype the 4-bit layers computed with (bf16), then float32
        merged = get_peft_model(merged.unload().dequantize(dtype=torch.float32), model.peft_config["default"])
        adapters = dict(model.named_parameters())
        with torch.no_grad():
            for name, parameter in merged.named_parameters():
                if "lora_" in name:
                    parameter.copy_(adapters[name])
    return merged.merge_and_unload()


def build_tiny_tokenizer() -> GemmaTokenizer:
    """A Gemma tokenizer with the real special tokens, byte fallback and one token per printable
    character. `PaliGemmaProcessor` adds `<image>`, 1024 `<locNNNN>` and 128 `<segNNN>` itself."""
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3}
    vocab.update({f"<0x{i:02X}>": 4 + i for i in range(256)})
    for token in ["▁", "\n", "\t", *(c for c in string.printable if not c.isspace())]:
        vocab.setdefault(token, len(vocab))
    return GemmaTokenizer(vocab=vocab, merges=[])


def build_tiny(
    image_size: int = 896, patch_size: int = 56, seed: int = 0, attn_implementation: str = "eager", width: int = 1
) -> tuple[PaliGemmaForConditionalGeneration, PaliGemmaProcessor]:
    """A random PaliGemma 2 of the real classes, small enough to train on a CPU in seconds.

    SigLIP: hidden 32, 1 layer; Gemma 2: hidden 64, 2 layers (one sliding, one global), so every
    code path of the real model (prefix-LM mask, both attention kinds, the projector) is exercised.
    `width` multiplies the hidden and MLP sizes (and head dimensions) of both towers.
    """
    image_processor = SiglipImageProcessorPil(
        size={"height": image_size, "width": image_size}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    image_processor.image_seq_length = (image_size // patch_size) ** 2
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=build_tiny_tokenizer())
    vision = SiglipVisionConfig(
        hidden_size=32 * width, intermediate_size=64 * width, num_hidden_layers=1, num_attention_heads=2,
        image_size=image_size, patch_size=patch_size, projection_dim=64 * width, vision_use_head=False,
    )
    text = Gemma2Config(
        vocab_size=len(processor.tokenizer), hidden_size=64 * width, intermediate_size=128 * width,
        num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=32 * width,
        query_pre_attn_scalar=32 * width,
        pad_token_id=0, eos_token_id=1, bos_token_id=2,
    )
    config = PaliGemmaConfig(
        vision_config=vision.to_dict(), text_config=text.to_dict(), projection_dim=64 * width,
        image_token_id=processor.image_token_id,
    )
    apply_transfer_settings(config)
    config._attn_implementation = attn_implementation
    return with_random_weights(config, seed), processor


def paligemma2_3b_896_config() -> PaliGemmaConfig:
    """The architecture of `google/paligemma2-3b-pt-896`, transfer settings applied.

    SigLIP So400m/14 at 896 px (4096 image tokens, 27 layers, hidden 1152, MLP 4304, 16 heads, no pooling
    head) and Gemma 2 2B (26 layers, hidden 2304, 8 heads, 4 KV heads, head dim 256, MLP 9216, vocabulary
    257,216), as transformers' PaliGemma 2 conversion script builds them.
    """
    vision = SiglipVisionConfig(
        hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
        image_size=896, patch_size=14, projection_dim=2304, hidden_act="gelu_pytorch_tanh", vision_use_head=False,
    )
    text = Gemma2Config(
        vocab_size=257216, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26, num_attention_heads=8,
        num_key_value_heads=4, head_dim=256, query_pre_attn_scalar=256, hidden_activation="gelu_pytorch_tanh",
        pad_token_id=0, eos_token_id=1, bos_token_id=2,
    )
    config = PaliGemmaConfig(
        vision_config=vision.to_dict(), text_config=text.to_dict(), projection_dim=2304, image_token_id=257152,
        pad_token_id=0, eos_token_id=1, bos_token_id=2,
    )
    return apply_transfer_settings(config)


# Real architectures that `ModelSpec(name_or_path=...)` builds with random weights (no weights to download).
RANDOM_ARCHITECTURES = {"random:paligemma2-3b-896": paligemma2_3b_896_config}


def build_random(
    config: PaliGemmaConfig, seed: int = 0, attn_implementation: str = "eager"
) -> tuple[PaliGemmaForConditionalGeneration, PaliGemmaProcessor]:
    """A model of `config` with random weights and a processor with the tiny tokenizer.

    Speed and memory depend on the architecture and the sequence lengths, not on the weights or on which
    tokens a text becomes, so this measures the real model offline. The processor's `<image>` token is
    the one the model replaces by image features. Built on the current default device: under
    `torch.device("cuda")` the weights are initialised on the GPU directly (seconds instead of minutes
    on the CPU for 3B).
    """
    config = copy.deepcopy(config)
    vision = config.vision_config
    image_processor = SiglipImageProcessorPil(
        size={"height": vision.image_size, "width": vision.image_size}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    image_processor.image_seq_length = (vision.image_size // vision.patch_size) ** 2
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=build_tiny_tokenizer())
    if len(processor.tokenizer) > config.text_config.vocab_size:
        raise ValueError(f"the tiny tokenizer's {len(processor.tokenizer)} tokens exceed the vocabulary of the config")
    config.image_token_id = processor.image_token_id
    config._attn_implementation = attn_implementation
    return with_random_weights(config, seed), processor


def with_random_weights(config: PaliGemmaConfig, seed: int) -> PaliGemmaForConditionalGeneration:
    """The model of `config` with random weights drawn from `seed` (the caller's random state untouched),
    generating with the tiny tokenizer's `<pad>`, `<eos>` and `<bos>`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = PaliGemmaForConditionalGeneration(config)
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = 1
    model.generation_config.bos_token_id = 2
    return model
