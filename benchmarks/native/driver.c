/*
 * The native load driver for UPPER servers: C11, epoll, non-blocking sockets,
 * one thread, closed loop. Built and run by ``benchmarks.native`` (which
 * compiles this file with the system compiler on first use); the options, the
 * phase events and the JSON result are those of the Python fallback,
 * ``benchmarks/driver.py``, so ``benchmarks.bench`` reads either.
 *
 * Why native: a driver written in Python saturates its own core at about the
 * rate a uvloop server reaches, and then both are measured at the driver's
 * ceiling. This one spends well under a microsecond of user time per round
 * trip; what remains of its CPU is the kernel's TCP work, which any client
 * pays. It reports its own CPU so that a row where it was the bottleneck
 * (>= 90 % busy) is marked as such.
 *
 * Loads (--mode):
 *   pingpong  every connection sends one line and waits for its reply, forever;
 *   pipeline  every connection sends --lines-per-round lines in one write and
 *             waits for all their replies;
 *   churn     --messages-per-connection messages (rounds of K lines), then
 *             "DESCONEXION\n" alone in its own write; the server must then
 *             close cleanly: the next read returns EOF. Data after the keyword,
 *             a reset (ECONNRESET) or no close within --timeout is an error.
 *             After the EOF the driver closes and reconnects at once;
 *   idle      open the connections (each verified by one round trip), then
 *             send nothing; the window starts once --settle seconds have
 *             passed since the last reply (the caller reads the server's
 *             memory then), lasts --duration, and ends with one more line on
 *             every connection to check that the server still holds it.
 *
 * Timeline: ramp-up (--connect-rate connections per second, at most
 * --ramp-timeout seconds; a connection counts once the server has answered
 * its first request, and waits, parked, for the others except in churn), then
 * --warmup seconds, then the measured window of --duration seconds, then a
 * drain of at most 2 s (no new requests; replies in flight are read so that
 * nothing is reset). Phase changes are one JSON object per line on stderr:
 * {"event": "ramped"|"measuring"|"measured", ...}.
 *
 * Checking replies: every byte received is compared with the byte expected at
 * that position (memcmp against the precomputed reply), so a wrong, missing,
 * extra or reordered byte is a "mismatch" error. The expected reply is the
 * ASCII uppercase of the request. That is the protocol's rule (Python's
 * str.upper() on the UTF-8 text) because the driver generates every line
 * itself from the lowercase letters a-z only: for ASCII text str.upper() maps
 * exactly a-z to A-Z and changes nothing else, and no generated line can be
 * the keyword (which is in capitals). Errors are counted by kind and the
 * connection is re-established 10 ms later. Connection attempts that are
 * refused or time out are retried with exponential backoff and counted as
 * connect_retries, not errors.
 *
 * Latency is from the write of a request to the last byte of its reply, kept
 * in a log-linear histogram (128 buckets per power of two: a reported
 * percentile is at most 0.8 % above the true one; the maximum is exact).
 *
 * Bounded: loopback targets only (127.0.0.0/8, ::1), at most 100,000
 * connections, every phase has a deadline.
 *
 * TLS (--tls, in the build made with -DUPPER_TLS and linked with OpenSSL, as
 * ``benchmarks.native.driver_binary(tls=True)`` does): every connection first
 * completes a TLS handshake (non-blocking, within --connect-timeout), then the
 * same load runs over SSL_write/SSL_read with the same byte-by-byte check of
 * every reply. --tls-cafile verifies the server's certificate (and its
 * address) against that CA; without it nothing is verified (a benchmark, not
 * a client). A failed handshake is the error "tls_handshake"; any other TLS
 * failure is "tls". In churn the server's close must be close_notify then
 * EOF: an end without close_notify is a "tls" error.
 *
 * Linux only (epoll).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#ifdef UPPER_TLS
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
static SSL_CTX *tls_context;
#endif

#define MAX_CONNECTIONS 100000
#define MAX_SECONDS 3600.0
#define READ_SIZE 65536
#define EVENTS_PER_POLL 1024
#define RECONNECT_AFTER_ERROR_NS 10000000LL
#define HOUSEKEEPING_NS 10000000LL
#define DRAIN_LIMIT_S 2.0
#define VERIFY_IN_FLIGHT 100

static const char KEYWORD_LINE[] = "DESCONEXION\n";

enum mode { PINGPONG, PIPELINE, CHURN, IDLE };
static const char *const MODE_NAMES[] = {"pingpong", "pipeline", "churn", "idle"};

/* FIRST: connected, first request sent, not answered yet. A connection counts
 * as established only once the server has answered it: a connect() also
 * succeeds when the server's accept queue is full and the handshake is dropped. */
enum state { FREE, CONNECTING, FIRST, PARKED, ACTIVE, HELD, CLOSING };

struct connection {
    int fd;
    uint8_t state;
    bool watching_output;
    uint32_t generation;   /* bumped on every open: tells stale epoll events apart */
    uint32_t attempt;      /* connect attempts so far, for the backoff */
    uint32_t rounds_left;  /* churn: round trips before DESCONEXION */
    const char *expected;  /* reply still awaited; NULL: none */
    size_t expected_length;
    size_t received;       /* bytes of ``expected`` already received and checked */
    const char *output;    /* a write the kernel did not take at once */
    size_t output_length;
    size_t written;
    int64_t sent_at;       /* when the outstanding request (or the connect) started, ns */
    int64_t due;           /* when to (re)open it, if scheduled */
    void *ssl;             /* the connection's SSL (TLS builds, with --tls); NULL: plain */
};

