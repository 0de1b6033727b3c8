/* Reading a tokenizer.json (HF `tokenizers`, "version": "1.0") into an
 * as_tokenizer.  What is not supported is refused by name with the list of
 * what is, never half-read; every message starts "tokenizer: <file>: ". */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attnswap/error.h"
#include "tokenizer_internal.h"

#define MAX_DEPTH 16

/* The GPT-2 pre-tokenizer regex of HF's ByteLevel (use_regex = true). */
static const char GPT2_PATTERN[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char WHITESPACE_PATTERN[] = "\\w+|[^\\w\\s]+";

typedef struct { as_tokenizer *tok; const char *name; } ctx;

static int fail(const ctx *c, const char *what)
{
    as_error_set("tokenizer: %s: %s", c->name, what);
    return -1;
}

static const char *str_field(const cJSON *o, const char *key, const char *def)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : def;
}

static int bool_field(const cJSON *o, const char *key, int def)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : def;
}

/* Strings the pipeline inserts into text must be valid UTF-8 (the regexes
 * run without re-checking it). */
static char *dup(const char *s, size_t *n);

static char *dup_utf8(const ctx *c, const char *s, size_t *n, const char *what)
{
    if (tk_utf8_check(s, strlen(s)) != strlen(s)) {
        as_error_set("tokenizer: %s: %s is not valid UTF-8", c->name, what);
        return NULL;
    }
    return dup(s, n);
}

static char *dup(const char *s, size_t *n)
{
    size_t len = strlen(s);
    char *d = malloc(len + 1);
    if (!d) return tk_oom("tokenizer");
    memcpy(d, s, len + 1);
    if (n) *n = len;
    return d;
}

void tk_step_free(tk_step *s)
{
    free(s->s1);
    free(s->s2);
    free(s->ids);
    if (s->re) pcre2_code_free(s->re);
}

static tk_step *add_step(tk_step **v, size_t *n, int kind)
{
    tk_step *q = realloc(*v, (*n + 1) * sizeof *q);
    if (!q) return tk_oom("tokenizer");
    *v = q;
    q[*n] = (tk_step){.kind = kind};
    return &q[(*n)++];
}

/* {"String": s} or {"Regex": s} into step->re (a String is matched literally). */
static int read_pattern(const ctx *c, const cJSON *o, tk_step *s, const char *what)
{
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "pattern");
    const char *lit = str_field(p, "String", NULL), *rx = str_field(p, "Regex", NULL);
    if (!lit && !rx) {
        as_error_set("tokenizer: %s: %s has no pattern {\"String\": ...} or {\"Regex\": ...}", c->name, what);
        return -1;
    }
    const char *pat = lit ? lit : rx;
    if (!(s->s1 = dup_utf8(c, pat, &s->n1, "a pattern"))) return -1;
    s->re = tk_regex_compile(pat, strlen(pat), lit != NULL, "tokenizer", c->name);
    return s->re ? 0 : -1;
}

static int read_behavior(const ctx *c, const char *b, int *out)
{
    static const char *names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"};
    for (int i = 0; i < 5; i++)
        if (strcmp(b, names[i]) == 0) return *out = i, 0;
    as_error_set("tokenizer: %s: split behavior '%s' is unknown (Removed, Isolated, MergedWithPrevious, "
                 "MergedWithNext, Contiguous)", c->name, b);
    return -1;
}

/* Metaspace's replacement char and prepend scheme (older files: add_prefix_space). */
static int read_metaspace(const ctx *c, const cJSON *o, tk_step *s)
{
    if (!(s->s1 = dup_utf8(c, str_field(o, "replacement", "\xE2\x96\x81"), &s->n1, "the Metaspace replacement"))) return -1;
    if (!s->n1) return fail(c, "the Metaspace replacement is empty");
    const char *scheme = str_field(o, "prepend_scheme", NULL);
    if (!scheme) s->a = bool_field(o, "add_prefix_space", 1) ? TK_PREPEND_ALWAYS : TK_PREPEND_NEVER;
    else if (strcmp(scheme, "always") == 0) s->a = TK_PREPEND_ALWAYS;
    else if (strcmp(scheme, "first") == 0) s->a = TK_PREPEND_FIRST;
    else if (strcmp(scheme, "never") == 0) s->a = TK_PREPEND_NEVER;
    else return fail(c, "Metaspace prepend_scheme must be always, first or never");
    s->b = bool_field(o, "split", 1);
    return 0;
}

