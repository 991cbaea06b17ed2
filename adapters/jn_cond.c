/*
 * jn_cond: the route condition language (see jn_cond.h).
 *
 * A hand-written lexer and recursive-descent parser, in the spirit of Redis' hand-rolled
 * parsers and Mosquitto's config reader: no generator, every error names what was found, what
 * was expected and where. The parser builds a small AST once, at config load; evaluation walks
 * it per message without allocating, so the hot path stays cheap and any number of threads can
 * share one compiled condition.
 *
 * Grammar (loosest first):
 *
 *   cond    = or END
 *   or      = and { "||" and }
 *   and     = not { "&&" not }
 *   not     = { "!" } primary
 *   primary = "(" or ")" | cmp
 *   cmp     = value [ ( "==" | "!=" ) value | ( "=~" | "!~" ) STRING ]
 *   value   = STRING | "channel" | "id" | "payload" | "header" "(" STRING ")"
 *           | "hl7" "(" STRING ")"
 *
 * Comparisons take values, not conditions, so `a == b == c` and `(a) == b` are errors rather
 * than comparisons of booleans with strings.
 *
 * Limits, because a config is input too: 4096 bytes per condition, 64 levels of parentheses,
 * and for each regex an unrolled size of about 4000 nodes, no unbounded repetition of what can
 * match the empty string, 64 levels of groups and no backreferences (see regex_vet).
 *
 * Memory: one jn_cond holds an array of nodes (grown with jn_realloc; children are indices so
 * growing never invalidates them), one pool for decoded string literals (sized to the
 * expression, so never reallocated: operands point into it), and one jn_malloc'd regex_t per
 * regex comparison. regcomp/regexec allocate internally with libc's allocator; that is outside
 * our wrappers and cannot be failure-injected.
 */
#include "jn_cond.h"

#include <ctype.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "hl7.h"
#include "jn_mem.h"

/* Longer conditions belong in several routes; the cap also bounds parse time and node count. */
#define JN_COND_MAX_LEN 4096
/* Each '(' costs four C stack frames while parsing and three while evaluating; hostile input
 * such as 4000 '(' must not exhaust the stack. */
#define JN_COND_MAX_DEPTH 64
/* glibc's regcomp unrolls repetitions ("a{3}" is "aaa", "a+" is "aa*", so "a++++" doubles four
 * times) and its memory grows about quadratically with the unrolled size: measured, a{0,1000}
 * (about 4000 nodes as regex_vet counts) takes 9 MB and 30 ms, a{0,10000} 770 MB and 5 s. The
 * fuzzer found "A" followed by 120 '+'. */
#define JN_COND_MAX_REGEX_SIZE 4000
/* How much of a token an error message quotes. */
#define SNIPPET_MAX 24

enum tok_kind {
    T_END,
    T_STR,
    T_IDENT,
    T_LPAREN,
    T_RPAREN,
    T_OR,
    T_AND,
    T_NOT,
    T_EQ,
    T_NE,
    T_MATCH,
    T_NMATCH,
    T_BAD, /* a character that starts no token; the parser reports it with context */
};

struct tok {
    enum tok_kind kind;
    size_t off; /* byte offset of the first character in the expression */
    size_t len; /* raw length in the source, quotes included */
};

enum operand_kind {
    O_LIT,
    O_CHANNEL,
    O_ID,
    O_PAYLOAD,
    O_HEADER,
    O_HL7,
};

struct operand {
    enum operand_kind kind;
    const char *s; /* O_LIT: the decoded literal; O_HEADER: the name. Points into the pool. */
    size_t len;
    struct jn_hl7_path path; /* O_HL7: compiled at load */
};

/* hl7() values are decoded per evaluation into the evaluating thread's stack; longer ones
 * take one jn_malloc'd buffer (freed before jn_cond_eval returns). */
#define JN_COND_HL7_INLINE 512

struct hl7val {
    char *heap;
    char inl[JN_COND_HL7_INLINE];
};

enum node_kind {
    N_OR,    /* children: first, then each child's next */
    N_AND,
    N_NOT,   /* child: first */
    N_CMP,   /* a op b (b unused for regex ops: re holds the compiled pattern) */
    N_VALUE, /* a is true when not empty */
};

struct node {
    enum node_kind kind;
    enum tok_kind op; /* N_CMP: T_EQ, T_NE, T_MATCH or T_NMATCH */
    int first;        /* first child, or -1 */
    int next;         /* next sibling under an N_OR/N_AND, or -1 */
    struct operand a;
    struct operand b;
    regex_t *re; /* N_CMP with T_MATCH/T_NMATCH; owned */
};

struct jn_cond {
    struct node *nodes;
    int nnodes;
    int cap;
    int root;
    char *pool; /* decoded literals, each NUL-terminated */
};

struct parser {
    const char *src;
    size_t len;
    size_t off; /* where the next token is lexed from */
    struct tok tok; /* the current (lookahead) token */
    const struct jn_pos *pos;
    struct jn_diag *d;
    struct jn_cond *c;
    size_t pool_used;
    int depth;
    long open;       /* offset of the innermost unclosed '(', or -1 at top level */
    int after_value; /* the last unit parsed was a bare value, so a comparison could follow */
    int failed;
};

