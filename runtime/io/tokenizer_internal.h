/* The tokenizer's insides, shared by runtime/io/tokenizer_*.c only.
 *
 * encode:  text -> added tokens split off -> normalizers -> pre-tokenizers
 *          -> model (BPE or WordPiece) per piece -> post-processor
 * decode:  ids -> token strings -> decoders -> one string
 *
 * Each stage is a list of tk_step (HF's Sequence flattened); the model is
 * one struct.  Strings are bytes with a length (tokens may hold any byte). */
#ifndef AS_TOKENIZER_INTERNAL_H
#define AS_TOKENIZER_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stddef.h>
#include <stdint.h>

#include "attnswap/tokenizer.h"

/* Ids are below this: larger ids in a file are refused (no table of 2^31). */
#define TK_MAX_ID (1 << 24)

/* ---- growable byte buffer, id list, piece list ---- */
typedef struct { char *p; size_t n, cap; } tk_buf;
typedef struct { int32_t *v; size_t n, cap; } tk_ids;
/* A piece of the input on its way through the pipeline: id >= 0 once it is
 * an added token (never normalized or split again); first when it starts at
 * offset 0 of the original text (Metaspace's prepend_scheme "first"). */
typedef struct { char *s; size_t n; int32_t id; int first; } tk_piece;
typedef struct { tk_piece *v; size_t n, cap; } tk_pieces;

int tk_buf_put(tk_buf *b, const void *s, size_t n);
int tk_buf_putc(tk_buf *b, uint32_t cp); /* UTF-8 encoded */
int tk_ids_push(tk_ids *ids, int32_t id);
int tk_pieces_push(tk_pieces *ps, const char *s, size_t n, int32_t id, int first); /* copies s */
int tk_pieces_take(tk_pieces *ps, tk_buf *b, int32_t id, int first); /* takes b's memory */
void tk_pieces_free(tk_pieces *ps);
void *tk_oom(const char *fn); /* sets "fn: out of memory", returns NULL */

/* ---- string -> int32 map (owns its keys) ---- */
typedef struct { char *key; uint32_t len; int32_t val; } tk_slot;
typedef struct { tk_slot *slots; uint32_t cap, count; } tk_map;
int tk_map_put(tk_map *m, const char *key, size_t len, int32_t val); /* 0, or -1 on OOM */
const tk_slot *tk_map_find(const tk_map *m, const char *key, size_t len);
int32_t tk_map_get(const tk_map *m, const char *key, size_t len); /* -1 when absent */
void tk_map_free(tk_map *m);

/* ---- (id, id) -> (rank, new id): the BPE merges ---- */
typedef struct { uint64_t key; int32_t rank, id; } tk_pair_slot;
typedef struct { tk_pair_slot *slots; uint32_t cap, count; } tk_pair_map;
int tk_pair_put(tk_pair_map *m, int32_t a, int32_t b, int32_t rank, int32_t id);
const tk_pair_slot *tk_pair_find(const tk_pair_map *m, int32_t a, int32_t b);
void tk_pair_free(tk_pair_map *m);

/* ---- UTF-8 and Unicode classes ---- */
/* Decodes the (valid) UTF-8 char at s[0..n); returns its length. */
int tk_utf8_next(const char *s, size_t n, uint32_t *cp);
/* Byte offset of the first invalid sequence, or n when s is valid UTF-8. */
size_t tk_utf8_check(const char *s, size_t n);
/* Appends s with each maximal invalid subpart replaced by U+FFFD (Rust's from_utf8_lossy). */
int tk_utf8_lossy(tk_buf *out, const char *s, size_t n);
int tk_is_whitespace(uint32_t cp);   /* Rust char::is_whitespace */
int tk_is_punctuation(uint32_t cp);  /* BERT: ASCII punctuation or Unicode P* */
int tk_is_numeric(uint32_t cp);      /* Rust char::is_numeric: N* */
int tk_is_cjk(uint32_t cp);          /* BERT's "Chinese character" blocks */
int tk_is_control(uint32_t cp);      /* BERT: C* except \t \n \r */
int tk_is_mark(uint32_t cp, int nonspacing_only);
/* Unicode normalization form 'C', 'D', 'c' (NFKC), 'd' (NFKD) of s into out. */
int tk_unicode_normalize(tk_buf *out, const char *s, size_t n, char form);
int tk_lowercase(tk_buf *out, const char *s, size_t n);

/* ---- regular expressions (PCRE2, UTF + UCP) ---- */
/* Compiles pattern; on failure sets "fn: name: regex ... at offset N". */
pcre2_code *tk_regex_compile(const char *pattern, size_t len, int literal, const char *fn, const char *name);
/* Match spans of re in s as HF's find_matches: (start, end, is_match) triples
 * covering s.  Returns the count or -1. */