static int unsupported(const ctx *c, const char *stage, const char *type, const char *known)
{
    as_error_set("tokenizer: %s: %s '%s' is not supported (supported: %s)", c->name, stage, type ? type : "?", known);
    return -1;
}

static int read_normalizer(const ctx *c, const cJSON *o, int depth)
{
    as_tokenizer *tok = c->tok;
    if (!o || cJSON_IsNull(o)) return 0;
    if (depth > MAX_DEPTH) return fail(c, "normalizers nested too deep");
    const char *t = str_field(o, "type", NULL);
    static const char known[] = "NFC, NFD, NFKC, NFKD, Lowercase, Strip, StripAccents, Replace, Prepend, "
                                "BertNormalizer, Sequence";
    if (!t) return unsupported(c, "normalizer", NULL, known);
    if (strcmp(t, "Sequence") == 0) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, "normalizers"), *e;
        if (!cJSON_IsArray(a)) return fail(c, "normalizer Sequence has no normalizers list");
        cJSON_ArrayForEach(e, a) if (read_normalizer(c, e, depth + 1)) return -1;
        return 0;
    }
    static const struct { const char *name; int kind; } simple[] = {
        {"NFC", TK_N_NFC}, {"NFD", TK_N_NFD}, {"NFKC", TK_N_NFKC}, {"NFKD", TK_N_NFKD},
        {"Lowercase", TK_N_LOWERCASE}, {"StripAccents", TK_N_STRIP_ACCENTS}};
    for (size_t i = 0; i < sizeof simple / sizeof *simple; i++)
        if (strcmp(t, simple[i].name) == 0) return add_step(&tok->norm, &tok->n_norm, simple[i].kind) ? 0 : -1;
    tk_step *s;
    if (strcmp(t, "Strip") == 0) {
        if (!(s = add_step(&tok->norm, &tok->n_norm, TK_N_STRIP))) return -1;
        s->a = bool_field(o, "strip_left", 1), s->b = bool_field(o, "strip_right", 1);
    } else if (strcmp(t, "Replace") == 0) {
        if (!(s = add_step(&tok->norm, &tok->n_norm, TK_N_REPLACE))) return -1;
        if (read_pattern(c, o, s, "Replace normalizer")) return -1;
        if (!(s->s2 = dup_utf8(c, str_field(o, "content", ""), &s->n2, "a Replace content"))) return -1;
    } else if (strcmp(t, "Prepend") == 0) {
        if (!(s = add_step(&tok->norm, &tok->n_norm, TK_N_PREPEND))) return -1;
        if (!(s->s1 = dup_utf8(c, str_field(o, "prepend", ""), &s->n1, "a Prepend string"))) return -1;
    } else if (strcmp(t, "BertNormalizer") == 0) {
        if (!(s = add_step(&tok->norm, &tok->n_norm, TK_N_BERT))) return -1;
        s->a = bool_field(o, "clean_text", 1), s->b = bool_field(o, "handle_chinese_chars", 1);
        s->d = bool_field(o, "lowercase", 1), s->c = bool_field(o, "strip_accents", s->d);
    } else {
        return unsupported(c, "normalizer", t, known);
    }
    return 0;
}

