/* jn_diag: collected config errors with positions (see jn_diag.h). */
#include "jn_diag.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "jn_buf.h"
#include "jn_mem.h"

void jn_diag_init(struct jn_diag *d)
{
    memset(d, 0, sizeof(*d));
}

void jn_diag_free(struct jn_diag *d)
{
    for (size_t i = 0; i < d->n; i++) {
        jn_free(d->msgs[i]);
    }
    jn_free(d->msgs);
    jn_free(d->at);
    jn_free(d->warn);
    for (size_t i = 0; i < d->nfiles; i++) {
        jn_free(d->files[i]);
    }
    jn_free(d->files);
    memset(d, 0, sizeof(*d));
}

const char *jn_diag_file(struct jn_diag *d, const char *name)
{
    char **f;
    char *s;

    for (size_t i = 0; i < d->nfiles; i++) {
        if (strcmp(d->files[i], name) == 0) {
            return d->files[i];
        }
    }
    f = jn_realloc(d->files, (d->nfiles + 1) * sizeof(*f));
    if (f == NULL) {
        d->oom = 1;
        return "?";
    }
    d->files = f;
    s = jn_strdup(name);
    if (s == NULL) {
        d->oom = 1;
        return "?";
    }
    d->files[d->nfiles++] = s;
    return s;
}

void jn_diag_take(struct jn_diag *d, const struct jn_diag *src, const char *prefix)
{
    for (size_t i = 0; i < src->n; i++) {
        const struct jn_pos *at = &src->at[i];
        const char *text = src->msgs[i];
        char head[512];
        int hn = 0;

        /* The text without the position diag__addv wrote in front of it. */
        if (at->file && at->line > 0) {
            hn = snprintf(head, sizeof(head), "%s:%d:%d: ", at->file, at->line, at->col);
        } else if (at->file) {
            hn = snprintf(head, sizeof(head), "%s: ", at->file);
        }
        if (hn > 0 && (size_t)hn < sizeof(head) && strncmp(text, head, (size_t)hn) == 0) {
            text += hn;
        }
        if (src->warn[i]) {
            if (strncmp(text, "warning: ", 9) == 0) {
                text += 9;
            }
            jn_diag_warn(d, at->file ? at : NULL, "%s%s", prefix ? prefix : "", text);
        } else {
            jn_diag_add(d, at->file ? at : NULL, "%s%s", prefix ? prefix : "", text);
        }
    }
    if (src->oom) {
        d->oom = 1;
    }
}

static void diag__addv(struct jn_diag *d, const struct jn_pos *pos, int warn, const char *fmt,
                       va_list ap)
{
    struct jn_buf b = JN_BUF_INIT;
    va_list ap2;
    char *s;
    int n;

    if (!warn) {
        d->nerr++; /* counted even when the message cannot be stored */
    }
    if (pos && pos->file && pos->line > 0) {
        jn_buf_printf(&b, "%s:%d:%d: ", pos->file, pos->line, pos->col);
    } else if (pos && pos->file) {
        jn_buf_printf(&b, "%s: ", pos->file);
    }
    if (warn) {
        jn_buf_puts(&b, "warning: ");
    }
    va_copy(ap2, ap);
    n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n >= 0 && jn_buf_reserve(&b, (size_t)n) == 0) {
        vsnprintf(b.p + b.len, (size_t)n + 1, fmt, ap);
        b.len += (size_t)n;
    } else {
        d->oom = 1;
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 8;
        char **m = jn_realloc(d->msgs, cap * sizeof(*m));
        struct jn_pos *at;
        unsigned char *w;
        if (m == NULL) {
            d->oom = 1;
            jn_buf_reset(&b);
            return;
        }
        d->msgs = m;
        at = jn_realloc(d->at, cap * sizeof(*at));
        if (at == NULL) {
            d->oom = 1;
            jn_buf_reset(&b);
            return;
        }
        d->at = at;
        w = jn_realloc(d->warn, cap);
        if (w == NULL) {
            d->oom = 1;
            jn_buf_reset(&b);
            return;
        }
        d->warn = w;
        d->cap = cap;
    }
    s = jn_buf_steal(&b);
    if (s == NULL) {
        d->oom = 1;
        return;
    }
    /* Our own copy of the file name: the caller's may be freed before the diag is printed. */
    d->at[d->n] = (struct jn_pos){pos && pos->file ? jn_diag_file(d, pos->file) : NULL,
                                  pos ? pos->line : 0, pos ? pos->col : 0};
    d->warn[d->n] = (unsigned char)(warn != 0);
    d->msgs[d->n++] = s;
}

void jn_diag_add(struct jn_diag *d, const struct jn_pos *pos, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    diag__addv(d, pos, 0, fmt, ap);
    va_end(ap);
}

void jn_diag_warn(struct jn_diag *d, const struct jn_pos *pos, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    diag__addv(d, pos, 1, fmt, ap);
    va_end(ap);
}

struct order {
    const struct jn_pos *at;
    size_t i;
};

/* Message order for printing: file name, line, column, then the order of adding (qsort is not
 * stable by itself). */
static int cmp_order(const void *pa, const void *pb)
{
    const struct order *a = pa, *b = pb;
    int c = strcmp(a->at->file ? a->at->file : "", b->at->file ? b->at->file : "");

    if (c != 0) {
        return c;
    }
    if (a->at->line != b->at->line) {
        return a->at->line < b->at->line ? -1 : 1;
    }
    if (a->at->col != b->at->col) {
        return a->at->col < b->at->col ? -1 : 1;
    }
    return a->i < b->i ? -1 : a->i > b->i;
}

void jn_diag_print(const struct jn_diag *d, FILE *out)
{
    struct order *order = d->n ? jn_malloc(d->n * sizeof(*order)) : NULL;

    /* Without memory for the order, the messages are printed in the order they were added. */
    if (order != NULL) {
        for (size_t i = 0; i < d->n; i++) {
            order[i] = (struct order){&d->at[i], i};
        }
        qsort(order, d->n, sizeof(*order), cmp_order);
    }
    for (size_t i = 0; i < d->n; i++) {
        fprintf(out, "%s\n", d->msgs[order ? order[i].i : i]);
    }
    jn_free(order);
    if (d->oom) {
        fprintf(out, "(out of memory: some errors were not recorded)\n");
    }
}

size_t jn_edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    size_t row[64];

    if (lb >= sizeof(row) / sizeof(row[0]) || la >= 64) {
        return (size_t)-1;
    }
    for (size_t j = 0; j <= lb; j++) {
        row[j] = j;
    }
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) {
                best = up + 1;
            }
            if (row[j - 1] + 1 < best) {
                best = row[j - 1] + 1;
            }
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

const char *jn_nearest(const char *word, const char *const *cands, size_t n)
{
    const char *best = NULL;
    size_t bestd = (size_t)-1;
    size_t limit = strlen(word) / 3;

    if (limit < 2) {
        limit = 2;
    }
    for (size_t i = 0; i < n; i++) {
        size_t dd = jn_edit_distance(word, cands[i]);
        if (dd < bestd) {
            bestd = dd;
            best = cands[i];
        }
    }
    return bestd <= limit ? best : NULL;
}
