/*
 * jn_sdnotify: the systemd notify protocol (sd_notify(3)) without libsystemd, and the loop timer
 * that keeps the service manager told: WATCHDOG=1 at half of $WATCHDOG_USEC and STATUS= lines.
 *
 * The protocol is one datagram per message, "KEY=value" lines, sent to the AF_UNIX socket named
 * by $NOTIFY_SOCKET (a path, or "@name" for an abstract socket). Without NOTIFY_SOCKET nothing
 * is sent and nothing is started: outside systemd (or with Type=simple) this module is inert.
 * The watchdog is on when $WATCHDOG_USEC is set and $WATCHDOG_PID is unset or our pid (the
 * manager watches the main process only).
 *
 * Best effort by design: a datagram that cannot be sent is not retried (systemd's own client
 * does the same); the broker never waits on its manager.
 *
 * Loop thread only. Ownership: the caller owns the struct (jn_sdnotify_free).
 */
#ifndef JN_SDNOTIFY_H
#define JN_SDNOTIFY_H

#include <stddef.h>

struct event_base;
struct jn_sdnotify;

/* Writes a one-line status ("ready; 3 channels up; 120 queued") into buf (n bytes). */
typedef void (*jn_sdnotify_status_fn)(void *arg, char *buf, size_t n);

/*
 * Sends "READY=1" with the first STATUS= line and starts the timer on base: STATUS= every
 * JN_SDNOTIFY_STATUS_MS (when it changed), WATCHDOG=1 at half the watchdog period. Returns the
 * notifier, or NULL when NOTIFY_SOCKET is unset or unusable (said in the log, once) or on no
 * memory: every other call takes NULL as a no-op.
 */
struct jn_sdnotify *jn_sdnotify_ready(struct event_base *base, jn_sdnotify_status_fn status,
                                      void *arg);
/* Sends "STOPPING=1" with a STATUS= line; the watchdog keeps running while the broker drains. */
void jn_sdnotify_stopping(struct jn_sdnotify *n, const char *status);
void jn_sdnotify_free(struct jn_sdnotify *n);

/* One datagram to $NOTIFY_SOCKET (what sd_notify(0, state) does). 1 sent, 0 NOTIFY_SOCKET is
 * unset, or a negative JN_E* code. For a single message outside the broker's life cycle. */
int jn_sdnotify_send(const char *state);

/* The watchdog period meant for this process, in microseconds; 0 when there is none. */
long long jn_sdnotify_watchdog_usec(void);

#define JN_SDNOTIFY_STATUS_MS 2000

#endif