static int read_pre(const ctx *c, const cJSON *o, int depth)
{
    as_tokenizer *tok = c->tok;
    if (!o || cJSON_IsNull(o)) return 0;
    if (depth > MAX_DEPTH) return fail(c, "pre-tokenizers nested too deep");
    const char *t = str_field(o, "type", NULL);
    static const char known[] = "ByteLevel, Split, Metaspace, BertPreTokenizer, Whitespace, WhitespaceSplit, "
                                "Digits, Punctuation, Sequence";
    if (!t) return unsupported(c, "pre-tokenizer", NULL, known);
    if (strcmp(t, "Sequence") == 0) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, "pretokenizers"), *e;
        if (!cJSON_IsArray(a)) return fail(c, "pre-tokenizer Sequence has no pretokenizers list");
        cJSON_ArrayForEach(e, a) if (read_pre(c, e, depth + 1)) return -1;
        return 0;
    }
    tk_step *s;
    if (strcmp(t, "ByteLevel") == 0) {
        if (!(s = add_step(&tok->pre, &tok->n_pre, TK_P_BYTELEVEL))) return -1;
        s->a = bool_field(o, "add_prefix_space", 1);
        if (bool_field(o, "use_regex", 1) &&
            !(s->re = tk_regex_compile(GPT2_PATTERN, sizeof GPT2_PATTERN - 1, 0, "tokenizer", c->name)))
            return -1;
        tok->byte_level = 1;
    } else if (strcmp(t, "Split") == 0) {
        if (!(s = add_step(&tok->pre, &tok->n_pre, TK_P_SPLIT))) return -1;
        if (read_pattern(c, o, s, "Split pre-tokenizer")) return -1;
        if (read_behavior(c, str_field(o, "behavior", "Isolated"), &s->a)) return -1;
        s->b = bool_field(o, "invert", 0);
    } else if (strcmp(t, "Metaspace") == 0) {
        if (!(s = add_step(&tok->pre, &tok->n_pre, TK_P_METASPACE))) return -1;
        if (read_metaspace(c, o, s)) return -1;
    } else if (strcmp(t, "BertPreTokenizer") == 0) {
        if (!add_step(&tok->pre, &tok->n_pre, TK_P_BERT)) return -1;
    } else if (strcmp(t, "Whitespace") == 0) {
        if (!(s = add_step(&tok->pre, &tok->n_pre, TK_P_WHITESPACE))) return -1;
        if (!(s->re = tk_regex_compile(WHITESPACE_PATTERN, sizeof WHITESPACE_PATTERN - 1, 0, "tokenizer", c->name)))
            return -1;
    } else if (strcmp(t, "WhitespaceSplit") == 0) {
        if (!add_step(&tok->pre, &tok->n_pre, TK_P_WHITESPACE_SPLIT)) return -1;
    } else if (strcmp(t, "Digits") == 0) {
        if (!(s = add_step(&tok->pre, &tok->n_pre, TK_P_DIGITS))) return -1;
        s->a = bool_field(o, "individual_digits", 0);
    } else if (strcmp(t, "Punctuation") == 0) {
        if (!(s = add_step(&tok->pre, &tok->n_pre, TK_P_PUNCTUATION))) return -1;
        if (read_behavior(c, str_field(o, "behavior", "Isolated"), &s->a)) return -1;
    } else {
        return unsupported(c, "pre-tokenizer", t, known);
    }
    return 0;
}

static int add_template_ids(const ctx *c, tk_step *s, const int32_t *ids, size_t n)
{
    int32_t *v = realloc(s->ids, (s->nids + n) * sizeof *v);
    if (!v) return tk_oom("tokenizer"), -1;
    memcpy(v + s->nids, ids, n * sizeof *v);
    s->ids = v;
    s->nids += n;
    return 0;
}

static int read_template(const ctx *c, const cJSON *o, tk_step *s)
{
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(o, "single"), *e;
    const cJSON *specials = cJSON_GetObjectItemCaseSensitive(o, "special_tokens");
    if (!cJSON_IsArray(single)) return fail(c, "TemplateProcessing has no 'single' template");
    cJSON_ArrayForEach(e, single) {
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(e, "SpecialToken");
        const cJSON *sq = cJSON_GetObjectItemCaseSensitive(e, "Sequence");
        if (sq) {
            int32_t seq = TK_TEMPLATE_SEQ;
            if (add_template_ids(c, s, &seq, 1)) return -1;
            continue;
        }
        const char *name = str_field(sp, "id", NULL);
        const cJSON *def = name ? cJSON_GetObjectItemCaseSensitive(specials, name) : NULL;
        const cJSON *ids = cJSON_GetObjectItemCaseSensitive(def, "ids"), *id;
        if (!cJSON_IsArray(ids)) {
            as_error_set("tokenizer: %s: TemplateProcessing names special token '%s' without ids in special_tokens",
                         c->name, name ? name : "?");
            return -1;
        }
        cJSON_ArrayForEach(id, ids) {
            double v = cJSON_IsNumber(id) ? id->valuedouble : -1;
            if (!(v >= 0 && v < TK_MAX_ID && v == (int32_t)v)) return fail(c, "TemplateProcessing has a bad special token id");
            int32_t i = (int32_t)v;
            if (add_template_ids(c, s, &i, 1)) return -1;
        }
    }
    return 0;
}

