-- The seed example: a model whose attention is a placeholder, swapped for a
-- real implementation with one call.
--   attnswap-run examples/dummy.lua
local as = require "attnswap"
local nn = as.nn

local DummyAttention = nn.class("DummyAttention")
function DummyAttention:forward(q, k, v, mask) return v end

local DummyModel = nn.class("DummyModel")
function DummyModel:init() self.attn = DummyAttention() end
function DummyModel:forward(q, k, v) return self.attn(q, k, v) end

local model = DummyModel()
print("Before swap: " .. model.attn:type())

model = as.swap_attention(model, DummyAttention, "flash_attention", { dropout = 0.1 })
print("After swap: " .. model.attn:type())

local q = as.randn(1, 1, 5, 10)
local k, v = q, q
local out = model(q, k, v)
print("Output shape: " .. tostring(out:shape()))
