/* Embedding: weight (num_embeddings, dim) ~ N(0, 1); ids (...) -> (..., dim). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attnswap/error.h"
#include "attnswap/nn.h"

typedef struct {
    int64_t num, dim;
} embedding_config;

static as_tensor *embedding_forward(as_module *m, const as_args *args)
{
    if (as_check_args("Embedding", args, 1, 1)) return NULL;
    const as_tensor *ids = args->v[0];
    if (ids->dtype != AS_I64 && ids->dtype != AS_I32) {
        as_error_set("Embedding: expected int64 or int32 ids, got %s", as_dtype_name(ids->dtype));
        return NULL;
    }
    as_tensor *w = as_module_param(m, "weight");
    if (!w) {
        as_error_set("Embedding: weight is missing");
        return NULL;
    }
    as_tensor *y = as_embedding(w, ids);
    if (!y) { /* "embedding: id 7 is out of range" -> "Embedding: embedding: ..." */
        char msg[512];
        snprintf(msg, sizeof msg, "%s", as_error_get());
        as_error_set("Embedding: %s", msg);
    }
    return y;
}

static void embedding_repr(const as_module *m, char *buf, size_t size)
{
    const embedding_config *c = m->config;
    snprintf(buf, size, "%lld, %lld", (long long)c->num, (long long)c->dim);
}

static const as_module_class embedding_class = {
    .name = "Embedding", .forward = embedding_forward, .free_config = free, .extra_repr = embedding_repr,
    .config_size = sizeof(embedding_config)};

as_module *as_embedding_new(int64_t num_embeddings, int64_t dim)
{
    if (num_embeddings < 0 || dim < 0) {
        as_error_set("Embedding: sizes must be non-negative, got %lld, %lld", (long long)num_embeddings,
                     (long long)dim);
        return NULL;
    }
    embedding_config *c = malloc(sizeof *c);
    if (!c) {
        as_error_set("out of memory");
        return NULL;
    }
    *c = (embedding_config){num_embeddings, dim};
    as_module *m = as_module_new(&embedding_class, NULL, c);
    if (!m) {
        free(c);
        return NULL;
    }
    as_tensor *w = as_empty(2, (int64_t[]){num_embeddings, dim}, AS_F32, AS_CPU);
    int r = w ? as_normal_(w, 0.0, 1.0) : -1;
    if (r == 0) r = as_module_set_param(m, "weight", w);
    as_release(w);
    if (r) {
        as_module_release(m);
        return NULL;
    }
    return m;
}
