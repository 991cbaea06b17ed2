/*
 * jn_sdnotify: sd_notify(3) in a few lines, and the timers that keep systemd told (see
 * jn_sdnotify.h). The wire format is the one sd-daemon(3) documents: newline-separated
 * KEY=value assignments in one datagram to $NOTIFY_SOCKET.
 */
#include "jn_sdnotify.h"

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "jn_err.h"
#include "jn_log.h"
#include "jn_mem.h"

struct jn_sdnotify {
    int fd;
    struct sockaddr_un addr;
    socklen_t addrlen;
    struct event *wd_ev;     /* WATCHDOG=1, persistent, at half the period; NULL: no watchdog */
    struct event *status_ev; /* STATUS=, persistent, every JN_SDNOTIFY_STATUS_MS */
    jn_sdnotify_status_fn status;
    void *arg;
    char last[256];          /* the last STATUS= text sent */
};

/* $NOTIFY_SOCKET as an address: 0, JN_ENOENT (unset or empty) or JN_EINVAL. */
static int notify_addr(struct sockaddr_un *a, socklen_t *len)
{
    const char *s = getenv("NOTIFY_SOCKET");
    size_t n;

    if (s == NULL || s[0] == '\0') {
        return JN_ENOENT;
    }
    n = strlen(s);
    /* A path must be absolute; "@name" is an abstract name (a leading NUL on the wire). */
    if ((s[0] != '/' && s[0] != '@') || n >= sizeof(a->sun_path) || (s[0] == '@' && n < 2)) {
        return JN_EINVAL;
    }
    memset(a, 0, sizeof(*a));
    a->sun_family = AF_UNIX;
    memcpy(a->sun_path, s, n);
    if (s[0] == '@') {
        a->sun_path[0] = '\0';
    }
    /* An abstract name's length is exact (no trailing NUL); a path's counts its NUL. */
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (s[0] == '/'));
    return 0;
}

static int send_on(int fd, const struct sockaddr_un *a, socklen_t len, const char *state)
{
    ssize_t r;

    do {
        r = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (const struct sockaddr *)a, len);
    } while (r < 0 && errno == EINTR);
    return r < 0 ? JN_EIO : 1;
}

int jn_sdnotify_send(const char *state)
{
    struct sockaddr_un a;
    socklen_t len;
    int rc = notify_addr(&a, &len);
    int fd;

    if (rc != 0) {
        return rc == JN_ENOENT ? 0 : rc;
    }
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return JN_EIO;
    }
    rc = send_on(fd, &a, len, state);
    close(fd);
    return rc;
}

long long jn_sdnotify_watchdog_usec(void)
{
    const char *us = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
    char *end;
    long long v;

    if (us == NULL || us[0] == '\0') {
        return 0;
    }
    if (pid != NULL && pid[0] != '\0') {
        long p = strtol(pid, &end, 10);
        if (*end != '\0' || p != (long)getpid()) {
            return 0; /* meant for another process (a wrapper that exec'd us keeps its pid) */
        }
    }
    v = strtoll(us, &end, 10);
    return *end == '\0' && v > 0 ? v : 0;
}

static void send_status(struct jn_sdnotify *n, const char *lead)
{
    char text[sizeof(n->last)], msg[sizeof(n->last) + 32];

    n->status(n->arg, text, sizeof(text));
    if (lead == NULL && strcmp(text, n->last) == 0) {
        return; /* unchanged: nothing to tell */
    }
    snprintf(n->last, sizeof(n->last), "%s", text);
    snprintf(msg, sizeof(msg), "%s%sSTATUS=%s", lead ? lead : "", lead ? "\n" : "", text);
    send_on(n->fd, &n->addr, n->addrlen, msg);
}

static void status_cb(evutil_socket_t fd, short what, void *arg)
{
    send_status(arg, NULL);
}

static void watchdog_cb(evutil_socket_t fd, short what, void *arg)
{
    struct jn_sdnotify *n = arg;

    /* Sent from the loop itself: a loop that hangs stops it, and systemd restarts us. */
    send_on(n->fd, &n->addr, n->addrlen, "WATCHDOG=1");
}

struct jn_sdnotify *jn_sdnotify_ready(struct event_base *base, jn_sdnotify_status_fn status,
                                      void *arg)
{
    struct jn_sdnotify *n;
    struct timeval stv = {JN_SDNOTIFY_STATUS_MS / 1000, (JN_SDNOTIFY_STATUS_MS % 1000) * 1000};
    long long wd = jn_sdnotify_watchdog_usec();
    int rc;

    n = jn_calloc(1, sizeof(*n));
    if (n == NULL) {
        jn_log(JN_LOG_WARN, "systemd: out of memory; not notifying");
        return NULL;
    }
    n->fd = -1;
    rc = notify_addr(&n->addr, &n->addrlen);
    if (rc != 0) {
        if (rc == JN_EINVAL) {
            jn_log(JN_LOG_WARN, "systemd: NOTIFY_SOCKET '%s' is not an absolute path or "
                   "@abstract name; not notifying", getenv("NOTIFY_SOCKET"));
        }
        jn_free(n);
        return NULL;
    }
    n->status = status;
    n->arg = arg;
    n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    n->status_ev = event_new(base, -1, EV_PERSIST, status_cb, n);
    if (wd > 0) {
        n->wd_ev = event_new(base, -1, EV_PERSIST, watchdog_cb, n);
    }
    if (n->fd < 0 || n->status_ev == NULL || (wd > 0 && n->wd_ev == NULL)) {
        jn_log(JN_LOG_WARN, "systemd: cannot set up the notify socket (%s); not notifying",
               n->fd < 0 ? strerror(errno) : "out of memory");
        jn_sdnotify_free(n);
        return NULL;
    }
    send_status(n, "READY=1");
    evtimer_add(n->status_ev, &stv);
    if (n->wd_ev != NULL) {
        long long half = wd / 2;
        struct timeval wtv = {(time_t)(half / 1000000), (suseconds_t)(half % 1000000)};
        send_on(n->fd, &n->addr, n->addrlen, "WATCHDOG=1");
        evtimer_add(n->wd_ev, &wtv);
        jn_log(JN_LOG_INFO, "systemd: watchdog every %lld ms", half / 1000);
    }
    return n;
}

void jn_sdnotify_stopping(struct jn_sdnotify *n, const char *status)
{
    char msg[sizeof(n->last) + 32];

    if (n == NULL) {
        return;
    }
    if (n->status_ev != NULL) {
        event_del(n->status_ev); /* the stop's STATUS= stays until we exit */
    }
    snprintf(msg, sizeof(msg), "STOPPING=1\nSTATUS=%s", status);
    send_on(n->fd, &n->addr, n->addrlen, msg);
}

void jn_sdnotify_free(struct jn_sdnotify *n)
{
    if (n == NULL) {
        return;
    }
    if (n->wd_ev != NULL) {
        event_free(n->wd_ev);
    }
    if (n->status_ev != NULL) {
        event_free(n->status_ev);
    }
    if (n->fd >= 0) {
        close(n->fd);
    }
    jn_free(n);
}
