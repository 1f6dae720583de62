/* kafka.embedded_port: a fixed loopback port relayed to the embedded broker's ephemeral one (kafka_forward.c). */
#ifndef NLPD_KAFKA_FORWARD_H
#define NLPD_KAFKA_FORWARD_H

#include "nlpd_error.h"

struct nlpd_kd_forward;

/* Listens on 127.0.0.1:port and relays every connection to mock_addr ("127.0.0.1:PORT"). NULL with err filled
 * (e.g. the port is taken). */
struct nlpd_kd_forward *nlpd_kd_forward_start(int port, const char *mock_addr, struct nlpd_error *err);
/* Closes the listener and every relayed connection, and waits for their threads. NULL is fine. */
void nlpd_kd_forward_stop(struct nlpd_kd_forward *f);

#endif
