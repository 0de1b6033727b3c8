-- LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language
-- Models"): a frozen projection plus a trainable low-rank update,
--   y = base(x) + (alpha / r) * x A B,   A (in, r) ~ U(-1/sqrt(in), 1/sqrt(in)), B (r, out) = 0,
-- so a fresh adapter changes nothing.  LoRA.wrap puts adapters around
-- modules of a tree and LoRA.merge folds them back into their base's weight
-- (the tree then holds the plain projections again, with updated weights).
-- The base is an nn.Linear (weight (out, in)) or a GPT-2 Conv1D (weight
-- (in, out), y = x W + b).
local core = require "attnswap.core"

return function(nn)
  local LoRA = nn.class("LoRA")

  -- (in, out) features of a projection, and whether its weight is stored (out, in)
  local function features(base)
    local t = core.type_name(base)
    local w = base.weight
    if t == "Linear" then return w:size(2), w:size(1), true end
    if t == "Conv1D" then return w:size(1), w:size(2), false end
    error(string.format("LoRA: the base must be a Linear or a Conv1D, got %s", t), 4)
  end

  function LoRA:init(base, r, alpha)
    if not core.is_module(base) then
      error("bad argument #1 to 'LoRA' (module expected, got " .. type(base) .. ")", 3)
    end
    r, alpha = r or 8, alpha or 16
    if math.type(r) ~= "integer" or r < 1 then error("LoRA: r must be a positive integer, got " .. tostring(r), 3) end
    if type(alpha) ~= "number" then error("LoRA: alpha must be a number, got " .. type(alpha), 3) end
    local fin, fout = features(base)
    self.base = base
    local bound = 1 / math.sqrt(fin)
    local w = base.weight
    self.lora_A = nn.Parameter((core.rand(fin, r) * (2 * bound) - bound):to(w:dtype()):to(w:device()))
    self.lora_B = nn.Parameter(core.zeros({ r, fout }, w:dtype()):to(w:device()))
    self.r, self.alpha = r, alpha
  end

  function LoRA:forward(x)
    return self.base(x) + x:matmul(self.lora_A):matmul(self.lora_B) * (self.alpha / self.r)
  end

  function LoRA:extra_repr() return string.format("r=%d, alpha=%g", self.r, self.alpha) end

  --- The base's weight with the update folded in (a new tensor, no history).
  function LoRA:merged_weight()
    local _, _, out_in = features(self.base)
    local d = self.lora_A:detach():matmul(self.lora_B:detach()) * (self.alpha / self.r) -- (in, out)
    if out_in then d = d:t() end
    return self.base.weight:detach() + d:to(self.base.weight:dtype())
  end

  local function parent_and_name(root, path) return require("attnswap.swap").parent_of(root, path) end

  --- LoRA.wrap(model, paths, r, alpha) -> list of {path, lora}: each module at
  --- a path (as named_modules names it) replaced by a LoRA around it.
  function LoRA.wrap(model, paths, r, alpha)
    local out = {}
    for _, path in ipairs(paths) do
      local parent, name = parent_and_name(model, path)
      local base = parent[name]
      local l = LoRA(base, r, alpha)
      core.set_training(l, core.is_training(base), false)
      core.add_module(parent, name, l)
      out[#out + 1] = { path = path, lora = l }
    end
    return out
  end

  --- LoRA.merge(model) -> count: every LoRA in the tree replaced by its base,
  --- whose weight gains the adapter's update.
  function LoRA.merge(model)
    local found = {}
    for path, m in model:named_modules() do
      if core.type_name(m) == "LoRA" and path ~= "" then found[#found + 1] = { path, m } end
    end
    for i = #found, 1, -1 do -- innermost first
      local path, l = found[i][1], found[i][2]
      local w = l:merged_weight()
      local prev = core.set_grad_enabled(false)
      l.base.weight:copy_(w)
      core.set_grad_enabled(prev)
      local parent, name = parent_and_name(model, path)
      core.add_module(parent, name, l.base)
    end
    return #found
  end

  return LoRA
end
