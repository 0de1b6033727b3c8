/* The attention registry: registry name -> the facts about an attention
 * implementation and a handle to its class (a Lua registry reference owned by
 * the bindings; the runtime never looks inside it). */
#ifndef AS_REGISTRY_H
#define AS_REGISTRY_H

#include <stdbool.h>

typedef struct {
    char *name;
    bool exact;          /* same function as softmax attention, to float rounding */
    char *complexity;    /* "O(L^2 D)" */
    bool causal, mask, gqa, incremental; /* supports causal, masks, grouped KV heads, a KV cache */
    char *devices;       /* "cpu" or "cpu,cuda" */
    char *paper;         /* "Dao et al. 2022, FlashAttention" */
    char *summary;       /* one line */
    int class_ref;
} as_attention_entry;

/* Copies e (strings included).  A duplicate name is an error unless replace;
 * the replaced entry's class_ref is returned in *old_ref (else -1). */
int as_registry_add(const as_attention_entry *e, bool replace, int *old_ref);
const as_attention_entry *as_registry_get(const char *name);
int as_registry_count(void);
const as_attention_entry *as_registry_at(int i); /* sorted by name */
/* Frees every entry (for tests and shutdown). */
void as_registry_clear(void);

#endif
