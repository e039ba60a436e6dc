/* server.c - the DICOM listener and its association threads. See server.h. */
#include "net/server.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "net/scp.h"
#include "net/ul.h"
#include "util/log.h"
#include "util/metrics.h"

/* Connections beyond the association limit still get their RJ, from a
 * thread of their own; past this many more they are closed unanswered. */
#define SERVER_MAX_REJECTORS 64

static int stop_pipe[2] = {-1, -1};
static volatile sig_atomic_t stop_requested;
static void (*stop_hook)(void *ctx);
static void *stop_hook_ctx;

void server_set_stop_hook(void (*fn)(void *ctx), void *ctx)
{
    stop_hook = fn;
    stop_hook_ctx = ctx;
}

void server_stop(void)
{
    stop_requested = 1;
    if (stop_pipe[1] >= 0) {
        char c = 1;
        ssize_t r = write(stop_pipe[1], &c, 1);
        (void)r;
    }
}

static void on_signal(int sig)
{
    (void)sig;
    server_stop();
}

struct server {
    const struct pacs_config *cfg;
    struct scp_env env;
    atomic_uint_fast64_t next_id;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned active;     /* association threads */
    unsigned rejectors;  /* threads answering with "local limit exceeded" */
    int *fds;            /* fds of active threads, to cut them at the end */
    size_t n_fds;
};

struct conn {
    struct server *s;
    int fd;
    bool over_limit;
    char peer[64];
    uint64_t id;
};

static void fd_register(struct server *s, int fd)
{
    for (size_t i = 0; i < s->n_fds; i++)
        if (s->fds[i] < 0) {
            s->fds[i] = fd;
            return;
        }
}

static void fd_unregister(struct server *s, int fd)
{
    for (size_t i = 0; i < s->n_fds; i++)
        if (s->fds[i] == fd) {
            s->fds[i] = -1;
            return;
        }
}

static void *conn_thread(void *arg)
{
    struct conn *c = arg;
    struct server *s = c->s;
    const struct pacs_config *cfg = s->cfg;
    log_set_context(c->id, c->peer);
    struct ul_acceptor acc = {
        .aet = cfg->dicom.aet,
        .check_called_aet = cfg->dicom.check_called_aet,
        .allowed_calling = (const char *const *)cfg->dicom.allowed_calling_aets,
        .n_allowed_calling = cfg->dicom.n_allowed_calling_aets,
        .max_pdu = cfg->dicom.max_pdu_length,
        .to = {.artim_ms = cfg->dicom.artim_timeout * 1000u,
               .idle_ms = cfg->dicom.idle_timeout * 1000u,
               .read_ms = cfg->dicom.read_timeout * 1000u,
               .write_ms = cfg->dicom.write_timeout * 1000u},
        .over_limit = c->over_limit,
        .choose_ts = scp_choose_ts,
        .grant_scp_role = scp_grant_scp_role,
        .ctx = &s->env,
    };
    struct ul_assoc *a = NULL;
    struct pacs_err err = {0};
    if (ul_accept(c->fd, c->peer, c->id, &acc, &a, &err) == 0) {
        log_info("association accepted: %s -> %s", ul_calling_aet(a), ul_called_aet(a));
        metric_inc(&metric_dicom_associations, (const char *const[]){"accepted"});
        scp_serve(a, &s->env);
    } else if (err.code == PACS_EUNSUPPORTED) {
        log_info("association rejected: %s", err.msg);
        metric_inc(&metric_dicom_associations, (const char *const[]){"rejected"});
    } else if (err.code == PACS_EIO) {
        /* Closed or silent before asking anything: port probes, mostly
         * (not counted as associations). */
        log_debug("connection ended before an association: %s", err.msg);
    } else {
        log_warn("association aborted: %s", err.msg);
        metric_inc(&metric_dicom_associations, (const char *const[]){"aborted"});
    }
    pthread_mutex_lock(&s->mu);
    fd_unregister(s, c->fd);
    pthread_mutex_unlock(&s->mu);
    ul_free(a);
    pthread_mutex_lock(&s->mu);
    if (c->over_limit) {
        s->rejectors--;
    } else {
        s->active--;
        metric_gauge_add(&metric_dicom_associations_active, NULL, -1);
    }
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    log_set_context(0, NULL);
    free(c);
    return NULL;
}

static int listen_on(const struct pacs_config *cfg, struct pacs_err *err)
{
    char port[8];
    snprintf(port, sizeof port, "%u", cfg->dicom.port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE};
    struct addrinfo *res = NULL;
    int r = getaddrinfo(cfg->bind, port, &hints, &res);
    if (r)
        return pacs_err_set(err, PACS_EINVAL, "bind address %s: %s", cfg->bind, gai_strerror(r));
    int fd = socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
        bind(fd, res->ai_addr, res->ai_addrlen) || listen(fd, 128)) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        return pacs_err_set(err, PACS_EIO, "cannot listen on %s:%u: %s", cfg->bind,
                            cfg->dicom.port, strerror(e));
    }
    freeaddrinfo(res);
    return fd;
}

static void peer_name(const struct sockaddr_storage *sa, char *out, size_t n)
{
    /* Numeric: an IPv6 address and port fit in 64 bytes. */
    char host[48], serv[8];
    if (getnameinfo((const struct sockaddr *)sa, sizeof *sa, host, sizeof host, serv,
                    sizeof serv, NI_NUMERICHOST | NI_NUMERICSERV) != 0 ||
        snprintf(out, n, "%s:%s", host, serv) >= (int)n)
        snprintf(out, n, "?");
}