static const char *const known_names[] = {"channel", "id", "payload", "header"};

static const char expect_value[] =
    "a value (\"...\", channel, id, payload, header(\"...\")) or '('";
static const char expect_operand[] = "a value (\"...\", channel, id, payload, header(\"...\"))";

/* ---- errors ---- */

/* Records the first error only: after one mistake the rest of the parse is guesswork, and
 * one precise message beats a cascade. */
static void perr(struct parser *p, size_t off, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void perr(struct parser *p, size_t off, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    if (p->failed) {
        return;
    }
    p->failed = 1;
    if (p->d == NULL) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (p->pos) {
        struct jn_pos at = *p->pos;
        /* col 0 means unknown; adding an offset to it would invent a position. */
        if (at.col > 0) {
            at.col += (int)off;
        }
        jn_diag_add(p->d, &at, "%s", msg);
    } else {
        jn_diag_add(p->d, NULL, "%s", msg);
    }
}

static void oom(struct parser *p)
{
    perr(p, 0, "out of memory while compiling the condition");
}

static int col(size_t off)
{
    return (int)off + 1;
}

/* Copies up to SNIPPET_MAX source bytes into buf, escaping anything that is not printable
 * ASCII so a message never carries raw control bytes to a terminal or log. */
static void snippet(const char *s, size_t n, char *buf, size_t size)
{
    size_t o = 0;
    size_t lim = n > SNIPPET_MAX ? SNIPPET_MAX : n;

    for (size_t i = 0; i < lim && o + 5 < size; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch < 0x7f) {
            buf[o++] = (char)ch;
        } else {
            o += (size_t)snprintf(buf + o, size - o, "\\x%02x", ch);
        }
    }
    if (n > lim && o + 4 < size) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o] = '\0';
}

static const char *op_text(enum tok_kind k)
{
    switch (k) {
    case T_LPAREN:
        return "(";
    case T_RPAREN:
        return ")";
    case T_OR:
        return "||";
    case T_AND:
        return "&&";
    case T_NOT:
        return "!";
    case T_EQ:
        return "==";
    case T_NE:
        return "!=";
    case T_MATCH:
        return "=~";
    case T_NMATCH:
        return "!~";
    default:
        return "?";
    }
}

/* What the current token is, for "unexpected X". */
static void describe(const struct parser *p, char *buf, size_t size)
{
    char s[SNIPPET_MAX * 4 + 8];
    const struct tok *t = &p->tok;

    switch (t->kind) {
    case T_END:
        snprintf(buf, size, "end of condition");
        break;
    case T_STR:
        snippet(p->src + t->off, t->len, s, sizeof(s));
        snprintf(buf, size, "string %s", s);
        break;
    case T_IDENT:
    case T_BAD:
        snippet(p->src + t->off, t->len, s, sizeof(s));
        snprintf(buf, size, "'%s'", s);
        break;
    default:
        snprintf(buf, size, "'%s'", op_text(t->kind));
        break;
    }
}

static void unexpected(struct parser *p, const char *expected)
{
    char what[SNIPPET_MAX * 4 + 16];

    if (p->tok.kind == T_BAD) {
        char ch = p->src[p->tok.off];
        /* The usual slips from other languages get a direct hint instead of a list. */
        if (ch == '=' || ch == '&' || ch == '|') {
            perr(p, p->tok.off, "unexpected '%c' at column %d; did you mean '%c%c'?", ch,
                 col(p->tok.off), ch, ch);
            return;
        }
    }
    describe(p, what, sizeof(what));
    perr(p, p->tok.off, "unexpected %s at column %d, expected %s", what, col(p->tok.off),
         expected);
}

/* After a complete value, comparison or group: what may follow depends on which it was and
 * on whether a '(' is still open. hint (may be NULL) explains a common mistake. */
static void unexpected_after(struct parser *p, const char *hint)
{
    char exp[160];
    const char *ops = p->after_value ? "an operator (==, !=, =~, !~, &&, ||)" : "'&&', '||'";

    if (p->open >= 0) {
        snprintf(exp, sizeof(exp), "%s or ')' to close '(' at column %d", ops,
                 col((size_t)p->open));
    } else {
        snprintf(exp, sizeof(exp), "%s or the end of the condition", ops);
    }
    if (hint) {
        size_t n = strlen(exp);
        snprintf(exp + n, sizeof(exp) - n, " (%s)", hint);
    }
    unexpected(p, exp);
}

/* ---- lexer ---- */

static int is_ident_start(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_';
}

static int is_ident_char(char ch)
{
    return is_ident_start(ch) || (ch >= '0' && ch <= '9');
}

static int is_space(char ch)
{
    /* Newlines too: YAML block scalars may split a long condition over lines. */
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
}

/* Scans a quoted string starting at p->off. A backslash always takes the next character with
 * it, so \" never ends the string. */
