/* attnswap-run [options] [script [args]]: Lua 5.4 with attnswap loaded, as
 * the globals `as` and `nn`.  Options and the `arg` table follow lua.c. */
#define _XOPEN_SOURCE 700 /* readlink, realpath */

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "attnswap/info.h"
#include "attnswap/ops.h"
#include "launch.h"
#include "repl.h"

#define PROGNAME "attnswap-run"
#define USAGE "usage: " PROGNAME " [options] [script [args]]"

/* exit statuses */
enum { EXIT_OK = 0, EXIT_ERROR = 1, EXIT_USAGE = 2 };

int luaopen_attnswap_core(lua_State *L);

/* options seen before the script, as bits */
enum { HAS_I = 1, HAS_V = 2, HAS_E = 4, HAS_L = 8, HAS_H = 16, HAS_W = 32, HAS_LIST = 64, HAS_INFO = 128 };

/* The long options that take a value (--opt VALUE or --opt=VALUE). */
enum { OPT_DEVICE, OPT_THREADS, OPT_SEED, OPT_SWAP, OPT_COMPARE, OPT_DISTILL, OPT_DATA, OPT_SAVE, N_VALUE_OPTS };
static const char *const value_opts[N_VALUE_OPTS] = {"--device", "--threads", "--seed",    "--swap",
                                                      "--compare", "--distill", "--data", "--save"};

/* The options about the model a script returns: they may follow the script. */
static int about_model(int k) { return k >= OPT_SWAP; }

typedef struct {
    int flags;
    int script;                     /* argv index of the script; 0 when there is none */
    const char *value[N_VALUE_OPTS]; /* of the long options, NULL when not given */
    int taken;                      /* arguments after the script taken as options */
    char error[256];                /* why the command line is bad */
} cli_args;

/* fmt has one %s, for opt (or none) */
static int bad_arg(cli_args *a, const char *fmt, const char *opt)
{
    snprintf(a->error, sizeof a->error, fmt, opt);
    return -1;
}

/* Which of value_opts o is, as "--name" or "--name=..."; -1 for none. */
static int value_option(const char *o)
{
    for (int k = 0; k < N_VALUE_OPTS; k++) {
        size_t n = strlen(value_opts[k]);
        if (strncmp(o, value_opts[k], n) == 0 && (o[n] == '\0' || o[n] == '=')) return k;
    }
    return -1;
}

