/* An attention core module over a functional kernel: the shape every exact
 * C implementation shares (flash, and the zoo's kernels). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "attnswap/error.h"
#include "attnswap/attention.h"
#include "attnswap/nn.h"

typedef struct {
    as_attention_fn fn;
    as_attention_opts opts;
} core_config;

static as_tensor *core_forward(as_module *m, const as_args *args)
{
    if (as_check_args(m->type_name, args, 3, 4)) return NULL;
    const core_config *c = m->config;
    return c->fn(args->v[0], args->v[1], args->v[2], args->n > 3 ? args->v[3] : NULL, &c->opts, m->training);
}

static void core_repr(const as_module *m, char *buf, size_t size)
{
    const core_config *c = m->config;
    int n = snprintf(buf, size, "causal=%s", c->opts.causal ? "true" : "false");
    if (!isnan(c->opts.scale) && n > 0 && (size_t)n < size) n += snprintf(buf + n, size - (size_t)n, ", scale=%g", c->opts.scale);
    if (c->opts.dropout > 0 && n > 0 && (size_t)n < size) snprintf(buf + n, size - (size_t)n, ", dropout=%g", c->opts.dropout);
}

static int core_fields(const as_module *m, as_config_field *f, int max)
{
    return as_attention_opts_fields(&((const core_config *)m->config)->opts, f, max);
}

static const as_module_class core_class = {
    .name = "AttentionCore", .forward = core_forward, .extra_repr = core_repr, .config_fields = core_fields,
    .config_size = sizeof(core_config),
};

as_module *as_attention_core_new(const char *type_name, as_attention_fn fn, const as_attention_opts *opts)
{
    core_config *c = malloc(sizeof *c);
    if (!c) {
        as_error_set("out of memory");
        return NULL;
    }
    *c = (core_config){fn, *opts};
    as_module *m = as_module_new(&core_class, type_name, c);
    if (!m) free(c);
    return m;
}
