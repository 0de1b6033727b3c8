/* Tokenizers against HF `tokenizers`' own ids and decodes, stored by
 * tests/fixtures/make_tokenizer_fixtures.py; the heap BPE merge against a
 * quadratic reference on random words; hostile files and inputs. */
#include <cjson/cJSON.h>
#include <string.h>

#include "as_test.h"
#include "attnswap/tokenizer.h"
#include "tokenizer_internal.h"

static const char *fixture(const char *name)
{
    static char buf[1024];
    const char *env = getenv("ATTNSWAP_FIXTURES");
    if (env && *env) {
        snprintf(buf, sizeof buf, "%s/tokenizers/%s", env, name);
    } else {
        const char *file = __FILE__, *cut = strstr(file, "c/test_tokenizer.c");
        int len = cut ? (int)(cut - file) : 0;
        snprintf(buf, sizeof buf, "%.*sfixtures/tokenizers/%s", len, file, name);
    }
    return buf;
}

static cJSON *read_json(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    static char text[1 << 20];
    size_t n = fread(text, 1, sizeof text, f);
    fclose(f);
    return cJSON_ParseWithLength(text, n);
}

static int same_ids(const int32_t *ids, size_t n, const cJSON *want)
{
    if (!cJSON_IsArray(want) || (size_t)cJSON_GetArraySize(want) != n) return 0;
    size_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, want) if (ids[i++] != (int32_t)e->valuedouble) return 0;
    return 1;
}

static void check_fixture(const char *name)
{
    char path[256];
    snprintf(path, sizeof path, "%s/tokenizer.json", name);
    as_tokenizer *tok = as_tokenizer_load(fixture(path));
    CHECK_OK(tok);
    snprintf(path, sizeof path, "%s/expected.json", name);
    cJSON *exp = read_json(fixture(path));
    CHECK(exp != NULL);
    if (!tok || !exp) {
        as_tokenizer_free(tok);
        cJSON_Delete(exp);
        return;
    }
    CHECK(as_tokenizer_vocab_size(tok) == (int64_t)cJSON_GetObjectItem(exp, "vocab_size")->valuedouble);
    const cJSON *c;
    int k = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(exp, "cases")) {
        k++;
        const char *text = cJSON_GetObjectItem(c, "text")->valuestring;
        for (int add = 0; add < 2; add++) {
            int32_t *ids = NULL;
            size_t n = 0;
            int rc = as_tokenizer_encode(tok, text, strlen(text), add, &ids, &n);
            CHECK(rc == 0);
            int ok = rc == 0 && same_ids(ids, n, cJSON_GetObjectItem(c, add ? "ids" : "ids_plain"));
            CHECK(ok);
            if (!ok) fprintf(stderr, "  %s case %d (add_special=%d): ids differ from HF\n", name, k, add);
            free(ids);
        }
        const cJSON *want = cJSON_GetObjectItem(c, "ids");
        size_t n = (size_t)cJSON_GetArraySize(want), i = 0;
        int32_t *ids = malloc((n + 1) * sizeof *ids);
        const cJSON *e;
        cJSON_ArrayForEach(e, want) ids[i++] = (int32_t)e->valuedouble;
        for (int skip = 0; skip < 2; skip++) {
            char *s = as_tokenizer_decode(tok, ids, n, skip, NULL);
            const char *expect = cJSON_GetObjectItem(c, skip ? "decoded_skip" : "decoded")->valuestring;
            int ok = s && strcmp(s, expect) == 0;
            CHECK(ok);
            if (!ok) fprintf(stderr, "  %s case %d (skip=%d): decoded '%s', HF '%s'\n", name, k, skip, s ? s : "(null)", expect);
            free(s);
        }
        free(ids);
    }
    CHECK(k >= 20);
    cJSON_Delete(exp);
    as_tokenizer_free(tok);
}

/* The textbook loop: merge the lowest-ranked adjacent pair (leftmost on ties)
 * until none is left.  O(n^2) a word, to check the heap's order against. */
static size_t reference_bpe(const as_tokenizer *tok, int32_t *sym, size_t n)
{
    for (;;) {
        int32_t best = INT32_MAX, id = -1;
        size_t at = 0;
        for (size_t i = 0; i + 1 < n; i++) {
            const tk_pair_slot *m = tk_pair_find(&tok->merges, sym[i], sym[i + 1]);
            if (m && m->rank < best) best = m->rank, id = m->id, at = i;
        }
        if (id < 0) return n;
        sym[at] = id;
        memmove(sym + at + 1, sym + at + 2, (n - at - 2) * sizeof *sym);
        n--;
    }
}

static void check_heap_merge(void)
{
    as_tokenizer *tok = as_tokenizer_load(fixture("gpt2/tokenizer.json"));
    CHECK_OK(tok);
    if (!tok) return;
    const char alphabet[] = "aeiouthsnrl dgcm";
    for (int trial = 0; trial < 300; trial++) {
        char word[64];
        size_t n = (size_t)as_test_randint(1, 40);
        for (size_t i = 0; i < n; i++) word[i] = alphabet[as_test_randint(0, (int64_t)sizeof alphabet - 2)];
        /* byte-level chars: ' ' is 'Ġ' */
        tk_buf w = {0};
        int32_t sym[128];
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            char u[2];
            int len = tk_byte_char((uint8_t)word[i], u);
            sym[k++] = tk_map_get(&tok->vocab, u, (size_t)len);
            tk_buf_put(&w, u, (size_t)len);
        }
        k = reference_bpe(tok, sym, k);
        tk_ids got = {0};
        CHECK(tk_bpe_tokenize(tok, w.p, w.n, &got) == 0);
        int ok = got.n == k && memcmp(got.v, sym, k * sizeof *sym) == 0;
        CHECK(ok);
        if (!ok) fprintf(stderr, "  heap merge differs from the reference on '%.*s'\n", (int)n, word);
        free(got.v);
        free(w.p);
    }
    as_tokenizer_free(tok);
}

