-- help() and help(x) for attnswap-run's REPL (cli/main.c makes `help` a global
-- there; from lua5.4: require("attnswap.help").help(x)).  Short texts only:
-- docs/api.md is the reference, this is what to type next.
local core = require "attnswap.core"
local nn = require "attnswap.nn"
local registry = require "attnswap.registry"

local H = {}

local OVERVIEW = [[
attnswap: swap the attention inside a transformer.  In scope: as, nn, help.
  tensors     as.tensor{{1,2},{3,4}}  as.randn(2, 3)  as.zeros(2, 3)  as.arange(5)
              t:shape()  t:softmax(-1)  t:matmul(u)  t + u  (help(t) lists the methods)
  modules     nn.Linear(8, 8)  nn.MultiheadAttention{dim=8, num_heads=2}
              nn.TransformerBlock{dim=8, num_heads=2}  nn.Sequential(a, b)  nn.class("Name")
              m(x) runs it; m.child, m:named_modules(), m:parameters()  (help(m))
  models      as.models.vit{...}  as.models.gpt2{...}  as.models.from_pretrained(dir or hub name)
  tokenizers  tok = as.tokenizer.from_pretrained(dir)  tok:encode(text)  tok:decode(ids)
  registry    as.attention.list()  as.attention.names()  as.attention.info(name)
              as.register_attention(name, Class, info)          (help(as.attention))
  swapping    model, report = as.swap_attention(model, target, name [, opts])
              local s <close> = as.swapped(model, target, name [, opts])
              as.compare(model, inputs, {"flash_attention", "local_attention"})
  gpu         as.cuda.is_available()  model:to("cuda")  as.cuda.synchronize()
              g = as.cuda.graph(function(x) return model(x) end, x); y = g(x2)   (help(as.cuda.graph))
  misc        as.manual_seed(n)  as.set_num_threads(n)  as.clock() (wall-clock seconds)
              as.save(path, t | {name = t, ...})  as.load(path)
help(x) describes x: a module, a tensor, a class, a function of as/nn, or a name
("swap_attention").  Tab completes names, fields, methods and children.
Ctrl-C stops a running statement, Ctrl-D leaves.]]

