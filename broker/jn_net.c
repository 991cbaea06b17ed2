/* jn_net: small network helpers shared by listeners and clients (see jn_net.h). */
#include <stdlib.h>
#include <string.h>

#include "jn_net.h"

#include "jn_err.h"

int jn_split_hostport(const char *s, char *host, size_t hlen, int *port, int min_port)
{
    const char *colon = s ? strrchr(s, ':') : NULL;
    char *end;
    long p;
    size_t n;

    if (colon == NULL || colon == s) {
        return JN_EINVAL;
    }
    n = (size_t)(colon - s);
    if (s[0] == '[' && n >= 2 && s[n - 1] == ']') {
        s++;
        n -= 2;
    }
    if (n == 0 || n >= hlen) {
        return JN_EINVAL;
    }
    memcpy(host, s, n);
    host[n] = '\0';
    p = strtol(colon + 1, &end, 10);
    if (*end != '\0' || end == colon + 1 || p < min_port || p > 65535) {
        return JN_EINVAL;
    }
    *port = (int)p;
    return 0;
}
