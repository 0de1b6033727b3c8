/* The tokenizer pipeline, in HF `tokenizers`' order:
 *   encode: added tokens that are not normalized split off the raw text ->
 *           each other piece normalized -> normalized added tokens split off
 *           -> pre-tokenizers -> model -> post-processor (add_special)
 *   decode: ids -> tokens (added ones first) -> decoders -> one string */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attnswap/error.h"
#include "tokenizer_internal.h"

/* ---- added tokens: leftmost-longest match, then lstrip/rstrip/single_word ---- */
static int is_word_char(uint32_t c) { return c == '_' || (c < 0x80 ? ((c | 32) >= 'a' && (c | 32) <= 'z') || (c >= '0' && c <= '9') : !tk_is_whitespace(c) && !tk_is_punctuation(c)); }

static const tk_added *match_at(const as_tokenizer *tok, const char *s, size_t n, size_t p, int normalized)
{
    const tk_added *best = NULL;
    for (size_t i = 0; i < tok->n_added; i++) {
        const tk_added *a = &tok->added[i];
        if (a->normalized != normalized || a->mn == 0 || a->mn > n - p) continue;
        if (s[p] != a->m[0] || memcmp(s + p, a->m, a->mn) != 0) continue;
        if (!best || a->mn > best->mn) best = a;
    }
    return best;
}

/* Splits piece (s, n) on the added tokens of one kind, appending to out. */
static int split_added(const as_tokenizer *tok, const tk_piece *pc, int normalized, tk_pieces *out)
{
    const char *s = pc->s;
    size_t n = pc->n, start = 0, p = 0;
    uint8_t firsts[256] = {0};
    for (size_t i = 0; i < tok->n_added; i++)
        if (tok->added[i].normalized == normalized && tok->added[i].mn) firsts[(uint8_t)tok->added[i].m[0]] = 1;
    while (p < n) {
        const tk_added *a = firsts[(uint8_t)s[p]] ? match_at(tok, s, n, p, normalized) : NULL;
        if (!a) {
            p++;
            continue;
        }
        size_t b = p, e = p + a->mn;
        if (a->single_word) {
            uint32_t c;
            int before = 0, after = 0;
            if (b > 0) {
                size_t q = b - 1;
                while (q > 0 && ((uint8_t)s[q] & 0xC0) == 0x80) q--;
                tk_utf8_next(s + q, n - q, &c);
                before = is_word_char(c);
            }
            if (e < n) tk_utf8_next(s + e, n - e, &c), after = is_word_char(c);
            if (before || after) {
                p++;
                continue;
            }
        }
        if (a->lstrip) {
            while (b > start) {
                size_t q = b - 1;
                while (q > start && ((uint8_t)s[q] & 0xC0) == 0x80) q--;
                uint32_t c;
                tk_utf8_next(s + q, n - q, &c);
                if (!tk_is_whitespace(c)) break;
                b = q;
            }
        }
        if (a->rstrip) {
            while (e < n) {
                uint32_t c;
                int k = tk_utf8_next(s + e, n - e, &c);
                if (!tk_is_whitespace(c)) break;
                e += (size_t)k;
            }
        }
        if (start < b && tk_pieces_push(out, s + start, b - start, -1, pc->first && start == 0)) return -1;
        if (tk_pieces_push(out, s + b, e - b, a->id, 0)) return -1;
        start = p = e;
    }
    if (start < n) return tk_pieces_push(out, s + start, n - start, -1, pc->first && start == 0);
    return 0;
}

/* ---- normalizers ---- */
static int regex_replace(const pcre2_code *re, const char *rep, size_t repn, const char *s, size_t n, tk_buf *out)
{
    tk_spans sp = {0};
    if (tk_regex_spans(re, s, n, &sp) < 0) return free(sp.v), -1;
    int rc = 0;
    for (size_t i = 0; i < sp.n && !rc; i++)
        rc = sp.v[i].match ? tk_buf_put(out, rep, repn) : tk_buf_put(out, s + sp.v[i].start, sp.v[i].end - sp.v[i].start);
    free(sp.v);
    return rc;
}

