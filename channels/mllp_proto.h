/*
 * mllp_proto: the MLLP wire protocol without sockets, so it can be unit-tested and fuzzed alone.
 *
 *   frame = <VT> (0x0B)  message bytes  <FS> (0x1C) <CR> (0x0D)
 *
 * The framer is a byte-at-a-time state machine fed whatever the socket gave (any split); it
 * reports whole frames and every way a peer can get framing wrong, so the channel can answer
 * each one (AR with the reason, or a closed connection and a log line). It never holds more
 * than max_message bytes of a frame, whatever the peer sends.
 *
 * The rest builds and reads acknowledgements (HL7 v2 ACK: MSH, MSA, ERR), in the sender's own
 * delimiters and version, original mode (AA/AE/AR) or enhanced mode (CA/CE/CR).
 *
 * Threads: a framer belongs to one connection; the functions are reentrant.
 */
#ifndef JN_MLLP_PROTO_H
#define JN_MLLP_PROTO_H

#include <stddef.h>

#include "hl7.h"
#include "jn_buf.h"

#define JN_MLLP_VT 0x0b
#define JN_MLLP_FS 0x1c
#define JN_MLLP_CR 0x0d

/* An ACK never exceeds this (framing included): python3-hl7's mllp_send reads each with one
 * recv(4096) (stack.md §9), and no real ACK needs more. */
#define JN_MLLP_ACK_MAX 4096
/* Bytes outside a frame that are reported as garbage at once (the rest of the run follows). */
#define JN_MLLP_GARBAGE_MAX 1024

#define JN_MLLP_STRICT (1u << 0) /* <FS> must be followed by <CR> */

enum jn_mllp_ev_kind {
    JN_MLLP_EV_NONE = 0,
    JN_MLLP_EV_FRAME,        /* a whole frame: data, len */
    JN_MLLP_EV_OVERSIZE,     /* a frame of total bytes (> max) ended; data: its first max bytes */
    JN_MLLP_EV_UNTERMINATED, /* a frame cut short: a new <VT> came, or the connection ended or
                              * went idle (jn_mllp_framer_end); data: what came of it */
    JN_MLLP_EV_BAD_END,      /* strict: <FS> followed by something other than <CR>; data: the
                              * frame */
    JN_MLLP_EV_GARBAGE,      /* bytes other than CR, LF, space or tab outside a frame, up to the
                              * next line end, <VT> or JN_MLLP_GARBAGE_MAX bytes; data: them */
};

struct jn_mllp_event {
    enum jn_mllp_ev_kind kind;
    const char *data; /* borrowed from the framer until the next feed or end call */
    size_t len;
    size_t total;     /* OVERSIZE, UNTERMINATED: bytes the frame had in all */
};

struct jn_mllp_framer {
    int state;
    unsigned flags;
    size_t max;
    struct jn_buf buf; /* the frame so far, at most max bytes (or the garbage run) */
    size_t total;
    int reset;         /* the last event's data is still lent out; drop it on the next call */
};

void jn_mllp_framer_init(struct jn_mllp_framer *f, size_t max_message, unsigned flags);
void jn_mllp_framer_free(struct jn_mllp_framer *f);
/*
 * Consumes bytes from data until an event is complete or the bytes run out; *used says how
 * many. Call again with the rest after handling ev (kind NONE: everything was consumed and no
 * event is complete). 0 or JN_ENOMEM (then the connection should be closed).
 */
int jn_mllp_feed(struct jn_mllp_framer *f, const void *data, size_t len, size_t *used,
                 struct jn_mllp_event *ev);
/* The connection ended or went idle: reports a frame in progress (UNTERMINATED) or garbage in
 * progress, else NONE. */
void jn_mllp_framer_end(struct jn_mllp_framer *f, struct jn_mllp_event *ev);
/* 1 when a frame (or garbage run) is in progress. */
int jn_mllp_framer_busy(const struct jn_mllp_framer *f);

/* Appends <VT> data <FS><CR>. 0 or JN_ENOMEM. */
int jn_mllp_frame(const void *data, size_t len, struct jn_buf *out);

/* ---- what an ACK needs from the message's MSH ---- */

struct jn_mllp_msh {
    struct jn_hl7_delims d;
    int has_delims;       /* MSH-1/MSH-2 readable (else the ACK uses |^~\&) */
    int has_ctlid;        /* MSH-10 is present (it may be empty) */
    int enhanced;         /* MSH-15 or MSH-16 is set: CA/CE/CR */
    char accept_ack[3];   /* MSH-15: "AL", "NE", "ER", "SU" or "" */
    int version_minor;    /* 5 for "2.5.1"; 0 when unknown */
    /* Raw (escaped) values, borrowed from the bytes given to jn_mllp_msh_read. */
    struct jn_hl7_span send_app, send_fac, recv_app, recv_fac, trigger, ctlid, proc, version;
    struct jn_hl7_span type;       /* MSH-9.1 */
    struct jn_hl7_span msgtype;    /* MSH-9 (its first repetition), e.g. ADT^A01 */
};

/* Reads what it can of the MSH at the start of data (the rest may be broken). Returns 1 when
 * the control id (MSH-10) could be read, else 0. */
int jn_mllp_msh_read(const void *data, size_t len, struct jn_mllp_msh *m);

/* HL7 table 0357 codes used in ERR. */
enum {
    JN_HL7_ERR_SEGMENT = 100,  /* Segment sequence error */
    JN_HL7_ERR_REQUIRED = 101, /* Required field missing */
    JN_HL7_ERR_DATA = 102,     /* Data type error */
    JN_HL7_ERR_TYPE = 200,     /* Unsupported message type */
    JN_HL7_ERR_INTERNAL = 207, /* Application internal error */
};

/*
 * Builds a framed ACK for the message m describes. code: 'A' (accept: AA/CA), 'E' (error:
 * AE/CE) or 'R' (reject: AR/CR); the mode follows m->enhanced. reason (NULL for 'A') goes in
 * MSA-3 and an ERR segment with err_code (table 0357); it is escaped and cut so the whole ACK
 * stays within JN_MLLP_ACK_MAX. ack_id: our MSH-10; ts: MSH-7 (YYYYMMDDHHMMSS+0000). Appends
 * to out. 0 or JN_ENOMEM.
 */
int jn_mllp_ack_build(const struct jn_mllp_msh *m, char code, int err_code, const char *reason,
                      const char *ack_id, const char *ts, struct jn_buf *out);

/* Whether MSH-15 lets an accept ACK with this code be sent at all (NE never, ER only on
 * errors, SU only on success; original mode always). */
int jn_mllp_ack_wanted(const struct jn_mllp_msh *m, char code);

/* ---- reading an ACK (OUT) ---- */

struct jn_mllp_ack {
    char code[3];              /* MSA-1: "AA", "AE", "AR", "CA", "CE", "CR" (or what came) */
    struct jn_hl7_span ctlid;  /* MSA-2, raw, borrowed */
    char reason[256];          /* ERR-8, ERR-3.2, ERR-1.4.2 or MSA-3, decoded; may be "" */
};

/* Reads an ACK message (unframed). 0, or JN_EPROTO with the reason in err. */
int jn_mllp_ack_read(const void *data, size_t len, struct jn_mllp_ack *a, struct jn_err *err);

#endif
