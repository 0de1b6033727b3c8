-- as.models: the architectures people have checkpoints for.
return {
  vit = require "attnswap.models.vit",
  gpt2 = require "attnswap.models.gpt2",
  bert = require "attnswap.models.bert",
}
