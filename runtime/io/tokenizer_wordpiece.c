/* The WordPiece model (Wu et al. 2016) as HF `tokenizers` runs it: greedy
 * longest match from the left, continuations carry the prefix ("##"); a word
 * with any part unknown, or longer than max_input_chars_per_word chars, is
 * one unk token. */
#include <stdlib.h>

#include "attnswap/error.h"
#include "tokenizer_internal.h"

static int push_unk(const as_tokenizer *tok, tk_ids *out)
{
    if (tok->unk_id < 0) {
        as_error_set("tokenizer.encode: %s: the unk token '%s' is not in the vocabulary", tok->name,
                     tok->unk ? tok->unk : "");
        return -1;
    }
    return tk_ids_push(out, tok->unk_id);
}

int tk_wordpiece_tokenize(const as_tokenizer *tok, const char *s, size_t n, tk_ids *out)
{
    size_t chars = 0;
    for (size_t i = 0; i < n; i++) chars += ((uint8_t)s[i] & 0xC0) != 0x80;
    if (chars > (size_t)tok->max_chars) return push_unk(tok, out);
    size_t mark = out->n, start = 0;
    tk_buf tmp = {0};
    while (start < n) {
        size_t end = n;
        int32_t id = -1;
        while (start < end) {
            if (start > 0) {
                tmp.n = 0;
                if (tk_buf_put(&tmp, tok->prefix, tok->prefix_len) || tk_buf_put(&tmp, s + start, end - start)) goto fail;
                id = tk_map_get(&tok->vocab, tmp.p, tmp.n);
            } else {
                id = tk_map_get(&tok->vocab, s, end);
            }
            if (id >= 0) break;
            do end--; /* back one UTF-8 char */
            while (end > start && ((uint8_t)s[end] & 0xC0) == 0x80);
        }
        if (id < 0) {
            out->n = mark;
            free(tmp.p);
            return push_unk(tok, out);
        }
        if (tk_ids_push(out, id)) goto fail;
        start = end;
    }
    free(tmp.p);
    return 0;
fail:
    free(tmp.p);
    return -1;
}