static int lex_string(struct parser *p)
{
    const char *s = p->src;
    char q = s[p->off];
    size_t i = p->off + 1;

    while (i < p->len) {
        if (s[i] == q) {
            p->tok.kind = T_STR;
            p->tok.len = i + 1 - p->off;
            p->off = i + 1;
            return 0;
        }
        if (s[i] == '\\') {
            if (i + 1 >= p->len) {
                break;
            }
            i += 2;
            continue;
        }
        i++;
    }
    perr(p, p->off, "unterminated string starting at column %d, expected a closing %c before "
         "the end of the condition", col(p->off), q);
    return -1;
}

/* Moves to the next token. Returns 0, or -1 with the error reported. */
static int advance(struct parser *p)
{
    const char *s = p->src;
    char ch;

    while (p->off < p->len && is_space(s[p->off])) {
        p->off++;
    }
    p->tok.off = p->off;
    p->tok.len = 1;
    if (p->off >= p->len) {
        p->tok.kind = T_END;
        p->tok.len = 0;
        return 0;
    }
    ch = s[p->off];
    if (ch == '"' || ch == '\'') {
        return lex_string(p);
    }
    if (is_ident_start(ch)) {
        size_t i = p->off + 1;
        while (i < p->len && is_ident_char(s[i])) {
            i++;
        }
        p->tok.kind = T_IDENT;
        p->tok.len = i - p->off;
        p->off = i;
        return 0;
    }
    /* p->src is NUL-terminated, so looking one past a last character is safe. */
    p->tok.kind = T_BAD;
    switch (ch) {
    case '(':
        p->tok.kind = T_LPAREN;
        break;
    case ')':
        p->tok.kind = T_RPAREN;
        break;
    case '|':
        if (s[p->off + 1] == '|') {
            p->tok.kind = T_OR;
        }
        break;
    case '&':
        if (s[p->off + 1] == '&') {
            p->tok.kind = T_AND;
        }
        break;
    case '=':
        if (s[p->off + 1] == '=') {
            p->tok.kind = T_EQ;
        } else if (s[p->off + 1] == '~') {
            p->tok.kind = T_MATCH;
        }
        break;
    case '!':
        if (s[p->off + 1] == '=') {
            p->tok.kind = T_NE;
        } else if (s[p->off + 1] == '~') {
            p->tok.kind = T_NMATCH;
        } else {
            p->tok.kind = T_NOT;
        }
        break;
    default:
        break;
    }
    if (p->tok.kind == T_OR || p->tok.kind == T_AND || p->tok.kind == T_EQ ||
        p->tok.kind == T_MATCH || p->tok.kind == T_NE || p->tok.kind == T_NMATCH) {
        p->tok.len = 2;
    }
    p->off += p->tok.len;
    return 0;
}

static int is_cmp(enum tok_kind k)
{
    return k == T_EQ || k == T_NE || k == T_MATCH || k == T_NMATCH;
}

/* ---- AST building ---- */

/* Returns the index of a new zeroed node, or -1 when out of memory. */
static int new_node(struct parser *p, enum node_kind kind)
{
    struct jn_cond *c = p->c;
    struct node *n;

    if (c->nnodes == c->cap) {
        int cap = c->cap ? c->cap * 2 : 8;
        struct node *nodes = jn_realloc(c->nodes, (size_t)cap * sizeof(*nodes));
        if (nodes == NULL) {
            oom(p);
            return -1;
        }
        c->nodes = nodes;
        c->cap = cap;
    }
    n = &c->nodes[c->nnodes];
    memset(n, 0, sizeof(*n));
    n->kind = kind;
    n->first = -1;
    n->next = -1;
    return c->nnodes++;
}

/* Decodes the current T_STR token into the pool. \" \' \\ \n \t \r are escapes; any other
 * backslash pair is kept as written, so regexes read naturally ("^v1\.2" rather than
 * "^v1\\.2"). Cannot fail: the pool is as large as the expression, and decoding never
 * lengthens a literal. */
static void take_string(struct parser *p, struct operand *o)
{
    const char *s = p->src + p->tok.off + 1;
    const char *end = p->src + p->tok.off + p->tok.len - 1;
    char *out = p->c->pool + p->pool_used;
    size_t n = 0;

    while (s < end) {
        char ch = *s++;
        if (ch == '\\') {
            ch = *s++;
            if (ch == 'n') {
                ch = '\n';
            } else if (ch == 't') {
                ch = '\t';
            } else if (ch == 'r') {
                ch = '\r';
            } else if (ch != '"' && ch != '\'' && ch != '\\') {
                out[n++] = '\\';
            }
        }
        out[n++] = ch;
    }
    out[n] = '\0';
    p->pool_used += n + 1;
    o->kind = O_LIT;
    o->s = out;
    o->len = n;
}

/* ---- parser ---- */

static int parse_or(struct parser *p);

