/*
 * jn_utf8: whether bytes are well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates,
 * nothing past U+10FFFF). One check for every place that must know: JSON strings, WebSocket
 * text frames, MQTT strings, test files.
 */
#ifndef JN_UTF8_H
#define JN_UTF8_H

#include <stddef.h>

/* 1 when the n bytes at p are well-formed UTF-8 (NUL included, as U+0000), else 0. */
int jn_utf8_valid(const void *p, size_t n);

#endif
