-- as.autograd.detect_anomaly: a NaN/Inf made in backward names the op and
-- the module path its forward ran in; off, nothing is checked or kept.
local as = require "attnswap"
local nn = as.nn
local U = require "spec_util"

-- a Lua layer whose backward makes Inf where its input is 0 (d sqrt(x)/dx = 1/(2 sqrt x))
local Root = nn.class("AnomalyRoot")
function Root:forward(x) return x:relu():sqrt() end

local Net = nn.class("AnomalyNet")
function Net:init()
  self.blocks = nn.ModuleList { nn.Linear(3, 3), nn.Sequential(nn.Linear(3, 3), Root()) }
end
function Net:forward(x)
  for _, b in ipairs(self.blocks:children()) do x = b(x) end
  return x
end

describe("detect_anomaly", function()
  before_each(function() as.manual_seed(2) end)
  after_each(function() as.autograd.detect_anomaly(false) end)

  it("names the op and the module path of its forward (Lua and C modules nested, torch's 0-based child names)", function()
    local net = Net()
    net:requires_grad_(true)
    local x = as.full({ 2, 3 }, -1.0) -- relu then gives exact zeros somewhere (or everywhere): Inf in sqrt's gradient
    as.autograd.detect_anomaly(true)
    local blk = net.blocks:children()[2]
    -- force zeros before the sqrt: the second Linear's output is relu'd; make it all <= 0
    as.no_grad(function()
      blk[1].weight:fill_(0)
      blk[1].bias:fill_(-1)
    end)
    local y = net(x):sum()
    local err = U.errmsg(y.backward, y)
    assert.truthy(err:find("backward: sqrt produced Inf in its gradient for input 1 (forward in AnomalyNet.blocks.1.1)",
      1, true), err)
  end)

  it("C layers give their path too; a NaN says NaN", function()
    local seq = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    seq:requires_grad_(true)
    as.no_grad(function() seq[1].weight:fill_(0 / 0) end)
    local err
    do
      local _ <close> = as.autograd.detect_anomaly()
      local y = seq(as.ones(1, 2):requires_grad_()):sum() -- the input's gradient g W is NaN
      err = U.errmsg(y.backward, y)
    end
    assert.is_false(as.autograd.is_anomaly_enabled())
    assert.truthy(err:find("produced NaN in its gradient", 1, true), err)
    assert.truthy(err:find("(forward in Sequential.0)", 1, true), err)
  end)

  it("outside any module, and for graphs recorded while it was off", function()
    local x = as.zeros(3):requires_grad_()
    local prev = as.autograd.detect_anomaly(true)
    assert.is_false(prev)
    local y = x:sqrt():sum()
    local err = U.errmsg(y.backward, y)
    assert.truthy(err:find("backward: sqrt produced Inf in its gradient for input 1 (forward in no module)", 1, true), err)
    as.autograd.detect_anomaly(false)
    local z = x:sqrt():sum()
    as.autograd.detect_anomaly(true)
    err = U.errmsg(z.backward, z)
    assert.truthy(err:find("recorded before anomaly detection was on", 1, true), err)
  end)

  it("off: the NaN/Inf gradient passes silently, as torch", function()
    local x = as.zeros(3):requires_grad_()
    x:sqrt():sum():backward()
    assert.are.equal(math.huge, x.grad:max():item())
    -- and finite gradients pass the check
    as.autograd.detect_anomaly(true)
    local w = as.rand(4) + 1
    local v = as.rand(4):requires_grad_()
    ;(v * w):log():sum():backward()
    assert.is_true(U.maxdiff(v.grad, 1 / v:detach()) < 1e-5)
  end)
end)