/* header("Name"); the current token is the identifier 'header'. */
static int parse_header(struct parser *p, struct operand *o)
{
    size_t at = p->tok.off;

    if (advance(p) < 0) {
        return -1;
    }
    if (p->tok.kind != T_LPAREN) {
        unexpected(p, "'(' after header, as in header(\"Content-Type\")");
        return -1;
    }
    if (advance(p) < 0) {
        return -1;
    }
    if (p->tok.kind != T_STR) {
        unexpected(p, "a header name in quotes, as in header(\"Content-Type\")");
        return -1;
    }
    take_string(p, o);
    if (o->len == 0) {
        perr(p, p->tok.off, "empty header name at column %d, expected a name such as "
             "header(\"Content-Type\")", col(p->tok.off));
        return -1;
    }
    o->kind = O_HEADER;
    if (advance(p) < 0) {
        return -1;
    }
    if (p->tok.kind != T_RPAREN) {
        char exp[64];
        snprintf(exp, sizeof(exp), "')' to close header( at column %d", col(at));
        unexpected(p, exp);
        return -1;
    }
    return advance(p);
}

/* hl7("PID-3[2].1"); the current token is the identifier 'hl7'. The path is checked here, at
 * load, so a typo is a config error rather than a condition that never holds. */
static int parse_hl7(struct parser *p, struct operand *o)
{
    size_t at = p->tok.off;
    struct jn_err e;

    if (advance(p) < 0) {
        return -1;
    }
    if (p->tok.kind != T_LPAREN) {
        unexpected(p, "'(' after hl7, as in hl7(\"MSH-9.1\")");
        return -1;
    }
    if (advance(p) < 0) {
        return -1;
    }
    if (p->tok.kind != T_STR) {
        unexpected(p, "an HL7 path in quotes, as in hl7(\"MSH-9.1\")");
        return -1;
    }
    take_string(p, o);
    if (jn_hl7_path_parse(o->s, o->len, &o->path, &e) != 0) {
        perr(p, p->tok.off, "hl7() at column %d: %s", col(p->tok.off), e.msg);
        return -1;
    }
    o->kind = O_HL7;
    if (advance(p) < 0) {
        return -1;
    }
    if (p->tok.kind != T_RPAREN) {
        char exp[64];
        snprintf(exp, sizeof(exp), "')' to close hl7( at column %d", col(at));
        unexpected(p, exp);
        return -1;
    }
    return advance(p);
}

/* An identifier that is not one of ours: list the known names and the nearest one. */
static void unknown_name(struct parser *p)
{
    char word[64];
    char shown[SNIPPET_MAX * 4 + 8];
    char hint[64] = "";
    const char *near = NULL;
    size_t i = p->tok.off + p->tok.len;
    int call;

    while (i < p->len && is_space(p->src[i])) {
        i++;
    }
    call = i < p->len && p->src[i] == '(';
    if (p->tok.len < sizeof(word)) {
        memcpy(word, p->src + p->tok.off, p->tok.len);
        word[p->tok.len] = '\0';
        near = jn_nearest(word, known_names, sizeof(known_names) / sizeof(known_names[0]));
    }
    if (near) {
        snprintf(hint, sizeof(hint), "; did you mean '%s%s'?", near,
                 strcmp(near, "header") == 0 ? "(\"...\")" : "");
    }
    snippet(p->src + p->tok.off, p->tok.len, shown, sizeof(shown));
    perr(p, p->tok.off, "unknown %s '%s%s' at column %d, expected channel, id, payload or "
         "header(\"...\")%s", call ? "function" : "name", shown, call ? "()" : "",
         col(p->tok.off), hint);
}

static int ident_is(const struct parser *p, const char *name)
{
    size_t n = strlen(name);

    return p->tok.len == n && memcmp(p->src + p->tok.off, name, n) == 0;
}

/* value: fills o and moves past it. expected: what to say when there is no value here. */
static int parse_value(struct parser *p, struct operand *o, const char *expected)
{
    size_t at = p->tok.off;
    size_t alen = p->tok.len;

    if (p->tok.kind == T_STR) {
        take_string(p, o);
        return advance(p);
    }
    if (p->tok.kind != T_IDENT) {
        unexpected(p, expected);
        return -1;
    }
    if (ident_is(p, "header")) {
        return parse_header(p, o);
    }
    if (ident_is(p, "hl7")) {
        return parse_hl7(p, o);
    }
    if (ident_is(p, "json")) {
        perr(p, at, "'json' at column %d is not available yet: json() arrives with the JSON "
             "codec", col(at));
        return -1;
    }
    if (ident_is(p, "channel")) {
        o->kind = O_CHANNEL;
    } else if (ident_is(p, "id")) {
        o->kind = O_ID;
    } else if (ident_is(p, "payload")) {
        o->kind = O_PAYLOAD;
    } else {
        unknown_name(p);
        return -1;
    }
    if (advance(p) < 0) {
        return -1;
    }
    if (p->tok.kind == T_LPAREN) {
        perr(p, p->tok.off, "unexpected '(' at column %d: %.*s is not a function, write it "
             "without parentheses", col(p->tok.off), (int)alen, p->src + at);
        return -1;
    }
    return 0;
}

/* ---- regex vetting ---- */

/* Index just past the bracket expression opening at re[i], or n if it never closes (regcomp
 * then reports it). Inside brackets a backslash is an ordinary character (POSIX). */