/* Whole-string integer within [lo, hi]. */
static int parse_int(const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end != '\0' || errno == ERANGE || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

/* Checks the value of a long option now, so that a typo is a usage error
 * before anything runs; 0 or -1 with a->error. */
static int check_value(cli_args *a, int k, const char *v)
{
    long long n;
    const char *want = NULL;
    switch (k) {
    case OPT_DEVICE:
        if (strcmp(v, "cpu") != 0 && strcmp(v, "cuda") != 0) want = "cpu or cuda";
        break;
    case OPT_THREADS:
        if (parse_int(v, 1, INT_MAX, &n) != 0) want = "a positive integer";
        break;
    case OPT_SEED:
        if (parse_int(v, LLONG_MIN, LLONG_MAX, &n) != 0) want = "an integer";
        break;
    case OPT_DISTILL: /* key=value,... or "default": as.distill checks them */
    case OPT_DATA:
    case OPT_SAVE:
        if (*v == '\0') want = k == OPT_DISTILL ? "key=value,... or default" : "a path";
        break;
    default: /* --swap, --compare: the names are checked against the registry later */
        if (*v == '\0' || *v == ':' || *v == ',') want = "attention names";
        break;
    }
    if (want == NULL) return 0;
    snprintf(a->error, sizeof a->error, "bad value '%s' for option '%s' (%s expected)", v,
             value_opts[k], want);
    return -1;
}

/* --help, --version, --list-attention and the value_opts; i may advance
 * past a value.  0, or -1 with a->error. */
static int long_option(char **argv, int *i, cli_args *a)
{
    const char *o = argv[*i];
    if (strcmp(o, "--help") == 0)
        a->flags |= HAS_H;
    else if (strcmp(o, "--version") == 0)
        a->flags |= HAS_V | HAS_INFO;
    else if (strcmp(o, "--list-attention") == 0)
        a->flags |= HAS_LIST;
    else {
        int k = value_option(o);
        if (k < 0) return bad_arg(a, "unrecognized option '%s'", o);
        const char *eq = strchr(o, '=');
        const char *v = eq ? eq + 1 : argv[++*i];
        if (v == NULL) return bad_arg(a, "option '%s' needs an argument", value_opts[k]);
        if (check_value(a, k, v) != 0) return -1;
        a->value[k] = v;
    }
    return 0;
}

/* --swap, --compare, --distill, --data and --save may also follow the
 * script, as in `attnswap-run model.lua --compare a,b`: they are about the
 * model the script returns, not arguments for it.  They are taken out of argv (the script's
 * `arg` does not see them); a '--' after the script ends the search. */
static int options_after_script(char **argv, cli_args *a)
{
    /* --data and --save are taken only with --distill: without it they are
     * the script's own (examples/train_tiny.lua has a --save) */
    bool distill = a->value[OPT_DISTILL] != NULL;
    for (int r = a->script + 1; argv[r] != NULL && strcmp(argv[r], "--") != 0; r++)
        if (value_option(argv[r]) == OPT_DISTILL) distill = true;
    int w = a->script + 1;
    for (int r = a->script + 1; argv[r] != NULL; r++) {
        int k = value_option(argv[r]);
        if (strcmp(argv[r], "--") == 0) {
            while (argv[r] != NULL) argv[w++] = argv[r++];
            break;
        }
        if (k < 0 || !about_model(k) || ((k == OPT_DATA || k == OPT_SAVE) && !distill)) {
            argv[w++] = argv[r];
            continue;
        }
        const char *eq = strchr(argv[r], '=');
        const char *v = eq ? eq + 1 : argv[r + 1];
        if (v == NULL) return bad_arg(a, "option '%s' needs an argument", value_opts[k]);
        if (check_value(a, k, v) != 0) return -1;
        if (a->value[k]) return bad_arg(a, "option '%s' is given twice", value_opts[k]);
        a->value[k] = v;
        if (!eq) r++;
    }
    a->taken = 0;
    for (int r = w; argv[r] != NULL; r++) a->taken++;
    argv[w] = NULL;
    return 0;
}

/* Reads the options up to the script name; returns 0, or -1 with a->error. */
static int collectargs(char **argv, cli_args *a)
{
    *a = (cli_args){0};
    if (argv[0] == NULL) return 0; /* argc == 0: no arguments at all */
    for (int i = 1; argv[i] != NULL; i++) {
        const char *o = argv[i];
        if (o[0] != '-' || o[1] == '\0') { /* the script, or '-' for stdin */
            a->script = i;
            break;
        }
        if (o[1] == '-') {
            if (o[2] == '\0') { /* '--' */
                a->script = argv[i + 1] ? i + 1 : 0;
                break;
            }
            if (long_option(argv, &i, a) != 0) return -1;
            continue;
        }
        switch (o[1]) {
        case 'h': case 'i': case 'v': case 'W':
            if (o[2] != '\0') return bad_arg(a, "unrecognized option '%s'", o);
            a->flags |= o[1] == 'h' ? HAS_H : o[1] == 'W' ? HAS_W
                      : o[1] == 'i' ? HAS_I | HAS_V /* -i shows the version, as in lua */
                                    : HAS_V | HAS_INFO;
            break;
        case 'e': case 'l':
            a->flags |= o[1] == 'e' ? HAS_E : HAS_L;
            if (o[2] == '\0') { /* the value is the next argument */
                i++;
                if (argv[i] == NULL || argv[i][0] == '-')
                    return bad_arg(a, "option '%s' needs an argument", o);
            }
            break;
        default:
            return bad_arg(a, "unrecognized option '%s'", o);
        }
    }
    if (a->script > 0 && options_after_script(argv, a) != 0) return -1;
    if (a->value[OPT_SWAP] && a->value[OPT_COMPARE])
        return bad_arg(a, "options '--swap' and '--compare' do not go together", "");
    for (int k = OPT_SWAP; k < N_VALUE_OPTS; k++)
        if (a->value[k] && a->script == 0)
            return bad_arg(a, "option '%s' needs a script that returns a model and its inputs",
                           value_opts[k]);
    if (a->value[OPT_DISTILL] && !a->value[OPT_SWAP])
        return bad_arg(a, "option '--distill' needs '--swap NAME' (the attention to distil into)", "");
    for (int k = OPT_DATA; k <= OPT_SAVE; k++)
        if (a->value[k] && !a->value[OPT_DISTILL])
            return bad_arg(a, "option '%s' goes with '--distill'", value_opts[k]);
    return 0;
}

static void usage_error(const char *msg)
{
    fflush(stdout);
    fprintf(stderr, "%s: %s\n%s\n", PROGNAME, msg, USAGE);
    fflush(stderr);
}

/* The version line; with info (-v, --version) also what the kernels run
 * on: the BLAS core that as_init settles, threads, attention ISA, CUDA. */
static void print_version(int info)
{
    printf("attnswap %s (%s)\n", AS_VERSION, LUA_RELEASE);
    if (info) {
        char buf[1024];
        as_init();
        as_runtime_info_describe(buf, sizeof buf);
        fputs(buf, stdout);
    }
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
           "  --device D     set as.device to 'cpu' or 'cuda' before anything runs\n"
           "  --threads N    CPU threads for the kernels (as.set_num_threads(N))\n"
           "  --seed N       seed the random generator (as.manual_seed(N))\n"
           "  --list-attention\n"
           "                 print the attention registry; then exit unless a script is given\n"
           "  --swap NAME[:key=value,...]\n"
           "                 the script returns a model and its inputs (a tensor or a list of\n"
           "                 arguments): swap every attention core for NAME with those options,\n"
           "                 run the model, print the report and the output\n"
           "  --compare NAME,NAME,...\n"
           "                 the same script: as.compare(model, inputs, {NAME, ...});\n"
           "                 'all' stands for every registered implementation\n"
           "  --distill key=value,...|default\n"
           "                 with --swap, for a script that returns model, inputs and its\n"
           "                 batches (or a function(path) of them): as.distill(swapped,\n"
           "                 original, batches, {key = value, ...}) after the swap\n"
           "  --data PATH    with --distill: the file the script's function(path) reads\n"
           "  --save PATH    with --distill: write the distilled model's weights there\n"
           "                 (--swap, --compare, --distill, --data and --save may also\n"
           "                 follow the script)\n"
           "  --             stop handling options\n"
           "  -              stop handling options and execute stdin\n"
           "Options with a value also take the form --opt=VALUE.\n");
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
 * sets the globals as = require "attnswap", nn = as.nn and help (only here:
 * a library should not add globals to a stock lua5.4). */
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
    lua_getglobal(L, "require");
    lua_pushliteral(L, "attnswap.help");
    status = as_repl_docall(L, 1, 1);
    if (status != LUA_OK) return as_repl_report(L, PROGNAME, status);
    lua_getfield(L, -1, "help");
    lua_setglobal(L, "help");
    lua_pop(L, 1);
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
        if (value_option(argv[i]) >= 0 && strchr(argv[i], '=') == NULL) {
            i++; /* "--seed -e" seeds with "-e": it is no -e */
            continue;
        }
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
 * its varargs, leaving nres of its results. */
static int handle_script(lua_State *L, char **argv, int nres)
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
        status = as_repl_docall(L, n, nres);
    }
    return as_repl_report(L, PROGNAME, status);
}

