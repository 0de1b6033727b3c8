/* pty_drive SCRIPT CMD [ARGS...]: runs CMD under a pseudo-terminal and types
 * into it what SCRIPT says, so the REPL can be tested as a person uses it.
 *
 * SCRIPT holds one command per line (text after the command, with the
 * escapes \n \r \t \e \\ and \xHH):
 *   send TEXT      write TEXT to the terminal
 *   expect TEXT    wait until TEXT appears in the output after the previous
 *                  match (at most `timeout` seconds)
 *   raw            wait until the terminal is in raw (non-canonical) mode:
 *                  a line editor is reading keys.  libedit shows its prompt
 *                  before it switches, and keys typed in between are read
 *                  as a cooked line (a Ctrl-D there is lost), so a test
 *                  waits for the prompt, then for this, then types
 *   timeout SECS   the limit for the expects that follow (default 10)
 *   sleep MS       wait, still collecting output
 * After the last command it waits (same limit) for CMD to end.
 *
 * Everything CMD wrote goes to stdout at the end.  Exit status: CMD's (128 +
 * signal when killed); 124 when an expect or the final wait timed out, with a
 * line on stderr saying which; 125 for a bad script or a failed start. */
#define _DEFAULT_SOURCE /* forkpty, cfmakeraw */

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

enum { EXIT_TIMEOUT = 124, EXIT_SETUP = 125 };

typedef struct {
    char *data;
    size_t len, cap, mark; /* mark: where the next expect starts looking */
} transcript;

static int master = -1;
static pid_t child = -1;
static int child_status = -1; /* waitpid status once it ended */
static transcript out;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void append(const char *buf, size_t n)
{
    if (out.len + n + 1 > out.cap) {
        size_t cap = out.cap ? out.cap : 4096;
        while (cap < out.len + n + 1) cap *= 2;
        char *p = realloc(out.data, cap);
        if (p == NULL) {
            fputs("pty_drive: out of memory\n", stderr);
            exit(EXIT_SETUP);
        }
        out.data = p;
        out.cap = cap;
    }
    memcpy(out.data + out.len, buf, n);
    out.len += n;
    out.data[out.len] = '\0';
}

/* Collects output for at most `wait` seconds; returns -1 once the terminal
 * is closed (the child and everything it started have let go of it). */
static int pump(double wait)
{
    if (master < 0) return -1;
    struct pollfd p = {.fd = master, .events = POLLIN};
    int ms = wait > 0 ? (int)(wait * 1000) : 0;
    int r = poll(&p, 1, ms);
    if (r <= 0) return 0;
    char buf[4096];
    ssize_t n = read(master, buf, sizeof buf);
    if (n > 0) {
        append(buf, (size_t)n);
        return 0;
    }
    if (n < 0 && errno == EINTR) return 0;
    close(master); /* EIO: the other side is gone */
    master = -1;
    return -1;
}

/* memmem without _GNU_SOURCE */
static const char *find(const char *hay, size_t n, const char *needle, size_t m)
{
    if (m == 0) return hay;
    for (size_t i = 0; i + m <= n; i++)
        if (memcmp(hay + i, needle, m) == 0) return hay + i;
    return NULL;
}

/* Looks for text after the previous match; moves the mark past it. */
static int seen(const char *text, size_t m)
{
    const char *at = out.len ? find(out.data + out.mark, out.len - out.mark, text, m) : NULL;
    if (at == NULL) return 0;
    out.mark = (size_t)(at - out.data) + m;
    return 1;
}

static int expect(const char *text, size_t m, double limit)
{
    double end = now() + limit;
    while (!seen(text, m)) {
        double left = end - now();
        if (left <= 0) return -1;
        if (pump(left > 0.1 ? 0.1 : left) < 0) return seen(text, m) ? 0 : -1; /* closed */
    }
    return 0;
}

/* The terminal's modes are the slave's, also when read on the master. */
static int wait_raw(double limit)
{
    double end = now() + limit;
    for (;;) {
        struct termios t;
        if (master >= 0 && tcgetattr(master, &t) == 0 && !(t.c_lflag & ICANON)) return 0;
        if (now() >= end || pump(0.01) < 0) return -1;
    }
}

static void collect(double secs)
{
    double end = now() + secs;
    while (now() < end && pump(end - now()) == 0) {}
}

