/*
 * tcp_relay.c — see tcp_relay.h.  One thread polls the listening socket, two
 * control pipes and both ends of every relayed connection (at most MAXC).
 */
#include "tests/unit/support/tcp_relay.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ldap.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum { MAXC = 16 };

static void close_pair(int *a, int *b, int *n, int i)
{
	close(a[i]);
	close(b[i]);
	a[i] = a[*n - 1];
	b[i] = b[*n - 1];
	(*n)--;
}

/* Moves what one side of connection i has to the other; 0 when it closed. */
static int pump_once(int from, int to)
{
	char buf[16384];
	ssize_t k = read(from, buf, sizeof(buf));
	return k > 0 && write(to, buf, (size_t)k) == k;
}

static void accept_one(tcp_relay_t *r, int *a, int *b, int *n)
{
	int c = accept(r->lfd, NULL, NULL);
	int u = socket(AF_INET, SOCK_STREAM, 0);
	if (c >= 0 && u >= 0 &&
	    connect(u, (struct sockaddr *)&r->up, sizeof(r->up)) == 0) {
		a[*n] = c;
		b[*n] = u;
		(*n)++;
		return;
	}
	if (c >= 0)
		close(c);
	if (u >= 0)
		close(u);
}

static void *relay_main(void *arg)
{
	tcp_relay_t *r = arg;
	int a[MAXC], b[MAXC], n = 0;
	for (;;) {
		struct pollfd p[3 + 2 * MAXC];
		p[0] = (struct pollfd){r->lfd, POLLIN, 0};
		p[1] = (struct pollfd){r->pipe_cut[0], POLLIN, 0};
		p[2] = (struct pollfd){r->pipe_stop[0], POLLIN, 0};
		for (int i = 0; i < n; i++) {
			p[3 + 2 * i] = (struct pollfd){a[i], POLLIN, 0};
			p[4 + 2 * i] = (struct pollfd){b[i], POLLIN, 0};
		}
		if (poll(p, (nfds_t)(3 + 2 * n), -1) < 0 && errno != EINTR)
			break;
		if (p[2].revents)
			break;
		if (p[1].revents) {
			char c;
			if (read(r->pipe_cut[0], &c, 1) < 0)
				break;
			while (n > 0)
				close_pair(a, b, &n, n - 1);
			continue;
		}
		if (p[0].revents && n < MAXC) {
			accept_one(r, a, b, &n);
			continue;
		}
		/* One closed connection reshuffles the arrays: poll again after it. */
		for (int i = 0; i < n; i++) {
			int ok = 1;
			if (p[3 + 2 * i].revents)
				ok = pump_once(a[i], b[i]);
			if (ok && p[4 + 2 * i].revents)
				ok = pump_once(b[i], a[i]);
			if (!ok) {
				close_pair(a, b, &n, i);
				break;
			}
		}
	}
	while (n > 0)
		close_pair(a, b, &n, n - 1);
	return NULL;
}

int tcp_relay_start(tcp_relay_t *r, const char *url, int default_port)
{
	LDAPURLDesc *lud = NULL;
	memset(r, 0, sizeof(*r));
	r->lfd = -1;
	if (ldap_url_parse(url, &lud) != LDAP_SUCCESS)
		return -1;
	r->up.sin_family = AF_INET;
	r->up.sin_port = htons((uint16_t)(lud->lud_port ? lud->lud_port : default_port));
	int ok = lud->lud_host != NULL &&
	         inet_pton(AF_INET, lud->lud_host, &r->up.sin_addr) == 1;
	ldap_free_urldesc(lud);
	if (!ok)
		return -1;
	struct sockaddr_in me = {.sin_family = AF_INET, .sin_port = 0};
	me.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t len = sizeof(me);
	r->lfd = socket(AF_INET, SOCK_STREAM, 0);
	if (r->lfd < 0 || bind(r->lfd, (struct sockaddr *)&me, sizeof(me)) != 0 ||
	    listen(r->lfd, 8) != 0 ||
	    getsockname(r->lfd, (struct sockaddr *)&me, &len) != 0)
		goto fail;
	r->port = ntohs(me.sin_port);
	if (pipe(r->pipe_cut) != 0)
		goto fail;
	if (pipe(r->pipe_stop) != 0)
		goto fail_cut;
	if (pthread_create(&r->th, NULL, relay_main, r) != 0)
		goto fail_stop;
	return 0;
fail_stop:
	close(r->pipe_stop[0]);
	close(r->pipe_stop[1]);
fail_cut:
	close(r->pipe_cut[0]);
	close(r->pipe_cut[1]);
fail:
	if (r->lfd >= 0)
		close(r->lfd);
	return -1;
}

int tcp_relay_cut(tcp_relay_t *r)
{
	if (write(r->pipe_cut[1], "x", 1) != 1)
		return -1;
	usleep(100 * 1000); /* the relay thread closes them */
	return 0;
}

int tcp_relay_stop(tcp_relay_t *r)
{
	int rc = write(r->pipe_stop[1], "x", 1) == 1 ? 0 : -1;
	pthread_join(r->th, NULL);
	close(r->lfd);
	close(r->pipe_cut[0]);
	close(r->pipe_cut[1]);
	close(r->pipe_stop[0]);
	close(r->pipe_stop[1]);
	return rc;
}
