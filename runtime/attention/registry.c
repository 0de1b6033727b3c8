#include "attnswap/registry.h"

#include <stdlib.h>
#include <string.h>

#include "attnswap/error.h"

static as_attention_entry *entries;
static int count, cap;

static char *dup_or_empty(const char *s)
{
    s = s ? s : "";
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

static void entry_free(as_attention_entry *e)
{
    free(e->name), free(e->complexity), free(e->devices), free(e->paper), free(e->summary);
}

static int find(const char *name)
{
    for (int i = 0; i < count; i++)
        if (strcmp(entries[i].name, name) == 0) return i;
    return -1;
}

int as_registry_add(const as_attention_entry *e, bool replace, int *old_ref)
{
    *old_ref = -1;
    if (!e->name || !e->name[0]) {
        as_error_set("register_attention: the name must be a non-empty string");
        return -1;
    }
    int i = find(e->name);
    if (i >= 0 && !replace) {
        as_error_set("register_attention: '%s' is already registered (pass {replace = true} to replace it)", e->name);
        return -1;
    }
    as_attention_entry c = *e;
    c.name = dup_or_empty(e->name), c.complexity = dup_or_empty(e->complexity);
    c.devices = dup_or_empty(e->devices), c.paper = dup_or_empty(e->paper);
    c.summary = dup_or_empty(e->summary);
    if (!c.name || !c.complexity || !c.devices || !c.paper || !c.summary) goto oom;
    if (i >= 0) {
        *old_ref = entries[i].class_ref;
        entry_free(&entries[i]);
        entries[i] = c;
        return 0;
    }
    if (count == cap) {
        int ncap = cap ? cap * 2 : 16;
        as_attention_entry *p = realloc(entries, sizeof *p * (size_t)ncap);
        if (!p) goto oom;
        entries = p, cap = ncap;
    }
    /* keep sorted by name */
    int at = count;
    while (at > 0 && strcmp(entries[at - 1].name, c.name) > 0) at--;
    memmove(entries + at + 1, entries + at, sizeof *entries * (size_t)(count - at));
    entries[at] = c;
    count++;
    return 0;
oom:
    entry_free(&c);
    as_error_set("out of memory");
    return -1;
}

const as_attention_entry *as_registry_get(const char *name)
{
    int i = find(name);
    return i >= 0 ? &entries[i] : NULL;
}

int as_registry_count(void) { return count; }

const as_attention_entry *as_registry_at(int i) { return i >= 0 && i < count ? &entries[i] : NULL; }

void as_registry_clear(void)
{
    for (int i = 0; i < count; i++) entry_free(&entries[i]);
    free(entries);
    entries = NULL;
    count = cap = 0;
}