-- One line per function that is not obvious from its name.
local DOCS = {
  tensor = "as.tensor(values [, dtype]) -> Tensor from nested tables (or a copy of a tensor)",
  randn = "as.randn(d1, d2, ... | {dims} [, dtype]) -> N(0,1) samples from the seeded generator",
  rand = "as.rand(d1, d2, ... | {dims} [, dtype]) -> U[0,1) samples",
  zeros = "as.zeros(d1, d2, ... | {dims} [, dtype])",
  ones = "as.ones(d1, d2, ... | {dims} [, dtype])",
  arange = "as.arange(n) | as.arange(a, b [, step]) -> [a, b)",
  gradcheck = "as.gradcheck(fn, inputs [, {eps, atol, rtol, raise}]) -> true; a mismatch names input, output,\n" ..
    "  element and both values (float64 inputs: x:double())",
  manual_seed = "as.manual_seed(n): seed the generator (same numbers on every machine)",
  set_num_threads = "as.set_num_threads(n): CPU threads for the kernels",
  save_checkpoint = "as.save_checkpoint(path, {model = m, optimizer = opt, scheduler = s, step = n, ...}): " ..
    "one safetensors file, written atomically (docs/training.md)",
  load_checkpoint = "as.load_checkpoint(path, {model = m, optimizer = opt, scheduler = s}) -> {step = n, ...}: " ..
    "checks everything first, then restores them and the generator",
  get_rng_state = "as.get_rng_state() -> seed, offset of the generator (as.set_rng_state(seed, offset) resumes it)",
  swap_attention = "as.swap_attention(model, target, name [, opts [, swap_opts]]) -> model, report\n" ..
    "  target: a class, a class or registry name, or a function(module, path);\n" ..
    "  name: a registered attention (as.attention.names()); opts: its options;\n" ..
    "  swap_opts: {where = pattern|fn, layers = {1, 3}, allow_empty = true, quiet = true}",
  swapped = "local s <close> = as.swapped(model, target, name [, opts]): a swap undone when s\n" ..
    "  goes out of scope (s.model, s.report, s:restore())",
  compare = "as.compare(model, inputs, names [, {opts={name={...}}, min_repeats=5, min_time=0.25, quiet}]) -> rows\n" ..
    "  runs the model as it is and with each attention swapped in; prints time (median, spread),\n" ..
    "  memory, diffs; window options sized to the model's sequence; print(rows) shows the table",
  register_attention = "as.register_attention(name, Class, info): add an implementation to the registry",
  graph = "as.cuda.graph(fn, ...) -> g: fn(...)'s kernels captured once into a CUDA graph (fn runs twice: a\n" ..
    "  warm-up, then the capture, under no_grad); g(...) copies the tensor arguments into the graph's\n" ..
    "  own inputs and replays it with one launch, returning the same output tensors each call\n" ..
    "  (clone to keep one); g:free() gives its memory back (docs/api.md, CUDA)",
  list = "as.attention.list(): print the registry as a table",
  names = "as.attention.names() -> the registered names",
  info = "as.attention.info(name) -> {exact=, complexity=, causal=, mask=, gqa=, devices=, paper=}",
  new = "as.attention.new(name [, opts]) -> a new attention core module",
  class = "nn.class(name [, parent]) -> Class; define Class:init(...) and Class:forward(...)",
  save = "as.save(path, tensor | {name = tensor, ...} [, {key = \"value\"}]): write a safetensors file;\n" ..
    "  one tensor is saved under the name \"tensor\" (as.load(path).tensor reads it back)",
  load = "as.load(path) -> {name = tensor, ...}, metadata from a safetensors file (memory-mapped)",
  clock = "as.clock() -> seconds of a monotonic wall clock: t0 = as.clock(); ...; as.clock() - t0\n" ..
    "  (os.clock() is CPU time summed over all threads: with n threads busy it runs n times fast)",
}

-- Constructors with no signature to show (their arguments are modules).
local USAGE = {
  Sequential = "nn.Sequential(m1, m2, ...): calls them in order; children \"0\", \"1\", ... (s[1] is \"0\")",
  ModuleList = "nn.ModuleList{m1, m2, ...}: holds them, no forward; l:append(m); l[1] is the child \"0\"",
  Mlp = "built by TransformerBlock (fc1, act, fc2), not on its own",
}