static void accept_one(struct server *s, int lfd)
{
    struct sockaddr_storage sa;
    socklen_t sl = sizeof sa;
    int fd = accept4(lfd, (struct sockaddr *)&sa, &sl, SOCK_CLOEXEC);
    if (fd < 0) {
        if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED)
            log_warn("accept: %s", strerror(errno));
        if (errno == EMFILE || errno == ENFILE)
            usleep(100 * 1000); /* let running associations release fds */
        return;
    }
    struct conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return;
    }
    c->s = s;
    c->fd = fd;
    c->id = atomic_fetch_add(&s->next_id, 1);
    peer_name(&sa, c->peer, sizeof c->peer);
    pthread_mutex_lock(&s->mu);
    if (s->active < s->cfg->dicom.max_associations) {
        s->active++;
        metric_gauge_add(&metric_dicom_associations_active, NULL, 1);
        fd_register(s, fd);
    } else if (s->rejectors < SERVER_MAX_REJECTORS) {
        s->rejectors++;
        c->over_limit = true;
    } else {
        pthread_mutex_unlock(&s->mu);
        log_warn("connection from %s closed: association limit and rejection backlog full",
                 c->peer);
        close(fd);
        free(c);
        return;
    }
    pthread_mutex_unlock(&s->mu);

    pthread_attr_t attr;
    pthread_t t;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 512u * 1024);
    int r = pthread_create(&t, &attr, conn_thread, c);
    pthread_attr_destroy(&attr);
    if (r) {
        log_error("cannot start an association thread: %s", strerror(r));
        pthread_mutex_lock(&s->mu);
        if (c->over_limit)
            s->rejectors--;
        else {
            fd_unregister(s, fd);
            s->active--;
            metric_gauge_add(&metric_dicom_associations_active, NULL, -1);
        }
        pthread_mutex_unlock(&s->mu);
        close(fd);
        free(c);
    }
}

/* Waits until no thread runs or the deadline passes; true if none runs. */
static bool wait_idle(struct server *s, const struct timespec *deadline)
{
    pthread_mutex_lock(&s->mu);
    while (s->active + s->rejectors > 0) {
        if (deadline) {
            if (pthread_cond_timedwait(&s->cv, &s->mu, deadline) == ETIMEDOUT)
                break;
        } else {
            pthread_cond_wait(&s->cv, &s->mu);
        }
    }
    bool idle = s->active + s->rejectors == 0;
    pthread_mutex_unlock(&s->mu);
    return idle;
}

int server_run(const struct pacs_config *cfg, struct archive *ar, struct pacs_err *err)
{
    struct server s = {.cfg = cfg};
    s.env.ar = ar;
    s.env.cfg = cfg;
    s.env.next_assoc_id = &s.next_id;
    atomic_init(&s.next_id, 1);
    pthread_mutex_init(&s.mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s.cv, &ca);
    pthread_condattr_destroy(&ca);
    int rc = 0;
    int lfd = -1;

    s.n_fds = cfg->dicom.max_associations;
    s.fds = malloc(s.n_fds * sizeof *s.fds);
    if (!s.fds) {
        rc = pacs_err_set(err, PACS_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < s.n_fds; i++)
        s.fds[i] = -1;
    if (pipe2(stop_pipe, O_CLOEXEC | O_NONBLOCK)) {
        rc = pacs_err_set(err, PACS_EIO, "pipe: %s", strerror(errno));
        goto out;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    lfd = listen_on(cfg, err);
    if (lfd < 0) {
        rc = lfd;
        goto out;
    }
    log_info("DICOM listening on %s:%u as %s", cfg->bind, cfg->dicom.port, cfg->dicom.aet);
    while (!stop_requested) {
        struct pollfd p[2] = {{.fd = lfd, .events = POLLIN}, {.fd = stop_pipe[0], .events = POLLIN}};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            rc = pacs_err_set(err, PACS_EIO, "poll: %s", strerror(errno));
            break;
        }
        if (p[0].revents & POLLIN)
            accept_one(&s, lfd);
    }
    close(lfd);
    lfd = -1;
    /* Before the drain: readiness turns 503 now, not after it. */
    if (stop_hook)
        stop_hook(stop_hook_ctx);

    log_info("stopping: waiting up to %u s for %u association(s)", cfg->dicom.shutdown_timeout,
             s.active);
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += cfg->dicom.shutdown_timeout;
    if (!wait_idle(&s, &deadline)) {
        pthread_mutex_lock(&s.mu);
        log_warn("cutting %u association(s) still running", s.active);
        for (size_t i = 0; i < s.n_fds; i++)
            if (s.fds[i] >= 0)
                shutdown(s.fds[i], SHUT_RDWR);
        pthread_mutex_unlock(&s.mu);
        wait_idle(&s, NULL);
    }
out:
    if (lfd >= 0)
        close(lfd);
    for (int i = 0; i < 2; i++)
        if (stop_pipe[i] >= 0) {
            close(stop_pipe[i]);
            stop_pipe[i] = -1;
        }
    free(s.fds);
    pthread_cond_destroy(&s.cv);
    pthread_mutex_destroy(&s.mu);
    return rc;
}
