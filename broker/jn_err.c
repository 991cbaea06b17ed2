/* jn_err: error names and the error carrier (see jn_err.h). */
#include "jn_err.h"

#include <stdarg.h>
#include <stdio.h>

const char *jn_strerror(int code)
{
    switch (code) {
    case JN_OK: return "ok";
    case JN_ENOMEM: return "out of memory";
    case JN_EINVAL: return "invalid argument";
    case JN_EPROTO: return "protocol error";
    case JN_EAGAIN: return "try again";
    case JN_EFULL: return "full";
    case JN_EIO: return "I/O error";
    case JN_ENOENT: return "not found";
    case JN_ESTOPPED: return "stopping";
    case JN_ELIMIT: return "over a limit";
    default: return "unknown error";
    }
}

int jn_err_set(struct jn_err *err, int code, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL) {
        return code;
    }
    err->code = code;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    return code;
}
