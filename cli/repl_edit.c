/* Line editing for attnswap-run's REPL on a terminal: libedit's
 * readline-compatible interface, a history file, and Tab completion.
 *
 * libedit rather than GNU readline: readline is GPL, and linking it would
 * make the attnswap-run binary GPL; libedit is BSD-licensed, fits the MIT
 * licence, and is a plain Debian package (libedit-dev). */
#define _POSIX_C_SOURCE 200809L /* strdup, open */

#include "repl.h"

#include <errno.h>
#include <fcntl.h>
#include <locale.h>
#include <poll.h>
#include <stdio.h> /* before editline/readline.h, which uses FILE */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <editline/readline.h>
#include <lauxlib.h>

#define HISTORY_FILE ".attnswap_history"
#define HISTORY_MAX 1000
#define CANDIDATES_KEY "attnswap.repl.candidates" /* registry: the last Tab's answers */

/* Lua names: letters, digits and '_', joined by '.', ':' and integer
 * indices ("model.blocks[2].attn"); anything else ends the word Tab completes. */
#define WORD_BREAKS " \t\n\"\\'`@$><=;|&{}(),+-*/%^~#"

static lua_State *session;  /* the state Tab completion looks into */
static int wakeup[2] = {-1, -1}; /* a pipe: Ctrl-C writes, get_key polls */
static int keys = -1;            /* the terminal, opened again non-blocking */
static char *history_path;  /* NULL when no history file is kept */
static lua_Integer next_candidate;

/* In protected mode: pushes require("attnswap.complete").candidates(word). */
static int push_candidates(lua_State *L)
{
    lua_getglobal(L, "require");
    lua_pushliteral(L, "attnswap.complete");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "candidates");
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1);
    return 1;
}

/* libedit's generator: the state-th answer of the last Tab, malloc'd. */
static char *candidate(const char *text, int state)
{
    (void)text;
    if (state == 0) next_candidate = 1;
    int top = lua_gettop(session);
    char *s = NULL;
    if (lua_getfield(session, LUA_REGISTRYINDEX, CANDIDATES_KEY) == LUA_TTABLE &&
        lua_rawgeti(session, -1, next_candidate++) == LUA_TSTRING)
        s = strdup(lua_tostring(session, -1));
    lua_settop(session, top);
    return s;
}

/* Tab: the word before the cursor goes to Lua, which knows what tables,
 * modules and tensors hold.  An error there only means no completion. */
static char **complete(const char *text, int start, int end)
{
    (void)start;
    (void)end;
    rl_attempted_completion_over = 1; /* never fall back to file names */
    lua_State *L = session;
    lua_pushcfunction(L, push_candidates);
    lua_pushstring(L, text);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK || !lua_istable(L, -1)) {
        lua_pop(L, 1);
        return NULL;
    }
    lua_setfield(L, LUA_REGISTRYINDEX, CANDIDATES_KEY);
    char **matches = rl_completion_matches(text, candidate);
    lua_pushnil(L);
    lua_setfield(L, LUA_REGISTRYINDEX, CANDIDATES_KEY);
    return matches;
}

/* One byte of the terminal, or -1 at end of input or after Ctrl-C.  A
 * signal alone can come while libedit is busy rather than blocked in read
 * (or land on another thread, e.g. an OpenMP worker) and be missed until
 * the next key; the pipe the handler writes to is never missed.  The read
 * must not block: Ctrl-C flushes the terminal's input, and when it comes
 * between poll and read the keys poll saw are gone, so a blocking read would
 * wait for the next key with the interrupt already spent. */
static int read_byte(void)
{
    for (;;) {
        struct pollfd p[2] = {{.fd = keys, .events = POLLIN},
                              {.fd = wakeup[0], .events = POLLIN}};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (p[1].revents & POLLIN) return -1;
        unsigned char c;
        ssize_t n = read(keys, &c, 1);
        if (n == 1) return c;
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        return -1;
    }
}

/* A file description of our own for the terminal, so that O_NONBLOCK is not
 * set on the one stdin shares with the shell; stdin itself (blocking) when
 * the terminal has no name to open. */