/* A tokenizer.json made from parts; NULL with the error kept when it fails. */
static as_tokenizer *from_parts(const char *model, const char *rest)
{
    char json[4096];
    snprintf(json, sizeof json, "{\"model\": %s%s%s}", model, rest ? ", " : "", rest ? rest : "");
    return as_tokenizer_from_json(json, strlen(json), "test.json");
}

#define BPE_OK "{\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, \"merges\": [\"a b\"]}"

static void expect_error(as_tokenizer *tok, const char *needle)
{
    CHECK(tok == NULL);
    int ok = strstr(as_error_get(), needle) != NULL;
    CHECK(ok);
    if (!ok) fprintf(stderr, "  error '%s' does not say '%s'\n", as_error_get(), needle);
    as_tokenizer_free(tok);
}

static void check_hostile(void)
{
    expect_error(from_parts("{\"type\": \"Unigram\", \"vocab\": []}", NULL),
                 "test.json: model type 'Unigram' is not supported (supported: BPE, WordPiece)");
    expect_error(from_parts("{\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a\"]}", NULL), "merge 0 is");
    expect_error(from_parts("{\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [[\"a\", 3]]}", NULL), "merge 0 is");
    expect_error(from_parts("{\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a b\"]}", NULL),
                 "merge 0 (a b): 'ab' is not in the vocabulary");
    expect_error(from_parts("{\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": 7}", NULL), "merges is not a list");
    expect_error(from_parts("{\"type\": \"BPE\", \"vocab\": {\"a\": -1}, \"merges\": []}", NULL), "out of range");
    expect_error(from_parts("{\"type\": \"BPE\", \"vocab\": {\"a\": 1e12}, \"merges\": []}", NULL), "out of range");
    expect_error(from_parts(BPE_OK, "\"normalizer\": {\"type\": \"Precompiled\"}"),
                 "normalizer 'Precompiled' is not supported");
    expect_error(from_parts(BPE_OK, "\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"(\"}, "
                                    "\"behavior\": \"Isolated\"}"),
                 "does not compile");
    expect_error(from_parts(BPE_OK, "\"decoder\": {\"type\": \"CTC\"}"), "decoder 'CTC' is not supported");
    expect_error(from_parts(BPE_OK, "\"added_tokens\": [{\"id\": 99999999, \"content\": \"x\"}]"), "out of range");
    expect_error(from_parts(BPE_OK, "\"added_tokens\": [{\"id\": 5, \"content\": \"\xff<\"}]"),
                 "an added token is not valid UTF-8");
    const char bad_json[] = "{\"model\": {\"type\": \"BPE\", ";
    expect_error(as_tokenizer_from_json(bad_json, sizeof bad_json - 1, "cut.json"), "cut.json: invalid JSON");
    expect_error(as_tokenizer_load("/nonexistent/tokenizer.json"), "/nonexistent/tokenizer.json: cannot open");

    as_tokenizer *tok = from_parts(BPE_OK, "\"added_tokens\": [{\"id\": 3, \"content\": \"<s>\", \"special\": true}]");
    CHECK_OK(tok);
    if (!tok) return;
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK(as_tokenizer_encode(tok, "ab\xff", 3, 1, &ids, &n) == -1);
    CHECK(strstr(as_error_get(), "not valid UTF-8 (byte 2, 0xFF)") != NULL);
    CHECK(as_tokenizer_encode(tok, "<s>abba", 7, 1, &ids, &n) == 0);
    CHECK(n == 4 && ids[0] == 3 && ids[1] == 2 && ids[2] == 1 && ids[3] == 0);
    free(ids);
    int32_t bad[] = {0, 7};
    CHECK(as_tokenizer_decode(tok, bad, 2, 0, NULL) == NULL);
    CHECK(strstr(as_error_get(), "decode: id 7 (at position 2) is not in the vocabulary") != NULL);
    int32_t neg[] = {-1};
    CHECK(as_tokenizer_decode(tok, neg, 1, 0, NULL) == NULL);
    CHECK(as_tokenizer_token_to_id(tok, "<s>", 3) == 3);
    CHECK(as_tokenizer_token_to_id(tok, "zz", 2) == -1);
    CHECK(as_tokenizer_id_to_token(tok, 99, NULL) == NULL);
    CHECK(as_tokenizer_vocab_size(tok) == 4);
    as_tokenizer_free(tok);
}

int main(void)
{
    const char *names[] = {"gpt2", "llama3", "qwen2", "llama2", "mistral", "bert", "misc", "metaspace"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) check_fixture(names[i]);
    check_heap_merge();
    check_hostile();
    return as_test_report("test_tokenizer");
}