/* BertProcessing / RobertaProcessing: {"cls": ["[CLS]", 101], "sep": ["[SEP]", 102]}. */
static int read_cls_sep(const ctx *c, const cJSON *o, tk_step *s)
{
    int32_t ids[3] = {0, TK_TEMPLATE_SEQ, 0};
    const char *keys[2] = {"cls", "sep"};
    for (int k = 0; k < 2; k++) {
        const cJSON *pair = cJSON_GetObjectItemCaseSensitive(o, keys[k]);
        const cJSON *id = cJSON_GetArrayItem(pair, 1);
        double v = cJSON_IsNumber(id) ? id->valuedouble : -1;
        if (!(v >= 0 && v < TK_MAX_ID && v == (int32_t)v)) {
            as_error_set("tokenizer: %s: post-processor '%s' needs %s as [token, id]", c->name, str_field(o, "type", "?"),
                         keys[k]);
            return -1;
        }
        ids[k * 2] = (int32_t)v;
    }
    return add_template_ids(c, s, ids, 3);
}

static int read_post(const ctx *c, const cJSON *o, int depth)
{
    as_tokenizer *tok = c->tok;
    if (!o || cJSON_IsNull(o)) return 0;
    if (depth > MAX_DEPTH) return fail(c, "post-processors nested too deep");
    const char *t = str_field(o, "type", NULL);
    static const char known[] = "TemplateProcessing, BertProcessing, RobertaProcessing, ByteLevel, Sequence";
    if (!t) return unsupported(c, "post-processor", NULL, known);
    if (strcmp(t, "Sequence") == 0) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, "processors"), *e;
        if (!cJSON_IsArray(a)) return fail(c, "post-processor Sequence has no processors list");
        cJSON_ArrayForEach(e, a) if (read_post(c, e, depth + 1)) return -1;
        return 0;
    }
    if (strcmp(t, "ByteLevel") == 0) return 0; /* offsets only */
    tk_step *s;
    if (strcmp(t, "TemplateProcessing") == 0) {
        if (!(s = add_step(&tok->post, &tok->n_post, TK_PP_TEMPLATE))) return -1;
        return read_template(c, o, s);
    }
    if (strcmp(t, "BertProcessing") == 0 || strcmp(t, "RobertaProcessing") == 0) {
        if (!(s = add_step(&tok->post, &tok->n_post, TK_PP_TEMPLATE))) return -1;
        return read_cls_sep(c, o, s);
    }
    return unsupported(c, "post-processor", t, known);
}

static int read_decoder(const ctx *c, const cJSON *o, int depth)
{
    as_tokenizer *tok = c->tok;
    if (!o || cJSON_IsNull(o)) return 0;
    if (depth > MAX_DEPTH) return fail(c, "decoders nested too deep");
    const char *t = str_field(o, "type", NULL);
    static const char known[] = "ByteLevel, ByteFallback, Fuse, Replace, Strip, Metaspace, WordPiece, Sequence";
    if (!t) return unsupported(c, "decoder", NULL, known);
    if (strcmp(t, "Sequence") == 0) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, "decoders"), *e;
        if (!cJSON_IsArray(a)) return fail(c, "decoder Sequence has no decoders list");
        cJSON_ArrayForEach(e, a) if (read_decoder(c, e, depth + 1)) return -1;
        return 0;
    }
    tk_step *s;
    if (strcmp(t, "ByteLevel") == 0) return add_step(&tok->dec, &tok->n_dec, TK_D_BYTELEVEL) ? 0 : -1;
    if (strcmp(t, "ByteFallback") == 0) return add_step(&tok->dec, &tok->n_dec, TK_D_BYTEFALLBACK) ? 0 : -1;
    if (strcmp(t, "Fuse") == 0) return add_step(&tok->dec, &tok->n_dec, TK_D_FUSE) ? 0 : -1;
    if (strcmp(t, "Replace") == 0) {
        if (!(s = add_step(&tok->dec, &tok->n_dec, TK_D_REPLACE))) return -1;
        if (read_pattern(c, o, s, "Replace decoder")) return -1;
        return (s->s2 = dup_utf8(c, str_field(o, "content", ""), &s->n2, "a Replace content")) ? 0 : -1;
    }
    if (strcmp(t, "Strip") == 0) {
        if (!(s = add_step(&tok->dec, &tok->n_dec, TK_D_STRIP))) return -1;
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(o, "start"), *sp = cJSON_GetObjectItemCaseSensitive(o, "stop");
        s->a = cJSON_IsNumber(st) && st->valuedouble > 0 ? (int)(st->valuedouble < 1e6 ? st->valuedouble : 1e6) : 0;
        s->b = cJSON_IsNumber(sp) && sp->valuedouble > 0 ? (int)(sp->valuedouble < 1e6 ? sp->valuedouble : 1e6) : 0;
        return (s->s1 = dup_utf8(c, str_field(o, "content", " "), &s->n1, "a Strip content")) ? 0 : -1;
    }
    if (strcmp(t, "Metaspace") == 0) {
        if (!(s = add_step(&tok->dec, &tok->n_dec, TK_D_METASPACE))) return -1;
        return read_metaspace(c, o, s);
    }
    if (strcmp(t, "WordPiece") == 0) {
        if (!(s = add_step(&tok->dec, &tok->n_dec, TK_D_WORDPIECE))) return -1;
        s->a = bool_field(o, "cleanup", 1);
        return (s->s1 = dup_utf8(c, str_field(o, "prefix", "##"), &s->n1, "the WordPiece prefix")) ? 0 : -1;
    }
    return unsupported(c, "decoder", t, known);
}