static int open_keys(void)
{
    const char *name = ttyname(STDIN_FILENO);
    int fd = name ? open(name, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC) : -1;
    return fd >= 0 ? fd : STDIN_FILENO;
}

/* libedit's rl_getc_function hands back one character, so a UTF-8 sequence
 * is decoded here into its code point. */
static int get_key(FILE *f)
{
    (void)f;
    int c = read_byte();
    if (c < 0x80) return c; /* ASCII, or -1 */
    int extra = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
    if (extra == 0) return 0xFFFD; /* a stray continuation byte */
    int cp = c & (0x3F >> extra);
    for (int i = 0; i < extra; i++) {
        int b = read_byte();
        if (b < 0) return -1;
        if ((b & 0xC0) != 0x80) return 0xFFFD;
        cp = cp << 6 | (b & 0x3F);
    }
    return cp;
}

static void drain_wakeup(void)
{
    char buf[64];
    while (read(wakeup[0], buf, sizeof buf) > 0) {}
}

void as_edit_interrupt(void)
{
    if (wakeup[1] < 0) return;
    int saved = errno;
    ssize_t r = write(wakeup[1], "", 1); /* full pipe: a wake-up is pending anyway */
    (void)r;
    errno = saved;
}

/* $ATTNSWAP_HISTORY (so tests and users can move it; empty: no file), else
 * ~/.attnswap_history; NULL when there is no home either. */
static char *history_file(void)
{
    const char *env = getenv("ATTNSWAP_HISTORY");
    if (env) return *env ? strdup(env) : NULL;
    const char *home = getenv("HOME");
    if (home == NULL || *home == '\0') return NULL;
    size_t n = strlen(home) + sizeof "/" HISTORY_FILE;
    char *path = malloc(n);
    if (path) snprintf(path, n, "%s/%s", home, HISTORY_FILE);
    return path;
}

void as_edit_open(lua_State *L)
{
    session = L;
    if (pipe(wakeup) == 0) {
        for (int i = 0; i < 2; i++) {
            fcntl(wakeup[i], F_SETFL, O_NONBLOCK);
            fcntl(wakeup[i], F_SETFD, FD_CLOEXEC);
        }
        keys = open_keys();
        rl_getc_function = get_key;
    }
    /* the terminal's encoding, so libedit turns the keys back into UTF-8 */
    setlocale(LC_CTYPE, "");
    rl_readline_name = "attnswap";
    rl_catch_signals = 0; /* Ctrl-C is ours: see on_line_sigint in repl.c */
    rl_basic_word_break_characters = WORD_BREAKS;
    rl_completer_word_break_characters = (char *)WORD_BREAKS;
    rl_completion_append_character = '\0'; /* 't:so' -> 't:softmax', then '(' is yours */
    rl_attempted_completion_function = complete;
    rl_initialize();
    using_history();
    stifle_history(HISTORY_MAX);
    history_path = history_file();
    if (history_path) read_history(history_path);
}

char *as_edit_readline(const char *prompt)
{
    if (wakeup[0] >= 0) drain_wakeup(); /* a Ctrl-C from before this line */
    return readline(prompt);
}

void as_edit_add_history(const char *line)
{
    if (line[strspn(line, " \t\n")] == '\0') return; /* blank */
    add_history(line);
    if (history_path == NULL) return;
    /* Saved at once, so a session that is killed keeps its lines; created
     * private to the user, since statements can hold paths and secrets. */
    int fd = open(history_path, O_WRONLY | O_CREAT, 0600);
    if (fd >= 0) close(fd);
    write_history(history_path);
}

/* No history_truncate_file: libedit's drops the file's header line, and
 * read_history then refuses the file.  The stifled list is saved whole. */
void as_edit_close(void)
{
    free(history_path);
    history_path = NULL;
    clear_history();
    for (int i = 0; i < 2; i++) {
        if (wakeup[i] >= 0) close(wakeup[i]);
    }
    wakeup[0] = wakeup[1] = -1;
    if (keys > STDIN_FILENO) close(keys);
    keys = -1;
    setlocale(LC_CTYPE, "C");
    session = NULL;
}