static int bert_normalize(const tk_step *st, const char *s, size_t n, tk_buf *out)
{
    tk_buf a = {0}, b = {0};
    int rc = -1;
    for (size_t i = 0; i < n;) {
        uint32_t c;
        i += (size_t)tk_utf8_next(s + i, n - i, &c);
        if (st->a && (c == 0 || c == 0xFFFD || tk_is_control(c))) continue;
        if (st->a && tk_is_whitespace(c)) c = ' ';
        if (st->b && tk_is_cjk(c)) {
            if (tk_buf_putc(&a, ' ') || tk_buf_putc(&a, c) || tk_buf_putc(&a, ' ')) goto done;
        } else if (tk_buf_putc(&a, c)) {
            goto done;
        }
    }
    if (!a.p && tk_buf_put(&a, "", 0)) goto done;
    if (st->c) {
        if (tk_unicode_normalize(&b, a.p, a.n, 'D')) goto done;
        a.n = 0;
        for (size_t i = 0; i < b.n;) {
            uint32_t c;
            i += (size_t)tk_utf8_next(b.p + i, b.n - i, &c);
            if (!tk_is_mark(c, 1) && tk_buf_putc(&a, c)) goto done;
        }
    }
    rc = st->d ? tk_lowercase(out, a.p, a.n) : tk_buf_put(out, a.p, a.n);
done:
    free(a.p);
    free(b.p);
    return rc;
}

static int normalize_step(const tk_step *st, const char *s, size_t n, tk_buf *out)
{
    switch (st->kind) {
    case TK_N_NFC: return tk_unicode_normalize(out, s, n, 'C');
    case TK_N_NFD: return tk_unicode_normalize(out, s, n, 'D');
    case TK_N_NFKC: return tk_unicode_normalize(out, s, n, 'c');
    case TK_N_NFKD: return tk_unicode_normalize(out, s, n, 'd');
    case TK_N_LOWERCASE: return tk_lowercase(out, s, n);
    case TK_N_PREPEND:
        if (n && tk_buf_put(out, st->s1, st->n1)) return -1;
        return tk_buf_put(out, s, n);
    case TK_N_REPLACE: return regex_replace(st->re, st->s2, st->n2, s, n, out);
    case TK_N_BERT: return bert_normalize(st, s, n, out);
    case TK_N_STRIP_ACCENTS:
        for (size_t i = 0; i < n;) {
            uint32_t c;
            int k = tk_utf8_next(s + i, n - i, &c);
            if (!tk_is_mark(c, 0) && tk_buf_put(out, s + i, (size_t)k)) return -1;
            i += (size_t)k;
        }
        return tk_buf_put(out, "", 0);
    case TK_N_STRIP: {
        size_t b = 0, e = n;
        uint32_t c;
        while (st->a && b < e) {
            int k = tk_utf8_next(s + b, e - b, &c);
            if (!tk_is_whitespace(c)) break;
            b += (size_t)k;
        }
        while (st->b && e > b) {
            size_t q = e - 1;
            while (q > b && ((uint8_t)s[q] & 0xC0) == 0x80) q--;
            tk_utf8_next(s + q, e - q, &c);
            if (!tk_is_whitespace(c)) break;
            e = q;
        }
        return tk_buf_put(out, s + b, e - b);
    }
    }
    AS_ASSERT(0);
    return -1;
}

int tk_normalize(const as_tokenizer *tok, const char *s, size_t n, tk_buf *out)
{
    tk_buf cur = {0}, next = {0};
    if (tk_buf_put(&cur, s, n)) return -1;
    for (size_t i = 0; i < tok->n_norm; i++) {
        next.n = 0;
        if (normalize_step(&tok->norm[i], cur.p, cur.n, &next)) {
            free(cur.p), free(next.p);
            return -1;
        }
        tk_buf t = cur;
        cur = next, next = t;
    }
    free(next.p);
    *out = cur;
    return 0;
}