static int read_id(const ctx *c, const cJSON *v, const char *what, const char *tokname, int32_t *id)
{
    double d = cJSON_IsNumber(v) ? v->valuedouble : -1;
    if (!(d >= 0 && d < TK_MAX_ID && d == (double)(int32_t)d)) {
        as_error_set("tokenizer: %s: %s '%.60s' has id %s (ids are integers in [0, %d))", c->name, what, tokname,
                     cJSON_IsNumber(v) ? "out of range" : "that is not a number", TK_MAX_ID);
        return -1;
    }
    *id = (int32_t)d;
    return 0;
}

static int read_vocab(const ctx *c, const cJSON *model)
{
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab"), *e;
    if (!cJSON_IsObject(vocab)) return fail(c, "model.vocab is not an object of token: id");
    cJSON_ArrayForEach(e, vocab) {
        int32_t id;
        if (read_id(c, e, "vocabulary token", e->string, &id)) return -1;
        if (tk_map_put(&c->tok->vocab, e->string, strlen(e->string), id)) return -1;
    }
    return 0;
}

static int read_merges(const ctx *c, const cJSON *model)
{
    as_tokenizer *tok = c->tok;
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges"), *e;
    if (!cJSON_IsArray(merges)) return fail(c, "model.merges is not a list");
    int32_t rank = 0;
    tk_buf joined = {0};
    cJSON_ArrayForEach(e, merges) {
        const char *a = NULL, *b = NULL;
        size_t an = 0, bn = 0;
        if (cJSON_IsString(e)) { /* "a b" (the older format) */
            const char *sp = strchr(e->valuestring, ' ');
            if (sp && !strchr(sp + 1, ' ')) a = e->valuestring, an = (size_t)(sp - a), b = sp + 1, bn = strlen(b);
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(e->child) &&
                   cJSON_IsString(e->child->next)) {
            a = e->child->valuestring, an = strlen(a), b = e->child->next->valuestring, bn = strlen(b);
        }
        if (!a) {
            char *text = cJSON_PrintUnformatted(e);
            as_error_set("tokenizer: %s: merge %d is %.60s; expected \"a b\" or [\"a\", \"b\"]", c->name, (int)rank,
                         text ? text : "malformed");
            free(text);
            goto fail;
        }
        int32_t ia = tk_map_get(&tok->vocab, a, an), ib = tk_map_get(&tok->vocab, b, bn);
        size_t skip = tok->prefix && tok->model == TK_MODEL_BPE ? tok->prefix_len : 0;
        if (skip > bn) skip = bn;
        joined.n = 0;
        if (tk_buf_put(&joined, a, an) || tk_buf_put(&joined, b + skip, bn - skip)) goto fail;
        int32_t id = tk_map_get(&tok->vocab, joined.p, joined.n);
        if (ia < 0 || ib < 0 || id < 0) {
            const char *miss = ia < 0 ? a : ib < 0 ? b : joined.p;
            int missn = (int)(ia < 0 ? an : ib < 0 ? bn : joined.n);
            as_error_set("tokenizer: %s: merge %d (%.*s %.*s): '%.*s' is not in the vocabulary", c->name, (int)rank,
                         (int)(an > 60 ? 60 : an), a, (int)(bn > 60 ? 60 : bn), b, missn > 60 ? 60 : missn, miss);
            goto fail;
        }
        if (tk_pair_put(&tok->merges, ia, ib, rank, id)) goto fail;
        rank++;
    }
    free(joined.p);
    return 0;
fail:
    free(joined.p);
    return -1;
}