static size_t skip_bracket(const char *re, size_t n, size_t i)
{
    size_t j = i + 1;

    if (j < n && re[j] == '^') {
        j++;
    }
    if (j < n && re[j] == ']') {
        j++;
    }
    while (j < n && re[j] != ']') {
        if (re[j] == '[' && j + 1 < n && (re[j + 1] == ':' || re[j + 1] == '.' ||
                                          re[j + 1] == '=')) {
            char t = re[j + 1];
            j += 2;
            while (j + 1 < n && !(re[j] == t && re[j + 1] == ']')) {
                j++;
            }
            j = j + 1 < n ? j + 2 : n;
            continue;
        }
        j++;
    }
    return j < n ? j + 1 : n;
}

/* Parses "{m}", "{m,}", "{m,n}" or glibc's "{,n}" at re[i]. Returns the index past it, or i
 * when it is not an interval (regcomp decides). *copies: how many times regcomp copies the
 * operand; *can_skip: m is 0; *unbounded: no upper bound. */
static size_t parse_interval(const char *re, size_t n, size_t i, unsigned long long *copies,
                             int *can_skip, int *unbounded)
{
    unsigned long long m = 0, top = 0;
    int comma = 0, has_top = 0;
    size_t j = i + 1;

    while (j < n && re[j] >= '0' && re[j] <= '9') {
        m = m * 10 + (unsigned long long)(re[j++] - '0');
        if (m > 100000) {
            m = 100000; /* past RE_DUP_MAX; saturate so the arithmetic cannot overflow */
        }
    }
    if (j < n && re[j] == ',') {
        comma = 1;
        j++;
        while (j < n && re[j] >= '0' && re[j] <= '9') {
            has_top = 1;
            top = top * 10 + (unsigned long long)(re[j++] - '0');
            if (top > 100000) {
                top = 100000;
            }
        }
    }
    if (j >= n || re[j] != '}') {
        return i;
    }
    *copies = has_top ? top : comma ? m + 1 : m;
    if (*copies < 1) {
        *copies = 1;
    }
    *can_skip = m == 0;
    *unbounded = comma && !has_top;
    return j + 1;
}

static unsigned long long sat(unsigned long long v)
{
    return v > JN_COND_MAX_REGEX_SIZE ? JN_COND_MAX_REGEX_SIZE + 1 : v;
}

/* Zero-width atoms: anchors and GNU's word-boundary escapes. */
static int zero_width(const char *re, size_t i)
{
    return re[i] == '^' || re[i] == '$' ||
           (re[i] == '\\' && re[i + 1] != '\0' && strchr("bB<>`'", re[i + 1]) != NULL);
}

/* One open group while vetting. Sizes estimate glibc's tree: an atom is itself plus a
 * concatenation node, a repetition operator adds its own nodes around what it repeats. */
struct vet_frame {
    unsigned long long sum;  /* size so far, every alternative */
    unsigned long long last; /* size of the last atom: what a repetition operator repeats */
    int alt_null;            /* a finished alternative can match the empty string */
    int prev_null;           /* the items before the last atom all can */
    int last_null;           /* the last atom can */
};

/* Rejects patterns that would make regcomp or regexec blow up, before calling regcomp:
 *  - an upper estimate of the unrolled size: glibc copies what {m,n} and + repeat, so "a++++"
 *    doubles four times, and memory grows about quadratically with the size;
 *  - unbounded repetition (*, +, {m,}) of something that can match the empty string, such as
 *    (a?)+ or (x*|y)*: glibc's epsilon closures over those cycles take time that grows with
 *    the fourth power of the size (a?????++++++++ compiles for 80 s). Always rewritable;
 *  - group nesting (regcomp recurses per group);
 *  - backreferences: not POSIX ERE, and they make matching exponential.
 * Anything this scan does not understand is left for regcomp to judge. at/len: the literal
 * in the expression, for messages. */