int tk_prepare_added(as_tokenizer *tok)
{
    for (size_t i = 0; i < tok->n_added; i++) {
        tk_added *a = &tok->added[i];
        tk_buf b = {0};
        if (a->normalized ? tk_normalize(tok, a->s, a->n, &b) : tk_buf_put(&b, a->s, a->n)) return free(b.p), -1;
        a->m = b.p, a->mn = b.n;
    }
    return 0;
}

/* ---- pre-tokenizers ---- */
/* Each char for which pred holds is a match of its own (HF's Pattern for a
 * char predicate); ch >= 0 matches that char instead. */
static int char_spans(const char *s, size_t n, int (*pred)(uint32_t), int64_t ch, tk_spans *out)
{
    out->n = 0;
    size_t last = 0;
    for (size_t i = 0; i < n;) {
        uint32_t c;
        size_t k = (size_t)tk_utf8_next(s + i, n - i, &c);
        if (pred ? pred(c) : (int64_t)c == ch) {
            if (last < i && tk_spans_push(out, last, i, 0)) return -1;
            if (tk_spans_push(out, i, i + k, 1)) return -1;
            last = i + k;
        }
        i += k;
    }
    if (last < n && tk_spans_push(out, last, n, 0)) return -1;
    return 0;
}

/* NormalizedString::split: the spans under a behaviour, as kept ranges
 * (start, end) written over sp (match = 0 keeps, 1 drops). */
static void apply_behavior(tk_spans *sp, int behavior)
{
    size_t k = 0;
    int prev = 0;
    switch (behavior) {
    case TK_ISOLATED:
        for (size_t i = 0; i < sp->n; i++) sp->v[i].match = 0;
        return;
    case TK_REMOVED: return;
    case TK_CONTIGUOUS:
    case TK_MERGED_PREV:
        for (size_t i = 0; i < sp->n; i++) {
            tk_span s = sp->v[i];
            int join = behavior == TK_CONTIGUOUS ? s.match == prev : s.match && !prev;
            if (join && k) sp->v[k - 1].end = s.end;
            else sp->v[k++] = (tk_span){s.start, s.end, 0};
            prev = s.match;
        }
        sp->n = k;
        return;
    case TK_MERGED_NEXT: /* from the right: a match joins the piece after it */
        k = sp->n;
        for (size_t i = sp->n; i-- > 0;) {
            tk_span s = sp->v[i];
            if (s.match && !prev && k < sp->n) sp->v[k].start = s.start;
            else sp->v[--k] = (tk_span){s.start, s.end, 0};
            prev = s.match;
        }
        memmove(sp->v, sp->v + k, (sp->n - k) * sizeof *sp->v);
        sp->n -= k;
        return;
    }
}

/* Appends the kept, non-empty ranges of (s, n) as pieces. */
static int emit(tk_pieces *out, const char *s, const tk_spans *sp, int first, int bytelevel)
{
    for (size_t i = 0; i < sp->n; i++) {
        const tk_span *x = &sp->v[i];
        if (x->match || x->end == x->start) continue;
        if (!bytelevel) {
            if (tk_pieces_push(out, s + x->start, x->end - x->start, -1, first && x->start == 0)) return -1;
            continue;
        }
        tk_buf b = {0};
        for (size_t j = x->start; j < x->end; j++) {
            char u[2];
            if (tk_buf_put(&b, u, (size_t)tk_byte_char((uint8_t)s[j], u))) return free(b.p), -1;
        }
        if (tk_pieces_take(out, &b, -1, first && x->start == 0)) return free(b.p), -1;
    }
    return 0;
}