static int read_added(const ctx *c, const cJSON *root)
{
    as_tokenizer *tok = c->tok;
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(root, "added_tokens"), *e;
    if (!list || cJSON_IsNull(list)) return 0;
    if (!cJSON_IsArray(list)) return fail(c, "added_tokens is not a list");
    int n = cJSON_GetArraySize(list);
    if (!(tok->added = calloc((size_t)n + 1, sizeof *tok->added))) return tk_oom("tokenizer"), -1;
    cJSON_ArrayForEach(e, list) {
        const char *content = str_field(e, "content", NULL);
        if (!content || !*content) return fail(c, "an added token has no content");
        tk_added *a = &tok->added[tok->n_added];
        if (read_id(c, cJSON_GetObjectItemCaseSensitive(e, "id"), "added token", content, &a->id)) return -1;
        if (!(a->s = dup_utf8(c, content, &a->n, "an added token"))) return -1;
        tok->n_added++;
        a->special = (uint8_t)bool_field(e, "special", 0);
        a->normalized = (uint8_t)bool_field(e, "normalized", !a->special);
        a->lstrip = (uint8_t)bool_field(e, "lstrip", 0);
        a->rstrip = (uint8_t)bool_field(e, "rstrip", 0);
        a->single_word = (uint8_t)bool_field(e, "single_word", 0);
    }
    return 0;
}

/* id -> text over the model and the added tokens (added ones win, as HF). */
static int build_ids(const ctx *c)
{
    as_tokenizer *tok = c->tok;
    int32_t max = -1;
    for (uint32_t i = 0; i < tok->vocab.cap; i++)
        if (tok->vocab.slots[i].key && tok->vocab.slots[i].val > max) max = tok->vocab.slots[i].val;
    for (size_t i = 0; i < tok->n_added; i++)
        if (tok->added[i].id > max) max = tok->added[i].id;
    tok->n_ids = max + 1;
    size_t n = (size_t)tok->n_ids + 1;
    tok->id_tok = calloc(n, sizeof *tok->id_tok);
    tok->id_len = calloc(n, sizeof *tok->id_len);
    tok->id_special = calloc(n, 1);
    if (!tok->id_tok || !tok->id_len || !tok->id_special) return tk_oom("tokenizer"), -1;
    for (uint32_t i = 0; i < tok->vocab.cap; i++) {
        const tk_slot *s = &tok->vocab.slots[i];
        if (s->key) tok->id_tok[s->val] = s->key, tok->id_len[s->val] = s->len;
    }
    tok->vocab_size = tok->vocab.count;
    tk_map seen = {0};
    for (size_t i = 0; i < tok->n_added; i++) {
        const tk_added *a = &tok->added[i];
        tok->id_tok[a->id] = a->s, tok->id_len[a->id] = (uint32_t)a->n;
        tok->id_special[a->id] = a->special;
        if (tk_map_get(&tok->vocab, a->s, a->n) < 0 && tk_map_get(&seen, a->s, a->n) < 0) {
            tok->vocab_size++;
            if (tk_map_put(&seen, a->s, a->n, 0)) return tk_map_free(&seen), -1;
        }
    }
    tk_map_free(&seen);
    return 0;
}

