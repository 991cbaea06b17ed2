/* jn_net: small network helpers shared by listeners and clients. */
#ifndef JN_NET_H
#define JN_NET_H

#include <stddef.h>

/* "host:port" (a bracketed IPv6 literal loses its brackets) into host (hlen bytes) and port in
 * min_port..65535 (0 allows an ephemeral listen port). 0 or JN_EINVAL. */
int jn_split_hostport(const char *s, char *host, size_t hlen, int *port, int min_port);

#endif
