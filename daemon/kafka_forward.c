/* A fixed port for the embedded broker (kafka.embedded_port): librdkafka 2.0.2's mock cluster binds an ephemeral
 * loopback port and has no API to choose it, so nlpd listens on 127.0.0.1:PORT and relays each connection to the
 * mock's own listener. A client only bootstraps through it: the metadata it gets back names the mock's real
 * address, which is on the same loopback, and it connects there for the rest. */
#include "kafka_forward.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_CONNS 64

struct nlpd_kd_forward {
    int listen_fd, wake[2];
    struct sockaddr_in to;
    pthread_t acceptor;
    pthread_mutex_t mu;
    pthread_cond_t idle;
    int fds[MAX_CONNS * 2]; /* open relay sockets, shut down at stop; -1 = free slot */
    int relays;             /* relay threads still running */
    int stopping;
};

struct relay {
    struct nlpd_kd_forward *f;
    int a, b;
};

static void track(struct nlpd_kd_forward *f, int fd, int add)
{
    for (int i = 0; i < MAX_CONNS * 2; i++)
        if (add ? f->fds[i] < 0 : f->fds[i] == fd) {
            f->fds[i] = add ? fd : -1;
            return;
        }
}

/* Copies both ways until either side closes. */
static void *relay_main(void *arg)
{
    struct relay *r = arg;
    char buf[65536];
    struct pollfd p[2] = {{.fd = r->a, .events = POLLIN}, {.fd = r->b, .events = POLLIN}};
    for (;;) {
        if (poll(p, 2, -1) < 0 && errno != EINTR)
            break;
        int done = 0;
        for (int i = 0; i < 2 && !done; i++) {
            if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            ssize_t n = read(p[i].fd, buf, sizeof buf);
            if (n <= 0)
                done = 1;
            for (ssize_t off = 0; n > 0 && off < n && !done;) {
                ssize_t w = write(p[1 - i].fd, buf + off, (size_t)(n - off));
                if (w <= 0 && errno != EINTR)
                    done = 1;
                off += w > 0 ? w : 0;
            }
        }
        if (done)
            break;
    }
    pthread_mutex_lock(&r->f->mu);
    track(r->f, r->a, 0);
    track(r->f, r->b, 0);
    close(r->a);
    close(r->b);
    if (--r->f->relays == 0)
        pthread_cond_broadcast(&r->f->idle);
    pthread_mutex_unlock(&r->f->mu);
    free(r);
    return NULL;
}

static void start_relay(struct nlpd_kd_forward *f, int client)
{
    int up = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct relay *r = malloc(sizeof *r);
    pthread_t t;
    pthread_mutex_lock(&f->mu);
    int room = f->relays < MAX_CONNS && !f->stopping;
    pthread_mutex_unlock(&f->mu);
    if (!room || up < 0 || !r || connect(up, (struct sockaddr *)&f->to, sizeof f->to) != 0) {
        if (up >= 0)
            close(up);
        close(client);
        free(r);
        return;
    }
    *r = (struct relay){f, client, up};
    pthread_mutex_lock(&f->mu);
    track(f, client, 1);
    track(f, up, 1);
    f->relays++;
    pthread_mutex_unlock(&f->mu);
    if (pthread_create(&t, NULL, relay_main, r) != 0) {
        pthread_mutex_lock(&f->mu);
        track(f, client, 0);
        track(f, up, 0);
        f->relays--;
        pthread_mutex_unlock(&f->mu);
        close(client);
        close(up);
        free(r);
        return;
    }
    pthread_detach(t);
}

static void *accept_main(void *arg)
{
    struct nlpd_kd_forward *f = arg;
    struct pollfd p[2] = {{.fd = f->listen_fd, .events = POLLIN}, {.fd = f->wake[0], .events = POLLIN}};
    for (;;) {
        if (poll(p, 2, -1) < 0 && errno != EINTR)
            break;
        if (p[1].revents)
            break;
        if (p[0].revents & POLLIN) {
            int c = accept4(f->listen_fd, NULL, NULL, SOCK_CLOEXEC);
            if (c >= 0)
                start_relay(f, c);
        }
    }
    return NULL;
}

struct nlpd_kd_forward *nlpd_kd_forward_start(int port, const char *mock_addr, struct nlpd_error *err)
{
    const char *colon = strrchr(mock_addr, ':');
    struct nlpd_kd_forward *f = calloc(1, sizeof *f);
    if (!f) {
        nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
        return NULL;
    }
    f->listen_fd = f->wake[0] = f->wake[1] = -1;
    for (int i = 0; i < MAX_CONNS * 2; i++)
        f->fds[i] = -1;
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->idle, NULL);
    f->to.sin_family = AF_INET;
    char host[64];
    snprintf(host, sizeof host, "%.*s", colon ? (int)(colon - mock_addr) : 0, mock_addr);
    if (!colon || inet_pton(AF_INET, host, &f->to.sin_addr) != 1) {
        nlpd_error_set(err, NLPD_EFATAL, 0, "embedded broker: unexpected mock address %s", mock_addr);
        goto bad;
    }
    f->to.sin_port = htons((uint16_t)atoi(colon + 1));
    struct sockaddr_in at = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    f->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (f->listen_fd < 0 || setsockopt(f->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(f->listen_fd, (struct sockaddr *)&at, sizeof at) != 0 || listen(f->listen_fd, 16) != 0) {
        nlpd_error_set(err, NLPD_EFATAL, 0, "kafka.embedded_port %d: cannot listen on 127.0.0.1:%d: %s", port, port,
                       strerror(errno));
        goto bad;
    }
    if (pipe2(f->wake, O_CLOEXEC) != 0 || pthread_create(&f->acceptor, NULL, accept_main, f) != 0) {
        nlpd_error_set(err, NLPD_EFATAL, 0, "embedded broker: cannot start the port forwarder");
        goto bad;
    }
    return f;
bad:
    if (f->listen_fd >= 0)
        close(f->listen_fd);
    if (f->wake[0] >= 0) {
        close(f->wake[0]);
        close(f->wake[1]);
    }
    pthread_mutex_destroy(&f->mu);
    pthread_cond_destroy(&f->idle);
    free(f);
    return NULL;
}

void nlpd_kd_forward_stop(struct nlpd_kd_forward *f)
{
    if (!f)
        return;
    ssize_t w = write(f->wake[1], "x", 1);
    (void)w;
    pthread_join(f->acceptor, NULL);
    close(f->listen_fd);
    close(f->wake[0]);
    close(f->wake[1]);
    pthread_mutex_lock(&f->mu);
    f->stopping = 1;
    for (int i = 0; i < MAX_CONNS * 2; i++) /* wakes every relay: its poll sees the end of both sides */
        if (f->fds[i] >= 0)
            shutdown(f->fds[i], SHUT_RDWR);
    while (f->relays > 0)
        pthread_cond_wait(&f->idle, &f->mu);
    pthread_mutex_unlock(&f->mu);
    pthread_mutex_destroy(&f->mu);
    pthread_cond_destroy(&f->idle);
    free(f);
}