struct options {
    const char *host;
    int port;
    int connections;
    double duration, warmup, connect_rate, timeout, connect_timeout, ramp_timeout, settle;
    enum mode mode;
    int lines_per_round, line_size, messages_per_connection;
    const char *cpus;
    bool quiet;
    bool tls;
    const char *tls_cafile;
};

/* ------------------------------------------------------------ global state */

static struct options opt;
static struct sockaddr_storage target;
static socklen_t target_length;
static int epoll_fd;
static struct connection *conns;
static char *request, *reply;
static size_t request_length;
static int rounds_per_connection;

static int *schedule;  /* binary min-heap of connection indexes, keyed by ``due`` */
static int scheduled;

static int live, established, ever_established;
static bool parking, stopping, recording;
static int64_t window_round_trips, window_sessions, last_reply_at;
static long long connect_retries;

#define MAX_ERROR_KINDS 32
static struct { char name[40]; long long count; } error_kinds[MAX_ERROR_KINDS];
static int error_kind_count;
static long long errors_total;

/* ------------------------------------------------------------ small helpers */

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static double cpu_seconds(void) {
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6 + usage.ru_stime.tv_sec +
           usage.ru_stime.tv_usec / 1e6;
}

static int64_t seconds_ns(double seconds) { return (int64_t)(seconds * 1e9); }

static void fail_usage(const char *message, const char *detail) {
    fprintf(stderr, "upper-driver: %s%s%s\n", message, detail ? ": " : "", detail ? detail : "");
    exit(2);
}

static void count_error(const char *kind) {
    errors_total++;
    for (int i = 0; i < error_kind_count; i++) {
        if (strcmp(error_kinds[i].name, kind) == 0) {
            error_kinds[i].count++;
            return;
        }
    }
    int slot = error_kind_count < MAX_ERROR_KINDS ? error_kind_count++ : MAX_ERROR_KINDS - 1;
    snprintf(error_kinds[slot].name, sizeof error_kinds[slot].name, "%s", kind);
    error_kinds[slot].count++;
}

static const char *errno_kind(int err) {
    switch (err) {
    case ECONNRESET: case EPIPE: return "reset";
    case ETIMEDOUT: return "timeout";
    case ECONNREFUSED: return "refused";
    case EPROTO: return "tls";
    default: return "oserror";
    }
}

/* ------------------------------------------------------------ latency histogram */

#define SUB_BITS 7
#define SUB_COUNT (1 << SUB_BITS)       /* 128 buckets per power of two */
#define BUCKETS (2 * SUB_COUNT + 57 * SUB_COUNT)

struct histogram {
    uint64_t counts[BUCKETS];
    uint64_t total;
    int64_t max;
};

static struct histogram window_latency, verify_latency;

static int bucket_of(int64_t value) {
    if (value < 2 * SUB_COUNT) return (int)(value < 0 ? 0 : value);
    int top_bit = 63 - __builtin_clzll((uint64_t)value);
    int shift = top_bit - SUB_BITS;
    return (int)(2 * SUB_COUNT + (shift - 1) * SUB_COUNT + ((value >> shift) - SUB_COUNT));
}

static int64_t bucket_top(int bucket) {
    if (bucket < 2 * SUB_COUNT) return bucket;
    int shift = (bucket - 2 * SUB_COUNT) / SUB_COUNT + 1;
    int64_t mantissa = (bucket - 2 * SUB_COUNT) % SUB_COUNT + SUB_COUNT;
    return ((mantissa + 1) << shift) - 1;
}

static void histogram_add(struct histogram *h, int64_t value) {
    h->counts[bucket_of(value)]++;
    h->total++;
    if (value > h->max) h->max = value;
}

/* The q-th percentile, ns: the sample of rank floor(q * total) + 1 (as the
 * Python driver's "lower" method), rounded up to its bucket's top. */
static int64_t histogram_percentile(const struct histogram *h, double q) {
    uint64_t rank = (uint64_t)(q / 100.0 * (double)h->total) + 1;
    if (rank > h->total) rank = h->total;
    uint64_t seen = 0;
    for (int b = 0; b < BUCKETS; b++) {
        seen += h->counts[b];
        if (seen >= rank) {
            int64_t top = bucket_top(b);
            return top < h->max ? top : h->max;
        }
    }
    return h->max;
}

/* ------------------------------------------------------------ connect schedule */

static bool earlier(int a, int b) { return conns[a].due < conns[b].due; }

static void schedule_push(int index) {
    int i = scheduled++;
    schedule[i] = index;
    while (i > 0 && earlier(schedule[i], schedule[(i - 1) / 2])) {
        int parent = (i - 1) / 2, swap = schedule[i];
        schedule[i] = schedule[parent];
        schedule[parent] = swap;
        i = parent;
    }
}

static int schedule_pop(void) {
    int top = schedule[0];
    schedule[0] = schedule[--scheduled];
    int i = 0;
    for (;;) {
        int left = 2 * i + 1, right = left + 1, smallest = i;
        if (left < scheduled && earlier(schedule[left], schedule[smallest])) smallest = left;
        if (right < scheduled && earlier(schedule[right], schedule[smallest])) smallest = right;
        if (smallest == i) break;
        int swap = schedule[i];
        schedule[i] = schedule[smallest];
        schedule[smallest] = swap;
        i = smallest;
    }
    return top;
}

/* ------------------------------------------------------------ plain or TLS I/O */