/* What the options --device ... --distill do: lua/attnswap/cli.lua. */
static const char CLI_LUA[] = "return require 'attnswap.cli'\n";

#define CLI_KEY "attnswap-run.cli" /* registry: the table CLI_LUA returns */

/* Calls cli[fn] on the narg values on top; returns an exit status, having
 * said what went wrong. */
static int call_cli(lua_State *L, const char *fn, int narg)
{
    lua_getfield(L, LUA_REGISTRYINDEX, CLI_KEY);
    lua_getfield(L, -1, fn);
    lua_remove(L, -2);
    lua_insert(L, -narg - 1);
    if (as_repl_report(L, PROGNAME, as_repl_docall(L, narg, 2)) != LUA_OK) return EXIT_ERROR;
    int code = EXIT_OK;
    if (lua_isstring(L, -2)) {
        code = (int)lua_tointeger(L, -1);
        if (code == EXIT_USAGE) {
            usage_error(lua_tostring(L, -2));
        } else {
            fflush(stdout);
            fprintf(stderr, "%s: %s\n", PROGNAME, lua_tostring(L, -2));
        }
    }
    lua_pop(L, 2);
    return code;
}

/* Loads CLI_LUA and applies --device, --threads and --seed; an exit status. */
static int setup_options(lua_State *L, const cli_args *a)
{
    int status = luaL_loadbuffer(L, CLI_LUA, sizeof CLI_LUA - 1, "=(attnswap-run)");
    if (status == LUA_OK) status = as_repl_docall(L, 0, 1);
    if (as_repl_report(L, PROGNAME, status) != LUA_OK) return EXIT_ERROR;
    lua_setfield(L, LUA_REGISTRYINDEX, CLI_KEY);
    long long n;
    lua_pushstring(L, a->value[OPT_DEVICE]); /* nil when not given */
    if (a->value[OPT_THREADS] && parse_int(a->value[OPT_THREADS], 1, INT_MAX, &n) == 0)
        lua_pushinteger(L, (lua_Integer)n);
    else
        lua_pushnil(L);
    if (a->value[OPT_SEED] && parse_int(a->value[OPT_SEED], LLONG_MIN, LLONG_MAX, &n) == 0)
        lua_pushinteger(L, (lua_Integer)n);
    else
        lua_pushnil(L);
    return call_cli(L, "setup", 3);
}