static int regex_vet(struct parser *p, const char *re, size_t at, size_t len)
{
    struct vet_frame fr[JN_COND_MAX_DEPTH + 1];
    struct vet_frame *t = &fr[0];
    char shown[SNIPPET_MAX * 4 + 8];
    unsigned long long total = 0;
    size_t n = strlen(re), i = 0;
    int depth = 0;

    snippet(p->src + at, len, shown, sizeof(shown));
    memset(t, 0, sizeof(*t));
    t->prev_null = 1;
    t->last_null = 1;
    while (i < n) {
        unsigned long long w = 2, copies = 0;
        int unbounded = 0, can_skip = 0, wnull = 0;
        char ch = re[i];
        size_t k;

        if (ch == '\\') {
            if (i + 1 < n && re[i + 1] >= '1' && re[i + 1] <= '9') {
                perr(p, at, "regex %s at column %d uses a backreference (\\%c), which is not "
                     "supported: matching with one can take exponential time", shown, col(at),
                     re[i + 1]);
                return -1;
            }
            wnull = zero_width(re, i);
            i += i + 1 < n ? 2 : 1;
        } else if (ch == '[') {
            i = skip_bracket(re, n, i);
        } else if (ch == '(') {
            if (depth == JN_COND_MAX_DEPTH) {
                perr(p, at, "regex %s at column %d nests groups more than %d deep", shown,
                     col(at), JN_COND_MAX_DEPTH);
                return -1;
            }
            t = &fr[++depth];
            memset(t, 0, sizeof(*t));
            t->prev_null = 1;
            t->last_null = 1;
            i++;
            continue;
        } else if (ch == ')' && depth > 0) {
            w = sat(t->sum + 2);
            wnull = t->alt_null || (t->prev_null && t->last_null);
            t = &fr[--depth];
            i++;
        } else if (ch == '|') {
            t->alt_null |= t->prev_null && t->last_null;
            t->sum = sat(t->sum + 1);
            t->last = 0;
            t->prev_null = 1;
            t->last_null = 1;
            i++;
            continue;
        } else if (ch == '*' || ch == '?') {
            copies = 1;
            can_skip = 1;
            unbounded = ch == '*';
            i++;
        } else if (ch == '+') {
            copies = 2; /* X+ is X X* */
            unbounded = 1;
            i++;
        } else if (ch == '{' && (k = parse_interval(re, n, i, &copies, &can_skip, &unbounded)) >
                   i) {
            i = k;
        } else {
            wnull = zero_width(re, i);
            i++;
        }
        if (copies && t->last) {
            if (unbounded && t->last_null) {
                perr(p, at, "regex %s at column %d repeats without limit something that can "
                     "match the empty string (as in (a?)+ or (a*)*); write it without the "
                     "inner ?, * or empty alternative", shown, col(at));
                return -1;
            }
            t->sum = sat(t->sum + (t->last + 2) * copies - t->last);
            t->last = sat((t->last + 2) * copies);
            t->last_null = t->last_null || can_skip;
            continue;
        }
        /* A new atom (a repetition operator with nothing before it is one too, for regcomp
         * to refuse). */
        t->prev_null = t->prev_null && t->last_null;
        t->last_null = wnull;
        t->sum = sat(t->sum + w);
        t->last = w;
    }
    for (int g = 0; g <= depth; g++) {
        total = sat(total + fr[g].sum);
    }
    if (total > JN_COND_MAX_REGEX_SIZE) {
        perr(p, at, "regex %s at column %d is too large once its repetitions are unrolled "
             "(at most about %d repeated characters, as in a{0,%d})", shown, col(at),
             JN_COND_MAX_REGEX_SIZE / 4, JN_COND_MAX_REGEX_SIZE / 4);
        return -1;
    }
    return 0;
}

regex_t *jn_cond_regex_new(const char *re, struct jn_err *err)
{
    struct parser p;
    struct jn_diag d;
    regex_t *r;
    int rc;

    memset(&p, 0, sizeof(p));
    p.src = re;
    p.len = strlen(re);
    p.open = -1;
    if (p.len > JN_COND_MAX_LEN) {
        jn_err_set(err, JN_EINVAL, "regex is too long (more than %d bytes)", JN_COND_MAX_LEN);
        return NULL;
    }
    jn_diag_init(&d);
    p.d = &d;
    if (regex_vet(&p, re, 0, p.len) < 0) {
        if (d.n) {
            jn_err_set(err, JN_EINVAL, "%s", d.msgs[0]);
        } else {
            jn_err_set(err, JN_ENOMEM, "out of memory");
        }
        jn_diag_free(&d);
        return NULL;
    }
    jn_diag_free(&d);
    if ((r = jn_malloc(sizeof(*r))) == NULL) {
        jn_err_set(err, JN_ENOMEM, "out of memory");
        return NULL;
    }
    rc = regcomp(r, re, REG_EXTENDED | REG_NOSUB);
    if (rc != 0) {
        char why[256];
        regerror(rc, r, why, sizeof(why));
        jn_err_set(err, rc == REG_ESPACE ? JN_ENOMEM : JN_EINVAL, "invalid regex: %s", why);
        jn_free(r); /* regfree is not defined on a pattern regcomp rejected */
        return NULL;
    }
    return r;
}

void jn_cond_regex_free(regex_t *r)
{
    if (r != NULL) {
        regfree(r);
        jn_free(r);
    }
}