#ifdef UPPER_TLS
/* An SSL_read/SSL_write result as send()/recv() would give it: -1 and EAGAIN
 * when TLS waits for the socket, 0 at close_notify, -1 and EPROTO on a TLS
 * failure (an end of stream without close_notify included). */
static ssize_t tls_result(SSL *ssl, int rc) {
    int saved = errno;
    switch (SSL_get_error(ssl, rc)) {
    case SSL_ERROR_WANT_READ: case SSL_ERROR_WANT_WRITE:
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL:
        errno = saved ? saved : EPROTO;
        return -1;
    default:
        errno = EPROTO;
        return -1;
    }
}
#endif

static ssize_t io_send(struct connection *c, const char *data, size_t length) {
#ifdef UPPER_TLS
    if (c->ssl) {
        ERR_clear_error();
        int n = SSL_write(c->ssl, data, (int)length);
        return n > 0 ? n : tls_result(c->ssl, n);
    }
#endif
    return send(c->fd, data, length, MSG_NOSIGNAL);
}

static ssize_t io_recv(struct connection *c, char *buffer, size_t size) {
#ifdef UPPER_TLS
    if (c->ssl) {
        ERR_clear_error();
        int n = SSL_read(c->ssl, buffer, (int)size);
        return n > 0 ? n : tls_result(c->ssl, n);
    }
#endif
    return recv(c->fd, buffer, size, 0);
}

/* Whether TLS holds decrypted bytes or whole records the socket will not signal. */
static bool io_pending(struct connection *c) {
#ifdef UPPER_TLS
    if (c->ssl) return SSL_has_pending(c->ssl);
#endif
    (void)c;
    return false;
}

/* ------------------------------------------------------------ connections */

static void watch(struct connection *c, int op, uint32_t events) {
    struct epoll_event event = {.events = events};
    event.data.u64 = ((uint64_t)c->generation << 32) | (uint32_t)(c - conns);
    if (epoll_ctl(epoll_fd, op, c->fd, &event) != 0) {
        perror("upper-driver: epoll_ctl");
        exit(1);
    }
}

static void close_connection(struct connection *c) {
    if (c->state == PARKED || c->state == ACTIVE || c->state == HELD || c->state == CLOSING)
        established--;
#ifdef UPPER_TLS
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
#endif
    close(c->fd); /* also removes it from the epoll set */
    c->fd = -1;
    c->state = FREE;
    c->expected = NULL;
    c->output = NULL;
    c->watching_output = false;
    c->generation++;
    live--;
}

static void reschedule(struct connection *c, int64_t due, uint32_t attempt) {
    if (stopping) return;
    c->due = due;
    c->attempt = attempt;
    schedule_push((int)(c - conns));
}

/* A connection attempt failed: retried with exponential backoff and jitter, so
 * that connections that failed together do not all come back together. */
static void retry(struct connection *c, uint32_t attempt, int err) {
    switch (err) {
    case ECONNREFUSED: case ETIMEDOUT: case EAGAIN: case EADDRNOTAVAIL: case ECONNRESET:
    case EPIPE: case EHOSTUNREACH: case ENETUNREACH: case EMFILE: case ENFILE: case ENOBUFS:
        connect_retries++;
        break;
    default: {
        char kind[40];
        snprintf(kind, sizeof kind, "connect_errno_%d", err);
        count_error(kind);
    }
    }
    double delay = fmin(1.0, 0.01 * (double)(1u << (attempt < 10 ? attempt : 10)));
    delay *= 0.5 + (double)rand() / RAND_MAX;
    reschedule(c, now_ns() + seconds_ns(delay), attempt + 1);
}

/* Count an error, drop the connection, reconnect shortly. */
static void fail(struct connection *c, const char *kind) {
    count_error(kind);
    close_connection(c);
    reschedule(c, now_ns() + RECONNECT_AFTER_ERROR_NS, 0);
}

/* Write ``data``; what the kernel does not take now is written when the socket
 * becomes writable. Returns false if the connection failed. */
static bool write_out(struct connection *c, const char *data, size_t length) {
    ssize_t n = io_send(c, data, length);
    if (n == (ssize_t)length) return true;
    if (n < 0) {
        if (errno != EAGAIN) {
            fail(c, errno_kind(errno));
            return false;
        }
        n = 0;
    }
    c->output = data;
    c->output_length = length;
    c->written = (size_t)n;
    c->watching_output = true;
    watch(c, EPOLL_CTL_MOD, EPOLLIN | EPOLLOUT);
    return true;
}

static void flush_output(struct connection *c) {
    ssize_t n = io_send(c, c->output + c->written, c->output_length - c->written);
    if (n < 0) {
        if (errno != EAGAIN) fail(c, errno_kind(errno));
        return;
    }
    c->written += (size_t)n;
    if (c->written == c->output_length) {
        c->output = NULL;
        c->watching_output = false;
        watch(c, EPOLL_CTL_MOD, EPOLLIN);
    }
}

static void send_request(struct connection *c, int64_t now) {
    c->expected = reply;
    c->expected_length = request_length;
    c->received = 0;
    c->sent_at = now;
    write_out(c, request, request_length);
}

/* The first request goes out on a new connection: every mode, idle too. */
static void connected(struct connection *c) {
    c->state = FIRST;
    c->rounds_left = (uint32_t)rounds_per_connection;
    c->expected = reply;
    c->expected_length = request_length;
    c->received = 0;
    write_out(c, request, request_length);
}

