/* attnswap-run [options] [script [args]]: Lua 5.4 with attnswap loaded, as
 * the globals `as` and `nn`.  Options and the `arg` table follow lua.c. */
#define _XOPEN_SOURCE 700 /* readlink, realpath */

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "repl.h"

#define PROGNAME "attnswap-run"
#define USAGE "usage: " PROGNAME " [options] [script [args]]"

/* exit statuses */
enum { EXIT_OK = 0, EXIT_ERROR = 1, EXIT_USAGE = 2 };

int luaopen_attnswap_core(lua_State *L);

/* options seen before the script, as bits */
enum { HAS_I = 1, HAS_V = 2, HAS_E = 4, HAS_L = 8, HAS_H = 16, HAS_W = 32 };

typedef struct {
    int flags;
    int script;        /* argv index of the script; 0 when there is none */
    const char *bad;   /* the argument that failed */
    int needs_value;   /* it failed for want of a value, else it is unknown */
} cli_args;

static int bad_arg(cli_args *a, const char *arg, int needs_value)
{
    a->bad = arg;
    a->needs_value = needs_value;
    return -1;
}

/* Reads the options up to the script name; returns 0, or -1 with a->bad. */
static int collectargs(char **argv, cli_args *a)
{
    *a = (cli_args){0};
    if (argv[0] == NULL) return 0; /* argc == 0: no arguments at all */
    for (int i = 1; argv[i] != NULL; i++) {
        const char *o = argv[i];
        if (o[0] != '-' || o[1] == '\0') { /* the script, or '-' for stdin */
            a->script = i;
            return 0;
        }
        if (o[1] == '-') {
            if (o[2] == '\0') { /* '--' */
                a->script = argv[i + 1] ? i + 1 : 0;
                return 0;
            }
            if (strcmp(o, "--help") == 0)
                a->flags |= HAS_H;
            else if (strcmp(o, "--version") == 0)
                a->flags |= HAS_V;
            else
                return bad_arg(a, o, 0);
            continue;
        }
        switch (o[1]) {
        case 'h': case 'i': case 'v': case 'W':
            if (o[2] != '\0') return bad_arg(a, o, 0);
            a->flags |= o[1] == 'h' ? HAS_H : o[1] == 'W' ? HAS_W
                      : o[1] == 'i' ? HAS_I | HAS_V /* -i shows the version, as in lua */
                                    : HAS_V;
            break;
        case 'e': case 'l':
            a->flags |= o[1] == 'e' ? HAS_E : HAS_L;
            if (o[2] == '\0') { /* the value is the next argument */
                i++;
                if (argv[i] == NULL || argv[i][0] == '-') return bad_arg(a, o, 1);
            }
            break;
        default:
            return bad_arg(a, o, 0);
        }
    }
    return 0;
}

static void print_version(void)
{
    printf("attnswap %s (%s)\n", AS_VERSION, LUA_RELEASE);
    fflush(stdout);
}

static void print_help(void)
{
    printf(USAGE "\n"
           "Runs a Lua script with attnswap loaded as the globals 'as' and 'nn'.\n"
           "With no script: a REPL when stdin is a terminal, else stdin runs as the script.\n"
           "Options:\n"
           "  -e stat        execute string 'stat'\n"
           "  -i             enter interactive mode after running 'script'\n"
           "  -l mod         require library 'mod' into global 'mod'\n"
           "  -l g=mod       require library 'mod' into global 'g'\n"
           "  -v, --version  show version information\n"
           "  -W             turn warnings on\n"
           "  -h, --help     show this help\n"
           "  --             stop handling options\n"
           "  -              stop handling options and execute stdin\n");
}

/* arg[0] is the script (the interpreter when there is none), arg[1..] its
 * arguments, arg[-1..] the options and interpreter before it. */
static void createargtable(lua_State *L, char **argv, int argc, int script)
{
    lua_createtable(L, argc - (script + 1), script + 1);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - script);
    }
    lua_setglobal(L, "arg");
}

static int file_exists(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f) fclose(f);
    return f != NULL;
}

/* Pushes the directory holding attnswap/init.lua: the installed one next to
 * this executable (<prefix>/bin/../<lua dir>) when it is there, else the
 * source tree this binary was built from.  No environment variable used. */
static void push_lua_dir(lua_State *L)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe);
    if (n > 0 && (size_t)n < sizeof exe) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            const char *dir = lua_pushfstring(L, "%s/../%s", exe, AS_INSTALL_LUA_SUBDIR);
            lua_pushfstring(L, "%s/attnswap/init.lua", dir);
            int found = file_exists(lua_tostring(L, -1));
            lua_pop(L, 1);
            if (found) {
                char *clean = realpath(dir, NULL);
                if (clean) {
                    lua_pushstring(L, clean);
                    lua_remove(L, -2);
                    free(clean);
                }
                return;
            }
            lua_pop(L, 1);
        }
    }
    lua_pushstring(L, AS_SOURCE_LUA_DIR);
}

/* Preloads attnswap.core, puts our Lua files first on package.path, and
 * sets the globals as = require "attnswap" and nn = as.nn. */
static int load_attnswap(lua_State *L)
{
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_attnswap_core);
    lua_setfield(L, -2, "attnswap.core");
    lua_pop(L, 1);

    lua_getglobal(L, "package");
    push_lua_dir(L);
    const char *dir = lua_tostring(L, -1);
    lua_getfield(L, -2, "path");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", dir, dir, lua_tostring(L, -1));
    lua_setfield(L, -4, "path");
    lua_pop(L, 3);

    lua_getglobal(L, "require");
    lua_pushliteral(L, "attnswap");
    int status = as_repl_docall(L, 1, 1);
    if (status != LUA_OK) return as_repl_report(L, PROGNAME, status);
    lua_getfield(L, -1, "nn");
    lua_setglobal(L, "nn");
    lua_setglobal(L, "as");
    return LUA_OK;
}

