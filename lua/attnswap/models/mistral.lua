-- as.models.mistral: the Llama family's mistral (models/llama.lua), with its own from_pretrained.
return require("attnswap.models.llama").family("mistral")