static void open_connection(struct connection *c, uint32_t attempt) {
    int fd = socket(target.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) { /* out of descriptors or buffers: back off */
        retry(c, attempt, errno);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&target, target_length) != 0 && errno != EINPROGRESS) {
        int err = errno;
        close(fd);
        retry(c, attempt, err);
        return;
    }
    c->fd = fd;
    c->generation++;
    c->attempt = attempt;
    c->sent_at = now_ns();
    c->output = NULL;
    c->watching_output = false;
    live++;
#ifdef UPPER_TLS
    if (opt.tls) { /* the TLS handshake first: see connect_finished() */
        SSL *ssl = SSL_new(tls_context);
        if (!ssl || !SSL_set_fd(ssl, fd)) {
            fprintf(stderr, "upper-driver: SSL_new failed\n");
            exit(1);
        }
        if (opt.tls_cafile) {
            struct in6_addr ignored;
            bool numeric = inet_pton(AF_INET, opt.host, &ignored) == 1 ||
                           inet_pton(AF_INET6, opt.host, &ignored) == 1;
            if (numeric)
                X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), opt.host);
            else
                SSL_set1_host(ssl, opt.host);
        }
        SSL_set_connect_state(ssl);
        c->ssl = ssl;
        c->state = CONNECTING;
        c->watching_output = true;
        watch(c, EPOLL_CTL_ADD, EPOLLIN | EPOLLOUT);
        return;
    }
#endif
    /* On loopback the handshake has usually completed when connect() returns:
     * send the first request at once; wait for writability only on EAGAIN. */
    c->state = CONNECTING;
    watch(c, EPOLL_CTL_ADD, EPOLLIN);
    ssize_t n = send(fd, request, request_length, MSG_NOSIGNAL);
    if (n < 0 && errno == EAGAIN) {
        c->watching_output = true;
        watch(c, EPOLL_CTL_MOD, EPOLLIN | EPOLLOUT);
        return;
    }
    if (n < 0) {
        int err = errno;
        close_connection(c);
        retry(c, attempt, err);
        return;
    }
    c->state = FIRST;
    c->rounds_left = (uint32_t)rounds_per_connection;
    c->expected = reply;
    c->expected_length = request_length;
    c->received = 0;
    if ((size_t)n != request_length) {
        c->output = request;
        c->output_length = request_length;
        c->written = (size_t)n;
        c->watching_output = true;
        watch(c, EPOLL_CTL_MOD, EPOLLIN | EPOLLOUT);
    }
}

#ifdef UPPER_TLS
/* One step of the TLS handshake; on success the first request goes out. */
static void handshake_step(struct connection *c) {
    ERR_clear_error();
    errno = 0;
    int rc = SSL_do_handshake(c->ssl);
    if (rc == 1) {
        c->watching_output = false;
        watch(c, EPOLL_CTL_MOD, EPOLLIN);
        connected(c);
        return;
    }
    int err = SSL_get_error(c->ssl, rc);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
        bool out = err == SSL_ERROR_WANT_WRITE;
        if (out != c->watching_output) {
            c->watching_output = out;
            watch(c, EPOLL_CTL_MOD, out ? EPOLLIN | EPOLLOUT : EPOLLIN);
        }
        return;
    }
    if (!opt.quiet && error_kind_count == 0) {
        unsigned long reason = ERR_peek_error();
        fprintf(stderr, "upper-driver: TLS handshake failed: %s\n",
                reason ? ERR_reason_error_string(reason) : "connection closed");
    }
    fail(c, "tls_handshake");
}
#endif

static void connect_finished(struct connection *c, uint32_t events) {
    int err = 0;
    socklen_t length = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &length);
#ifdef UPPER_TLS
    if (c->ssl && err == 0) {
        handshake_step(c); /* a closed or refused socket fails the handshake: counted */
        return;
    }
#endif
    if (err == 0 && !(events & (EPOLLERR | EPOLLHUP))) {
        c->watching_output = false;
        watch(c, EPOLL_CTL_MOD, EPOLLIN);
        connected(c);
        return;
    }
    uint32_t attempt = c->attempt;
    close_connection(c);
    retry(c, attempt, err ? err : ECONNREFUSED);
}

/* Churn: DESCONEXION alone in its own write, then wait for the server's close. */
static void end_session(struct connection *c, int64_t now) {
    c->state = CLOSING;
    c->expected = NULL;
    c->sent_at = now;
    write_out(c, KEYWORD_LINE, sizeof KEYWORD_LINE - 1);
}

static void reply_complete(struct connection *c, int64_t now) {
    int64_t latency = now - c->sent_at;
    last_reply_at = now;
    if (recording) {
        histogram_add(&window_latency, latency);
        window_round_trips++;
    }
    c->expected = NULL;
    if (c->state == FIRST) {
        established++;
        ever_established++;
        if (parking) {
            c->state = PARKED;
            return;
        }
        c->state = opt.mode == IDLE ? HELD : ACTIVE;
    }
    if (c->state == HELD) { /* idle: the connection is held, or was just verified */
        if (stopping) histogram_add(&verify_latency, latency);
        return;
    }
    if (stopping) return;
    if (opt.mode == CHURN && --c->rounds_left == 0) {
        end_session(c, now);
        return;
    }
    send_request(c, now);
}

static void session_closed(struct connection *c) {
    if (recording) window_sessions++;
    close_connection(c);
    if (!stopping) open_connection(c, 0);
}

static char read_buffer[READ_SIZE];

static void readable_once(struct connection *c);

