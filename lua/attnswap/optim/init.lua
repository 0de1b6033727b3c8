-- as.optim: optimizers and learning-rate schedules with torch.optim's names and
-- update rules (docs/training.md).  The updates are tensor ops run under no_grad.
local adam = require "attnswap.optim.adamw"
local clip = require "attnswap.optim.clip"

return {
  Optimizer = require "attnswap.optim.optimizer",
  SGD = require "attnswap.optim.sgd",
  Adam = adam.Adam,
  AdamW = adam.AdamW,
  lr_scheduler = require "attnswap.optim.lr_scheduler",
  clip_grad_norm_ = clip.clip_grad_norm_,
  clip_grad_value_ = clip.clip_grad_value_,
}
