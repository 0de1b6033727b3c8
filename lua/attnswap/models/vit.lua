-- ViT: timm's VisionTransformer (Dosovitskiy et al. 2021) — patch embedding,
-- class token, learned position embedding, pre-norm blocks with a fused qkv,
-- final norm, linear head on the class token.  The blocks are built-in
-- TransformerBlocks, so a forward runs in C; each block's attention core
-- (blocks.N.attn.core) is what swap_attention replaces.
local as = require "attnswap"
local common = require "attnswap.models.common"
local nn = as.nn

local DEFAULTS = {
  img_size = 224, patch_size = 16, in_chans = 3, num_classes = 1000, embed_dim = 768, depth = 12,
  num_heads = 12, mlp_ratio = 4.0, qkv_bias = true, norm_eps = 1e-6, attention = "scaled_dot_product",
  attention_opts = false,
}

-- Conv2d with kernel = stride = patch: patches become rows, the conv a matmul.
-- weight (E, C, p, p) and bias (E,) keep timm's names and shapes.
local PatchEmbed = nn.class("PatchEmbed")
local Conv = nn.class("Conv2d")

function Conv:init(c, e, p)
  local bound = 1 / math.sqrt(c * p * p)
  self.weight = nn.Parameter(as.rand(e, c, p, p) * (2 * bound) - bound)
  self.bias = nn.Parameter(as.rand(e) * (2 * bound) - bound)
  self.patch = p
end

-- x (B, C, H, W) -> (B, N, E)
function Conv:forward(x)
  local B, C, H, W = x:size(1), x:size(2), x:size(3), x:size(4)
  local p = self.patch
  if H % p ~= 0 or W % p ~= 0 then
    error(string.format("PatchEmbed: image size %dx%d is not a multiple of the patch size %d", H, W, p), 2)
  end
  local patches = x:reshape(B, C, H // p, p, W // p, p):permute(1, 3, 5, 2, 4, 6):reshape(B, (H // p) * (W // p), C * p * p)
  return as.linear(patches, self.weight:reshape(self.weight:size(1), -1), self.bias)
end

function Conv:extra_repr()
  return string.format("kernel_size=(%d, %d), stride=(%d, %d)", self.patch, self.patch, self.patch, self.patch)
end

function PatchEmbed:init(c)
  self.proj = Conv(c.in_chans, c.embed_dim, c.patch_size)
  self.img_size = c.img_size
  self.num_patches = (c.img_size // c.patch_size) ^ 2 // 1
end

function PatchEmbed:forward(x) return self.proj(x) end

local VisionTransformer = nn.class("VisionTransformer")

function VisionTransformer:init(c)
  self.config = c
  self.patch_embed = PatchEmbed(c)
  local n = math.tointeger(self.patch_embed.num_patches)
  self.cls_token = nn.Parameter(as.randn(1, 1, c.embed_dim) * 1e-6)
  self.pos_embed = nn.Parameter(as.randn(1, n + 1, c.embed_dim) * 0.02)
  local blocks = {}
  for i = 1, c.depth do
    blocks[i] = nn.TransformerBlock {
      dim = c.embed_dim, num_heads = c.num_heads, mlp_ratio = c.mlp_ratio, qkv_bias = c.qkv_bias,
      fused_qkv = true, norm_eps = c.norm_eps, core = c.attention, core_opts = c.attention_opts or nil,
    }
  end
  self.blocks = nn.ModuleList(blocks)
  self.norm = nn.LayerNorm(c.embed_dim, c.norm_eps)
  self.head = nn.Linear(c.embed_dim, c.num_classes)
end

--- forward(pixel_values (B, C, H, W)) -> logits (B, num_classes)
function VisionTransformer:forward(x)
  if not as.is_tensor(x) or x:dim() ~= 4 then
    error("VisionTransformer: expected pixel values of shape (B, C, H, W), got " ..
      (as.is_tensor(x) and tostring(x:shape()) or type(x)), 2)
  end
  local h = self.patch_embed(x)
  local B = h:size(1)
  h = as.cat({ self.cls_token:expand(B, 1, h:size(3)), h }, 2) + self.pos_embed
  for _, blk in ipairs(self.blocks:children()) do h = blk(h) end
  h = self.norm(h)
  return self.head(h:select(2, 1))
end

-- timm names the attention's output projection attn.proj; ours is attn.out_proj.
VisionTransformer.checkpoint_renames = { { "%.attn%.proj%.", ".attn.out_proj." } }

local vit = {}

--- as.models.vit{img_size = 224, patch_size = 16, embed_dim = 768, depth = 12, ...}
function vit.new(config)
  return VisionTransformer(common.config("vit", config, DEFAULTS))
end

--- Loads timm weights (a state_dict saved as safetensors by timm's own names).
function vit.load(model, path)
  local sd = common.rename(as.load(path), VisionTransformer.checkpoint_renames)
  model:load_state_dict(sd)
  return model
end

--- vit.from_pretrained(path [, config]): a file, a folder or a hub name (the
--- local Hugging Face cache); config from config.json (timm's keys, or
--- "architecture" + "model_args") merged with the given one.
function vit.from_pretrained(path, config)
  local weights, c = common.pretrained("vit", path, config, DEFAULTS, "model_args")
  return vit.load(vit.new(c), weights):eval()
end

vit.Class = VisionTransformer
return setmetatable(vit, { __call = function(_, config) return vit.new(config) end })
