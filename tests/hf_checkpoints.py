"""Tiny Hugging Face Transformers checkpoint directories with random weights, written without
Transformers: `config.json`, `model.safetensors` (the tensor names and shapes
`save_pretrained` writes), `tokenizer.json` (a byte-level BPE learned on `textwrap.py`, with the
family's special tokens as added tokens) and `tokenizer_config.json`. KerasHub converts them on
load, as it does a real checkpoint.

- `make_llama3_checkpoint`: a Llama 3 (`model_type` llama) whose `tokenizer_config.json` carries
  Meta's Llama 3 Instruct chat template;
- `make_qwen3_checkpoint`: a Qwen3 whose template is a `chat_template.jinja` beside it (what
  current Transformers writes), Qwen3's own logic included (earlier turns lose their reasoning,
  the last gets an empty `<think>` block), so a prefix of a conversation renders differently from
  the whole.
"""

import json
from pathlib import Path

import numpy as np

LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}")

QWEN3_TEMPLATE = """\
{%- if messages[0].role == 'system' %}
    {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- set content = message.content if message.content is string else '' %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if '</think>' in content %}
            {%- set reasoning_content = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}
            {%- set content = content.split('</think>')[-1].lstrip('\\n') %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\\n' + content }}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}
{%- endif %}
"""

HIDDEN, LAYERS, HEADS, KV_HEADS, HEAD_DIM, INTERMEDIATE = 64, 2, 4, 2, 16, 128


def _tokenizer_files(directory, special, config):
    from hub_presets import vocabulary

    words, merges = vocabulary()
    words = dict(words)
    added = []
    for token in special:
        if token not in words:
            words[token] = len(words)
        added.append({"id": words[token], "content": token, "single_word": False,
                      "lstrip": False, "rstrip": False, "normalized": False, "special": True})
    # Merges as pairs, the format current `tokenizers` writes (and KerasHub's Qwen3 reads).
    tokenizer = {"version": "1.0", "added_tokens": added,
                 "model": {"type": "BPE", "vocab": words,
                           "merges": [merge.split(" ") for merge in merges]}}
    (directory / "tokenizer.json").write_text(json.dumps(tokenizer))
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return words


def _weights(directory, vocabulary_size, qk_norm, tie):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)

    def normal(*shape):
        return (0.05 * rng.standard_normal(shape)).astype(np.float32)

    tensors = {"model.embed_tokens.weight": normal(vocabulary_size, HIDDEN),
               "model.norm.weight": np.ones(HIDDEN, np.float32)}
    if not tie:
        tensors["lm_head.weight"] = normal(vocabulary_size, HIDDEN)
    for i in range(LAYERS):
        prefix = f"model.layers.{i}."
        tensors.update({
            prefix + "input_layernorm.weight": np.ones(HIDDEN, np.float32),
            prefix + "post_attention_layernorm.weight": np.ones(HIDDEN, np.float32),
            prefix + "self_attn.q_proj.weight": normal(HEADS * HEAD_DIM, HIDDEN),
            prefix + "self_attn.k_proj.weight": normal(KV_HEADS * HEAD_DIM, HIDDEN),
            prefix + "self_attn.v_proj.weight": normal(KV_HEADS * HEAD_DIM, HIDDEN),
            prefix + "self_attn.o_proj.weight": normal(HIDDEN, HEADS * HEAD_DIM),
            prefix + "mlp.gate_proj.weight": normal(INTERMEDIATE, HIDDEN),
            prefix + "mlp.up_proj.weight": normal(INTERMEDIATE, HIDDEN),
            prefix + "mlp.down_proj.weight": normal(HIDDEN, INTERMEDIATE),
        })
        if qk_norm:
            tensors[prefix + "self_attn.q_norm.weight"] = np.ones(HEAD_DIM, np.float32)
            tensors[prefix + "self_attn.k_norm.weight"] = np.ones(HEAD_DIM, np.float32)
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})


def make_llama3_checkpoint(directory):
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    special = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
               "<|end_header_id|>", "<|eot_id|>"]
    words = _tokenizer_files(directory, special, {
        "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
        "chat_template": LLAMA3_TEMPLATE, "tokenizer_class": "PreTrainedTokenizerFast"})
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
              "vocab_size": len(words), "hidden_size": HIDDEN, "intermediate_size": INTERMEDIATE,
              "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
              "num_key_value_heads": KV_HEADS, "rope_theta": 500000.0, "rms_norm_eps": 1e-5,
              "max_position_embeddings": 128, "tie_word_embeddings": False,
              "bos_token_id": words["<|begin_of_text|>"], "eos_token_id": words["<|eot_id|>"],
              "torch_dtype": "float32"}
    (directory / "config.json").write_text(json.dumps(config))
    _weights(directory, len(words), qk_norm=False, tie=False)
    return directory


def make_qwen3_checkpoint(directory):
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    words = _tokenizer_files(directory, special, {
        "bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
        "tokenizer_class": "Qwen2Tokenizer"})
    (directory / "chat_template.jinja").write_text(QWEN3_TEMPLATE)
    config = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
              "vocab_size": len(words), "hidden_size": HIDDEN, "head_dim": HEAD_DIM,
              "intermediate_size": INTERMEDIATE, "num_hidden_layers": LAYERS,
              "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
              "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "use_sliding_window": False,
              "sliding_window": None, "max_position_embeddings": 128,
              "tie_word_embeddings": True, "eos_token_id": words["<|im_end|>"],
              "torch_dtype": "float32"}
    (directory / "config.json").write_text(json.dumps(config))
    _weights(directory, len(words), qk_norm=True, tie=True)
    return directory
