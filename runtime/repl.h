/* How attnswap-run runs Lua code: protected calls that add a traceback and
 * turn Ctrl-C into an "interrupted!" error, and the read-eval-print loop.
 * Modelled on lua.c (Lua 5.4). */
#ifndef AS_REPL_H
#define AS_REPL_H

#include <lua.h>

/* lua_pcall of the function below the narg arguments on top, with a
 * traceback message handler; SIGINT during the call raises "interrupted!"
 * at the next Lua instruction (a second one ends the process). */
int as_repl_docall(lua_State *L, int narg, int nres);

/* If status is not LUA_OK, prints the message on top of the stack to
 * stderr, after "progname: " when progname is not NULL, and pops it.
 * Returns status. */
int as_repl_report(lua_State *L, const char *progname, int status);

/* Reads statements from stdin until end of input, runs each and prints
 * what it returns.  Errors are reported and the loop goes on; Ctrl-C stops
 * the running statement, or drops the line being typed.  The loop uses the
 * stack of the calling C function from index 1 and leaves it empty. */
void as_repl_loop(lua_State *L);

#endif
