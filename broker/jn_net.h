/* jn_net: small network helpers shared by listeners and clients. */
#ifndef JN_NET_H
#define JN_NET_H

#include <stddef.h>

/* Why a listener refused a connection (jn_listener.h): the index of a channel's
 * n_conn_refused (jn_channel.h). */
enum {
    JN_CONN_REFUSED_MAX = 0,    /* over max_connections */
    JN_CONN_REFUSED_PER_IP = 1, /* over max_connections_per_ip */
    JN_CONN_REFUSED__COUNT
};

/* "host:port" (a bracketed IPv6 literal loses its brackets) into host (hlen bytes) and port in
 * min_port..65535 (0 allows an ephemeral listen port). 0 or JN_EINVAL. */
int jn_split_hostport(const char *s, char *host, size_t hlen, int *port, int min_port);

#endif