static int pre_step(const tk_step *st, const tk_piece *pc, tk_pieces *out, tk_spans *sp)
{
    const char *s = pc->s;
    size_t n = pc->n;
    tk_buf b = {0};
    int rc = -1;
    switch (st->kind) {
    case TK_P_BYTELEVEL:
        if (st->a && (n == 0 || s[0] != ' ')) {
            if (tk_buf_put(&b, " ", 1) || tk_buf_put(&b, s, n)) goto done;
            s = b.p, n = b.n;
        }
        if (st->re) {
            if (tk_regex_spans(st->re, s, n, sp) < 0) goto done;
            apply_behavior(sp, TK_ISOLATED);
        } else {
            sp->n = 0;
            if (tk_spans_push(sp, 0, n, 0)) goto done;
        }
        rc = emit(out, s, sp, pc->first, 1);
        break;
    case TK_P_SPLIT:
    case TK_P_WHITESPACE:
        if (tk_regex_spans(st->re, s, n, sp) < 0) goto done;
        if (st->kind == TK_P_WHITESPACE || st->b)
            for (size_t i = 0; i < sp->n; i++) sp->v[i].match = !sp->v[i].match;
        apply_behavior(sp, st->kind == TK_P_WHITESPACE ? TK_REMOVED : st->a);
        rc = emit(out, s, sp, pc->first, 0);
        break;
    case TK_P_METASPACE: {
        for (size_t i = 0; i < n; i++)
            if (s[i] == ' ' ? tk_buf_put(&b, st->s1, st->n1) : tk_buf_put(&b, s + i, 1)) goto done;
        if (!b.p && tk_buf_put(&b, "", 0)) goto done;
        int starts = b.n >= st->n1 && memcmp(b.p, st->s1, st->n1) == 0;
        if (!starts && (st->a == TK_PREPEND_ALWAYS || (st->a == TK_PREPEND_FIRST && pc->first))) {
            tk_buf c = {0};
            if (tk_buf_put(&c, st->s1, st->n1) || tk_buf_put(&c, b.p, b.n)) {
                free(c.p);
                goto done;
            }
            free(b.p);
            b = c;
        }
        if (st->b) {
            uint32_t rep;
            tk_utf8_next(st->s1, st->n1, &rep);
            if (char_spans(b.p, b.n, NULL, rep, sp)) goto done;
            apply_behavior(sp, TK_MERGED_NEXT);
        } else {
            sp->n = 0;
            if (tk_spans_push(sp, 0, b.n, 0)) goto done;
        }
        rc = emit(out, b.p, sp, pc->first, 0);
        break;
    }
    case TK_P_BERT: {
        tk_pieces words = {0};
        if (char_spans(s, n, tk_is_whitespace, -1, sp) || emit(&words, s, sp, pc->first, 0)) {
            tk_pieces_free(&words);
            goto done;
        }
        rc = 0;
        for (size_t i = 0; i < words.n && !rc; i++) {
            rc = char_spans(words.v[i].s, words.v[i].n, tk_is_punctuation, -1, sp);
            if (!rc) apply_behavior(sp, TK_ISOLATED), rc = emit(out, words.v[i].s, sp, words.v[i].first, 0);
        }
        tk_pieces_free(&words);
        break;
    }
    case TK_P_WHITESPACE_SPLIT:
        if (char_spans(s, n, tk_is_whitespace, -1, sp)) goto done;
        rc = emit(out, s, sp, pc->first, 0);
        break;
    case TK_P_DIGITS:
        if (char_spans(s, n, tk_is_numeric, -1, sp)) goto done;
        apply_behavior(sp, st->a ? TK_ISOLATED : TK_CONTIGUOUS);
        rc = emit(out, s, sp, pc->first, 0);
        break;
    case TK_P_PUNCTUATION:
        if (char_spans(s, n, tk_is_punctuation, -1, sp)) goto done;
        apply_behavior(sp, st->a);
        rc = emit(out, s, sp, pc->first, 0);
        break;
    default: AS_ASSERT(0);
    }
done:
    free(b.p);
    return rc;
}

int tk_pre_tokenize(const as_tokenizer *tok, tk_pieces *ps)
{
    tk_spans sp = {0};
    for (size_t k = 0; k < tok->n_pre; k++) {
        tk_pieces next = {0};
        for (size_t i = 0; i < ps->n; i++) {
            const tk_piece *pc = &ps->v[i];
            int rc = pc->id >= 0 ? tk_pieces_push(&next, pc->s, pc->n, pc->id, 0) : pre_step(&tok->pre[k], pc, &next, &sp);
            if (rc) {
                tk_pieces_free(&next);
                free(sp.v);
                return -1;
            }
        }
        tk_pieces_free(ps);
        *ps = next;
    }
    free(sp.v);
    return 0;
}