static void readable(struct connection *c) {
    uint32_t generation = c->generation;
    do readable_once(c);
    while (c->state != FREE && c->generation == generation && io_pending(c));
}

static void readable_once(struct connection *c) {
    ssize_t n = io_recv(c, read_buffer, READ_SIZE);
    if (n < 0) {
        if (errno != EAGAIN) fail(c, errno_kind(errno));
        return;
    }
    if (n == 0) {
        if (c->state == CLOSING && !c->output)
            session_closed(c);
        else
            fail(c, "closed");
        return;
    }
    if (c->state == CLOSING) {
        fail(c, "data_after_keyword");
        return;
    }
    if (!c->expected || (size_t)n > c->expected_length - c->received ||
        memcmp(read_buffer, c->expected + c->received, (size_t)n) != 0) {
        fail(c, "mismatch");
        return;
    }
    c->received += (size_t)n;
    if (c->received == c->expected_length) reply_complete(c, now_ns());
}

static void handle_event(uint64_t data, uint32_t events) {
    struct connection *c = &conns[(uint32_t)data];
    if (c->state == FREE || c->generation != (uint32_t)(data >> 32)) return; /* stale */
    if (c->state == CONNECTING) {
        connect_finished(c, events);
        return;
    }
    if ((events & EPOLLOUT) && c->output) {
        uint32_t generation = c->generation;
        flush_output(c);
        if (c->state == FREE || c->generation != generation) return;
    }
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) readable(c);
}

/* ------------------------------------------------------------ timeouts, schedule */

static double connect_tokens;
static int64_t tokens_updated_at, next_timeout_scan, timeout_scan_interval;

static void scan_timeouts(int64_t now) {
    int64_t connect_limit = seconds_ns(opt.connect_timeout), reply_limit = seconds_ns(opt.timeout);
    for (int i = 0; i < opt.connections; i++) {
        struct connection *c = &conns[i];
        if (c->state == CONNECTING || c->state == FIRST) {
            if (now - c->sent_at > connect_limit) {
                uint32_t attempt = c->attempt;
                close_connection(c);
                retry(c, attempt, ETIMEDOUT);
            }
        } else if ((c->expected || c->state == CLOSING) && now - c->sent_at > reply_limit) {
            fail(c, "timeout");
        }
    }
}

/* Opens the connections that are due, at most --connect-rate per second (a
 * token bucket holding 10 ms worth), and enforces timeouts. Returns when it
 * wants to run next. */
static int64_t housekeeping(int64_t now) {
    double rate = opt.connect_rate, burst = rate > 0 ? fmax(1.0, rate * 0.01) : INFINITY;
    if (rate > 0)
        connect_tokens = fmin(burst, connect_tokens + (double)(now - tokens_updated_at) / 1e9 * rate);
    else
        connect_tokens = INFINITY;
    tokens_updated_at = now;
    while (scheduled && conns[schedule[0]].due <= now && connect_tokens >= 1) {
        int index = schedule_pop();
        if (conns[index].state == FREE && live < opt.connections) {
            open_connection(&conns[index], conns[index].attempt);
            connect_tokens -= 1;
        }
    }
    if (now >= next_timeout_scan) {
        scan_timeouts(now);
        next_timeout_scan = now + timeout_scan_interval;
    }
    int64_t next = now + HOUSEKEEPING_NS;
    if (scheduled && conns[schedule[0]].due < next) {
        int64_t due = conns[schedule[0]].due;
        next = due > now + 200000 ? due : now + 200000;
    }
    return next < next_timeout_scan ? next : next_timeout_scan;
}

/* The loop: poll, read, check, record, write; until ``until``. */
static void run_until(int64_t until) {
    static struct epoll_event events[EVENTS_PER_POLL];
    int64_t now = now_ns(), next_housekeeping = housekeeping(now);
    while (now < until) {
        int64_t wake = next_housekeeping < until ? next_housekeeping : until;
        int timeout_ms = wake > now ? (int)((wake - now + 999999) / 1000000) : 0;
        int ready = epoll_wait(epoll_fd, events, EVENTS_PER_POLL, timeout_ms);
        if (ready < 0 && errno != EINTR) {
            perror("upper-driver: epoll_wait");
            exit(1);
        }
        for (int i = 0; i < ready; i++) handle_event(events[i].data.u64, events[i].events);
        now = now_ns();
        if (now >= next_housekeeping) next_housekeeping = housekeeping(now);
    }
}

static bool any_outstanding(void) {
    for (int i = 0; i < opt.connections; i++)
        if (conns[i].state != FREE && (conns[i].expected || conns[i].state == CLOSING)) return true;
    return false;
}

/* No new work: give up connections not established yet, forget the schedule. */
static void stop_new_work(void) {
    stopping = true;
    scheduled = 0;
    for (int i = 0; i < opt.connections; i++)
        if (conns[i].state == CONNECTING || conns[i].state == FIRST) close_connection(&conns[i]);
}

/* Stop sending; read the replies still in flight, so closing resets nothing. */
static void drain(void) {
    stop_new_work();
    int64_t end = now_ns() + seconds_ns(DRAIN_LIMIT_S);
    while (now_ns() < end && any_outstanding()) run_until(now_ns() + 50000000LL);
}

/* Idle: one line on each held connection, at most VERIFY_IN_FLIGHT at a time
 * (this checks that the server still holds them all; it is not a burst test).
 * Returns how many got the right reply in time. */
