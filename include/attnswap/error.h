/* Error reporting for the C runtime.
 * A function that fails returns NULL (or a nonzero status) after calling
 * as_error_set(); the Lua binding reads as_error_get() and raises.  The
 * message always starts with the name of the public function, as in
 * "matmul: shapes (2, 3) and (4, 5) do not align". */
#ifndef AS_ERROR_H
#define AS_ERROR_H

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define AS_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define AS_PRINTF(a, b)
#endif

void as_error_set(const char *fmt, ...) AS_PRINTF(1, 2);
const char *as_error_get(void);

/* Formats a shape as "(2, 3)" into buf; returns buf. */
char *as_shape_str(char *buf, size_t size, int ndim, const int64_t *shape);

/* Internal invariants only: caller mistakes are reported, never asserted. */
#define AS_ASSERT(x)                                                            \
    do {                                                                        \
        if (!(x)) as_panic(__FILE__, __LINE__, #x);                              \
    } while (0)
void as_panic(const char *file, int line, const char *what);

#endif