/* ---- encode ---- */
static int post_process(const as_tokenizer *tok, tk_ids *ids)
{
    for (size_t k = 0; k < tok->n_post; k++) {
        const tk_step *st = &tok->post[k];
        tk_ids out = {0};
        for (size_t i = 0; i < st->nids; i++) {
            if (st->ids[i] != TK_TEMPLATE_SEQ) {
                if (tk_ids_push(&out, st->ids[i])) return free(out.v), -1;
                continue;
            }
            for (size_t j = 0; j < ids->n; j++)
                if (tk_ids_push(&out, ids->v[j])) return free(out.v), -1;
        }
        free(ids->v);
        *ids = out;
    }
    return 0;
}

int as_tokenizer_encode(const as_tokenizer *tok, const char *text, size_t len, int add_special, int32_t **ids_out,
                        size_t *n_out)
{
    size_t bad = tk_utf8_check(text, len);
    if (bad != len) {
        as_error_set("tokenizer.encode: the text is not valid UTF-8 (byte %zu, 0x%02X)", bad, (uint8_t)text[bad]);
        return -1;
    }
    tk_pieces a = {0}, b = {0};
    tk_ids ids = {0};
    tk_buf norm = {0};
    tk_piece whole = {(char *)text, len, -1, 1};
    if (split_added(tok, &whole, 0, &a)) goto fail;
    for (size_t i = 0; i < a.n; i++) {
        if (a.v[i].id >= 0) {
            if (tk_pieces_push(&b, a.v[i].s, a.v[i].n, a.v[i].id, 0)) goto fail;
            continue;
        }
        if (tk_normalize(tok, a.v[i].s, a.v[i].n, &norm)) goto fail;
        tk_piece pc = {norm.p, norm.n, -1, a.v[i].first};
        int rc = split_added(tok, &pc, 1, &b);
        free(norm.p);
        norm = (tk_buf){0};
        if (rc) goto fail;
    }
    tk_pieces_free(&a);
    if (tk_pre_tokenize(tok, &b)) goto fail;
    for (size_t i = 0; i < b.n; i++) {
        const tk_piece *pc = &b.v[i];
        int rc = pc->id >= 0 ? tk_ids_push(&ids, pc->id)
                 : tok->model == TK_MODEL_BPE ? tk_bpe_tokenize(tok, pc->s, pc->n, &ids)
                                              : tk_wordpiece_tokenize(tok, pc->s, pc->n, &ids);
        if (rc) goto fail;
    }
    tk_pieces_free(&b);
    if (add_special && post_process(tok, &ids)) goto fail;
    if (!ids.v && !(ids.v = malloc(sizeof *ids.v))) {
        tk_oom("tokenizer.encode");
        goto fail;
    }
    *ids_out = ids.v;
    *n_out = ids.n;
    return 0;
fail:
    tk_pieces_free(&a);
    tk_pieces_free(&b);
    free(ids.v);
    free(norm.p);
    return -1;
}