static long verify_held(double limit_s) {
    stop_new_work();
    int *todo = malloc(sizeof(int) * (size_t)opt.connections);
    int todo_count = 0, next = 0;
    for (int i = 0; i < opt.connections; i++)
        if (conns[i].state == HELD) todo[todo_count++] = i;
    uint64_t answered_before = verify_latency.total;
    int64_t end = now_ns() + seconds_ns(limit_s);
    while (now_ns() < end) {
        int in_flight = 0;
        for (int i = 0; i < opt.connections; i++)
            if (conns[i].state == HELD && conns[i].expected) in_flight++;
        if (next == todo_count && in_flight == 0) break;
        int64_t now = now_ns();
        while (next < todo_count && in_flight < VERIFY_IN_FLIGHT) {
            struct connection *c = &conns[todo[next++]];
            if (c->state == HELD) {
                send_request(c, now);
                in_flight++;
            }
        }
        run_until(now_ns() + 5000000LL);
    }
    free(todo);
    return (long)(verify_latency.total - answered_before);
}

/* ------------------------------------------------------------ setup */

static void event(const char *name, int connections, double seconds) {
    if (opt.quiet) return;
    if (seconds >= 0)
        fprintf(stderr, "{\"event\": \"%s\", \"connections\": %d, \"seconds\": %.3f}\n", name,
                connections, seconds);
    else
        fprintf(stderr, "{\"event\": \"%s\", \"connections\": %d}\n", name, connections);
    fflush(stderr);
}

static bool is_loopback(const struct sockaddr *address) {
    if (address->sa_family == AF_INET) {
        uint32_t ip = ntohl(((const struct sockaddr_in *)address)->sin_addr.s_addr);
        return (ip >> 24) == 127;
    }
    if (address->sa_family == AF_INET6) {
        const struct in6_addr *ip = &((const struct sockaddr_in6 *)address)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(ip) || (IN6_IS_ADDR_V4MAPPED(ip) && ip->s6_addr[12] == 127);
    }
    return false;
}

static void resolve_target(void) {
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_family = AF_UNSPEC}, *found;
    char port[16];
    snprintf(port, sizeof port, "%d", opt.port);
    int rc = getaddrinfo(opt.host, port, &hints, &found);
    if (rc != 0) fail_usage("cannot resolve --host", gai_strerror(rc));
    if (!is_loopback(found->ai_addr))
        fail_usage("refusing a target that is not loopback (127.0.0.0/8 or ::1)", opt.host);
    memcpy(&target, found->ai_addr, found->ai_addrlen);
    target_length = found->ai_addrlen;
    freeaddrinfo(found);
}

static void raise_descriptor_limit(void) {
    struct rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
        limit.rlim_cur = limit.rlim_max;
        setrlimit(RLIMIT_NOFILE, &limit);
    }
}

static void pin_to_cpus(const char *list) {
    cpu_set_t set;
    CPU_ZERO(&set);
    char *copy = strdup(list), *save = NULL;
    for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save))
        CPU_SET(atoi(item), &set);
    free(copy);
    if (sched_setaffinity(0, sizeof set, &set) != 0) fail_usage("cannot pin to --cpus", list);
}

/* A lowercase ASCII line of ``size`` bytes including its LF; ``index`` rotates
 * the letters (as ``make_line`` in the Python driver). */
static void make_round(void) {
    request_length = (size_t)opt.lines_per_round * (size_t)opt.line_size;
    request = malloc(request_length);
    reply = malloc(request_length);
    for (int line = 0; line < opt.lines_per_round; line++) {
        char *start = request + (size_t)line * (size_t)opt.line_size;
        for (int i = 0; i < opt.line_size - 1; i++) start[i] = (char)('a' + (line + i) % 26);
        start[opt.line_size - 1] = '\n';
    }
    /* The expected reply: ASCII uppercase, exact for these a-z lines (see the top). */
    for (size_t i = 0; i < request_length; i++)
        reply[i] = (request[i] >= 'a' && request[i] <= 'z') ? (char)(request[i] - 32) : request[i];
}

static double number(const char *name, const char *text, double low, double high) {
    char *end;
    errno = 0;
    double value = strtod(text, &end);
    if (errno || end == text || *end || !(value >= low && value <= high)) {
        char detail[160];
        snprintf(detail, sizeof detail, "%s %s (expected a number from %g to %g)", name, text, low, high);
        fail_usage("bad value", detail);
    }
    return value;
}

static const char USAGE[] =
    "usage: upper-driver --port PORT [--host 127.0.0.1] [--mode pingpong|pipeline|churn|idle]\n"
    "  [--idle] [--connections 50] [--duration 5] [--warmup 1] [--lines-per-round 1]\n"
    "  [--line-size 16] [--messages-per-connection 100] [--connect-rate 2000]\n"
    "  [--timeout 10] [--connect-timeout 10] [--ramp-timeout 2*N/rate+10] [--settle 0]\n"
    "  [--cpus 1,3] [--quiet] [--tls [--tls-cafile CA.pem]]\n"
    "Closed-loop load driver for UPPER servers; prints one JSON object on stdout.\n";

