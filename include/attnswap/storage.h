/* A refcounted block of bytes on one device.  Tensors are views over it. */
#ifndef AS_STORAGE_H
#define AS_STORAGE_H

#include <stddef.h>
#include <stdint.h>

typedef enum { AS_DEV_CPU = 0, AS_DEV_CUDA = 1 } as_device_type;

typedef struct {
    as_device_type type;
    int index;
} as_device;

#define AS_CPU ((as_device){AS_DEV_CPU, 0})

typedef struct as_storage as_storage;
struct as_storage {
    void *data;
    size_t nbytes;
    int refcount;
    as_device device;
    /* Frees data when the last reference goes: the allocator's free for owned
     * buffers, munmap for a memory-mapped file.  ctx is its argument. */
    void (*release)(as_storage *s);
    void *ctx;
    /* Bumped by every in-place write (autograd checks that a tensor it
     * saved was not modified before its backward). */
    uint64_t version;
};

/* CPU buffers are 64-byte aligned.  NULL with "out of memory" set on failure. */
as_storage *as_storage_new(size_t nbytes, as_device dev);
/* Wraps memory owned elsewhere; release(s) is called on the last release. */
as_storage *as_storage_wrap(void *data, size_t nbytes, as_device dev,
                            void (*release)(as_storage *), void *ctx);
as_storage *as_storage_retain(as_storage *s);
void as_storage_release(as_storage *s);

/* Bytes of CPU tensor storage alive now and at the peak since the last reset
 * (memory-mapped checkpoints are not counted: they are the file's pages). */
void as_cpu_memory_stats(size_t *live, size_t *peak);
void as_cpu_reset_peak(void);

const char *as_device_name(as_device dev); /* "cpu", "cuda:0" */
int as_device_equal(as_device a, as_device b);

#endif