/* cmp = value [ op value ]; returns a node index or -1. */
static int parse_cmp(struct parser *p)
{
    struct operand a, b;
    enum tok_kind op;
    regex_t *re = NULL;
    int n;

    memset(&b, 0, sizeof(b));
    if (parse_value(p, &a, expect_value) < 0) {
        return -1;
    }
    if (!is_cmp(p->tok.kind)) {
        n = new_node(p, N_VALUE);
        if (n < 0) {
            return -1;
        }
        p->c->nodes[n].a = a;
        p->after_value = 1;
        return n;
    }
    op = p->tok.kind;
    if (advance(p) < 0) {
        return -1;
    }
    if (op == T_MATCH || op == T_NMATCH) {
        char exp[96];
        size_t at = p->tok.off;
        int rc;
        if (p->tok.kind != T_STR) {
            snprintf(exp, sizeof(exp), "a regex in quotes after '%s' (patterns are compiled "
                     "when the config loads)", op_text(op));
            unexpected(p, exp);
            return -1;
        }
        take_string(p, &b);
        if (regex_vet(p, b.s, at, p->tok.len) < 0) {
            return -1;
        }
        re = jn_malloc(sizeof(*re));
        if (re == NULL) {
            oom(p);
            return -1;
        }
        rc = regcomp(re, b.s, REG_EXTENDED | REG_NOSUB);
        if (rc != 0) {
            char why[256];
            char shown[SNIPPET_MAX * 4 + 8];
            if (rc == REG_ESPACE) {
                oom(p);
            } else {
                regerror(rc, re, why, sizeof(why));
                snippet(p->src + at, p->tok.len, shown, sizeof(shown));
                perr(p, at, "invalid regex %s at column %d: %s", shown, col(at), why);
            }
            /* regfree is not defined on a pattern regcomp rejected; nothing was kept. */
            jn_free(re);
            return -1;
        }
        if (advance(p) < 0) {
            regfree(re);
            jn_free(re);
            return -1;
        }
    } else if (parse_value(p, &b, expect_operand) < 0) {
        return -1;
    }
    n = new_node(p, N_CMP);
    if (n < 0) {
        if (re) {
            regfree(re);
            jn_free(re);
        }
        return -1;
    }
    p->c->nodes[n].op = op;
    p->c->nodes[n].a = a;
    p->c->nodes[n].b = b;
    p->c->nodes[n].re = re;
    p->after_value = 0;
    if (is_cmp(p->tok.kind)) {
        unexpected_after(p, "comparisons do not chain: join them with && or ||");
        return -1;
    }
    return n;
}

/* primary = "(" or ")" | cmp */
static int parse_primary(struct parser *p)
{
    long outer = p->open;
    int n;

    if (p->tok.kind != T_LPAREN) {
        return parse_cmp(p);
    }
    if (p->depth >= JN_COND_MAX_DEPTH) {
        perr(p, p->tok.off, "condition nests too deeply at column %d (more than %d levels of "
             "parentheses)", col(p->tok.off), JN_COND_MAX_DEPTH);
        return -1;
    }
    p->depth++;
    p->open = (long)p->tok.off;
    if (advance(p) < 0) {
        return -1;
    }
    n = parse_or(p);
    if (n < 0) {
        return -1;
    }
    if (p->tok.kind != T_RPAREN) {
        unexpected_after(p, NULL);
        return -1;
    }
    p->depth--;
    p->open = outer;
    if (advance(p) < 0) {
        return -1;
    }
    p->after_value = 0;
    if (is_cmp(p->tok.kind)) {
        unexpected_after(p, "only values can be compared, not a condition in parentheses");
        return -1;
    }
    return n;
}

/* not = { "!" } primary. A loop rather than recursion, so a run of '!' cannot exhaust the
 * stack; an even number of them cancels out. */
static int parse_not(struct parser *p)
{
    int nots = 0;
    int n, k;

    while (p->tok.kind == T_NOT) {
        nots ^= 1;
        if (advance(p) < 0) {
            return -1;
        }
    }
    k = parse_primary(p);
    if (k < 0 || !nots) {
        return k;
    }
    n = new_node(p, N_NOT);
    if (n < 0) {
        return -1;
    }
    p->c->nodes[n].first = k;
    return n;
}

/* Parses one operand of an n-ary || or && (sub = parse_and or parse_not). Chains become one
 * node with a list of children, so evaluation depth does not grow with the chain length. */
static int parse_list(struct parser *p, enum node_kind kind, enum tok_kind sep,
                      int (*sub)(struct parser *))
{
    int first = sub(p);
    int n, last;

    if (first < 0 || p->tok.kind != sep) {
        return first;
    }
    n = new_node(p, kind);
    if (n < 0) {
        return -1;
    }
    p->c->nodes[n].first = first;
    last = first;
    while (p->tok.kind == sep) {
        int k;
        if (advance(p) < 0) {
            return -1;
        }
        k = sub(p);
        if (k < 0) {
            return -1;
        }
        p->c->nodes[last].next = k;
        last = k;
    }
    return n;
}

static int parse_and(struct parser *p)
{
    return parse_list(p, N_AND, T_AND, parse_not);
}

static int parse_or(struct parser *p)
{
    return parse_list(p, N_OR, T_OR, parse_and);
}

/* ---- public ---- */

void jn_cond_free(struct jn_cond *c)
{
    if (c == NULL) {
        return;
    }
    for (int i = 0; i < c->nnodes; i++) {
        if (c->nodes[i].re) {
            regfree(c->nodes[i].re);
            jn_free(c->nodes[i].re);
        }
    }
    jn_free(c->nodes);
    jn_free(c->pool);
    jn_free(c);
}

struct jn_cond *jn_cond_compile(const char *expr, const struct jn_pos *pos, struct jn_diag *d)
{
    struct parser p;
    size_t len;