static void parse_options(int argc, char **argv) {
    opt = (struct options){.host = "127.0.0.1", .port = -1, .connections = 50, .duration = 5,
                           .warmup = 1, .connect_rate = 2000, .timeout = 10,
                           .connect_timeout = 10, .ramp_timeout = -1, .mode = PINGPONG,
                           .lines_per_round = 1, .line_size = 16, .messages_per_connection = 100};
    for (int i = 1; i < argc; i++) {
        char *name = argv[i], *value = NULL, *equals = strchr(name, '=');
        if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
            fputs(USAGE, stdout);
            exit(0);
        }
        if (strcmp(name, "--quiet") == 0) { opt.quiet = true; continue; }
        if (strcmp(name, "--idle") == 0) { opt.mode = IDLE; continue; }
        if (strcmp(name, "--tls") == 0) { opt.tls = true; continue; }
        if (equals) {
            *equals = '\0';
            value = equals + 1;
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            fail_usage("missing value for", name);
        }
        if (strcmp(name, "--host") == 0) opt.host = value;
        else if (strcmp(name, "--port") == 0) opt.port = (int)number(name, value, 1, 65535);
        else if (strcmp(name, "--connections") == 0) opt.connections = (int)number(name, value, 1, MAX_CONNECTIONS);
        else if (strcmp(name, "--duration") == 0) opt.duration = number(name, value, 0.001, MAX_SECONDS);
        else if (strcmp(name, "--warmup") == 0) opt.warmup = number(name, value, 0, MAX_SECONDS);
        else if (strcmp(name, "--lines-per-round") == 0) opt.lines_per_round = (int)number(name, value, 1, 4096);
        else if (strcmp(name, "--line-size") == 0) opt.line_size = (int)number(name, value, 1, 1 << 20);
        else if (strcmp(name, "--messages-per-connection") == 0) opt.messages_per_connection = (int)number(name, value, 1, 1e9);
        else if (strcmp(name, "--connect-rate") == 0) opt.connect_rate = number(name, value, 0, 1e9);
        else if (strcmp(name, "--timeout") == 0) opt.timeout = number(name, value, 0.001, MAX_SECONDS);
        else if (strcmp(name, "--connect-timeout") == 0) opt.connect_timeout = number(name, value, 0.001, MAX_SECONDS);
        else if (strcmp(name, "--ramp-timeout") == 0) opt.ramp_timeout = number(name, value, 0.001, MAX_SECONDS);
        else if (strcmp(name, "--settle") == 0) opt.settle = number(name, value, 0, MAX_SECONDS);
        else if (strcmp(name, "--cpus") == 0) opt.cpus = value;
        else if (strcmp(name, "--tls-cafile") == 0) { opt.tls_cafile = value; opt.tls = true; }
        else if (strcmp(name, "--mode") == 0) {
            int m = 0;
            while (m < 4 && strcmp(value, MODE_NAMES[m]) != 0) m++;
            if (m == 4) fail_usage("--mode must be pingpong, pipeline, churn or idle, not", value);
            opt.mode = (enum mode)m;
        } else fail_usage("unknown option (see --help)", name);
    }
    if (opt.port < 0) fail_usage("--port is required", NULL);
#ifndef UPPER_TLS
    if (opt.tls) fail_usage("--tls needs the TLS build (benchmarks.native with tls=True)", NULL);
#endif
    if (opt.mode == PINGPONG) opt.lines_per_round = 1;
    if ((size_t)opt.lines_per_round * (size_t)opt.line_size > (64u << 20))
        fail_usage("a round is larger than 64 MiB", NULL);
    if (opt.ramp_timeout < 0)
        opt.ramp_timeout = opt.connect_rate > 0 ? fmin(MAX_SECONDS, 2 * opt.connections / opt.connect_rate + 10) : 10;
}

/* ------------------------------------------------------------ the run */

static void print_latency(const char *key, const struct histogram *h, double q) {
    if (!h->total) {
        printf("\"%s\": null, ", key);
        return;
    }
    int64_t value = q < 0 ? h->max : histogram_percentile(h, q);
    printf("\"%s\": %.1f, ", key, (double)value / 1000.0);
}

static bool ramping(void) {
    if (opt.mode == CHURN) return ever_established < opt.connections; /* each opened once */
    return established < opt.connections;
}