static void send(const char *text, size_t n)
{
    while (n > 0) {
        ssize_t w = write(master, text, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return;
        text += w;
        n -= (size_t)w;
        pump(0);
    }
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decodes the escapes of s in place; returns the new length, or -1. */
static long unescape(char *s)
{
    char *w = s;
    for (const char *r = s; *r; r++) {
        if (*r != '\\') {
            *w++ = *r;
            continue;
        }
        switch (*++r) {
        case 'n': *w++ = '\n'; break;
        case 'r': *w++ = '\r'; break;
        case 't': *w++ = '\t'; break;
        case 'e': *w++ = '\033'; break;
        case '\\': *w++ = '\\'; break;
        case 'x': {
            int hi = hexval(r[1]), lo = hi < 0 ? -1 : hexval(r[2]);
            if (lo < 0) return -1;
            *w++ = (char)(hi * 16 + lo);
            r += 2;
            break;
        }
        default: return -1;
        }
    }
    *w = '\0';
    return (long)(w - s);
}

/* Waits for the child to end, at most `limit` seconds; -1 on time-out. */
static int reap(double limit)
{
    double end = now() + limit;
    while (now() < end) {
        pump(0.05); /* keep the terminal drained so the child never blocks */
        pid_t r = waitpid(child, &child_status, WNOHANG);
        if (r == child) {
            while (pump(0.05) == 0 && master >= 0) {} /* what is left in the pty */
            return 0;
        }
    }
    return -1;
}

static void fail(const char *what, const char *text)
{
    fprintf(stderr, "pty_drive: timed out %s%s%s\n", what, text ? " " : "", text ? text : "");
}

static int run_script(FILE *f)
{
    double limit = 10;
    char line[8192];
    int lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        line[strcspn(line, "\n")] = '\0';
        if (line[0] == '\0' || line[0] == '#') continue;
        char *arg = strchr(line, ' ');
        if (arg) *arg++ = '\0';
        else arg = line + strlen(line);
        long n = unescape(arg);
        if (n < 0) {
            fprintf(stderr, "pty_drive: script line %d: bad escape\n", lineno);
            return EXIT_SETUP;
        }
        if (strcmp(line, "send") == 0) {
            send(arg, (size_t)n);
        } else if (strcmp(line, "expect") == 0) {
            if (expect(arg, (size_t)n, limit) != 0) {
                char shown[8300];
                snprintf(shown, sizeof shown, "waiting for '%s' (script line %d)", arg, lineno);
                fail(shown, NULL);
                return EXIT_TIMEOUT;
            }
        } else if (strcmp(line, "raw") == 0) {
            if (wait_raw(limit) != 0) {
                fprintf(stderr, "pty_drive: timed out waiting for raw mode (script line %d)\n", lineno);
                return EXIT_TIMEOUT;
            }
        } else if (strcmp(line, "timeout") == 0) {
            limit = atof(arg);
        } else if (strcmp(line, "sleep") == 0) {
            collect(atof(arg) / 1000);
        } else {
            fprintf(stderr, "pty_drive: script line %d: unknown command '%s'\n", lineno, line);
            return EXIT_SETUP;
        }
    }
    if (reap(limit) != 0) {
        fail("waiting for the command to end", NULL);
        return EXIT_TIMEOUT;
    }
    if (WIFEXITED(child_status)) return WEXITSTATUS(child_status);
    return 128 + (WIFSIGNALED(child_status) ? WTERMSIG(child_status) : 0);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fputs("usage: pty_drive SCRIPT CMD [ARGS...]\n", stderr);
        return EXIT_SETUP;
    }
    FILE *f = fopen(argv[1], "r");
    if (f == NULL) {
        perror(argv[1]);
        return EXIT_SETUP;
    }
    struct winsize ws = {.ws_row = 24, .ws_col = 80};
    child = forkpty(&master, NULL, NULL, &ws);
    if (child < 0) {
        perror("pty_drive: forkpty");
        return EXIT_SETUP;
    }
    if (child == 0) {
        execvp(argv[2], argv + 2);
        perror(argv[2]);
        _exit(127);
    }
    int status = run_script(f);
    fclose(f);
    if (status == EXIT_TIMEOUT || status == EXIT_SETUP) {
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
        collect(0.1);
    }
    if (master >= 0) close(master);
    if (out.len) fwrite(out.data, 1, out.len, stdout);
    free(out.data);
    return status;
}
