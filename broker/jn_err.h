/*
 * jn_err: error codes and the error carrier.
 *
 * Modelled on LMDB's contract: functions return 0 or a negative JN_E* code, named by
 * jn_strerror(). Where a person will read the reason (config, HTTP 4xx body, HL7 ERR), the
 * callee also fills a struct jn_err with a sentence.
 */
#ifndef JN_ERR_H
#define JN_ERR_H

#include <stddef.h>

enum {
    JN_OK = 0,
    JN_ENOMEM = -1,   /* allocation failed */
    JN_EINVAL = -2,   /* bad argument or bad input */
    JN_EPROTO = -3,   /* peer broke the protocol */
    JN_EAGAIN = -4,   /* try again later */
    JN_EFULL = -5,    /* store or queue full */
    JN_EIO = -6,      /* system call failed; errno in the message */
    JN_ENOENT = -7,   /* no such thing */
    JN_ESTOPPED = -8, /* broker is stopping */
    JN_ELIMIT = -9,   /* over a configured limit (rate_limit, connections); try again later */
};

#define JN_ERR_MSG_MAX 512

struct jn_err {
    int code;
    char msg[JN_ERR_MSG_MAX];
};

const char *jn_strerror(int code);

/* Fill err (may be NULL) and return code, so callers can write `return jn_err_set(...)`. */
int jn_err_set(struct jn_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static inline void jn_err_clear(struct jn_err *err)
{
    if (err) {
        err->code = 0;
        err->msg[0] = '\0';
    }
}

#endif
