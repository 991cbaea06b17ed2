/* The channel types junction knows, in one list (Fluent Bit's plugin registry). */
#include <string.h>

#include "jn_channel.h"

extern const struct jn_channel_def jn_channel_http;
extern const struct jn_channel_def jn_channel_bridge;
extern const struct jn_channel_def jn_channel_file;
extern const struct jn_channel_def jn_channel_kafka;
extern const struct jn_channel_def jn_channel_mllp;
extern const struct jn_channel_def jn_channel_mqtt;
extern const struct jn_channel_def jn_channel_websocket;

const struct jn_channel_def *const jn_channel_defs[] = {
    &jn_channel_bridge,
    &jn_channel_file,
    &jn_channel_http,
    &jn_channel_kafka,
    &jn_channel_mllp,
    &jn_channel_mqtt,
    &jn_channel_websocket,
    NULL,
};

const struct jn_channel_def *jn_channel_def_find(const char *name)
{
    for (size_t i = 0; jn_channel_defs[i]; i++) {
        if (strcmp(jn_channel_defs[i]->name, name) == 0) {
            return jn_channel_defs[i];
        }
    }
    return NULL;
}
