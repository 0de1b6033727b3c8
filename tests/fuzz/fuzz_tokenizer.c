/* libFuzzer harness: the tokenizer on arbitrary bytes.  The first byte picks
 * what the rest is:
 *   even: a tokenizer.json; when it loads, a fixed multilingual text is
 *         encoded and decoded with it, and ids 0..n+1 decoded one by one;
 *   odd:  text for one of the fixture tokenizers (tests/fixtures/tokenizers),
 *         encoded with and without special tokens, decoded back, and the
 *         same bytes read as ids and decoded. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attnswap/tokenizer.h"

static const char *kinds[] = {"gpt2", "llama3", "qwen2", "llama2", "mistral", "bert", "misc", "metaspace"};
#define NKINDS (sizeof kinds / sizeof *kinds)
static as_tokenizer *fixtures[NKINDS];

static void load_fixtures(void)
{
    static int done;
    if (done) return;
    done = 1;
    const char *file = __FILE__, *cut = strstr(file, "fuzz/fuzz_tokenizer.c");
    int len = cut ? (int)(cut - file) : 0;
    for (size_t i = 0; i < NKINDS; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%.*sfixtures/tokenizers/%s/tokenizer.json", len, file, kinds[i]);
        fixtures[i] = as_tokenizer_load(path);
        if (!fixtures[i]) {
            fprintf(stderr, "fuzz_tokenizer: %s\n", "fixture tokenizer did not load");
            abort();
        }
    }
}

static void round_trip(const as_tokenizer *tok, const char *text, size_t n)
{
    for (int add = 0; add < 2; add++) {
        int32_t *ids = NULL;
        size_t k = 0;
        if (as_tokenizer_encode(tok, text, n, add, &ids, &k) == 0) {
            for (int skip = 0; skip < 2; skip++) free(as_tokenizer_decode(tok, ids, k, skip, NULL));
            free(ids);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    const char *rest = (const char *)data + 1;
    size_t n = size - 1;
    if (data[0] % 2 == 0) {
        as_tokenizer *tok = as_tokenizer_from_json(rest, n, "fuzz.json");
        if (!tok) return 0;
        static const char text[] = "Hello  world!\n\t12345 Café <s>[CLS]<|endoftext|> 日本語 😀👍🏽 it's ▁x";
        round_trip(tok, text, sizeof text - 1);
        int64_t v = as_tokenizer_vocab_size(tok);
        for (int32_t id = 0; id < v + 2 && id < 4096; id++) {
            size_t len;
            const char *t = as_tokenizer_id_to_token(tok, id, &len);
            if (t) (void)as_tokenizer_token_to_id(tok, t, len);
            free(as_tokenizer_decode(tok, &id, 1, 0, NULL));
        }
        as_tokenizer_free(tok);
        return 0;
    }
    load_fixtures();
    const as_tokenizer *tok = fixtures[(data[0] / 2) % NKINDS];
    round_trip(tok, rest, n);
    size_t k = n / 2;
    int32_t *ids = malloc((k + 1) * sizeof *ids);
    if (!ids) return 0;
    for (size_t i = 0; i < k; i++) ids[i] = (int32_t)((uint8_t)rest[2 * i] | (uint8_t)rest[2 * i + 1] << 8) % 700;
    free(as_tokenizer_decode(tok, ids, k, data[0] & 2, NULL));
    free(ids);
    return 0;
}