int main(int argc, char **argv) {
    parse_options(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    resolve_target();
    if (opt.cpus) pin_to_cpus(opt.cpus);
    raise_descriptor_limit();
    make_round();
#ifdef UPPER_TLS
    if (opt.tls) {
        tls_context = SSL_CTX_new(TLS_client_method());
        if (!tls_context) fail_usage("cannot create the TLS context", NULL);
        SSL_CTX_set_min_proto_version(tls_context, TLS1_2_VERSION);
        SSL_CTX_set_mode(tls_context, SSL_MODE_ENABLE_PARTIAL_WRITE |
                                          SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        if (opt.tls_cafile) {
            if (SSL_CTX_load_verify_locations(tls_context, opt.tls_cafile, NULL) != 1)
                fail_usage("cannot load --tls-cafile", opt.tls_cafile);
            SSL_CTX_set_verify(tls_context, SSL_VERIFY_PEER, NULL);
        } else {
            SSL_CTX_set_verify(tls_context, SSL_VERIFY_NONE, NULL);
        }
    }
#endif
    rounds_per_connection = (opt.messages_per_connection + opt.lines_per_round - 1) / opt.lines_per_round;
    if (rounds_per_connection < 1) rounds_per_connection = 1;
    srand((unsigned)now_ns());
    epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    conns = calloc((size_t)opt.connections, sizeof *conns);
    schedule = malloc(sizeof(int) * (size_t)opt.connections);
    if (epoll_fd < 0 || !conns || !schedule || !request || !reply) {
        perror("upper-driver: setup");
        return 1;
    }
    timeout_scan_interval = seconds_ns(fmin(1.0, fmax(0.01, fmin(opt.timeout, opt.connect_timeout) / 4)));

    int64_t start = now_ns();
    double rate = opt.connect_rate;
    for (int i = 0; i < opt.connections; i++) { /* in due order: already a heap */
        conns[i].fd = -1;
        conns[i].due = start + (rate > 0 ? seconds_ns(i / rate) : 0);
        schedule[scheduled++] = i;
    }
    connect_tokens = rate > 0 ? fmax(1.0, rate * 0.01) : INFINITY;
    tokens_updated_at = start;
    next_timeout_scan = start + timeout_scan_interval;

    /* Ramp-up: until every connection is established (or the ramp times out). */
    parking = opt.mode != CHURN;
    int64_t ramp_end = start + seconds_ns(opt.ramp_timeout);
    while (ramping() && now_ns() < ramp_end) {
        int64_t step = now_ns() + 20000000LL;
        run_until(step < ramp_end ? step : ramp_end);
    }
    parking = false;
    int64_t ramped = now_ns();
    for (int i = 0; i < opt.connections; i++) {
        if (conns[i].state != PARKED) continue;
        conns[i].state = opt.mode == IDLE ? HELD : ACTIVE;
        if (opt.mode != IDLE) send_request(&conns[i], ramped);
    }
    double ramp_s = (double)(ramped - start) / 1e9;
    event("ramped", established, ramp_s);

    /* Warm-up (idle: also until --settle seconds after the last reply). */
    int64_t warm_until = ramped + seconds_ns(opt.warmup);
    run_until(warm_until);
    double quiet_s = 0;
    if (opt.mode == IDLE) {
        int64_t settle_deadline = warm_until + seconds_ns(opt.settle) + seconds_ns(opt.ramp_timeout);
        while (now_ns() < settle_deadline && now_ns() < last_reply_at + seconds_ns(opt.settle))
            run_until(last_reply_at + seconds_ns(opt.settle));
        quiet_s = (double)(now_ns() - last_reply_at) / 1e9;
    }

    /* The measured window. */
    long long errors_before = errors_total;
    double cpu_before = cpu_seconds();
    int64_t window_start = now_ns();
    recording = opt.mode != IDLE;
    event("measuring", established, -1);
    run_until(window_start + seconds_ns(opt.duration));
    recording = false;
    int64_t window_end = now_ns();
    double cpu = cpu_seconds() - cpu_before;
    int connections_at_end = established;
    long long errors_in_window = errors_total - errors_before;
    event("measured", connections_at_end, -1);
    double seconds = (double)(window_end - window_start) / 1e9;

    long verified = -1;
    double verify_s = 0;
    if (opt.mode == IDLE) {
        int64_t verify_start = now_ns();
        verified = verify_held(fmax(5.0, opt.timeout) + opt.connections / 1000.0);
        verify_s = (double)(now_ns() - verify_start) / 1e9;
    } else {
        drain();
    }

    long long messages = opt.mode == IDLE ? 0 : window_round_trips * opt.lines_per_round;
    const struct histogram *latency = opt.mode == IDLE ? &verify_latency : &window_latency;
    double cpu_fraction = seconds > 0 ? cpu / seconds : 0;
    printf("{\"tls\": %s, ", opt.tls ? "true" : "false");
    printf("\"driver\": \"native\", \"mode\": \"%s\", \"messages\": %lld, \"seconds\": %.4f, ",
           MODE_NAMES[opt.mode], messages, seconds);
    printf("\"messages_per_s\": %.1f, \"round_trips\": %lld, ",
           seconds > 0 ? messages / seconds : 0.0, (long long)(opt.mode == IDLE ? (long long)latency->total : window_round_trips));
    print_latency("p50_us", latency, 50);
    print_latency("p99_us", latency, 99);
    print_latency("p999_us", latency, 99.9);
    print_latency("max_us", latency, -1);
    printf("\"errors\": %lld, \"errors_in_window\": %lld, \"error_kinds\": {", errors_total, errors_in_window);
    for (int i = 0; i < error_kind_count; i++)
        printf("%s\"%s\": %lld", i ? ", " : "", error_kinds[i].name, error_kinds[i].count);
    printf("}, \"connections\": %d, \"connections_target\": %d, \"connect_retries\": %lld, ",
           connections_at_end, opt.connections, connect_retries);
    printf("\"ramp_s\": %.3f, \"driver_cpu_s\": %.4f, ", ramp_s, cpu);
    if (messages)
        printf("\"driver_cpu_us_per_message\": %.3f, ", cpu / (double)messages * 1e6);
    else
        printf("\"driver_cpu_us_per_message\": null, ");
    printf("\"driver_cpu_frac\": %.3f, \"driver_cpu_saturated\": %s, ", cpu_fraction,
           cpu_fraction >= 0.9 ? "true" : "false");
    printf("\"lines_per_round\": %d, \"line_size\": %d", opt.lines_per_round, opt.line_size);
    if (opt.mode == CHURN)
        printf(", \"sessions\": %lld, \"sessions_per_s\": %.1f", (long long)window_sessions,
               seconds > 0 ? window_sessions / seconds : 0.0);
    if (opt.mode == IDLE)
        printf(", \"verified\": %ld, \"verify_s\": %.3f, \"settle_s\": %.3f, \"quiet_s\": %.3f",
               verified, verify_s, opt.settle, quiet_s);
    printf("}\n");
    fflush(stdout);
    for (int i = 0; i < opt.connections; i++)
        if (conns[i].state != FREE) close_connection(&conns[i]);
    return 0;
}
