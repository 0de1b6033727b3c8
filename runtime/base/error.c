#include "attnswap/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static _Thread_local char errbuf[512];

void as_error_set(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, sizeof errbuf, fmt, ap);
    va_end(ap);
}

const char *as_error_get(void)
{
    return errbuf[0] ? errbuf : "unknown error";
}

char *as_shape_str(char *buf, size_t size, int ndim, const int64_t *shape)
{
    size_t n = 0;
    n += (size_t)snprintf(buf + n, size - n, "(");
    for (int i = 0; i < ndim && n < size; i++)
        n += (size_t)snprintf(buf + n, size - n, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (n < size) snprintf(buf + n, size - n, ")");
    return buf;
}

void as_panic(const char *file, int line, const char *what)
{
    fprintf(stderr, "attnswap: internal error at %s:%d: %s\n", file, line, what);
    abort();
}
