/* Views, copies and conversions of the tensor core. */
#include "as_test.h"
#include "attnswap/dtype.h"

static void test_views(void)
{
    as_tensor *t = as_test_random(3, (int64_t[]){2, 3, 4});
    as_tensor *tr = as_transpose(t, 0, 2); /* (4, 3, 2) */
    CHECK(tr && tr->shape[0] == 4 && tr->shape[2] == 2 && !as_is_contiguous(tr));
    CHECK(as_get_flat(tr, 1) == as_get_flat(t, 12)); /* tr[0,0,1] == t[1,0,0] */
    as_tensor *c = as_contiguous(tr);
    CHECK(c && as_is_contiguous(c) && as_test_maxdiff(c, tr) == 0);
    as_tensor *v = as_view(tr, 1, (int64_t[]){24});
    CHECK(v == NULL); /* not expressible without a copy */
    as_tensor *r = as_reshape(tr, 2, (int64_t[]){-1, 6});
    CHECK(r && r->shape[0] == 4 && as_get_flat(r, 1) == as_get_flat(t, 12));
    as_tensor *n = as_narrow(t, 2, 1, 2);
    CHECK(n && n->shape[2] == 2 && as_get_flat(n, 0) == as_get_flat(t, 1));
    CHECK(as_narrow(t, 2, 3, 2) == NULL);
    as_tensor *s = as_select(t, 1, -1);
    CHECK(s && s->ndim == 2 && as_get_flat(s, 0) == as_get_flat(t, 8));
    as_tensor *u = as_unsqueeze(t, 1);
    CHECK(u && u->ndim == 4 && u->shape[1] == 1);
    as_tensor *q = as_squeeze(u, INT32_MIN);
    CHECK(q && q->ndim == 3);
    as_tensor *row = as_select(t, 0, 0);
    as_tensor *e = as_expand(row, 3, (int64_t[]){5, 3, 4});
    as_release(row);
    CHECK(e && e->stride[0] == 0 && as_get_flat(e, 12 * 4 + 5) == as_get_flat(t, 5));
    as_tensor *p = as_permute(t, (int[]){2, 0, 1});
    CHECK(p && p->shape[0] == 4 && as_get_flat(p, 1) == as_get_flat(t, 4));
    as_tensor *empty = as_empty(2, (int64_t[]){0, 3}, AS_F32, AS_CPU);
    CHECK(empty && as_numel(empty) == 0);
    as_tensor *ev = as_view(empty, 2, (int64_t[]){3, 0});
    CHECK(ev != NULL);
    as_release(t), as_release(tr), as_release(c), as_release(r), as_release(n), as_release(s);
    as_release(u), as_release(q), as_release(e), as_release(p), as_release(empty), as_release(ev);
}

static void test_convert(void)
{
    /* round-to-nearest-even, NaN and overflow */
    CHECK(as_f32_to_bf16(1.0f) == 0x3f80);
    CHECK(as_f32_to_bf16(1.00390625f) == 0x3f80); /* halfway, rounds to even */
    CHECK(as_f32_to_bf16(1.01171875f) == 0x3f82); /* halfway, rounds up to even */
    CHECK(as_f32_to_f16(1.0f) == 0x3c00);
    CHECK(as_f32_to_f16(65504.0f) == 0x7bff);
    CHECK(as_f32_to_f16(65520.0f) == 0x7c00);
    CHECK(as_f32_to_f16(1.0f + 0x1p-11f) == 0x3c00); /* halfway, even */
    CHECK(as_f32_to_f16(0x1p-24f) == 0x0001);
    CHECK(isnan(as_f16_to_f32(as_f32_to_f16(NAN))));
    for (int i = 0; i < 65536; i++) {
        uint16_t h = (uint16_t)i;
        float f = as_f16_to_f32(h);
        if (!isnan(f)) CHECK(as_f32_to_f16(f) == h);
    }
    as_tensor *t = as_test_random(2, (int64_t[]){7, 5});
    as_tensor *h = as_to_dtype(t, AS_BF16);
    as_tensor *back = as_to_dtype(h, AS_F32);
    CHECK(back && as_test_maxdiff(back, t) < 1.0 / 128);
    as_release(t), as_release(h), as_release(back);
}

/* Freed blocks of 32 MiB and up are kept for reuse by the same size.  Once
 * the cache is full of other sizes (work done before), a new size must still
 * be kept, displacing the oldest, and not fault in afresh on every call. */
static void test_big_block_reuse(void)
{
    const size_t mib = (size_t)1 << 20;
    for (size_t i = 0; i < 10; i++) { /* more distinct sizes than the cache has slots */
        as_storage *s = as_storage_new((40 + i) * mib, AS_CPU);
        CHECK(s != NULL);
        if (s) as_storage_release(s);
    }
    as_storage *a = as_storage_new(77 * mib, AS_CPU);
    CHECK(a != NULL);
    if (!a) return;
    void *p = a->data;
    ((volatile char *)p)[0] = 1;
    as_storage_release(a);
    /* the same MiB-rounded block, with the mark still in it (a fresh mapping
     * could land at the same address, but the system gives it zeroed) */
    as_storage *b = as_storage_new(77 * mib - 100, AS_CPU);
    CHECK(b && b->data == p && ((volatile char *)b->data)[0] == 1);
    as_storage *c = as_storage_new(77 * mib, AS_CPU); /* taken: a new block */
    CHECK(c && c->data != p);
    if (b) as_storage_release(b);
    if (c) as_storage_release(c);
    size_t live, peak;
    as_cpu_memory_stats(&live, &peak);
    CHECK(live == 0);
}

int main(void)
{
    test_views();
    test_big_block_reuse();
    test_convert();
    return as_test_report("test_tensor");
}