local function sorted_keys(set)
  local out = {}
  for k in pairs(set) do out[#out + 1] = k end
  table.sort(out)
  return out
end

-- Wraps words into lines of at most 78 columns, each starting with indent.
local function wrap(words, indent)
  local lines, line = {}, indent
  for _, w in ipairs(words) do
    if #line + #w + 1 > 78 and line ~= indent then
      lines[#lines + 1] = line
      line = indent
    end
    line = line .. (line == indent and "" or " ") .. w
  end
  if line ~= indent then lines[#lines + 1] = line end
  return table.concat(lines, "\n")
end

local function methods_of(t, out, depth)
  out = out or {}
  if type(t) ~= "table" or (depth or 1) > 8 then return out end
  for k, v in next, t do
    if type(k) == "string" and type(v) == "function" and k:sub(1, 2) ~= "__" then out[k] = true end
  end
  local mt = getmetatable(t)
  if type(mt) == "table" then methods_of(rawget(mt, "__index"), out, (depth or 1) + 1) end
  return out
end

local function help_tensor(t)
  print(string.format("Tensor %s %s on %s", tostring(t:shape()), t:dtype(), t:device()))
  print("methods (t:name(...)); operators + - * / and t[i] work too:")
  print(wrap(sorted_keys(methods_of(getmetatable(t).__methods)), "  "))
end

local function help_module(m)
  local n = m:num_parameters()
  print(string.format("%s: a module, %d parameter%s; the tree:", core.type_name(m), n, n == 1 and "" or "s"))
  print(tostring(m))
  local kids = {}
  for name in m:named_children() do
    kids[#kids + 1] = name:match("^[%a_][%w_]*$") and "m." .. name or "m[" .. (#kids + 1) .. "]"
  end
  if #kids > 0 then print("children: " .. table.concat(kids, " ")) end
  local methods = methods_of(nn.class_of(m))
  methods_of(nn.Module, methods)
  print("methods (m:name(...)); m(...) runs forward:")
  print(wrap(sorted_keys(methods), "  "))
end

-- The words of "nn.Linear(in_features, out_features [, bias=true])" from the
-- class's signature (nn/init.lua), or of "nn.MultiheadAttention{dim, ...}".
local function signature_words(name, sig)
  if sig.options then
    local words = {}
    for i, o in ipairs(sig.options) do words[i] = o .. (i < #sig.options and "," or "") end
    words[1] = name .. "{" .. (words[1] or "")
    words[#words] = (words[#words] or "") .. "}"
    return words
  end
  local text, open = "", 0
  for _, a in ipairs(sig.args) do
    if a:find("=", 1, true) then
      text = text .. (text == "" and "[" or " [, ") .. a
      open = open + 1
    else
      text = text .. (text == "" and "" or ", ") .. a
    end
  end
  return { name .. "(" .. text .. string.rep("]", open) .. ")" }
end

-- PyTorch's spellings that are another name for one of ours: "embed_dim -> dim".
local function renames(sig)
  local known, out = {}, {}
  for _, o in ipairs(sig.options or sig.args) do known[o:match("^[%w_]+")] = true end
  for k, v in pairs(sig.pytorch or {}) do
    if known[v] then out[#out + 1] = k .. " -> " .. v end
  end
  table.sort(out)
  for i = 1, #out - 1 do out[i] = out[i] .. "," end
  return out
end

local function help_class(cls)
  print(tostring(cls) .. (rawget(cls, "__builtin") and " (built in)" or ""))
  local sig = rawget(cls, "__signature")
  if sig then
    local name = "nn." .. cls.__name
    if sig.fn then -- an attention core, made by its registry name
      name = string.format("as.attention.new(%q,", sig.fn)
      local words = signature_words("", sig)
      words[#words] = words[#words] .. ")"
      print(wrap({ name, table.unpack(words) }, "  "))
    else
      print(wrap(signature_words(name, sig), "  "))
    end
    if sig.args and #sig.args > 0 then
      local first = sig.args[#sig.args]:match("^[%w_]+")
      print(string.format("  arguments may also be named, in a table given last: %s(..., {%s = ...})", name, first))
    end
    print("  an unknown option is an error")
    local r = renames(sig)
    if #r > 0 then print(wrap({ "PyTorch's names (not accepted, pointed to):", table.unpack(r) }, "  ")) end
  elseif USAGE[cls.__name] then
    print("  " .. USAGE[cls.__name])
  end
  print("instances: " .. cls.__name .. "(...); methods:")
  print(wrap(sorted_keys(methods_of(cls)), "  "))
end

-- The models under as.models are tables with a __call; their options are the
-- defaults they pass to models/common.lua's config, which this captures by
-- calling the constructor with the config step replaced by a stop.
local function model_name(x)
  if type(x) ~= "table" or type(rawget(x, "new")) ~= "function" then return nil end
  for k, v in pairs(package.loaded) do
    if v == x then return k:match("^attnswap%.models%.([%w_]+)$") end
  end
end

local function model_defaults(x)
  local common = require "attnswap.models.common"
  local config, seen = common.config, nil
  local stop = {}
  common.config = function(_, _, defaults) seen = defaults; error(stop) end
  pcall(x.new, {})
  common.config = config
  return seen
end

local function show(v)
  if type(v) == "string" then return string.format("%q", v) end
  return tostring(v)
end

local function help_model(name, x)
  local class = rawget(x, "Class")
  print(string.format("as.models.%s: a model constructor%s", name, class and " (" .. class.__name .. ")" or ""))
  print(string.format("  model = as.models.%s{option = value, ...}   (an unknown option is an error)", name))
  local fns = {}
  for k, v in pairs(x) do
    if type(v) == "function" and k ~= "new" then fns[#fns + 1] = "as.models." .. name .. "." .. k .. "(...)" end
  end
  table.sort(fns)
  if #fns > 0 then print(wrap(fns, "  ")) end
  local defaults = model_defaults(x)
  if defaults then
    local opts = {}
    for _, k in ipairs(sorted_keys(defaults)) do opts[#opts + 1] = k .. "=" .. show(defaults[k]) end
    print("options (defaults):")
    print(wrap(opts, "  "))
  end
end

-- The name under which f is found in as, nn or as.attention, and its doc.
local function find_function(f)
  local as = require "attnswap"
  for _, place in ipairs { { as, "as." }, { nn, "nn." }, { as.attention, "as.attention." }, { as.cuda, "as.cuda." } } do
    for k, v in pairs(place[1]) do
      if v == f then return place[2] .. k, DOCS[k] end
    end
  end
end

local function help_name(name)
  local short = name:match("([%w_]+)$")
  if DOCS[short] then return print(DOCS[short]) end
  if registry.attention.exists(name) then
    local i = registry.attention.info(name)
    return print(string.format("attention '%s' (%s): exact %s, cost %s, causal %s, mask %s, devices %s\n" ..
      "  swap it in: as.swap_attention(model, as.attention.is_core, '%s', opts)", name, tostring(i.paper),
      tostring(i.exact), tostring(i.complexity), tostring(i.causal), tostring(i.mask), tostring(i.devices), name))
  end
  local as = require "attnswap"
  local v = as[name] or nn[name] or as.attention[name]
  if v ~= nil then return H.help(v) end
  print("no help for '" .. name .. "'; help() lists what there is")
end

--- help([x]): prints what x is and what can be done with it.
function H.help(...)
  if select("#", ...) == 0 then return print(OVERVIEW) end
  local x = ...
  local as = require "attnswap"
  if core.is_tensor(x) then return help_tensor(x) end
  if core.is_module(x) then return help_module(x) end
  if x == as.attention or x == registry then
    print("the attention registry: as.attention.names(), .info(name), .new(name, opts), .list()")
    registry.attention.list()
    return
  end
  if x == as then return print(OVERVIEW) end
  if x == as.tokenizer then
    return print("as.tokenizer: Hugging Face tokenizer.json (byte-level BPE, BPE with byte fallback, WordPiece)\n" ..
      "  tok = as.tokenizer.from_pretrained(dir or tokenizer.json or vocab.txt)   (docs/tokenizers.md)\n" ..
      "  tok:encode(text [, {add_special_tokens = true, tensor = false}]) -> ids (0-based, as HF's)\n" ..
      "  tok:decode(ids [, {skip_special_tokens = false}]) -> text\n" ..
      "  tok:token_to_id(s)  tok:id_to_token(id)  tok.vocab_size  tok:batch(texts [, {padding_side, pad_id}])")
  end
  if x == nn then
    local classes = {}
    for k, v in pairs(nn) do
      if type(v) == "table" and rawget(v, "__name") then classes[#classes + 1] = k end
    end
    table.sort(classes)
    print("nn: module classes (help(nn.Linear) for one):")
    return print(wrap(classes, "  "))
  end
  if type(x) == "table" and rawget(x, "__name") and getmetatable(x) and getmetatable(x).__call then
    return help_class(x)
  end
  local model = model_name(x)
  if model then return help_model(model, x) end
  if type(x) == "function" then
    local name, doc = find_function(x)
    return print(doc or (name and name .. "(...)") or "a function (no help for it)")
  end
  if type(x) == "string" then return help_name(x) end
  print(string.format("a %s: %s", type(x), tostring(x)))
end

return H
