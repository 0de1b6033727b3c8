-- Checkpoints by hub name ("gpt2", "Qwen/Qwen2.5-0.5B", "org/name@rev"), read
-- from the Hugging Face cache that transformers and huggingface-cli fill.
-- Offline only: nothing here opens a connection; a name that is not in the
-- cache is an error that says where we looked and how to get the files.
--
-- Cache layout (huggingface_hub's):
--   <cache>/models--org--name/refs/<revision>     a file holding a commit hash
--   <cache>/models--org--name/snapshots/<commit>/ the files (links into blobs/)
local M = {}

local function is_dir(path)
  local f = io.open(path .. "/.", "rb")
  if f then f:close() return true end
  return false
end

-- A variable set to something (an empty one counts as unset, as in huggingface_hub).
local function env(getenv, name)
  local v = getenv(name)
  if v and v ~= "" then return v end
end

local function expand_home(getenv, path)
  local home = env(getenv, "HOME")
  if home and (path == "~" or path:sub(1, 2) == "~/") then return home .. path:sub(2) end
  return path
end

--- cache_dir([getenv]) -> folder, how it was chosen.  The order is
--- huggingface_hub's: HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE (its older name),
--- HF_HOME/hub, XDG_CACHE_HOME/huggingface/hub, ~/.cache/huggingface/hub.
--- getenv defaults to os.getenv (tests pass a table lookup).  Returns nil and
--- a reason when none of them can be formed.
function M.cache_dir(getenv)
  getenv = getenv or os.getenv
  local v = env(getenv, "HF_HUB_CACHE")
  if v then return expand_home(getenv, v), "HF_HUB_CACHE" end
  v = env(getenv, "HUGGINGFACE_HUB_CACHE")
  if v then return expand_home(getenv, v), "HUGGINGFACE_HUB_CACHE" end
  v = env(getenv, "HF_HOME")
  if v then return expand_home(getenv, v) .. "/hub", "HF_HOME/hub" end
  v = env(getenv, "XDG_CACHE_HOME")
  if v then return expand_home(getenv, v) .. "/huggingface/hub", "XDG_CACHE_HOME/huggingface/hub" end
  v = env(getenv, "HOME")
  if v then return v .. "/.cache/huggingface/hub", "~/.cache/huggingface/hub" end
  return nil, "none of HF_HUB_CACHE, HF_HOME, XDG_CACHE_HOME and HOME is set"
end

-- The hub's rules for one part of a repo id: letters, digits, - _ . ; no "--"
-- or ".."; not starting or ending with - or .; at most 96 characters.
local function repo_part(s)
  return #s > 0 and #s <= 96 and s:match("^[%w_][%w%-%._]*$") ~= nil and not s:find("--", 1, true)
    and not s:find("..", 1, true) and not s:match("[%-%.]$")
end

-- A revision: a branch, tag or commit (refs/pr/1 has slashes); never "..".
local function revision_ok(s)
  return #s > 0 and #s <= 256 and s:match("^[%w_][%w%-%._/]*$") ~= nil and not s:find("..", 1, true)
    and not s:find("//", 1, true) and not s:match("/$")
end

--- parse(s) -> repo_id, revision (nil when s has no "@rev"); nil when s is
--- not a hub name ("name" or "org/name", optionally "@revision").
function M.parse(s)
  if type(s) ~= "string" then return nil end
  local id, rev = s:match("^([^@]+)@(.+)$")
  id = id or s
  if rev and not revision_ok(rev) then return nil end
  local org, name = id:match("^([^/]+)/([^/]+)$")
  if org then
    if not (repo_part(org) and repo_part(name)) then return nil end
  elseif not repo_part(id) then
    return nil
  end
  return id, rev
end

--- repo_folder("org/name") -> "models--org--name"; ("gpt2") -> "models--gpt2"
function M.repo_folder(repo_id) return "models--" .. repo_id:gsub("/", "--") end

--- download_hint(repo_id [, revision]) -> the commands that put a model's
--- safetensors and JSON files in the cache.
function M.download_hint(repo_id, revision)
  local args = repo_id .. (revision and (" --revision " .. revision) or "") .. " --include '*.safetensors' '*.json'"
  return "huggingface-cli download " .. args .. "   (or: hf download " .. args .. ")"
end

local function read_small(path, limit)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read(limit + 1)
  f:close()
  return s or ""
end

--- resolve(repo_id [, opts]) -> snapshot folder, or nil and a message saying
--- which paths were looked at and how to get the files.
--- opts: revision (default "main"; a branch/tag under refs/ or a commit hash
--- under snapshots/), cache_dir (instead of the environment), getenv, path
--- (the name as the user wrote it, for the message; default repo_id).
function M.resolve(repo_id, opts)
  opts = opts or {}
  local revision = opts.revision or "main"
  if not revision_ok(revision) then
    return nil, string.format("revision must be a branch, tag or commit name, got '%s'", tostring(revision))
  end
  local cache, origin = opts.cache_dir, "the cache_dir option"
  if not cache then cache, origin = M.cache_dir(opts.getenv) end
  local hint = "get the files with: " .. M.download_hint(repo_id, opts.revision)
  if not cache then
    return nil, string.format("'%s' is not a local folder, and there is no Hugging Face cache to look in (%s); %s",
      repo_id, origin, hint)
  end
  local repo = cache .. "/" .. M.repo_folder(repo_id)
  if not is_dir(repo) then
    local shown = opts.path or repo_id
    return nil, string.format("'%s' is not a local folder and not in the Hugging Face cache " ..
      "(nothing is downloaded):\n  looked for the folder ./%s\n  looked for the folder %s  (cache from %s)\n%s",
      shown, shown, repo, origin, hint)
  end
  -- a commit hash names its snapshot directly; otherwise refs/<revision> holds one
  local commit
  if revision:match("^%x+$") and #revision >= 7 and is_dir(repo .. "/snapshots/" .. revision) then
    commit = revision
  else
    local ref = repo .. "/refs/" .. revision
    local text = read_small(ref, 128)
    if not text then
      return nil, string.format("'%s' is in the Hugging Face cache (%s) but has no revision '%s': no file %s\n%s",
        repo_id, repo, revision, ref, hint)
    end
    commit = text:match("^%s*(%x+)%s*$")
    if not commit or #commit < 7 or #commit > 64 then
      return nil, string.format("%s should hold a commit hash (hex digits), got %q", ref, text:sub(1, 80))
    end
  end
  local snap = repo .. "/snapshots/" .. commit
  if not is_dir(snap) then
    return nil, string.format("'%s' revision '%s' is commit %s, but the cache has no folder %s " ..
      "(an interrupted download?)\n%s",
      repo_id, revision, commit, snap, hint)
  end
  return snap
end

return M
