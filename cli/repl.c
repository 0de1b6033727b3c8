/* attnswap-run's protected calls and its read-eval-print loop, after lua.c. */
#define _POSIX_C_SOURCE 200809L

#include "repl.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>

#define PROMPT "> "
#define PROMPT2 ">> "
#define EOFMARK "<eof>" /* ends the syntax error of an incomplete statement */

/* loadline's results besides a Lua status (which is never negative) */
enum { LINE_EOF = -1, LINE_DROPPED = -2 };

static lua_State *volatile running;          /* where laction sets its hook */
static volatile sig_atomic_t line_interrupted; /* Ctrl-C while reading a line */
static int editing;                            /* lines come through libedit */

static void set_sigint(void (*handler)(int), int flags, struct sigaction *old)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, old);
}

static void lstop(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    luaL_error(L, "interrupted!");
}

/* A signal handler may not touch the Lua state: it only sets a hook that
 * raises the error at the next call, return or instruction.  The handler is
 * installed with SA_RESETHAND, so a second Ctrl-C (say, while a long C kernel
 * runs and no hook can fire) ends the process. */
static void laction(int sig)
{
    (void)sig;
    lua_sethook(running, lstop, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

static void on_line_sigint(int sig)
{
    (void)sig;
    line_interrupted = 1;
    as_edit_interrupt(); /* a no-op unless libedit is set up */
}

static int msghandler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

int as_repl_docall(lua_State *L, int narg, int nres)
{
    int base = lua_gettop(L) - narg;
    struct sigaction old;
    lua_pushcfunction(L, msghandler);
    lua_insert(L, base);
    running = L;
    set_sigint(laction, SA_RESETHAND, &old);
    int status = lua_pcall(L, narg, nres, base);
    sigaction(SIGINT, &old, NULL);
    if (lua_gethook(L) == lstop) /* Ctrl-C came as the call returned */
        lua_sethook(L, NULL, 0, 0);
    lua_remove(L, base);
    return status;
}

int as_repl_report(lua_State *L, const char *progname, int status)
{
    if (status != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        fflush(stdout);
        if (progname) fprintf(stderr, "%s: ", progname);
        fprintf(stderr, "%s\n", msg ? msg : "(error object is not a string)");
        fflush(stderr);
        lua_pop(L, 1);
    }
    return status;
}

/* Reads a line with libedit and pushes it.  With rl_catch_signals off,
 * on_line_sigint has Ctrl-C make readline return NULL, told apart from end
 * of input by line_interrupted. */
static int read_edited(lua_State *L, const char *prompt)
{
    char *line = as_edit_readline(prompt);
    if (line == NULL) return line_interrupted ? LINE_DROPPED : LINE_EOF;
    lua_pushstring(L, line);
    free(line);
    return 1;
}

/* Shows the prompt and pushes the next line of stdin, of any length,
 * without its newline. */
static int read_plain(lua_State *L, const char *prompt)
{
    fputs(prompt, stdout);
    fflush(stdout);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    int result = 1, got = 0;
    for (;;) {
        char *p = luaL_prepbuffer(&b);
        if (fgets(p, LUAL_BUFFERSIZE, stdin) == NULL) {
            int intr = ferror(stdin) && errno == EINTR;
            if (intr) clearerr(stdin);
            if (intr || line_interrupted) result = LINE_DROPPED;
            else if (!got) result = LINE_EOF;
            break;
        }
        size_t n = strlen(p);
        luaL_addsize(&b, n);
        got = 1;
        if (n > 0 && p[n - 1] == '\n') break;
    }
    luaL_pushresult(&b);
    if (line_interrupted) result = LINE_DROPPED;
    if (result != 1) {
        lua_pop(L, 1);
        return result;
    }
    size_t len;
    const char *line = lua_tolstring(L, -1, &len);
    if (len > 0 && line[len - 1] == '\n') {
        lua_pushlstring(L, line, len - 1);
        lua_remove(L, -2);
    }
    return 1;
}

/* Shows the prompt (_PROMPT / _PROMPT2 when set, as lua does) and pushes
 * the next line.  Returns 1, LINE_EOF at end of input or LINE_DROPPED after
 * Ctrl-C (nothing pushed). */
static int pushline(lua_State *L, int firstline)
{
    lua_getglobal(L, firstline ? "_PROMPT" : "_PROMPT2");
    const char *prompt = lua_tostring(L, -1);
    if (prompt == NULL) prompt = firstline ? PROMPT : PROMPT2;
    line_interrupted = 0;
    int r = editing ? read_edited(L, prompt) : read_plain(L, prompt);
    lua_remove(L, r == 1 ? -2 : -1); /* the prompt */
    if (r != 1) return r;
    const char *line = lua_tostring(L, -1);
    if (firstline && line[0] == '=') { /* '=expr' means 'return expr', as in Lua 5.1 */
        lua_pushfstring(L, "return %s", line + 1);
        lua_remove(L, -2);
    }
    return 1;
}

static int incomplete(lua_State *L, int status)
{
    if (status != LUA_ERRSYNTAX) return 0;
    size_t len, mark = sizeof EOFMARK - 1;
    const char *msg = lua_tolstring(L, -1, &len);
    return len >= mark && strcmp(msg + len - mark, EOFMARK) == 0;
}

/* Compiles the line on top as 'return <line>;'.  On success the line is
 * replaced by the chunk; on failure the stack is as it was. */
static int addreturn(lua_State *L)
{
    const char *line = lua_tostring(L, -1);
    const char *retline = lua_pushfstring(L, "return %s;", line);
    int status = luaL_loadbuffer(L, retline, strlen(retline), "=stdin");
    if (status == LUA_OK)
        lua_remove(L, -2);
    else
        lua_pop(L, 2);
    return status;
}

/* Compiles the text at index 1 as a statement, reading continuation lines
 * while it ends too early.  Leaves the chunk or the error above the text;
 * at end of input the error of the incomplete statement stands. */
static int multiline(lua_State *L)
{
    for (;;) {
        size_t len;
        const char *code = lua_tolstring(L, 1, &len);
        int status = luaL_loadbuffer(L, code, len, "=stdin");
        if (!incomplete(L, status)) return status;
        int r = pushline(L, 0);
        if (r == LINE_EOF) return status;
        if (r == LINE_DROPPED) {
            lua_pop(L, 1);
            return LINE_DROPPED;
        }
        lua_remove(L, -2); /* the error */
        lua_pushliteral(L, "\n");
        lua_insert(L, -2);
        lua_concat(L, 3);
    }
}

/* Leaves one compiled chunk or one error message on an empty stack, or
 * nothing (LINE_EOF, LINE_DROPPED). */
static int loadline(lua_State *L)
{
    lua_settop(L, 0);
    int r = pushline(L, 1);
    if (r != 1) return r;
    int status = addreturn(L);
    if (status != LUA_OK) status = multiline(L);
    if (editing && status != LINE_DROPPED) /* the whole statement, as lua.c */
        as_edit_add_history(lua_tostring(L, 1));
    lua_remove(L, 1);
    return status;
}

/* Writes its arguments as print does, with luaL_tolstring, in one piece. */
static int print_values(lua_State *L)
{
    int n = lua_gettop(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        if (i > 1) luaL_addchar(&b, '\t');
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&b);
    }
    luaL_addchar(&b, '\n');
    luaL_pushresult(&b);
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    fwrite(s, 1, len, stdout);
    fflush(stdout);
    return 0;
}

static void print_results(lua_State *L)
{
    int n = lua_gettop(L);
    if (n == 0) return;
    if (!lua_checkstack(L, LUA_MINSTACK)) {
        lua_settop(L, 0);
        fputs("too many results to print\n", stderr);
        return;
    }
    lua_pushcfunction(L, print_values);
    lua_insert(L, 1);
    if (as_repl_docall(L, n, 0) != LUA_OK) {
        lua_pushfstring(L, "error printing the result: %s", lua_tostring(L, -1));
        lua_remove(L, -2);
        as_repl_report(L, NULL, LUA_ERRRUN);
    }
}

void as_repl_loop(lua_State *L)
{
    struct sigaction old;
    set_sigint(on_line_sigint, 0, &old); /* no SA_RESTART: Ctrl-C ends the read */
    editing = isatty(STDIN_FILENO);
    if (editing) as_edit_open(L);
    int status;
    while ((status = loadline(L)) != LINE_EOF) {
        if (status == LINE_DROPPED) {
            fputc('\n', stdout);
            continue;
        }
        if (status == LUA_OK) status = as_repl_docall(L, 0, LUA_MULTRET);
        if (status == LUA_OK)
            print_results(L);
        else
            as_repl_report(L, NULL, status);
    }
    if (editing) as_edit_close();
    editing = 0;
    sigaction(SIGINT, &old, NULL);
    lua_settop(L, 0);
    fputc('\n', stdout);
    fflush(stdout);
}