    memset(&p, 0, sizeof(p));
    p.pos = pos;
    p.d = d;
    p.open = -1;
    if (expr == NULL) {
        expr = "";
    }
    len = strnlen(expr, JN_COND_MAX_LEN + 1);
    if (len > JN_COND_MAX_LEN) {
        perr(&p, 0, "condition is too long (more than %d bytes); split it across routes",
             JN_COND_MAX_LEN);
        return NULL;
    }
    p.src = expr;
    p.len = len;
    p.c = jn_calloc(1, sizeof(*p.c));
    if (p.c == NULL) {
        oom(&p);
        return NULL;
    }
    p.c->root = -1;
    p.c->pool = jn_malloc(len + 1);
    if (p.c->pool == NULL) {
        oom(&p);
        jn_cond_free(p.c);
        return NULL;
    }
    if (advance(&p) == 0) {
        if (p.tok.kind == T_END) {
            perr(&p, 0, "empty condition, expected an expression such as "
                 "channel == \"orders-in\"");
        } else {
            p.c->root = parse_or(&p);
            if (p.c->root >= 0 && p.tok.kind != T_END) {
                unexpected_after(&p, NULL);
            }
        }
    }
    if (p.failed) {
        jn_cond_free(p.c);
        return NULL;
    }
    return p.c;
}

/* hl7(path): the value at path in the payload, escapes decoded, into hv; "" when the payload
 * is not HL7 or has no such element (or when a long value finds no memory). */
static void hl7_value(const struct operand *o, const struct jn_msg *m, const char **s,
                      size_t *n, struct hl7val *hv)
{
    struct jn_hl7_delims d;
    struct jn_hl7_span sp;
    char *out = hv->inl;

    *s = "";
    *n = 0;
    if (m->payload == NULL || jn_hl7_lookup(m->payload, m->len, &o->path, &sp) != 1 ||
        jn_hl7_delims_read(m->payload, m->len, &d, NULL) != 0) {
        return;
    }
    if (sp.len >= sizeof(hv->inl)) {
        hv->heap = jn_malloc(sp.len + 1);
        if (hv->heap == NULL) {
            return;
        }
        out = hv->heap;
    }
    *n = jn_hl7_text(&d, &o->path, &sp, out);
    *s = out;
}

/* The operand's bytes. Every source is NUL-terminated (literals in the pool, the payload by
 * jn_msg's guarantee, hl7() values in hv), so s can also be handed to regexec as a C string. */
static void value_of(const struct operand *o, const struct jn_msg *m, const char **s, size_t *n,
                     struct hl7val *hv)
{
    const char *v = "";

    switch (o->kind) {
    case O_HL7:
        hl7_value(o, m, s, n, hv);
        return;
    case O_LIT:
        *s = o->s;
        *n = o->len;
        return;
    case O_PAYLOAD:
        if (m->payload) {
            *s = (const char *)m->payload;
            *n = m->len;
            return;
        }
        break;
    case O_CHANNEL:
        v = m->channel ? m->channel : "";
        break;
    case O_ID:
        v = m->id;
        break;
    case O_HEADER:
        v = jn_msg_header_get(m, o->s);
        if (v == NULL) {
            v = "";
        }
        break;
    }
    *s = v;
    *n = strlen(v);
}

/* A comparison or a bare value. Not inlined into eval_node, so the hl7() buffers sit on the
 * stack once per leaf rather than once per level of nesting. */
static __attribute__((noinline)) int eval_leaf(const struct node *n, const struct jn_msg *m)
{
    struct hl7val ha, hb;
    const char *as, *bs;
    size_t al, bl;
    int r;

    ha.heap = NULL;
    hb.heap = NULL;
    value_of(&n->a, m, &as, &al, &ha);
    if (n->kind == N_VALUE) {
        r = al > 0;
    } else if (n->re) {
        /* regexec reads a C string: matching a payload stops at its first NUL byte. */
        r = regexec(n->re, as, 0, NULL, 0) == 0;
        r = n->op == T_MATCH ? r : !r;
    } else {
        value_of(&n->b, m, &bs, &bl, &hb);
        r = al == bl && memcmp(as, bs, al) == 0;
        r = n->op == T_EQ ? r : !r;
    }
    jn_free(ha.heap);
    jn_free(hb.heap);
    return r;
}

static int eval_node(const struct jn_cond *c, int i, const struct jn_msg *m)
{
    const struct node *n = &c->nodes[i];

    switch (n->kind) {
    case N_OR:
        for (int k = n->first; k >= 0; k = c->nodes[k].next) {
            if (eval_node(c, k, m)) {
                return 1;
            }
        }
        return 0;
    case N_AND:
        for (int k = n->first; k >= 0; k = c->nodes[k].next) {
            if (!eval_node(c, k, m)) {
                return 0;
            }
        }
        return 1;
    case N_NOT:
        return !eval_node(c, n->first, m);
    case N_VALUE:
    case N_CMP:
        return eval_leaf(n, m);
    }
    return 0;
}

int jn_cond_eval(const struct jn_cond *c, const struct jn_msg *m)
{
    if (c == NULL) {
        return 1;
    }
    if (m == NULL || c->root < 0) {
        return 0;
    }
    return eval_node(c, c->root, m);
}