/* ---- decode ---- */
static int decode_step(const tk_step *st, tk_pieces *ts)
{
    tk_pieces out = {0};
    tk_buf b = {0};
    switch (st->kind) {
    case TK_D_BYTELEVEL: {
        tk_buf raw = {0};
        for (size_t i = 0; i < ts->n; i++) {
            size_t mark = raw.n;
            const char *s = ts->v[i].s;
            size_t n = ts->v[i].n;
            int ok = 1;
            for (size_t j = 0; j < n && ok;) {
                uint32_t c;
                j += (size_t)tk_utf8_next(s + j, n - j, &c);
                int byte = tk_char_byte(c);
                if (byte < 0) ok = 0;
                else if (tk_buf_put(&raw, &(uint8_t){(uint8_t)byte}, 1)) goto fail_raw;
            }
            if (!ok) {
                raw.n = mark;
                if (tk_buf_put(&raw, s, n)) goto fail_raw;
            }
        }
        if (tk_utf8_lossy(&b, raw.p, raw.n) || tk_pieces_take(&out, &b, -1, 0)) goto fail_raw;
        free(raw.p);
        break;
    fail_raw:
        free(raw.p);
        goto fail;
    }
    case TK_D_REPLACE:
        for (size_t i = 0; i < ts->n; i++)
            if (regex_replace(st->re, st->s2, st->n2, ts->v[i].s, ts->v[i].n, &b) || tk_pieces_take(&out, &b, -1, 0))
                goto fail;
        break;
    case TK_D_BYTEFALLBACK: {
        size_t nbytes = 0;
        for (size_t i = 0; i <= ts->n; i++) {
            const tk_piece *t = i < ts->n ? &ts->v[i] : NULL;
            unsigned v;
            char hex[3] = {0};
            int is_byte = t && t->n == 6 && memcmp(t->s, "<0x", 3) == 0 && t->s[5] == '>' &&
                          (memcpy(hex, t->s + 3, 2), sscanf(hex, "%2x", &v) == 1) && strspn(hex, "0123456789abcdefABCDEF") == 2;
            if (is_byte) {
                if (tk_buf_put(&b, &(uint8_t){(uint8_t)v}, 1)) goto fail;
                nbytes++;
                continue;
            }
            if (nbytes) {
                if (tk_utf8_check(b.p, b.n) != b.n) {
                    b.n = 0;
                    for (size_t k = 0; k < nbytes; k++)
                        if (tk_buf_put(&b, "\xEF\xBF\xBD", 3)) goto fail;
                }
                if (tk_pieces_take(&out, &b, -1, 0)) goto fail;
                nbytes = 0;
            }
            if (t && tk_pieces_push(&out, t->s, t->n, -1, 0)) goto fail;
        }
        break;
    }
    case TK_D_FUSE:
        for (size_t i = 0; i < ts->n; i++)
            if (tk_buf_put(&b, ts->v[i].s, ts->v[i].n)) goto fail;
        if (tk_pieces_take(&out, &b, -1, 0)) goto fail;
        break;
    case TK_D_STRIP:
        for (size_t i = 0; i < ts->n; i++) {
            const char *s = ts->v[i].s;
            size_t n = ts->v[i].n, lo = 0, hi = n;
            for (int k = 0; k < st->a && hi - lo >= st->n1 && memcmp(s + lo, st->s1, st->n1) == 0; k++) lo += st->n1;
            for (int k = 0; k < st->b && hi - lo >= st->n1 && memcmp(s + hi - st->n1, st->s1, st->n1) == 0; k++)
                hi -= st->n1;
            if (tk_pieces_push(&out, s + lo, hi - lo, -1, 0)) goto fail;
        }
        break;
    case TK_D_METASPACE:
        for (size_t i = 0; i < ts->n; i++) {
            const char *s = ts->v[i].s;
            size_t n = ts->v[i].n;
            for (size_t j = 0; j < n;) {
                if (n - j >= st->n1 && memcmp(s + j, st->s1, st->n1) == 0) {
                    if (!(i == 0 && st->a != TK_PREPEND_NEVER) && tk_buf_put(&b, " ", 1)) goto fail;
                    j += st->n1;
                } else {
                    if (tk_buf_put(&b, s + j, 1)) goto fail;
                    j++;
                }
            }
            if (tk_pieces_take(&out, &b, -1, 0)) goto fail;
        }
        break;
    case TK_D_WORDPIECE: {
        static const char *const from[] = {" .", " ?", " !", " ,", " ' ", " n't", " 'm", " do not", " 's", " 've", " 're"};
        static const char *const to[] = {".", "?", "!", ",", "'", "n't", "'m", " don't", "'s", "'ve", "'re"};
        for (size_t i = 0; i < ts->n; i++) {
            const char *s = ts->v[i].s;
            size_t n = ts->v[i].n;
            if (i != 0) {
                if (n >= st->n1 && memcmp(s, st->s1, st->n1) == 0) s += st->n1, n -= st->n1;
                else if (tk_buf_put(&b, " ", 1)) goto fail;
            }
            if (tk_buf_put(&b, s, n)) goto fail;
            for (int r = 0; st->a && r < 11; r++) { /* cleanup: str::replace, one pattern after another */
                size_t fl = strlen(from[r]), tl = strlen(to[r]);
                tk_buf c = {0};
                for (size_t j = 0; j < b.n;) {
                    if (b.n - j >= fl && memcmp(b.p + j, from[r], fl) == 0) {
                        if (tk_buf_put(&c, to[r], tl)) return free(c.p), free(b.p), tk_pieces_free(&out), -1;
                        j += fl;
                    } else {
                        if (tk_buf_put(&c, b.p + j, 1)) return free(c.p), free(b.p), tk_pieces_free(&out), -1;
                        j++;
                    }
                }
                if (!c.p && tk_buf_put(&c, "", 0)) return free(b.p), tk_pieces_free(&out), -1;
                free(b.p);
                b = c;
            }
            if (tk_pieces_take(&out, &b, -1, 0)) goto fail;
        }
        break;
    }
    default: AS_ASSERT(0);
    }
    tk_pieces_free(ts);
    *ts = out;
    return 0;
fail:
    free(b.p);
    tk_pieces_free(&out);
    return -1;
}

