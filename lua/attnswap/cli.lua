-- What attnswap-run's options --device ... --distill do (cli/main.c calls
-- these), in Lua since it is all calls into attnswap.  Each function returns
-- nothing when it went well, else a message and the exit status; a Lua error
-- is the model's own (status 1).  Not a public module: its functions follow
-- the command line's contract in docs/cli.md.
local as = require 'attnswap'
local cli = {}
function cli.setup(device, threads, seed)
  if device == 'cuda' and not (as.cuda and as.cuda.is_available()) then
    return '--device cuda: no CUDA device is available', 1
  end
  if device then as.device = device end
  if threads then
    local ok, err = pcall(as.set_num_threads, threads)
    if not ok then return '--threads: ' .. tostring(err), 2 end
  end
  if seed then as.manual_seed(seed) end
end
local function unknown(opt, name)
  return string.format("--%s: no attention named '%s' (registered: %s)", opt, name,
    table.concat(as.attention.names(), ', ')), 2
end
-- 'flash_attention:causal=true,window_size=8' -> name, {causal = true, window_size = 8}
local function parse_swap(spec)
  local name, rest = spec:match('^([^:]*):?(.*)$')
  local opts = {}
  for item in rest:gmatch('[^,]+') do
    local k, v = item:match('^%s*([%a_][%w_]*)%s*=%s*(.-)%s*$')
    if not k then return nil, string.format("--swap: '%s' is not key=value", item), 2 end
    if v == 'true' then v = true elseif v == 'false' then v = false else v = tonumber(v) or v end
    opts[k] = v
  end
  return name, opts
end
-- The first output when the model returns several (a list), as compare does.
local function show_output(out)
  if type(out) == 'table' and not as.is_tensor(out) then out = out[1] end
  if not as.is_tensor(out) then return print('output: ' .. tostring(out)) end
  local flat = out:cpu():float():flatten()
  local first = {}
  for i = 1, math.min(flat:numel(), 6) do first[i] = string.format('%.5g', flat[i]) end
  print(string.format('output: %s %s, mean %.5g, first values %s%s', tostring(out:shape()),
    out:dtype(), flat:numel() > 0 and flat:mean():item() or 0, table.concat(first, ' '),
    flat:numel() > #first and ' ...' or ''))
end
local function has_core(model)
  if as.attention.is_core(model) then return true end
  for _, m in model:named_modules() do
    if as.attention.is_core(m) then return true end
  end
  return false
end
local function no_core(opt)
  return string.format('--%s: the model holds no attention core (no module the registry knows '
    .. 'as attention) to %s', opt, opt), 2
end
-- "key=value,..." (or "default" for none) -> the options of as.distill
local function parse_distill(spec)
  if spec == 'default' then return {} end
  local _, opts, code = parse_swap(':' .. spec)
  if code then return nil, (opts:gsub('^%-%-swap', '--distill')), code end
  return opts
end

-- The teacher of --distill: the model before the swap, kept as a clone.
-- data: what the script returned third (batches, or a function(path)).
local function distill_after_swap(student, teacher, data, data_path, dopts, args)
  if type(data) == 'function' then data = data(data_path)
  elseif data_path then
    return '--data: the script must return, third, a function(path) that makes the batches from the file', 2
  end
  if data == nil then
    return '--distill: the script must return, after the model and its inputs, the batches: an array, '
      .. 'an iterator, or a function(path) called with --data', 2
  end
  local ok, err = pcall(as.distill, student, teacher, data, dopts)
  if not ok then
    err = tostring(err):gsub('^[^\n]-%.lua:%d+: ', '')
    if err:find('^as%.distill: ') then return '--distill: ' .. err:gsub('^as%.distill: ', ''), 2 end
    error(err, 0)
  end
  if dopts.save then print('wrote ' .. dopts.save) end
  print('after distillation:')
  show_output(student(table.unpack(args, 1, args.n)))
end

function cli.model(opt, spec, model, inputs, data, distill, data_path, save)
  if not as.is_module(model) then
    return string.format('--%s: the script must return a model and its inputs (it returned %s)',
      opt, model == nil and 'nothing' or 'a ' .. type(model) .. ' first'), 2
  end
  if as.is_tensor(inputs) then inputs = { inputs } end
  if type(inputs) ~= 'table' then
    return string.format('--%s: the script must return the inputs after the model: a tensor or '
      .. 'a list of arguments (it returned %s)', opt, inputs == nil and 'none' or 'a ' .. type(inputs)), 2
  end
  if opt == 'compare' then
    local names = {}
    for n in spec:gmatch('[^,]+') do
      if n == 'all' then -- every registered implementation but the one the model has
        for _, r in ipairs(as.attention.names()) do
          if r ~= 'scaled_dot_product' then names[#names + 1] = r end
        end
      else names[#names + 1] = n end
    end
    for _, n in ipairs(names) do
      if not as.attention.exists(n) then return unknown(opt, n) end
    end
    if not has_core(model) then return no_core(opt) end
    as.compare(model, inputs, names)
    return
  end
  local name, opts, code = parse_swap(spec)
  if not name then return opts, code end
  if not as.attention.exists(name) then return unknown(opt, name) end
  if not has_core(model) then return no_core(opt) end
  local dopts, teacher
  if distill then
    local err
    dopts, err, code = parse_distill(distill)
    if not dopts then return err, code end
    dopts.save = save
    teacher = model:clone()
  end
  -- what the swap refuses is the command line's fault (a bad option key or
  -- value): one line and the usage status, no traceback
  local ok, swapped, report = pcall(as.swap_attention, model, as.attention.is_core, name, opts)
  if not ok then return '--swap: ' .. tostring(swapped):gsub('^[^\n]-:%d+: ', ''), 2 end
  print(report)
  local args = table.pack(table.unpack(inputs, 1, inputs.n or #inputs))
  show_output(swapped(table.unpack(args, 1, args.n)))
  if distill then return distill_after_swap(swapped, teacher, data, data_path, dopts, args) end
end
-- -i after a script: what it returned becomes globals, as `lua -i` keeps a
-- script's globals; the documented `return model, inputs` by those names.
local function describe(v)
  if as.is_module(v) then return v:type() end
  if as.is_tensor(v) then return 'Tensor ' .. tostring(v:shape()) end
  if type(v) == 'table' then return 'a list of ' .. #v end
  return type(v)
end
function cli.bind(...)
  local n = select('#', ...)
  if n == 0 then return end
  local names = {}
  _G.results = table.pack(...)
  local first, second = ...
  if as.is_module(first) then
    _G.model = first
    names[#names + 1] = 'model (' .. describe(first) .. ')'
    if n >= 2 then
      _G.inputs = second
      names[#names + 1] = 'inputs (' .. describe(second) .. ')'
    end
  end
  names[#names + 1] = 'results (all ' .. n .. ' returned value' .. (n > 1 and 's' or '') .. ')'
  print('-- the script returned: ' .. table.concat(names, ', '))
end
return cli
