/* Containers: Sequential (calls its children in order) and ModuleList (holds
 * them).  Children are named "0", "1", ... as torch names them. */
#include <stdio.h>
#include <stdlib.h>

#include "attnswap/error.h"
#include "attnswap/nn.h"

/* forward(args...): the first child gets every argument, each next child
 * the previous output.  Empty: returns its input, as torch. */
static as_tensor *sequential_forward(as_module *m, const as_args *args)
{
    if (m->children.n == 0) {
        if (as_check_args("Sequential", args, 1, 1)) return NULL;
        return as_retain(args->v[0]);
    }
    as_tensor *x = NULL;
    for (int i = 0; i < m->children.n; i++) {
        /* held across the call: a Lua child may edit this container */
        as_module *child = as_module_retain(m->children.items[i].value);
        as_tensor *y;
        if (i == 0) {
            y = as_module_forward(child, args);
        } else {
            y = as_module_call1(child, x);
            as_release(x);
        }
        as_module_release(child);
        if (!y) return NULL;
        x = y;
    }
    return x;
}

static const as_module_class sequential_class = {
    .name = "Sequential", .forward = sequential_forward, .free_config = free};
static const as_module_class module_list_class = {.name = "ModuleList", .free_config = free};

as_module *as_sequential_new(void) { return as_module_new(&sequential_class, NULL, NULL); }
as_module *as_module_list_new(void) { return as_module_new(&module_list_class, NULL, NULL); }

int as_module_append(as_module *container, as_module *child)
{
    if (!child) {
        as_error_set("append: expected a module, got nil");
        return -1;
    }
    char name[32];
    /* str(len(self)) as torch; skip names already taken (after removals) */
    for (long long i = container->children.n;; i++) {
        snprintf(name, sizeof name, "%lld", i);
        if (!as_module_child(container, name)) break;
    }
    return as_module_set_child(container, name, child);
}
