/*
 * tcp_relay.h — a TCP relay on 127.0.0.1 to a real server, for the unit tests
 * that must see a connection die: relay_cut() closes every relayed connection
 * at once (the server "went away" while the client was idle), relay_stop()
 * ends the relay, so the port refuses connections from then on.
 */
#ifndef IDSTREAM_TEST_TCP_RELAY_H
#define IDSTREAM_TEST_TCP_RELAY_H

#include <netinet/in.h>
#include <pthread.h>

typedef struct tcp_relay {
	int lfd;
	struct sockaddr_in up;
	int pipe_cut[2]; /* a byte here closes every relayed connection */
	int pipe_stop[2];
	pthread_t th;
	int port; /* where the relay listens */
} tcp_relay_t;

/*
 * Starts relaying 127.0.0.1:<r->port> (a free port) to the host and port of
 * the LDAP URL `url` (its port, or default_port when the URL has none).
 * Returns 0, or -1 with nothing left open.
 */
int tcp_relay_start(tcp_relay_t *r, const char *url, int default_port);

/* Closes every relayed connection; new ones are still accepted. */
int tcp_relay_cut(tcp_relay_t *r);

/* Stops the relay and closes its listening socket. */
int tcp_relay_stop(tcp_relay_t *r);

#endif
