rockspec_format = "3.0"
package = "attnswap"
version = "scm-0"
source = {
   -- placeholder until the project has a public home
   url = "git+https://github.com/attnswap/attnswap.git",
}
description = {
   summary = "Swap the attention inside a transformer and see what it does",
   detailed = [[
attnswap is a C runtime (tensors, modules, CPU kernels) scripted from Lua 5.4:
define or load a transformer, replace every attention block with another
implementation in one call, and compare speed, memory and output.
Installs the Lua module `attnswap` (C half: attnswap.core) and the
`attnswap-run` interpreter.]],
   license = "MIT",
}
dependencies = {
   "lua >= 5.4, < 5.5",
}
build = {
   -- luarocks runs: cmake -H. -Bbuild.luarocks <variables>, then
   -- cmake --build build.luarocks and its install target.  LIBDIR and LUADIR
   -- are the rock's lib/ and lua/ dirs, deployed to <tree>/lib/lua/5.4 and
   -- <tree>/share/lua/5.4; bin/attnswap-run goes to <tree>/bin.
   type = "cmake",
   variables = {
      CMAKE_BUILD_TYPE = "Release",
      CMAKE_INSTALL_PREFIX = "$(PREFIX)",
      AS_LUA_CMOD_DIR = "$(LIBDIR)",
      AS_LUA_LMOD_DIR = "$(LUADIR)",
      ATTNSWAP_INSTALL_LIBS = "OFF",
      ATTNSWAP_TESTS = "OFF",
   },
}
