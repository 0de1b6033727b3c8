/* safetensors files (the format of huggingface/safetensors): an 8-byte
 * little-endian header length N, N bytes of JSON header
 *   {"__metadata__": {"k": "v"}, "name": {"dtype": "F32", "shape": [2, 3],
 *    "data_offsets": [begin, end]}, ...}
 * then the data section; offsets are bytes into it, row-major, little-endian.
 *
 * Loading memory-maps the file (private, copy-on-write: writing to a loaded
 * tensor never changes the file) and returns the tensors in header order.  A
 * tensor whose data is naturally aligned is a zero-copy view of the mapping,
 * which is unmapped when the last such tensor is released.  dtypes:
 *   F32 F16 BF16 I64 I32 BOOL   kept as they are (zero-copy when aligned);
 *   F64                         converted to float32 (a copy);
 *   I8 I16 U8 U16               converted to int32 (a copy, values kept);
 *   U32                         converted to int64 (a copy, values kept);
 *   anything else (U64, F8_*)   an error.
 * The file is untrusted: every field is checked (header length at most 100 MB
 * and within the file, JSON object, dtype / shape / data_offsets present and
 * well typed, sizes non-negative without overflow, offsets inside the data
 * section and matching shape x dtype size, no overlap, no duplicate names,
 * names valid UTF-8, __metadata__ a string -> string object) and a failure
 * returns NULL with "load: <path>: <what is wrong>" in as_error_get().  Gaps
 * between tensors and trailing bytes are tolerated.  A file truncated by
 * another process while mapped can still raise SIGBUS, as with any mmap.
 *
 * Saving writes __metadata__ first, then the tensors' header entries in the
 * order given; the data section holds them sorted by element size, largest
 * first (stable), so every tensor is aligned for a zero-copy load.  The
 * header is padded with spaces to a multiple of 8 bytes.  The file is written
 * to a temporary beside it, fsynced and renamed over path, so a reader never
 * sees half a file.  Non-contiguous and non-CPU tensors are copied first. */
#ifndef AS_SAFETENSORS_H
#define AS_SAFETENSORS_H

#include <stdint.h>

#include "attnswap/tensor.h"

typedef struct {
    char *name;
    as_tensor *tensor;
} as_named_tensor;

typedef struct {
    int64_t n;                 /* tensors, in header order */
    as_named_tensor *tensors;
    int64_t nmeta;             /* __metadata__ entries, in header order */
    char **meta_keys, **meta_values;
    int64_t nzero_copy;        /* how many tensors view the mapping */
} as_safetensors;

/* NULL with the error set on failure. */
as_safetensors *as_safetensors_load(const char *path);
/* Releases the list's references; tensors the caller retained live on. */
void as_safetensors_free(as_safetensors *st);
/* The tensor called name (borrowed), or NULL. */
as_tensor *as_safetensors_find(const as_safetensors *st, const char *name);

/* metadata: NULL, or {"key", "value", ..., NULL}.  0 or -1 with
 * "save: <path>: ..." set. */
int as_safetensors_save(const char *path, int n, const char *const *names,
                        const as_tensor *const *tensors, const char *const *metadata);

#endif
