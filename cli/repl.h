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
 * the running statement, or drops the line being typed.  On a terminal the
 * lines come through libedit (editing, history, Tab completion), else
 * plainly from stdin.  The loop uses the stack of the calling C function
 * from index 1 and leaves it empty. */
void as_repl_loop(lua_State *L);

/* ---- line editing (repl_edit.c), for as_repl_loop ---- */

/* Sets libedit up for a session in L: loads the history file
 * ($ATTNSWAP_HISTORY, else ~/.attnswap_history; none when the variable is
 * set but empty) and hooks Tab to attnswap.complete. */
void as_edit_open(lua_State *L);

/* Shows prompt and reads one line with editing; returns it (free it), or
 * NULL at end of input or after as_edit_interrupt. */
char *as_edit_readline(const char *prompt);

/* Makes a waiting as_edit_readline return NULL; for the SIGINT handler
 * (async-signal-safe). */
void as_edit_interrupt(void);

/* Adds a statement to the history and saves the history file. */
void as_edit_add_history(const char *line);

/* Frees what as_edit_open took. */
void as_edit_close(void);

#endif