static int read_model(const ctx *c, const cJSON *model)
{
    as_tokenizer *tok = c->tok;
    if (!cJSON_IsObject(model)) return fail(c, "has no model object");
    const char *t = str_field(model, "type", NULL);
    if (!t) t = cJSON_GetObjectItemCaseSensitive(model, "merges") ? "BPE" : "WordPiece";
    if (strcmp(t, "BPE") == 0) tok->model = TK_MODEL_BPE;
    else if (strcmp(t, "WordPiece") == 0) tok->model = TK_MODEL_WORDPIECE;
    else return unsupported(c, "model type", t, "BPE, WordPiece");
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (cJSON_IsNumber(dropout) && dropout->valuedouble > 0 && dropout->valuedouble < 1)
        return fail(c, "BPE dropout is not supported (encoding here is deterministic)");
    if (read_vocab(c, model)) return -1;
    const char *unk = str_field(model, "unk_token", tok->model == TK_MODEL_WORDPIECE ? "[UNK]" : NULL);
    if (unk) {
        if (!(tok->unk = dup(unk, NULL))) return -1;
        tok->unk_id = tk_map_get(&tok->vocab, unk, strlen(unk));
    }
    const char *prefix = str_field(model, "continuing_subword_prefix", tok->model == TK_MODEL_WORDPIECE ? "##" : NULL);
    if (prefix && !(tok->prefix = dup(prefix, &tok->prefix_len))) return -1;
    if (tok->model == TK_MODEL_WORDPIECE) {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(model, "max_input_chars_per_word");
        tok->max_chars = cJSON_IsNumber(m) && m->valuedouble >= 0 ? (int)(m->valuedouble < 1e9 ? m->valuedouble : 1e9) : 100;
        return 0;
    }
    const char *suffix = str_field(model, "end_of_word_suffix", NULL);
    if (suffix && !(tok->suffix = dup(suffix, &tok->suffix_len))) return -1;
    tok->byte_fallback = bool_field(model, "byte_fallback", 0);
    tok->fuse_unk = bool_field(model, "fuse_unk", 0);
    tok->ignore_merges = bool_field(model, "ignore_merges", 0);
    return read_merges(c, model);
}

as_tokenizer *as_tokenizer_from_json(const char *json, size_t len, const char *name)
{
    as_tokenizer *tok = calloc(1, sizeof *tok);
    if (!tok) return tk_oom("tokenizer");
    tok->unk_id = -1;
    if (!(tok->name = dup(name ? name : "tokenizer.json", NULL))) return free(tok), NULL;
    ctx c = {tok, tok->name};
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        as_error_set("tokenizer: %s: invalid JSON near byte %zu", tok->name,
                     at && at >= json && at <= json + len ? (size_t)(at - json) : (size_t)0);
        goto fail;
    }
    if (!cJSON_IsObject(root)) {
        fail(&c, "is not a JSON object");
        goto fail;
    }
    if (read_model(&c, cJSON_GetObjectItemCaseSensitive(root, "model")) || read_added(&c, root) ||
        read_normalizer(&c, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), 0) ||
        read_pre(&c, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), 0) ||
        read_post(&c, cJSON_GetObjectItemCaseSensitive(root, "post_processor"), 0) ||
        read_decoder(&c, cJSON_GetObjectItemCaseSensitive(root, "decoder"), 0) || build_ids(&c) ||
        tk_prepare_added(tok))
        goto fail;
    cJSON_Delete(root);
    return tok;
fail:
    cJSON_Delete(root);
    as_tokenizer_free(tok);
    return NULL;
}

as_tokenizer *as_tokenizer_load(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        as_error_set("tokenizer: %s: cannot open the file", path);
        return NULL;
    }
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 65536 > cap) {
            cap = cap ? cap * 2 : 1 << 20;
            char *q = realloc(buf, cap);
            if (!q) {
                free(buf);
                fclose(f);
                return tk_oom("tokenizer");
            }
            buf = q;
        }
        size_t k = fread(buf + n, 1, cap - n, f);
        n += k;
        if (k == 0) break;
    }
    int err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        as_error_set("tokenizer: %s: read error", path);
        return NULL;
    }
    as_tokenizer *tok = as_tokenizer_from_json(buf, n, path);
    free(buf);
    return tok;
}

void as_tokenizer_free(as_tokenizer *tok)
{
    if (!tok) return;
    tk_step *stages[4] = {tok->norm, tok->pre, tok->post, tok->dec};
    size_t counts[4] = {tok->n_norm, tok->n_pre, tok->n_post, tok->n_dec};
    for (int k = 0; k < 4; k++) {
        for (size_t i = 0; i < counts[k]; i++) tk_step_free(&stages[k][i]);
        free(stages[k]);
    }
    for (size_t i = 0; i < tok->n_added; i++) free(tok->added[i].s), free(tok->added[i].m);
    free(tok->added);
    tk_map_free(&tok->vocab);
    tk_pair_free(&tok->merges);
    free(tok->id_tok);
    free(tok->id_len);
    free(tok->id_special);
    free(tok->unk);
    free(tok->prefix);
    free(tok->suffix);
    free(tok->name);
    free(tok);
}
