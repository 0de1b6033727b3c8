/* Tokenizers read from a Hugging Face tokenizer.json: byte-level BPE (GPT-2,
 * Llama 3, Qwen2), BPE with byte fallback and "▁" (Llama 2, Mistral) and
 * WordPiece (BERT), with their normalizers, pre-tokenizers, added tokens,
 * post-processors and decoders.  Ids are those of HF `tokenizers`.
 *
 * Every function that can fail returns NULL or -1 after as_error_set(); the
 * message names the function and, for loading, the file.  docs/tokenizers.md
 * lists what is supported and what is refused. */
#ifndef AS_TOKENIZER_H
#define AS_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct as_tokenizer as_tokenizer;

/* Parses a tokenizer.json held in memory; name (a path, for messages) may be NULL. */
as_tokenizer *as_tokenizer_from_json(const char *json, size_t len, const char *name);
/* Reads and parses the file at path. */
as_tokenizer *as_tokenizer_load(const char *path);
void as_tokenizer_free(as_tokenizer *tok);

/* Encodes UTF-8 text (invalid UTF-8 is an error).  On success *ids is a
 * malloc'd array of *n ids (free it); add_special applies the post-processor
 * (BOS, [CLS] ... [SEP]) as HF's add_special_tokens does. */
int as_tokenizer_encode(const as_tokenizer *tok, const char *text, size_t len, int add_special,
                        int32_t **ids, size_t *n);
/* Decodes ids to a malloc'd NUL-terminated string (its length in *len); an id
 * not in the vocabulary is an error. */
char *as_tokenizer_decode(const as_tokenizer *tok, const int32_t *ids, size_t n, int skip_special,
                          size_t *len);

/* -1 when the token is not in the vocabulary (added tokens included). */
int32_t as_tokenizer_token_to_id(const as_tokenizer *tok, const char *token, size_t len);
/* The token's text (not NUL-terminated: *len bytes), NULL when id is unknown. */
const char *as_tokenizer_id_to_token(const as_tokenizer *tok, int32_t id, size_t *len);
/* Distinct tokens, added ones included (HF get_vocab_size(True)). */
int64_t as_tokenizer_vocab_size(const as_tokenizer *tok);
/* Whether id is an added token marked special. */
int as_tokenizer_is_special(const as_tokenizer *tok, int32_t id);
/* One line: "Tokenizer(BPE, vocab=32000, byte_fallback, ...)" into buf. */
char *as_tokenizer_describe(const as_tokenizer *tok, char *buf, size_t size);

#endif