/* Runs the script; with --swap or --compare, then does that to the model
 * and inputs it returned; with -i, binds what it returned to globals.  An
 * exit status. */
static int run_script(lua_State *L, const cli_args *a, char **argv)
{
    int k = a->value[OPT_SWAP] ? OPT_SWAP : a->value[OPT_COMPARE] ? OPT_COMPARE : -1;
    int base = lua_gettop(L);
    if (handle_script(L, argv + a->script, LUA_MULTRET) != LUA_OK) return EXIT_ERROR;
    int nret = lua_gettop(L) - base, code = EXIT_OK;
    if (k >= 0) {
        if (nret < 3) lua_settop(L, base + 3); /* model, inputs, batches: nil when not returned */
        lua_pushstring(L, value_opts[k] + 2);
        lua_pushstring(L, a->value[k]);
        lua_pushvalue(L, base + 1);
        lua_pushvalue(L, base + 2);
        lua_pushvalue(L, base + 3);
        for (int d = OPT_DISTILL; d <= OPT_SAVE; d++) lua_pushstring(L, a->value[d]); /* nil when not given */
        code = call_cli(L, "model", 8);
        if (nret < 3) lua_settop(L, base + nret);
    }
    if (code == EXIT_OK && (a->flags & HAS_I) && nret > 0) {
        luaL_checkstack(L, nret + 2, "too many results to bind");
        lua_getfield(L, LUA_REGISTRYINDEX, CLI_KEY);
        lua_getfield(L, -1, "bind");
        lua_remove(L, -2);
        lua_insert(L, base + 1);
        if (as_repl_report(L, PROGNAME, as_repl_docall(L, nret, 0)) != LUA_OK) code = EXIT_ERROR;
    }
    lua_settop(L, base);
    return code;
}

/* With no script: a REPL on a terminal, else stdin is the script; nothing
 * when -e, -v or --list-attention already gave the run something to do. */
static int run_default(lua_State *L, const cli_args *a)
{
    if (a->flags & HAS_I) {
        as_repl_loop(L);
    } else if (a->script == 0 && !(a->flags & (HAS_E | HAS_V | HAS_LIST))) {
        if (isatty(STDIN_FILENO)) {
            print_version(0);
            as_repl_loop(L);
        } else if (dochunk(L, luaL_loadfile(L, NULL)) != LUA_OK) {
            return EXIT_ERROR;
        }
    }
    return EXIT_OK;
}

static int list_attention(lua_State *L)
{
    lua_getglobal(L, "as");
    lua_getfield(L, -1, "attention");
    lua_getfield(L, -1, "list");
    lua_remove(L, -2);
    lua_remove(L, -2);
    return as_repl_report(L, PROGNAME, as_repl_docall(L, 0, 0));
}

/* The whole program, in protected mode; returns the exit status. */
static int pmain(lua_State *L)
{
    int argc = (int)lua_tointeger(L, 1);
    char **argv = lua_touserdata(L, 2);
    cli_args a;
    if (collectargs(argv, &a) != 0) {
        usage_error(a.error);
        lua_pushinteger(L, EXIT_USAGE);
        return 1;
    }
    argc -= a.taken;
    int status = EXIT_OK;
    int lim = a.script > 0 ? a.script : argc; /* argv[lim] is the first non-option */
    if (a.flags & HAS_H) {
        print_help();
        goto done;
    }
    if (a.flags & HAS_V) print_version(a.flags & HAS_INFO);
    if ((a.flags & HAS_V) && a.script == 0 && !(a.flags & (HAS_E | HAS_L | HAS_I | HAS_LIST)))
        goto done; /* nothing else asked: do not load attnswap just for -v */

    luaL_openlibs(L);
    if (a.flags & HAS_W) lua_warning(L, "@on", 0);
    createargtable(L, argv, argc, a.script);
    lua_gc(L, LUA_GCRESTART);
    lua_gc(L, LUA_GCGEN, 0, 0);
    status = EXIT_ERROR;
    if (load_attnswap(L) != LUA_OK) goto done;
    if ((status = setup_options(L, &a)) != EXIT_OK) goto done;
    status = EXIT_ERROR;
    if (runargs(L, argv, lim) != LUA_OK) goto done;
    if ((a.flags & HAS_LIST) && list_attention(L) != LUA_OK) goto done;
    if (a.script > 0 && (status = run_script(L, &a, argv)) != EXIT_OK) goto done;
    status = run_default(L, &a);
done:
    lua_pushinteger(L, status);
    return 1;
}

int main(int argc, char **argv)
{
    int launched = as_cli_nproc(argc, argv); /* --nproc N: becomes mpirun (cli/launch.c) */
    if (launched >= 0) return launched;
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