char *as_tokenizer_decode(const as_tokenizer *tok, const int32_t *ids, size_t n, int skip_special, size_t *len)
{
    tk_pieces ts = {0};
    tk_buf out = {0};
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= tok->n_ids || !tok->id_tok[id]) {
            as_error_set("tokenizer.decode: id %d (at position %zu) is not in the vocabulary (ids 0..%d)", (int)id, i + 1,
                         (int)tok->n_ids - 1);
            goto fail;
        }
        if (skip_special && tok->id_special[id]) continue;
        if (tk_pieces_push(&ts, tok->id_tok[id], tok->id_len[id], -1, 0)) goto fail;
    }
    for (size_t k = 0; k < tok->n_dec; k++)
        if (decode_step(&tok->dec[k], &ts)) goto fail;
    for (size_t i = 0; i < ts.n; i++)
        if ((tok->n_dec == 0 && i && tk_buf_put(&out, " ", 1)) || tk_buf_put(&out, ts.v[i].s, ts.v[i].n)) goto fail;
    if (!out.p && tk_buf_put(&out, "", 0)) goto fail;
    tk_pieces_free(&ts);
    if (len) *len = out.n;
    return out.p;
fail:
    tk_pieces_free(&ts);
    free(out.p);
    return NULL;
}

/* ---- lookups ---- */
int32_t as_tokenizer_token_to_id(const as_tokenizer *tok, const char *token, size_t len)
{
    for (size_t i = 0; i < tok->n_added; i++)
        if (tok->added[i].n == len && memcmp(tok->added[i].s, token, len) == 0) return tok->added[i].id;
    return tk_map_get(&tok->vocab, token, len);
}

const char *as_tokenizer_id_to_token(const as_tokenizer *tok, int32_t id, size_t *len)
{
    if (id < 0 || id >= tok->n_ids || !tok->id_tok[id]) return NULL;
    if (len) *len = tok->id_len[id];
    return tok->id_tok[id];
}

int64_t as_tokenizer_vocab_size(const as_tokenizer *tok) { return tok->vocab_size; }

int as_tokenizer_is_special(const as_tokenizer *tok, int32_t id)
{
    return id >= 0 && id < tok->n_ids && tok->id_special[id];
}

char *as_tokenizer_describe(const as_tokenizer *tok, char *buf, size_t size)
{
    int k = snprintf(buf, size, "Tokenizer(%s, vocab_size=%lld, added=%zu",
                     tok->model == TK_MODEL_BPE ? (tok->byte_level ? "byte-level BPE" : "BPE") : "WordPiece",
                     (long long)tok->vocab_size, tok->n_added);
    if (tok->byte_fallback && k > 0 && (size_t)k < size) k += snprintf(buf + k, size - (size_t)k, ", byte_fallback");
    if (k > 0 && (size_t)k < size) snprintf(buf + k, size - (size_t)k, ")");
    return buf;
}
