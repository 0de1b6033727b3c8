/* libFuzzer harness: the safetensors reader on arbitrary bytes.  The input is
 * written to an in-memory file and loaded through its /proc path, exactly as
 * a file from disk would be; every tensor that loads is read in full. */
#define _GNU_SOURCE
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include "attnswap/io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = memfd_create("fuzz.safetensors", 0);
    if (fd < 0) return 0;
    if (write(fd, data, size) != (ssize_t)size) {
        close(fd);
        return 0;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    as_safetensors *st = as_safetensors_load(path);
    if (st) {
        double sink = 0;
        for (int64_t i = 0; i < st->n; i++) {
            const as_tensor *t = st->tensors[i].tensor;
            for (int64_t j = 0, n = as_numel(t); j < n; j++) sink += as_get_flat(t, j);
        }
        (void)sink;
        as_safetensors_free(st);
    }
    close(fd);
    return 0;
}