typedef struct { size_t start, end; int match; } tk_span;
typedef struct { tk_span *v; size_t n, cap; } tk_spans;
int tk_regex_spans(const pcre2_code *re, const char *s, size_t n, tk_spans *out);
int tk_spans_push(tk_spans *sp, size_t start, size_t end, int match);

/* ---- pipeline steps ---- */
enum {
    /* normalizers */
    TK_N_NFC, TK_N_NFD, TK_N_NFKC, TK_N_NFKD, TK_N_LOWERCASE, TK_N_STRIP, TK_N_STRIP_ACCENTS,
    TK_N_REPLACE, TK_N_PREPEND, TK_N_BERT,
    /* pre-tokenizers */
    TK_P_BYTELEVEL, TK_P_SPLIT, TK_P_METASPACE, TK_P_BERT, TK_P_WHITESPACE, TK_P_WHITESPACE_SPLIT,
    TK_P_DIGITS, TK_P_PUNCTUATION,
    /* post-processors */
    TK_PP_TEMPLATE, TK_PP_BERT, TK_PP_NONE,
    /* decoders */
    TK_D_BYTELEVEL, TK_D_REPLACE, TK_D_BYTEFALLBACK, TK_D_FUSE, TK_D_STRIP, TK_D_METASPACE,
    TK_D_WORDPIECE,
};
/* Split behaviours, as HF's SplitDelimiterBehavior. */
enum { TK_REMOVED, TK_ISOLATED, TK_MERGED_PREV, TK_MERGED_NEXT, TK_CONTIGUOUS };
/* Metaspace prepend schemes. */
enum { TK_PREPEND_ALWAYS, TK_PREPEND_FIRST, TK_PREPEND_NEVER };
#define TK_TEMPLATE_SEQ INT32_MIN /* "$A" in a template's id list */

typedef struct {
    int kind;
    int a, b, c, d;   /* flags and counts: see where each kind is read */
    char *s1, *s2;    /* pattern/replacement/prefix strings (NUL-terminated, may hold NUL) */
    size_t n1, n2;
    pcre2_code *re;   /* Split and Replace with a Regex pattern */
    int32_t *ids;     /* template: special ids and TK_TEMPLATE_SEQ */
    size_t nids;
} tk_step;

typedef struct {
    char *s;          /* content */
    size_t n;
    char *m;          /* what is matched: content, normalized when the token is */
    size_t mn;
    int32_t id;
    uint8_t special, normalized, lstrip, rstrip, single_word;
} tk_added;

enum { TK_MODEL_BPE, TK_MODEL_WORDPIECE };

struct as_tokenizer {
    char *name;
    int model;
    /* vocabulary: the model's, then every id's text with added tokens on top */
    tk_map vocab;
    int32_t n_ids;     /* max id + 1 over model and added tokens */
    const char **id_tok;
    uint32_t *id_len;
    uint8_t *id_special;
    int64_t vocab_size;
    int32_t unk_id;    /* -1: none */
    char *unk;         /* unk token text (may be absent from the vocab: an error at use) */
    /* BPE */
    tk_pair_map merges;
    int byte_fallback, fuse_unk, ignore_merges, byte_level;
    char *prefix, *suffix; /* continuing_subword_prefix / end_of_word_suffix (BPE), ## (WordPiece) */
    size_t prefix_len, suffix_len;
    int max_chars;     /* WordPiece max_input_chars_per_word */
    /* added tokens: content -> index in added[] */
    tk_added *added;
    size_t n_added;
    /* pipeline */
    tk_step *norm, *pre, *post, *dec;
    size_t n_norm, n_pre, n_post, n_dec;
};

void tk_step_free(tk_step *s);

/* The model on one pre-tokenized piece (s, n): appends ids. */
int tk_bpe_tokenize(const as_tokenizer *tok, const char *s, size_t n, tk_ids *out);
int tk_wordpiece_tokenize(const as_tokenizer *tok, const char *s, size_t n, tk_ids *out);
/* Byte-level: byte b's char (1 or 2 UTF-8 bytes in out, returns length); a char back to its byte (-1: none). */
int tk_byte_char(uint8_t b, char out[2]);
int tk_char_byte(uint32_t cp);

/* Stages of the pipeline (tokenizer.c). */
int tk_normalize(const as_tokenizer *tok, const char *s, size_t n, tk_buf *out);
int tk_pre_tokenize(const as_tokenizer *tok, tk_pieces *ps);
/* After loading: the normalized form of each normalized added token. */
int tk_prepare_added(as_tokenizer *tok);

#endif
