-- as.models: the architectures people have checkpoints for.
return {
  vit = require "attnswap.models.vit",
  gpt2 = require "attnswap.models.gpt2",
  bert = require "attnswap.models.bert",
  llama = require "attnswap.models.llama",
  mistral = require "attnswap.models.mistral",
  qwen2 = require "attnswap.models.qwen2",
  qwen3 = require "attnswap.models.qwen3",
  from_pretrained = require "attnswap.models.from_pretrained",
}
