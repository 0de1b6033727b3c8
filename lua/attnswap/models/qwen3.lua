-- as.models.qwen3: the Llama family's qwen3 (models/llama.lua), with its own from_pretrained.
return require("attnswap.models.llama").family("qwen3")