static int dochunk(lua_State *L, int status)
{
    if (status == LUA_OK) status = as_repl_docall(L, 0, 0);
    return as_repl_report(L, PROGNAME, status);
}

/* -l mod: global mod = require "mod" (a '-suffix' is left out of the global's
 * name, as in Lua 5.4.6); -l g=mod: global g = require "mod". */
static int dolibrary(lua_State *L, const char *spec)
{
    const char *eq = strchr(spec, '=');
    const char *mod = eq ? eq + 1 : spec;
    size_t globlen = eq ? (size_t)(eq - spec) : strcspn(spec, "-");
    lua_getglobal(L, "require");
    lua_pushstring(L, mod);
    int status = as_repl_docall(L, 1, 1);
    if (status == LUA_OK) {
        lua_pushlstring(L, spec, globlen);
        lua_insert(L, -2);
        lua_setglobal(L, lua_tostring(L, -2));
        lua_pop(L, 1);
    }
    return as_repl_report(L, PROGNAME, status);
}

/* Runs the -e and -l options in order, up to argv[lim]. */
static int runargs(lua_State *L, char **argv, int lim)
{
    for (int i = 1; i < lim; i++) {
        int option = argv[i][1];
        if (option != 'e' && option != 'l') continue;
        const char *value = argv[i] + 2;
        if (*value == '\0') value = argv[++i];
        int status = option == 'e'
                         ? dochunk(L, luaL_loadbuffer(L, value, strlen(value), "=(command line)"))
                         : dolibrary(L, value);
        if (status != LUA_OK) return status;
    }
    return LUA_OK;
}

/* Runs argv[0] (stdin for '-', unless it came after '--') with arg[1..] as
 * its varargs. */
static int handle_script(lua_State *L, char **argv)
{
    const char *fname = argv[0];
    if (strcmp(fname, "-") == 0 && strcmp(argv[-1], "--") != 0) fname = NULL;
    int status = luaL_loadfile(L, fname);
    if (status == LUA_OK) {
        lua_getglobal(L, "arg");
        int n = lua_istable(L, -1) ? (int)luaL_len(L, -1) : 0;
        luaL_checkstack(L, n + 3, "too many arguments to script");
        for (int i = 1; i <= n; i++) lua_rawgeti(L, -i, i);
        lua_remove(L, -n - 1);
        status = as_repl_docall(L, n, 0);
    }
    return as_repl_report(L, PROGNAME, status);
}

/* The whole program, in protected mode; returns the exit status. */
static int pmain(lua_State *L)
{
    int argc = (int)lua_tointeger(L, 1);
    char **argv = lua_touserdata(L, 2);
    cli_args a;
    if (collectargs(argv, &a) != 0) {
        fprintf(stderr, a.needs_value ? "%s: option '%s' needs an argument\n%s\n"
                                      : "%s: unrecognized option '%s'\n%s\n",
                PROGNAME, a.bad, USAGE);
        lua_pushinteger(L, EXIT_USAGE);
        return 1;
    }
    int status = EXIT_OK;
    int lim = a.script > 0 ? a.script : argc; /* argv[lim] is the first non-option */
    if (a.flags & HAS_H) {
        print_help();
        goto done;
    }
    if (a.flags & HAS_V) print_version();
    if ((a.flags & HAS_V) && a.script == 0 && !(a.flags & (HAS_E | HAS_L | HAS_I)))
        goto done; /* nothing else asked: do not load attnswap just for -v */

    luaL_openlibs(L);
    if (a.flags & HAS_W) lua_warning(L, "@on", 0);
    createargtable(L, argv, argc, a.script);
    lua_gc(L, LUA_GCRESTART);
    lua_gc(L, LUA_GCGEN, 0, 0);
    status = EXIT_ERROR;
    if (load_attnswap(L) != LUA_OK) goto done;
    if (runargs(L, argv, lim) != LUA_OK) goto done;
    if (a.script > 0 && handle_script(L, argv + a.script) != LUA_OK) goto done;
    if (a.flags & HAS_I) {
        as_repl_loop(L);
    } else if (a.script == 0 && !(a.flags & (HAS_E | HAS_V))) {
        if (isatty(STDIN_FILENO)) {
            print_version();
            as_repl_loop(L);
        } else if (dochunk(L, luaL_loadfile(L, NULL)) != LUA_OK) {
            goto done;
        }
    }
    status = EXIT_OK;
done:
    lua_pushinteger(L, status);
    return 1;
}

int main(int argc, char **argv)
{
    lua_State *L = luaL_newstate();
    if (L == NULL) {
        fprintf(stderr, "%s: cannot create state: not enough memory\n", PROGNAME);
        return EXIT_ERROR;
    }
    lua_gc(L, LUA_GCSTOP); /* until the libraries are open */
    lua_pushcfunction(L, pmain);
    lua_pushinteger(L, argc);
    lua_pushlightuserdata(L, argv);
    int status = lua_pcall(L, 2, 1, 0);
    int code = status == LUA_OK ? (int)lua_tointeger(L, -1) : EXIT_ERROR;
    as_repl_report(L, PROGNAME, status);
    fflush(stdout);
    lua_close(L);
    return code;
}
