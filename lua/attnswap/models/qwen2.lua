-- as.models.qwen2: the Llama family's qwen2 (models/llama.lua), with its own from_pretrained.
return require("attnswap.models.llama").family("qwen2")
